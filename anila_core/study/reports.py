"""The sampler study as markdown (sweep.md): how it ran, the best settings, the paired verdicts, every setting."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Sequence

from anila_core.study.grid import KINDS, number_text, uses_b
from anila_core.study.results import (
    CLIPPING_SHARE,
    CONFIDENCE,
    QUALITY_LABELS,
    UNSTABLE_TV,
    best_settings,
    budget_curves,
    main_slice,
    paired_difference,
    quality_key,
    search_seeds,
    summarize,
    two_density_rows,
    verdict_settings,
    verdict_text,
)
from anila_core.study.stability import MIN_SEEDS, stability_contrasts, stability_text

__all__ = ["markdown_report", "setting_table", "setting_text"]


def _fmt(value, digits: int = 3, sd=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.{digits}f}"
    return text + (f" ± {sd:.{digits}f}" if sd else "")


def _other_settings(row: dict) -> str:
    """A setting's value besides ε: AniLA's b, HMC's leapfrogs ``L=…``, pSGLD's damping ``λ=…``, or —."""
    if row.get("b") is not None:
        return number_text(row["b"])
    if row.get("leapfrog") is not None:
        return f"L={row['leapfrog']}"
    if row.get("damping") is not None:
        return f"λ={number_text(row['damping'])}"
    return "—"


def _steps_text(r: dict) -> str:
    """K of a setting as the tables print it: the transitions, times the leapfrog steps of each where there are several
    (HMC)."""
    return str(r["n_steps"]) if r["gradients"] == r["n_steps"] else f"{r['n_steps']}×{r['gradients'] // r['n_steps']}"


def setting_table(rows: Sequence[dict], images: bool = False, points: bool = False) -> str:
    """Rows of :func:`summarize` (seeds pooled per setting) as a markdown table."""
    if images:
        header = "| sampler | ε | b / L / λ | K | chains | seeds | diverged | FID | KID | coverage | clipped | wall s |"
    elif points:
        header = (
            "| sampler | ε | b / L / λ | K | chains | seeds | diverged | sliced Wasserstein | MMD | KDE grid TV "
            "| clipped | wall s |"
        )
    else:
        header = (
            "| sampler | ε | b / L / λ | K | chains | seeds | diverged | unstable | final TV | best TV | KL | "
            "MMD | its sampler's density: TV | clipped | wall s |"
        )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        n = len(r["seeds"])
        head = (
            f"| {r['kind']} | {number_text(r['step_size'])} | {_other_settings(r)} | {_steps_text(r)} | "
            f"{r['chains']} | {n} | {r['diverged']}/{n} |"
        )
        clipped = "—" if r["clipped_share"] is None else f"{100 * r['clipped_share']:.1f} %"
        if images:
            tail = (
                f" {_fmt(r.get('fid'), 3, r.get('fid_sd'))} | {_fmt(r.get('kid'), 4)} | "
                f"{_fmt(r.get('coverage'), 2)} | {clipped} | {r['wall_s']:.0f} |"
            )
        elif points:
            tail = (
                f" {_fmt(r.get('sliced_wasserstein'), 3, r.get('sliced_wasserstein_sd'))} | "
                f"{_fmt(r.get('mmd'), 4)} | {_fmt(r.get('kde_grid_tv'))} | {clipped} | {r['wall_s']:.0f} |"
            )
        else:
            unstable = round((1 - r["stable_share"]) * n)
            tail = (
                f" {unstable}/{n} | {_fmt(r.get('grid_tv'), 3, r.get('grid_tv_sd'))} | "
                f"{_fmt(r.get('best_grid_tv'))} | {_fmt(r.get('grid_kl'), 2)} | {_fmt(r.get('mmd'), 4)} | "
                f"{_fmt(r.get('sampler_grid_tv'))} | {clipped} | {r['wall_s']:.0f} |"
            )
        lines.append(head + tail)
    return "\n".join(lines)


def _load_text(summary: dict) -> str:
    """The machine's load while the cells ran, for the wall times beside them."""
    loads = [c["load_avg"] for c in summary["cells"] if c.get("load_avg") is not None]
    if not loads:
        return " Wall times: the machine's load was not recorded."
    return (
        f" Wall times were measured while the machine's one-minute load average stood at "
        f"{min(loads):.1f}–{max(loads):.1f} (at the cells' ends, {len(loads)} of {len(summary['cells'])} cells "
        f"recorded it)."
    )


def _cpu_text(summary: dict) -> str:
    """Where the cells ran: the CPUs their records name, with counts (a resumed study may have used several)."""
    machine = summary["machine"]
    written = (
        f"sweep.json written on {machine.get('cpus')} CPUs"
        f"{' (' + machine['processor'] + ')' if machine.get('processor') else ''}, torch {machine.get('torch')}"
    )
    cpus = Counter(c.get("cpu") or "not recorded" for c in summary["cells"])
    if set(cpus) == {"not recorded"}:
        return f"{written}; the cells did not record their CPU (a resumed study's may have run elsewhere)."
    return f"{written}; the cells ran on: " + ", ".join(f"{k} ({n})" for k, n in sorted(cpus.items())) + "."


def markdown_report(summary: dict) -> str:
    """The study as markdown: how it was run, the best setting per sampler, then every setting."""
    key = quality_key(summary)
    rows = summarize(summary)
    images, points = key == "fid", key == "sliced_wasserstein"
    base = summary["base"]
    features = sorted({r["fid_features"] for r in summary["cells"] if r.get("fid_features")})
    lines = [
        f"# Sampler sweep{': ' + summary['study'] if summary.get('study') else ''}",
        "",
        f"{len(summary['cells'])} training runs on **{base.get('dataset') or base['target']}**, {base['iters']} "
        f"iterations each (batch {base['batch_size']}, Adam {base['lr']:g}, {base['lr_schedule']} schedule); seeds "
        f"pooled per setting (mean ± sd over the seeds that finished). Date {summary.get('date')}, "
        f"{_cpu_text(summary)}{_load_text(summary)}",
        "",
        f"Command: `{summary.get('command') or 'python -m anila_core sweep ...'}`",
        "",
        "*Diverged*: the guard stopped the run (non-finite values or an exploding energy gap). "
        + (
            ""
            if images or points
            else f"*Unstable*: diverged, or final grid TV ≥ {UNSTABLE_TV} (the model lost the target). "
        ),
        "",
        *(
            [
                f"FID and KID on the features of {', '.join(features)}"
                + (
                    ""
                    if features == ["inception"]
                    else ", not Inception's: comparable between these runs, not with published FIDs"
                )
                + ".",
                "",
            ]
            if features
            else []
        ),
        *(
            ["Distances to the held-out points of the file, in the model's units; no density of the data is known.", ""]
            if points
            else []
        ),
        "## Best setting per sampler",
        "",
        "The setting each sampler's verdict rests on (chosen on the search seeds, as the verdicts below say), its "
        "mean ± sd over all its seeds.",
        "",
    ]
    best = best_settings(summary)
    metric = QUALITY_LABELS[key]
    # K and the chain kind distinguish settings that share ε and b (the study also varies them)
    lines += [
        f"| sampler | step size | b / L / λ | K | chains | final {metric} | stable step sizes (every seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in best:
        w = entry["best"]
        steps = ", ".join(number_text(s) for s in entry["stable_step_sizes"]) or "none"
        if w is None:
            lines.append(f"| {entry['kind']} | — | — | — | — | every seed diverged | {steps} |")
        else:
            lines.append(
                f"| {entry['kind']} | {number_text(w['step_size'])} | {_other_settings(w)} | {_steps_text(w)} "
                f"| {w['chains']} | {_fmt(w[key], 3, w.get(key + '_sd'))} | {steps} |"
            )
    lines += _verdict_section(summary, rows) + _stability_section(summary) + _tuning_section(summary, rows)
    if not images and not points:  # the rings' own sections: the paper's rule, the two densities, a fixed budget
        lines += _paper_rule_section(summary, rows, best) + _two_densities_section(rows, summary)
        lines += _budget_section(summary)
    lines += ["", "## Every setting", "", setting_table(rows, images, points)]
    return "\n".join(lines) + "\n"


def setting_text(row: dict) -> str:
    """A setting in one short phrase, e.g. ``ε=0.02, b=3, K=20, buffer`` (``L=10`` for HMC's leapfrogs, ``λ=0.1`` for
    pSGLD's damping)."""
    parts = [f"ε={number_text(row['step_size'])}"]
    others = (("b", "b"), ("leapfrog", "L"), ("damping", "λ"))
    parts += [f"{label}={number_text(row[k])}" for k, label in others if row.get(k) is not None]
    return ", ".join(parts + [f"K={row['n_steps']}", row["chains"]])


def _verdict_section(summary: dict, rows: list[dict]) -> list[str]:
    """Every setting's paired difference to Langevin at its best, verdict settings first, in the words of
    :func:`verdict_text`."""
    key = quality_key(summary)
    chosen = verdict_settings(summary)
    reference = next((r for r in chosen if r["kind"] == "langevin"), None)
    if reference is None:
        return []
    label = QUALITY_LABELS[key]
    lines = [
        "",
        "## Verdicts: paired differences to Langevin",
        "",
        f"Each setting against Langevin at its best ({setting_text(reference)}), seed by seed: a seed gives both "
        f"samplers the same initial chains, network initialisation and data order. Δ = the setting's final "
        f"{label} − Langevin's (lower is better), mean over the pairs where both finished, with its "
        f"{CONFIDENCE:.0%} t-interval over those pairs "
        "(scipy.stats.t). Diverged seeds are counted on each side. **Verdict settings** (each sampler's best: the "
        "most seeds stable, then the lowest mean; an AniLA among its settings that clip) come first. They were "
        f"chosen on the search seeds ({', '.join(map(str, search_seeds(summary)))}: those every setting of the main "
        "slice ran), so the choice does not change once a study with verdict seeds reruns them at more seeds; their "
        "comparisons here are over all their seeds.".replace("%", " %"),
        "",
        "| sampler | setting | verdict setting | seeds | diverged (it / Langevin) | clipped | "
        "Δ " + label + " | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ordered = [r for r in chosen if r is not reference] + [r for r in rows if r not in chosen]
    for r in ordered:
        paired = paired_difference(summary, r, reference)
        clipped = "—" if r["clipped_share"] is None else f"{100 * r['clipped_share']:.1f} %"
        delta = "—" if paired["mean"] is None else f"{paired['mean']:+.3f}"
        note = " (clips nothing: Langevin's chain at this ε)" if uses_b(r["kind"]) and r["clipped_share"] == 0 else ""
        lines.append(
            f"| {r['kind']} | {setting_text(r)} | {'yes' if r in chosen else ''} | {paired['seeds']} | "
            f"{paired['diverged']} / {paired['reference_diverged']} | {clipped} | {delta} | "
            f"{verdict_text(paired)}{note} |"
        )
    return lines


def _stability_section(summary: dict) -> list[str]:
    """Where a setting and Langevin at the same step size ran the verdict seeds and either lost the target: how often
    each trained stably (:mod:`anila_core.study.stability`)."""
    contrasts = stability_contrasts(summary)
    if not contrasts:
        return []
    lines = [
        "",
        "## Stability at the same step size",
        "",
        f"Where a setting and Langevin at the same ε, K and chains both ran {MIN_SEEDS} seeds or more and either "
        "lost the target: the seeds each trained stably (not diverged, "
        + ("" if quality_key(summary) != "grid_tv" else f"final grid TV < {UNSTABLE_TV}, ")
        + f"the same seeds for both), each share with its exact {CONFIDENCE:.0%} interval "
        "(Clopper–Pearson, scipy.stats.binomtest), compared by Fisher's exact test (two-sided, "
        "scipy.stats.fisher_exact).".replace("%", " %"),
        "",
        "| sampler | setting | Langevin at the same ε | seeds | stable (it) | stable (Langevin) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, ref, c in contrasts:
        lines.append(
            f"| {r['kind']} | {setting_text(r)} | {setting_text(ref)} | {c['seeds']} | {c['stable']} | "
            f"{c['reference_stable']} | {stability_text(c)} |"
        )
    return lines


def _tuning_section(summary: dict, rows: list[dict]) -> list[str]:
    """How much tuning each sampler got on the main slice, and whether its best setting sits at an edge of its grid."""
    budget, chains = main_slice(rows)
    key = quality_key(summary)
    lines = [
        "",
        "## Tuning effort",
        "",
        f"Settings each sampler got at {budget} gradients per chain and iteration on {chains} chains (seeds per "
        f"setting in "
        "the tables), and where its best setting sits: a best value at the edge of a searched axis means the "
        "search may have stopped short.",
        "",
        "| sampler | settings | step sizes | other axes | best setting | at an edge of |",
        "|---|---|---|---|---|---|",
    ]
    best = {e["kind"]: e["best"] for e in best_settings(summary)}
    for kind in KINDS:
        mine = [
            r
            for r in rows
            if r["kind"] == kind
            and r["gradients"] == budget
            and r["chains"] == chains
            and not (key == "grid_tv" and kind == "anila" and r["step_size"] == 1.0)
        ]
        if not mine:
            continue
        axes = {"ε": "step_size", "b": "b", "L": "leapfrog", "λ": "damping"}
        values = {label: sorted({r[k] for r in mine if r.get(k) is not None}) for label, k in axes.items()}
        other = "; ".join(
            f"{label} ∈ {{{', '.join(number_text(v) for v in vs)}}}"
            for label, vs in values.items()
            if vs and label != "ε"
        )
        winner = best.get(kind)
        edges = []
        if winner is not None:
            edges = [
                label
                for label, k in axes.items()
                if len(values[label]) > 1 and winner.get(k) in (values[label][0], values[label][-1])
            ]
        lines.append(
            f"| {kind} | {len(mine)} | {', '.join(number_text(v) for v in values['ε'])} | {other or '—'} | "
            f"{setting_text(winner) if winner else 'none: every seed diverged'} | {', '.join(edges) or '—'} "
            f"|"
        )
    return lines


def _paper_rule_section(summary: dict, rows: list[dict], best: list[dict]) -> list[str]:
    """The paper's own rule, AniLA at ε = 1 (γ = b / max(b, |∇E|)), against each sampler's best setting."""
    mine = [r for r in rows if r["kind"] == "anila" and r["step_size"] == 1.0]
    if not mine:
        return []
    stable = [r for r in mine if r["stable_share"] == 1 and "grid_tv" in r]
    # each sampler at its verdict setting: a clipping AniLA, not the b that runs Langevin's chain
    winners = {r["kind"]: r for r in verdict_settings(summary) if r not in mine}
    lines = [
        "",
        "## The paper's rule: AniLA at ε = 1",
        "",
        "γ = b / max(b, |∇E|) per coordinate, as the paper writes it: a full unit step where the energy is flat, "
        "a drift capped at b/2 where it is steep.",
    ]
    if stable:
        top = min(stable, key=lambda r: r["grid_tv"])
        lines.append(
            f"Its best cell: b = {number_text(top['b'])}, {top['chains']} chains, final grid TV "
            f"{_fmt(top['grid_tv'])} ({100 * (top['clipped_share'] or 0):.0f} % of coordinates clipped), "
            f"against "
            + ", ".join(f"{k} {_fmt(w['grid_tv'])}" for k, w in winners.items())
            + " at each sampler's verdict setting."
        )
    else:
        lines.append(f"No setting at ε = 1 trained stably for every seed ({len(mine)} settings).")
    return lines + ["", setting_table(mine)]


def _product_formula_lines(summary: dict) -> list[str]:
    """The measured error of the product formula on the study's target (:func:`product_formula_errors`), as markdown
    lines."""
    rows = summary.get("product_formula") or []
    if not rows:
        return []
    lines = [
        "",
        "For the `coordinate` norm (Algorithm 1's AniLA) its sampler's density is the product formula exp(−E)/∏ "
        "aᵢ, exact only for separable energies; the rings are not. Measured on the target itself: "
        f"{rows[0]['chains']} independent unadjusted AniLA chains from exact draws, {rows[0]['steps']} steps of ε "
        f"= {number_text(rows[0]['step_size'])}, histogram TV (40 × 40 bins) of where they end:",
        "",
        "| b | chains vs the formula | chains vs exp(−E) | noise floor | formula vs exp(−E) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {number_text(r['b'])} | {r['formula_tv']:.3f} | {r['energy_tv']:.3f} | {r['floor']:.3f} | "
            f"{r['densities_tv']:.3f} |"
        )
    return lines + [
        "",
        "The formula's error is the first column less the floor: read the 'its sampler's density' columns "
        "below with that error in mind.",
    ]


def _two_densities_section(rows: list[dict], summary: dict | None = None) -> list[str]:
    """Whether AniLA-trained energies are calibrated for their sampler (exp(−E)/a) rather than for exp(−E), with the
    numbers either way.

    Counted over the settings that trained stably for every seed: a model that lost the target
    is far from the data in both densities and says nothing about which one training fitted.
    """
    finished = two_density_rows(rows)
    if not finished:
        return []
    mine = [r for r in finished if r["stable_share"] == 1]
    lines = [
        "",
        "## Two densities: fitted for the sampler, or for exp(−E)?",
        "",
        "Algorithm 1 fits the energy through its sampler. At small step, unadjusted AniLA draws from exp(−E)/a, "
        "not exp(−E) (a: its step map), so a trained energy could match the data through its sampler while "
        "exp(−E) is off. Grid TV to the target of both densities, per AniLA setting (means over seeds), counted "
        "over the settings stable for every seed:",
        "",
    ]

    def mean(rs: list[dict], k: str) -> str:
        return _fmt(statistics.fmean(r[k] for r in rs))

    if mine:
        closer = [r for r in mine if r["sampler_grid_tv"] < r["grid_tv"] - 0.0005]  # closer at the printed precision
        lines.append(
            f"- its sampler's density is closer to the data than exp(−E) in **{len(closer)} of {len(mine)}** "
            f"stable settings (mean TV {mean(mine, 'sampler_grid_tv')} against {mean(mine, 'grid_tv')});"
        )
        clipping = [r for r in mine if (r["clipped_share"] or 0) > CLIPPING_SHARE]
        if clipping:
            closer_clipping = [r for r in clipping if r in closer]
            lines.append(
                f"- where AniLA clips more than {100 * CLIPPING_SHARE:.0f} % of coordinates: "
                f"**{len(closer_clipping)} of {len(clipping)}** (mean TV {mean(clipping, 'sampler_grid_tv')} "
                f"against {mean(clipping, 'grid_tv')});"
            )
        rest = [r for r in mine if r not in clipping]
        if rest:
            lines.append(
                f"- where it clips less: mean TV {mean(rest, 'sampler_grid_tv')} against "
                f"{mean(rest, 'grid_tv')} ({len(rest)} settings)."
            )
    else:
        lines.append("- no AniLA setting was stable for every seed.")
    lines += _product_formula_lines(summary or {})
    lines += [
        "",
        "The last two columns ask the chains themselves: the histogram TV (20 × 20 bins) of the samples the "
        "training chains hold at the end of the run against each density, so that which density was fitted rests "
        "on the chains too.",
        "",
        "| sampler | ε | b | K | chains | stable seeds | clipped | TV of exp(−E) | TV of its sampler's density | "
        "difference | chains vs exp(−E) | chains vs its sampler's density |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in finished:
        n = len(r["seeds"])
        lines.append(
            f"| {r['kind']} | {number_text(r['step_size'])} | {number_text(r['b'])} | {_steps_text(r)} | "
            f"{r['chains']} | {round(r['stable_share'] * n)}/{n} | {100 * (r['clipped_share'] or 0):.1f} % | "
            f"{_fmt(r['grid_tv'])} | {_fmt(r['sampler_grid_tv'])} | "
            f"{r['sampler_grid_tv'] - r['grid_tv']:+.3f} | {_fmt(r.get('chains_tv'))} | "
            f"{_fmt(r.get('chains_sampler_tv'))} |"
        )
    return lines


def _budget_section(summary: dict) -> list[str]:
    """Quality at a fixed compute budget: each sampler's best setting at the CPU time the cheapest of them needed for
    its whole run."""
    curves = budget_curves(summary, "cpu_s")
    if not curves:
        return []
    budget = min(clock[-1] for _, (clock, _) in curves)
    lines = [
        "",
        "## At a fixed compute budget",
        "",
        "A sampler that is stable at larger steps may need fewer of them, and a Metropolis test costs one more "
        "energy per step. "
        f"Each sampler's verdict setting (all at the same gradients per iteration), and its quality after "
        f"**{budget:.0f} s** of "
        "training CPU time (the run's process, all its threads), the whole run of the cheapest of them; "
        "`quality_vs_budget.png` draws the curves against CPU time and against gradient evaluations.",
        "",
        "| sampler | setting | gradients per iteration | CPU s, whole run | grid TV at the budget | final grid TV |",
        "|---|---|---|---|---|---|",
    ]
    for entry, (clock, value) in curves:
        w = entry["best"]
        within = [v for t, v in zip(clock, value) if t <= budget]
        b = "" if w["b"] is None else f", b={number_text(w['b'])}"
        lines.append(
            f"| {entry['kind']} | ε={number_text(w['step_size'])}{b} | {w['gradients']} | {clock[-1]:.0f} | "
            f"{_fmt(within[-1]) if within else '— (not evaluated yet)'} | {_fmt(value[-1])} |"
        )
    return lines
