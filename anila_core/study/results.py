"""The sampler study's results: cell files read and checked, settings pooled over seeds, best settings, verdicts."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from anila_core.study.grid import KINDS, SETTING_FIELDS, cell_id, setting_key, uses_b

__all__ = [
    "UNSTABLE_TV",
    "QUALITY_FIELDS",
    "QUALITY_LABELS",
    "CONFIDENCE",
    "CLIPPING_SHARE",
    "TWO_DENSITY_KINDS",
    "check_cell_result",
    "read_sweep_file",
    "known_results",
    "read_plan",
    "load_sweep",
    "quality_key",
    "summarize",
    "stable_result",
    "cell_gradients",
    "main_slice",
    "best_settings",
    "same_setting_but_step",
    "paired_cells",
    "paired_difference",
    "verdict_text",
    "search_seeds",
    "verdict_settings",
    "verdict_cells",
    "two_density_rows",
    "budget_curves",
]


#: a run whose final grid TV is at least this has lost the target (collapsed) even if nothing overflowed
UNSTABLE_TV = 0.5


#: an evaluation row's measures of quality (2-D targets: the first five, the last two of them for the
#: density the sampler draws from the energy at small step; images: FID, KID, coverage; points of a file:
#: sliced Wasserstein, MMD and, in 2-D, the KDE grid TV)
QUALITY_FIELDS = (
    "grid_tv",
    "grid_kl",
    "mmd",
    "sampler_grid_tv",
    "sampler_grid_kl",
    "fid",
    "kid",
    "coverage",
    "sliced_wasserstein",
    "kde_grid_tv",
    "chains_tv",
    "chains_sampler_tv",
)


#: how tables and figures name the metric a sweep ranks by
QUALITY_LABELS = {"grid_tv": "grid TV", "fid": "FID", "sliced_wasserstein": "sliced Wasserstein"}


#: a cell's measures that are shares (total variation, coverage), and those that are >= 0 (a KL, a distance)
_SHARES = (
    "grid_tv",
    "sampler_grid_tv",
    "kde_grid_tv",
    "chains_tv",
    "chains_sampler_tv",
    "coverage",
    "best_grid_tv",
    "clipped_share",
)


_NON_NEGATIVE = ("grid_kl", "sampler_grid_kl", "fid", "sliced_wasserstein", "wall_s", "iters")


def check_cell_result(r, where: str, again: str) -> None:
    """``ValueError`` naming ``where`` (a cell file, or sweep.json's cell) unless ``r`` is a cell result as
    :func:`~anila_core.study.cell.run_cell` writes it."""

    def refuse(what: str):
        raise ValueError(f"{where}: {what}; expected a cell result as a sweep writes it ({again})")

    if not isinstance(r, dict):
        refuse(f"holds a JSON {type(r).__name__}, not an object")
    missing = [
        k
        for k in ("id", "kind", "step_size", "n_steps", "chains", "seed", "diverged", "final", "history")
        if k not in r
    ]
    if missing:
        refuse(f"lacks {', '.join(missing)}")
    if (
        not isinstance(r["id"], str)
        or not isinstance(r["final"], dict)
        or not isinstance(r["history"], list)
        or not all(isinstance(row, dict) for row in r["history"])
    ):
        refuse("its id is not a string, its final not an object or its history not a list of objects")
    if not isinstance(r["diverged"], bool):
        refuse(f"diverged: {r['diverged']!r} is not true or false")
    summary_values = ((k, r.get(k)) for k in ("best_grid_tv", "clipped_share", "wall_s", "iters"))
    for key, value in [*r["final"].items(), *summary_values]:
        if value is None or key not in _SHARES + _NON_NEGATIVE + ("mmd", "kid", "energy_gap"):
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            refuse(f"{key}: {value!r} is not a finite number")
        if key in _SHARES and not 0 <= value <= 1:
            refuse(f"{key}: {value!r} is outside [0, 1]")
        if key in _NON_NEGATIVE and value < 0:
            refuse(f"{key}: {value!r} is negative")


def read_sweep_file(path: Path, expected: str, again: str):
    """A sweep file's JSON, or one ``ValueError`` naming it and what is wrong."""
    from anila_core.fileio import read_json_file

    try:
        return read_json_file(path, expected)
    except ValueError as err:
        raise ValueError(f"{err} ({again})") from None


def known_results(out: Path, version: int = 1) -> dict[str, dict]:
    """Finished cells in ``out`` of the design ``version``: one file per cell, and the cells of a summary already
    written there; a damaged one is named."""
    known = {}
    summary = out / "sweep.json"
    if summary.exists():
        again = f"delete {summary}: a rerun of the sweep writes it again from the cell files"
        data = read_sweep_file(summary, "the sweep.json a sweep wrote", again)
        if not isinstance(data, dict) or not isinstance(data.get("cells", []), list):
            raise ValueError(
                f"{summary}: is not an object with a list of cells; expected the sweep.json a sweep wrote ({again})"
            )
        # an older design's cells are not this one's, even where their names agree
        if data.get("version", 1) == version:
            for i, r in enumerate(data.get("cells", [])):
                check_cell_result(r, f"{summary}: cell {i}", again)
                known[r["id"]] = r
    for path in sorted((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []:
        again = f"delete {path}: a rerun of the sweep computes that cell again"
        r = read_sweep_file(path, "a cell result a sweep wrote", again)
        check_cell_result(r, str(path), again)
        if r["id"] != path.stem:
            raise ValueError(f"{path}: holds the result of cell {r['id']!r}; expected that of {path.stem!r} ({again})")
        if r.get("version", 1) == version:
            known[r["id"]] = r
    return known


def read_plan(path: Path) -> dict:
    """A sweep's plan.json, checked: an object with its base settings (an object) and its cells (a list of ids)."""
    plan = read_sweep_file(path, "the plan.json a sweep wrote", "the sweep's own files are not edited by hand")
    if (
        not isinstance(plan, dict)
        or not isinstance(plan.get("base"), dict)
        or not isinstance(plan.get("cells"), list)
        or not all(isinstance(c, str) for c in plan["cells"])
    ):
        raise ValueError(
            f"{path}: is not an object with 'base' (an object of settings) and 'cells' (a list of cell "
            f"ids); "
            "expected the plan.json a sweep wrote"
        )
    return plan


def load_sweep(path: str | Path) -> dict:
    """A sweep's ``sweep.json`` (give the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no sweep results here; run `python -m anila_core sweep ... --out {path.parent}` first"
        )
    again = f"run the sweep's command again with --out {path.parent} to write it from its cell files"
    summary = read_sweep_file(path, "the sweep.json a sweep wrote", again)
    if (
        not isinstance(summary, dict)
        or not isinstance(summary.get("cells"), list)
        or not isinstance(summary.get("base"), dict)
    ):
        raise ValueError(
            f"{path}: is not an object with 'base' and 'cells'; expected the sweep.json a sweep wrote ({again})"
        )
    for i, r in enumerate(summary["cells"]):
        check_cell_result(r, f"{path}: cell {i}", again)
    return summary


def quality_key(summary: dict) -> str:
    """The metric a sweep ranks by: grid TV on 2-D targets, FID on images, sliced Wasserstein on points of a file
    (lower is better for all)."""
    from anila_core.training.config import TrainConfig
    from anila_core.training.kinds import data_kind

    return data_kind(TrainConfig(dataset=summary["base"].get("dataset") or "")).quality_metric


def stable_result(result: dict, key: str) -> bool:
    """Whether a cell trained stably: it did not diverge and (2-D targets) its final grid TV is below UNSTABLE_TV."""
    if result["diverged"]:
        return False
    return key != "grid_tv" or result["final"].get("grid_tv", 1.0) < UNSTABLE_TV


def summarize(summary: dict) -> list[dict]:
    """One row per setting (seeds pooled): means and spreads of the final metrics, diverged and unstable shares, wall
    time."""
    key = quality_key(summary)
    groups: dict[tuple, list[dict]] = {}
    for r in summary["cells"]:
        groups.setdefault(setting_key(r), []).append(r)
    rows = []
    for setting, results in groups.items():
        row = dict(zip(SETTING_FIELDS, setting))
        row["gradients"] = cell_gradients(results[0], summary["base"])
        finished = [r for r in results if not r["diverged"]]
        row["seeds"] = sorted(r["seed"] for r in results)
        row["diverged"] = sum(r["diverged"] for r in results)
        row["stable_share"] = sum(stable_result(r, key) for r in results) / len(results)
        for metric in (*QUALITY_FIELDS, "best_grid_tv"):
            values = [r["final"][metric] if metric in r["final"] else r.get(metric) for r in finished]
            values = [v for v in values if v is not None]
            if values:
                row[metric] = statistics.fmean(values)
                row[metric + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        clipped = [r["clipped_share"] for r in results if r.get("clipped_share") is not None]
        row["clipped_share"] = statistics.fmean(clipped) if clipped else None
        row["wall_s"] = statistics.fmean(r["wall_s"] for r in results)
        rows.append(row)
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda r: (order[r["kind"]], r["chains"], r["n_steps"], r["step_size"], r["b"] or 0))
    return rows


def cell_gradients(cell: dict, base: dict) -> int:
    """Gradient evaluations per chain and iteration of a cell (cells written before it was recorded: from K and the
    sampler)."""
    if cell.get("gradients_per_iter") is not None:
        return cell["gradients_per_iter"]
    return cell["n_steps"] * (base.get("hmc_leapfrog", 1) if cell["kind"] == "hmc" else 1)


def main_slice(rows: list[dict]) -> tuple[int, str]:
    """The gradient budget per iteration and chain kind most settings share: the heatmaps, the stability plot and the
    best settings are taken there.

    A budget, not K: HMC's K = 4 transitions of 5 leapfrog steps cost what K = 20 Langevin steps cost.
    """
    counts: dict[tuple, int] = {}
    for r in rows:
        counts[(r["gradients"], r["chains"])] = counts.get((r["gradients"], r["chains"]), 0) + 1
    return max(counts, key=counts.get)


def best_settings(summary: dict) -> list[dict]:
    """Per sampler, its best setting on the main slice and the step sizes at which that setting is stable for every
    seed.

    The best is the setting the verdicts rest on (:func:`verdict_settings`: the most seeds
    stable, then the lowest mean, over the search seeds; an AniLA form among its settings that
    clip), reported over all its seeds, so the table of best settings and the verdicts name
    the same settings. ``best`` is ``None`` when every seed of the sampler's settings on the main
    slice diverged.
    """
    key = quality_key(summary)
    rows = summarize(summary)
    budget, chains = main_slice(rows)
    chosen = _chosen(summary)
    best = []
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind and r["gradients"] == budget and r["chains"] == chains]
        if not mine:
            continue
        winner = chosen["main"].get(kind)
        rule = chosen["paper_rule"]
        if winner is None and rule is not None and any(setting_key(r) == setting_key(rule) for r in mine):
            winner = rule  # the paper's rule is this sampler's only setting here (the rings_paper study's AniLA)
        if winner is not None and key not in winner:  # no seed of any setting finished
            winner = None
        # the step sizes at which the best setting's b (leapfrogs, damping) is stable for every seed: pooling every b
        # would call a step size stable where only one threshold was
        steps = sorted(
            {
                r["step_size"]
                for r in mine
                if r["stable_share"] == 1 and (winner is None or same_setting_but_step(r, winner))
            }
        )
        best.append(
            {
                "kind": kind,
                "best": winner,
                "stable_step_sizes": steps,
                "all_step_sizes": sorted({r["step_size"] for r in mine}),
            }
        )
    return best


def same_setting_but_step(row: dict, other: dict) -> bool:
    """Whether two rows of :func:`summarize` differ at most in their step size (the same sampler, b, K, chains,
    leapfrogs and damping)."""
    return all(row.get(k) == other.get(k) for k in SETTING_FIELDS if k != "step_size")


#: the confidence of the paired intervals
CONFIDENCE = 0.95


def paired_cells(summary: dict, setting: dict, reference: dict) -> dict[int, dict]:
    """Seed → ``{"mine": cell, "ref": cell}`` for the seeds both ``setting`` and ``reference`` (rows of
    :func:`summarize`) ran: a seed is one pair."""
    by_seed: dict[int, dict] = {}
    for r in summary["cells"]:
        for name, row in (("mine", setting), ("ref", reference)):
            if setting_key(r) == setting_key(row):
                by_seed.setdefault(r["seed"], {})[name] = r
    return {seed: both for seed, both in by_seed.items() if len(both) == 2}


def paired_difference(summary: dict, setting: dict, reference: dict) -> dict:
    """The paired comparison of ``setting`` with ``reference`` (rows of :func:`summarize`) on the seeds both ran.

    A seed is one pair: the same initial chains, network initialisation and data order for
    both samplers. Over the pairs where both finished, the mean difference of the final
    quality (``setting`` − ``reference``; lower quality values are better) with its 95 %
    t-interval (``scipy.stats.t``, n − 1 degrees of freedom). Diverged seeds are counted on
    each side, not dropped silently. ``verdict``: ``"better"`` or ``"worse"`` when the interval
    excludes 0, ``"no difference detected"`` when it does not, ``"same chain"`` when every pair
    is equal (the setting ran the reference's chain: no comparison), ``None`` below 2 pairs.
    """
    from scipy import stats

    key = quality_key(summary)
    by_seed = paired_cells(summary, setting, reference)
    shared = sorted(by_seed)
    finished = [seed for seed in shared if all(not c["diverged"] and key in c["final"] for c in by_seed[seed].values())]
    diffs = [by_seed[seed]["mine"]["final"][key] - by_seed[seed]["ref"]["final"][key] for seed in finished]
    out = {
        "seeds": len(shared),
        "pairs": len(diffs),
        "metric": key,
        "diverged": sum(by_seed[seed]["mine"]["diverged"] for seed in shared),
        "reference_diverged": sum(by_seed[seed]["ref"]["diverged"] for seed in shared),
        "mean": None,
        "low": None,
        "high": None,
        "verdict": None,
    }
    if len(diffs) < 2:
        return out
    mean = statistics.fmean(diffs)
    sem = statistics.stdev(diffs) / math.sqrt(len(diffs))
    out["mean"] = mean
    if sem == 0:
        out["low"] = out["high"] = mean
        out["verdict"] = "same chain" if mean == 0 else ("better" if mean < 0 else "worse")
        return out
    low, high = stats.t.interval(CONFIDENCE, len(diffs) - 1, loc=mean, scale=sem)
    out["low"], out["high"] = float(low), float(high)
    out["verdict"] = "better" if high < 0 else "worse" if low > 0 else "no difference detected"
    return out


def verdict_text(paired: dict, digits: int = 3) -> str:
    """A paired comparison in the study's words: "better", "worse", or "no difference detected (95 % interval [a,
    b])"."""
    if paired["verdict"] is None:
        return f"too few paired seeds ({paired['pairs']})"
    if paired["verdict"] == "same chain":
        return "the reference's own chain (no comparison)"
    interval = f"{CONFIDENCE:.0%} interval [{paired['low']:+.{digits}f}, {paired['high']:+.{digits}f}]"
    interval = interval.replace("%", " %")
    return f"{paired['verdict']} ({interval})"


def search_seeds(summary: dict) -> list[int]:
    """The seeds every setting of the main slice ran (:func:`main_slice`): the search's seeds, not the verdict seeds
    that only the chosen settings get (all the seeds there are when the slice shares none)."""
    rows = summarize(summary)
    budget, chains = main_slice(rows)
    shared = set.intersection(*(set(r["seeds"]) for r in rows if r["gradients"] == budget and r["chains"] == chains))
    return sorted(shared or {r["seed"] for r in summary["cells"]})


def verdict_settings(summary: dict) -> list[dict]:
    """The settings (rows of :func:`summarize`, over all their seeds) the study's verdicts rest on: each sampler's best
    on the main slice, and on 2-D targets the paper rule's best.

    Best: the most seeds stable, then the lowest mean final quality, both over the search
    seeds only (:func:`search_seeds`), so the choice is the same before and after the
    verdict seeds ran (their extra seeds would otherwise change the means of the chosen
    settings alone). An AniLA form is taken among its settings that clip (a setting that clips
    almost nothing runs Langevin's chain: no comparison); the paper's rule (AniLA at ε = 1 on a
    2-D target) is a verdict of its own.
    """
    chosen = _chosen(summary)
    return list(chosen["main"].values()) + ([chosen["paper_rule"]] if chosen["paper_rule"] is not None else [])


def _chosen(summary: dict) -> dict:
    """``{"main": {kind: best row}, "paper_rule": best row or None}``, chosen as :func:`verdict_settings` says and
    returned over all their seeds."""
    key = quality_key(summary)
    seeds = set(search_seeds(summary))
    rows = summarize({**summary, "cells": [r for r in summary["cells"] if r["seed"] in seeds]})
    budget, chains = main_slice(rows)

    def best(candidates: list[dict]) -> dict | None:
        return min(candidates, key=lambda r: (-r["stable_share"], r.get(key, math.inf)), default=None)

    paper_rule = [r for r in rows if r["kind"] == "anila" and r["step_size"] == 1.0] if key == "grid_tv" else []
    everything = {setting_key(r): r for r in summarize(summary)}  # the chosen settings over all their seeds
    main = {}
    for kind in KINDS:
        mine = [
            r
            for r in rows
            if r["kind"] == kind and r["gradients"] == budget and r["chains"] == chains and r not in paper_rule
        ]
        if uses_b(kind):
            mine = [r for r in mine if (r["clipped_share"] or 0) > CLIPPING_SHARE] or mine
        if best(mine) is not None:
            main[kind] = everything[setting_key(best(mine))]
    top = best(paper_rule)
    return {"main": main, "paper_rule": None if top is None else everything[setting_key(top)]}


def verdict_cells(summary: dict, seeds: Sequence[int]) -> list[dict]:
    """The cells that give every verdict setting the ``seeds`` it does not have yet."""
    have = {cell_id(r) for r in summary["cells"]}
    out = []
    for row in verdict_settings(summary) if seeds else []:
        for seed in seeds:
            cell = {name: row.get(name) for name in SETTING_FIELDS} | {"seed": int(seed)}
            if cell_id(cell) not in have:
                out.append(cell)
    return out


#: the AniLA kinds whose small-step density differs from exp(−E) (unadjusted, the step map scales the drift)
TWO_DENSITY_KINDS = ("anila", "anila_sample", "anila_pixel")


#: a setting "clips" when more than this share of coordinates had |∇E| > b, averaged over training: below it
#: the chain is Langevin's but for rare steps (b = 30 on the rings clipped at most 0.08 %), so it is no
#: competitor; above it, it is another chain (the noise-only form at b = 3 clipped 7-9 %)
CLIPPING_SHARE = 0.01


def two_density_rows(rows: Sequence[dict]) -> list[dict]:
    """The settings (rows of :func:`summarize`) where exp(−E) and the sampler's small-step density differ and both were
    measured."""
    return [
        r
        for r in rows
        if r["kind"] in TWO_DENSITY_KINDS and r.get("grid_tv") is not None and r.get("sampler_grid_tv") is not None
    ]


def budget_curves(summary: dict, clock: str) -> list[tuple[dict, tuple[list[float], list[float]]]]:
    """Each verdict setting (:func:`verdict_settings`: an AniLA that clips, never Langevin's own chain) with its
    quality curve (mean over seeds) against ``clock``: ``cpu_s`` or ``gradients`` per chain."""
    key = quality_key(summary)
    out = []
    for row in verdict_settings(summary):
        entry = {"kind": row["kind"], "best": row}
        results = [r for r in summary["cells"] if setting_key(r) == setting_key(entry["best"]) and not r["diverged"]]
        rows = [[h for h in r["history"] if key in h and (clock == "gradients" or clock in h)] for r in results]
        n = min((len(h) for h in rows), default=0)
        if n == 0:
            continue  # cells written before CPU time was recorded
        per_iter = cell_gradients(results[0], summary["base"])
        at = (lambda h: h["iter"] * per_iter) if clock == "gradients" else (lambda h: h[clock])  # noqa: E731
        out.append(
            (
                entry,
                (
                    [statistics.fmean(at(h[i]) for h in rows) for i in range(n)],
                    [statistics.fmean(h[i][key] for h in rows) for i in range(n)],
                ),
            )
        )
    return out
