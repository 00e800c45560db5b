"""The sampler study: a grid of training settings, each cell trained at the same budget over several seeds, in parallel and resumably, summarised as one JSON file, a markdown table and figures."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from anila_core.training.config import CHAIN_KINDS, TrainConfig, changed_settings, preset
from anila_core.fileio import LOCK_FILE, atomic_write_json, atomic_write_text, locked_folder
from anila_core.device import processor_name
from anila_core.processes import check_jobs, run_jobs, torch_threads
from anila_core.training.limits import check_memory

__all__ = [
    "KINDS",
    "Grid",
    "Study",
    "STUDIES",
    "cell_id",
    "run_sweep",
    "load_sweep",
    "summarize",
    "best_settings",
    "markdown_report",
    "setting_table",
    "plot_heatmaps",
    "plot_stability",
    "plot_quality_vs_budget",
    "plot_two_densities",
    "two_density_rows",
    "gradients_per_iteration",
    "plot_clipping",
    "plot_histories",
    "UNSTABLE_TV",
]

#: the samplers a sweep compares, by name: the sampler, its variant and whether it is Metropolis-adjusted
KINDS: dict[str, dict] = {
    "langevin": dict(sampler="langevin", metropolis=False),
    "mala": dict(sampler="langevin", metropolis=True),
    "anila": dict(sampler="anila", norm="coordinate", variant="full", metropolis=False),
    "anila_sample": dict(sampler="anila", norm="sample", variant="full", metropolis=False),
    "anila_pixel": dict(sampler="anila", norm="pixel", variant="full", metropolis=False),
    "anila_noise": dict(sampler="anila", norm="coordinate", variant="noise_only", metropolis=False),
    "anila_mh": dict(sampler="anila", norm="coordinate", variant="full", metropolis=True),
    "psgld": dict(sampler="psgld", metropolis=False),
    "hmc": dict(sampler="hmc", metropolis=False),  # always Metropolis-adjusted; its leapfrog count comes from the base config
}
KIND_HELP = {
    "langevin": "unadjusted Langevin",
    "mala": "Metropolis-adjusted Langevin",
    "anila": "AniLA, per-coordinate |∇E| (Algorithm 1)",
    "anila_sample": "AniLA, one |∇E| per sample (L2 norm)",
    "anila_pixel": "AniLA, |∇E| per pixel over channels (images)",
    "anila_noise": "AniLA noise-only variant (only the noise is scaled)",
    "anila_mh": "AniLA, Metropolis-adjusted",
    "psgld": "preconditioned SGLD",
    "hmc": "Hamiltonian Monte Carlo (hmc_leapfrog gradients per transition)",
}
#: a run whose final grid TV is at least this has lost the target (collapsed) even if nothing overflowed
UNSTABLE_TV = 0.5
#: settings a cell varies; everything else comes from the sweep's base configuration. ``leapfrog`` (HMC's
#: leapfrog steps per transition) and ``damping`` (pSGLD's λ) are ``None`` where the base's value holds.
CELL_FIELDS = ("kind", "step_size", "b", "n_steps", "chains", "seed", "leapfrog", "damping")


def uses_b(kind: str) -> bool:
    """Whether the sampler ``kind`` has AniLA's threshold ``b``."""
    return KINDS[kind]["sampler"] == "anila"


def uses_leapfrog(kind: str) -> bool:
    """Whether the sampler ``kind`` has a leapfrog count (HMC)."""
    return KINDS[kind]["sampler"] == "hmc"


def uses_damping(kind: str) -> bool:
    """Whether the sampler ``kind`` has pSGLD's damping λ."""
    return KINDS[kind]["sampler"] == "psgld"


def _number(x: float) -> str:
    return f"{x:g}"


def cell_id(cell: dict) -> str:
    """A file-name-safe name of one cell, e.g. ``anila-eps0.01-b3-K30-buffer-seed0`` (``-L10`` for HMC's leapfrog count, ``-lam0.1`` for pSGLD's damping when the cell sets them)."""
    b = f"-b{_number(cell['b'])}" if cell.get("b") is not None else ""
    leapfrog = f"-L{cell['leapfrog']}" if cell.get("leapfrog") is not None else ""
    damping = f"-lam{_number(cell['damping'])}" if cell.get("damping") is not None else ""
    return (f"{cell['kind']}-eps{_number(cell['step_size'])}{b}{leapfrog}{damping}-K{cell['n_steps']}-{cell['chains']}"
            f"-seed{cell['seed']}")


#: the fields of :func:`setting_key`, in its order
SETTING_FIELDS = ("kind", "step_size", "b", "n_steps", "chains", "leapfrog", "damping")


def setting_key(cell: dict) -> tuple:
    """A cell's settings without its seed: the seeds of one setting are grouped in the tables."""
    return tuple(cell.get(name) for name in SETTING_FIELDS)


@dataclass(frozen=True)
class Grid:
    """The product of the listed settings (any sequences; kept as tuples); ``b`` applies to the AniLA kinds only (the others get one cell per step size)."""

    kinds: tuple[str, ...] = ("langevin", "anila")
    step_sizes: tuple[float, ...] = (0.01,)
    bs: tuple[float, ...] = (1.0,)
    n_steps: tuple[int, ...] = (30,)
    chains: tuple[str, ...] = ("buffer",)
    seeds: tuple[int, ...] = (0,)
    leapfrogs: tuple = (None,)  # HMC only; None: the base's hmc_leapfrog
    dampings: tuple = (None,)  # pSGLD only; None: the base's psgld_damping

    def __post_init__(self):
        for name in ("kinds", "step_sizes", "bs", "n_steps", "chains", "seeds", "leapfrogs", "dampings"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values:
                raise ValueError(f"{name}: expected at least one value")
        for kind in self.kinds:
            if kind not in KINDS:
                raise ValueError(f"samplers: unknown name {kind!r}; expected some of {list(KINDS)}")
        for name, values, ok, expected in (
            ("step_size", self.step_sizes, lambda v: v > 0 and math.isfinite(v), "finite numbers > 0"),
            ("b", self.bs, lambda v: v > 0, "numbers > 0 (inf allowed)"),
            ("n_steps", self.n_steps, lambda v: isinstance(v, int) and v >= 1, "integers >= 1"),
            ("chains", self.chains, lambda v: v in CHAIN_KINDS, f"some of {list(CHAIN_KINDS)}"),
            ("seed", self.seeds, lambda v: isinstance(v, int) and v >= 0, "integers >= 0"),
            ("leapfrog", self.leapfrogs, lambda v: v is None or (isinstance(v, int) and v >= 1), "integers >= 1"),
            ("damping", self.dampings, lambda v: v is None or (v > 0 and math.isfinite(v)), "finite numbers > 0"),
        ):
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ValueError(f"{name}: expected {expected}, got {bad}")

    def cells(self) -> list[dict]:
        out = []
        for kind, eps, k, chains, seed in itertools.product(self.kinds, self.step_sizes, self.n_steps, self.chains, self.seeds):
            for b, leapfrog, damping in itertools.product(self.bs if uses_b(kind) else (None,),
                                                          self.leapfrogs if uses_leapfrog(kind) else (None,),
                                                          self.dampings if uses_damping(kind) else (None,)):
                out.append(dict(kind=kind, step_size=float(eps), b=None if b is None else float(b), n_steps=int(k),
                                chains=chains, seed=int(seed), leapfrog=None if leapfrog is None else int(leapfrog),
                                damping=None if damping is None else float(damping)))
        return out

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class Study:
    """A named sweep: a base preset (and overrides), the grids whose cells it runs, and the seeds its verdict cells get.

    ``verdict_seeds``: once the grids' cells are done, each sampler's best setting (see
    :func:`verdict_settings`) is run again at these seeds, so that the comparisons the course
    states rest on more seeds than the search that chose them. ``version`` names the design:
    a folder holding an older version's summary keeps it until the new one is complete, and
    reuses none of its cells.
    """

    description: str
    preset: str
    grids: tuple[Grid, ...]
    overrides: dict = dataclasses.field(default_factory=dict)
    verdict_seeds: tuple[int, ...] = ()
    version: int = 1
    product_formula_check: bool = False  # measure the coordinate norm's product formula on the target (2-D targets)

    def cells(self) -> list[dict]:
        seen, out = set(), []
        for grid in self.grids:
            for cell in grid.cells():
                if cell_id(cell) not in seen:
                    seen.add(cell_id(cell))
                    out.append(cell)
        return out


#: three seeds for every setting of a search; ten for the settings a verdict rests on
SEARCH_SEEDS = (0, 1, 2)
VERDICT_SEEDS = tuple(range(10))
#: the paper's thresholds at ε = 1 (its rule γ = b / max(b, |∇E|))
PAPER_BS = (0.01, 0.03, 0.1)
STUDIES: dict[str, Study] = {
    # The rings study (docs/study/rings). Equal tuning effort: every sampler gets 8 settings at
    # the same gradient budget (20 gradients per chain and iteration), 3 seeds each:
    #   Langevin and MALA: 8 step sizes, 0.002-0.1 (the last study's best, 0.01, was its grid's edge);
    #   AniLA and its noise-only form: 4 step sizes x b in {1, 3}, thresholds at which AniLA clips
    #   (at b = 30 it clipped nothing: Langevin's own chain, not a competitor);
    #   the sample-norm and Metropolis-adjusted forms: the same 4 step sizes at b = 3 only (4
    #   settings, trimmed to keep the study near 4 hours on 2 cores; the report's table says so);
    #   pSGLD: 4 step sizes x damping in {1e-5 (its usual value), 0.1} (with 1e-5 it diverged at
    #   small steps, where 1/(λ + sqrt V) is huge, and at large ones);
    #   HMC: 4 leapfrog steps x 5 or 10 leapfrogs per transition (K = 4 or 2, the same 20 gradients).
    # Then the paper's own rule (ε = 1, small b, buffer and short-run chains), short-run chains and
    # K = 10 for Langevin and AniLA. Then each sampler's best setting and the paper rule's best get
    # 7 more seeds (verdict_seeds). About 260 runs of 80-100 s of CPU time each: 6-7 hours of CPU time,
    # 3-3.5 h on 2 cores.
    "rings": Study(
        description="rings toy, 'sweep' preset (2000 iterations, 20 gradients per iteration and chain)",
        preset="sweep",
        grids=(
            Grid(kinds=("langevin", "mala"), step_sizes=(0.002, 0.003, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1), n_steps=(20,),
                 seeds=SEARCH_SEEDS),
            Grid(kinds=("anila", "anila_noise"), step_sizes=(0.005, 0.01, 0.02, 0.05), bs=(1.0, 3.0), n_steps=(20,),
                 seeds=SEARCH_SEEDS),
            Grid(kinds=("anila_sample", "anila_mh"), step_sizes=(0.005, 0.01, 0.02, 0.05), bs=(3.0,), n_steps=(20,),
                 seeds=SEARCH_SEEDS),
            Grid(kinds=("psgld",), step_sizes=(0.01, 0.03, 0.1, 0.3), dampings=(1e-5, 0.1), n_steps=(20,), seeds=SEARCH_SEEDS),
            Grid(kinds=("hmc",), step_sizes=(0.02, 0.05, 0.1, 0.2), leapfrogs=(5,), n_steps=(4,), seeds=SEARCH_SEEDS),
            Grid(kinds=("hmc",), step_sizes=(0.02, 0.05, 0.1, 0.2), leapfrogs=(10,), n_steps=(2,), seeds=SEARCH_SEEDS),
            Grid(kinds=("anila",), step_sizes=(1.0,), bs=PAPER_BS, n_steps=(20,), chains=("buffer", "short_run"), seeds=SEARCH_SEEDS),
            Grid(kinds=("langevin", "anila"), step_sizes=(0.02,), bs=(3.0,), n_steps=(20,), chains=("short_run",), seeds=SEARCH_SEEDS),
            Grid(kinds=("langevin", "anila"), step_sizes=(0.02,), bs=(3.0,), n_steps=(10,), seeds=SEARCH_SEEDS),
        ),
        verdict_seeds=VERDICT_SEEDS,
        version=2,
        product_formula_check=True,
    ),
    # The digits (docs/study/digits), the closest test of the paper's image recipe that can be run
    # here: short-run chains from uniform noise, cold noise (τ = 0.01), K = 40, AniLA in its full
    # form and in its noise-only form (only the noise scaled) with thresholds at the scale of
    # this energy's gradients (rms ≈ 0.08-0.11 per pixel: b = 0.1 shrinks about a third of the
    # steps, b = 0.03 most), against Langevin at the same τ, K and schedule, 5 seeds. Then the
    # persistent-buffer recipe the course uses, and 5 more seeds for each sampler's best setting.
    "digits": Study(
        description="digits 8×8, 'cpu' image preset shortened to 300 iterations",
        preset="cpu",
        overrides=dict(dataset="digits", iters=300, eval_every=100, fid_every=300, fid_samples=500),
        grids=(
            Grid(kinds=("langevin", "anila", "anila_noise"), step_sizes=(1.0, 3.0), bs=(0.03, 0.1), n_steps=(40,),
                 chains=("short_run",), seeds=(0, 1, 2, 3, 4)),
            Grid(kinds=("langevin", "anila"), step_sizes=(1.0,), bs=(0.1,), n_steps=(40,), chains=("buffer",), seeds=SEARCH_SEEDS),
        ),
        verdict_seeds=VERDICT_SEEDS,
        version=2,
    ),
    # The rings at the 'paper' preset as shipped (short-run chains from uniform noise, K = 100,
    # Adam 1e-4, 20 000 iterations): each sampler at its preset setting, 3 seeds (about 40 minutes
    # of CPU time per run).
    "rings_paper": Study(
        description="rings toy, 'paper' preset as shipped (20 000 iterations, K = 100, short-run chains)",
        preset="paper",
        grids=(
            Grid(kinds=("langevin",), step_sizes=(0.01,), n_steps=(100,), chains=("short_run",), seeds=SEARCH_SEEDS),
            Grid(kinds=("anila",), step_sizes=(1.0,), bs=(0.03,), n_steps=(100,), chains=("short_run",), seeds=SEARCH_SEEDS),
        ),
        version=2,
    ),
    # seconds: the tests and the notebook's live slice
    "smoke": Study(
        description="rings toy, 'smoke' preset: a check that everything runs, not a result",
        preset="smoke",
        grids=(Grid(kinds=("langevin", "anila"), step_sizes=(0.01, 0.05), bs=(3.0,), n_steps=(10,), seeds=(0,)),),
    ),
}


# --------------------------------------------------------------------------- running


def cell_config(base: TrainConfig, cell: dict) -> TrainConfig:
    """The training configuration of one cell: the base with the cell's sampler, step size, b, K, chains and seed."""
    kind = KINDS[cell["kind"]]
    changes = dict(kind, step_size=cell["step_size"], n_steps=cell["n_steps"], chains=cell["chains"], seed=cell["seed"])
    for field, setting in (("b", "b"), ("leapfrog", "hmc_leapfrog"), ("damping", "psgld_damping")):
        if cell.get(field) is not None:
            changes[setting] = cell[field]
    return base.replace(**changes).validate()


#: an evaluation row's measures of quality (2-D targets: the first five, the last two of them for the
#: density the sampler draws from the energy at small step; images: FID, KID, coverage; points of a file:
#: sliced Wasserstein, MMD and, in 2-D, the KDE grid TV)
QUALITY_FIELDS = ("grid_tv", "grid_kl", "mmd", "sampler_grid_tv", "sampler_grid_kl", "fid", "kid", "coverage", "sliced_wasserstein",
                  "kde_grid_tv", "chains_tv", "chains_sampler_tv")
#: how tables and figures name the metric a sweep ranks by
QUALITY_LABELS = {"grid_tv": "grid TV", "fid": "FID", "sliced_wasserstein": "sliced Wasserstein"}
#: what a cell keeps of each evaluation row
HISTORY_FIELDS = ("iter", "wall_s", "cpu_s", *QUALITY_FIELDS, "energy_gap", "clipped_share", "acceptance")


def gradients_per_iteration(config: TrainConfig) -> int:
    """Gradient evaluations per chain and iteration: K transitions, each ``hmc_leapfrog`` of them for HMC (the budget cells are compared at)."""
    return config.n_steps * (config.hmc_leapfrog if config.sampler == "hmc" else 1)


def _fields(row: dict, names: Sequence[str]) -> dict:
    return {k: row[k] for k in names if row.get(k) is not None}


def run_cell(base: TrainConfig, cell: dict) -> dict:
    """Train one cell in memory and return its result (a divergence is a result, not an error)."""
    from anila_core.failures import is_out_of_memory
    from anila_core.training.guard import TrainingDiverged
    from anila_core.training.limits import out_of_memory
    from anila_core.training.trainer import Trainer

    config = cell_config(base, cell)
    start = time.perf_counter()
    try:
        trainer = Trainer(config, progress=False)
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise out_of_memory(err, config, f"building sweep cell {cell_id(cell)}") from None
    cpu_start = time.process_time()

    def cpu_time(trainer, row):
        # the process's CPU time: unlike wall time, it does not grow when other jobs share the cores
        row["cpu_s"] = round(time.process_time() - cpu_start, 3)

    diverged = None
    try:
        trainer.run(callback=cpu_time)
    except TrainingDiverged as err:
        diverged = {"iter": trainer.iteration, "cause": err.cause or str(err)}
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise out_of_memory(err, config, f"in sweep cell {cell_id(cell)}") from None
    history = [_fields(r, HISTORY_FIELDS) for r in trainer.history]
    result = {"id": cell_id(cell), **{k: cell.get(k) for k in CELL_FIELDS}, "diverged": diverged is not None,
              "diverged_at": diverged and diverged["iter"], "cause": diverged and diverged["cause"],
              "iters": trainer.iteration, "wall_s": round(time.perf_counter() - start, 2), "load_avg": _load_average(),
              "gradients_per_iter": gradients_per_iteration(config), "history": history}
    final = {} if diverged or not trainer.history else _fields(trainer.history[-1], QUALITY_FIELDS)
    result["final"] = final
    clipped = [r["clipped_share"] for r in trainer.history if "clipped_share" in r]
    result["clipped_share"] = sum(clipped) / len(clipped) if clipped else None
    result["energy_gap"] = trainer.history[-1]["energy_gap"] if trainer.history else None
    if not config.is_image and not config.is_points and trainer.history and not diverged:
        result["best_grid_tv"] = min(r["grid_tv"] for r in trainer.history)
    scored = [r for r in trainer.history if r.get("fid_features")]
    if scored:  # a folder of your own: which features its FID/KID are on (Inception's only where its weights are)
        result["fid_features"] = scored[-1]["fid_features"]
    return result


def _cell_worker(job: tuple) -> dict:
    base_dict, cell, path, threads, version = job
    with torch_threads(threads):
        result = {**run_cell(TrainConfig.from_dict(base_dict), cell), "version": version}
    atomic_write_json(path, result)  # written by the worker: a finished cell survives an interrupted sweep
    return result


def _plan(base: TrainConfig, cells: list[dict], study: str | None, version: int) -> dict:
    return {"study": study, "version": version, "base": base.to_dict(), "cells": [cell_id(c) for c in cells]}


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": processor_name(), "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _load_average() -> float | None:
    """The machine's one-minute load average as a cell ends: wall times mean little without it (None where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


#: a cell's measures that are shares (total variation, coverage), and those that are >= 0 (a KL, a distance)
_SHARES = ("grid_tv", "sampler_grid_tv", "kde_grid_tv", "chains_tv", "chains_sampler_tv", "coverage", "best_grid_tv", "clipped_share")
_NON_NEGATIVE = ("grid_kl", "sampler_grid_kl", "fid", "sliced_wasserstein", "wall_s", "iters")


def check_cell_result(r, where: str, again: str) -> None:
    """``ValueError`` naming ``where`` (a cell file, or sweep.json's cell) unless ``r`` is a cell result as :func:`run_cell` writes it."""
    def refuse(what: str):
        raise ValueError(f"{where}: {what}; expected a cell result as a sweep writes it ({again})")

    if not isinstance(r, dict):
        refuse(f"holds a JSON {type(r).__name__}, not an object")
    missing = [k for k in ("id", "kind", "step_size", "n_steps", "chains", "seed", "diverged", "final", "history") if k not in r]
    if missing:
        refuse(f"lacks {', '.join(missing)}")
    if not isinstance(r["id"], str) or not isinstance(r["final"], dict) or not isinstance(r["history"], list) \
            or not all(isinstance(row, dict) for row in r["history"]):
        refuse("its id is not a string, its final not an object or its history not a list of objects")
    if not isinstance(r["diverged"], bool):
        refuse(f"diverged: {r['diverged']!r} is not true or false")
    for key, value in [*r["final"].items(), *((k, r.get(k)) for k in ("best_grid_tv", "clipped_share", "wall_s", "iters"))]:
        if value is None or key not in _SHARES + _NON_NEGATIVE + ("mmd", "kid", "energy_gap"):
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            refuse(f"{key}: {value!r} is not a finite number")
        if key in _SHARES and not 0 <= value <= 1:
            refuse(f"{key}: {value!r} is outside [0, 1]")
        if key in _NON_NEGATIVE and value < 0:
            refuse(f"{key}: {value!r} is negative")


def _read_sweep_file(path: Path, expected: str, again: str):
    """A sweep file's JSON, or one ``ValueError`` naming it and what is wrong."""
    from anila_core.fileio import read_json_file

    try:
        return read_json_file(path, expected)
    except ValueError as err:
        raise ValueError(f"{err} ({again})") from None


def _known_results(out: Path, version: int = 1) -> dict[str, dict]:
    """Finished cells in ``out`` of the design ``version``: one file per cell, and the cells of a summary already written there; a damaged one is named."""
    known = {}
    summary = out / "sweep.json"
    if summary.exists():
        again = f"delete {summary}: a rerun of the sweep writes it again from the cell files"
        data = _read_sweep_file(summary, "the sweep.json a sweep wrote", again)
        if not isinstance(data, dict) or not isinstance(data.get("cells", []), list):
            raise ValueError(f"{summary}: is not an object with a list of cells; expected the sweep.json a sweep wrote ({again})")
        if data.get("version", 1) == version:  # an older design's cells are not this one's, even where their names agree
            for i, r in enumerate(data.get("cells", [])):
                check_cell_result(r, f"{summary}: cell {i}", again)
                known[r["id"]] = r
    for path in sorted((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []:
        again = f"delete {path}: a rerun of the sweep computes that cell again"
        r = _read_sweep_file(path, "a cell result a sweep wrote", again)
        check_cell_result(r, str(path), again)
        if r["id"] != path.stem:
            raise ValueError(f"{path}: holds the result of cell {r['id']!r}; expected that of {path.stem!r} ({again})")
        if r.get("version", 1) == version:
            known[r["id"]] = r
    return known


def run_sweep(out: str | Path, cells: Sequence[dict], base: TrainConfig, jobs: int | None = None, progress: bool = True,
              study: str | None = None, command: str | None = None, verdict_seeds: Sequence[int] = (), version: int = 1,
              product_formula_check: bool = False) -> dict:
    """Run every cell not yet finished in ``out`` and write ``sweep.json``, ``sweep.md`` and the figures; return the summary.

    Cells run in ``jobs`` processes (default: one per CPU core, one thread each). Each
    finished cell is written at once to ``out/cells/<id>.json``, so running the same sweep
    again (after a crash, or to add cells) never recomputes a finished one. A folder that
    holds a sweep with another base configuration is refused, and so is a folder another
    sweep is writing (``out/.lock``); the worker processes end when this process ends.

    ``verdict_seeds``: when every listed cell is done, the settings of :func:`verdict_settings`
    run again at these seeds (the paired comparisons rest on them). ``version``: the design's
    number; cells written by another version are not reused. ``product_formula_check``: on a
    2-D target, also measure the error of AniLA's product formula on the target itself
    (:func:`product_formula_errors`), which the two-densities section prints.
    """
    out = Path(out)
    base = base.validate()
    cells = list(cells)
    check_jobs(jobs)  # before anything is written: at least one, at most what the cores can use
    if not cells:
        raise ValueError("cells: the sweep has no cells")
    ids = [cell_id(c) for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("cells: the same cell is listed twice")
    for c in cells:  # arithmetic on each cell's settings: an absurd size is refused before anything is written
        check_memory(cell_config(base, c))
    # one sweep writes a folder at a time (its workers end with it); a refused folder is left as it was
    checked_bs = sorted({c["b"] for c in cells if c["kind"] == "anila" and c["b"]}) \
        if product_formula_check and not base.is_image and not base.is_points else []
    with locked_folder(out, check=lambda: _check_folder(out, base)) as lock:
        summary = _run_sweep(out, cells, base, jobs, progress, study, command, version, checked_bs, verify=lock.verify)
        extra = verdict_cells(summary, verdict_seeds)
        if extra:
            summary = _run_sweep(out, cells + extra, base, jobs, progress, study, command, version, checked_bs, verify=lock.verify)
        return summary


def _check_folder(out: Path, base: TrainConfig) -> None:
    """Refuse ``out`` when it holds files that are not a sweep, or a sweep with another base configuration."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = _plan_file(plan_path)
        try:  # a setting added to TrainConfig since then takes its default: the same runs
            old_base = TrainConfig.from_dict(old["base"]).to_dict()
        except (ValueError, TypeError) as err:
            raise ValueError(f"{plan_path}: written by another version of anila_core ({err})") from None
        changed = sorted(changed_settings(old_base, base.to_dict(), ignore=()))
        if changed:
            raise ValueError(f"out: {out} holds a sweep with other base settings ({', '.join(changed)}); "
                             "choose another folder or run that sweep's own command")
    elif any(p.name != LOCK_FILE for p in out.iterdir()):
        raise ValueError(f"out: {out} already holds files that are not a sweep; choose another folder")


def _plan_file(path: Path) -> dict:
    """A sweep's plan.json, checked: an object with its base settings (an object) and its cells (a list of ids)."""
    plan = _read_sweep_file(path, "the plan.json a sweep wrote", "the sweep's own files are not edited by hand")
    if not isinstance(plan, dict) or not isinstance(plan.get("base"), dict) or not isinstance(plan.get("cells"), list) \
            or not all(isinstance(c, str) for c in plan["cells"]):
        raise ValueError(f"{path}: is not an object with 'base' (an object of settings) and 'cells' (a list of cell ids); "
                         "expected the plan.json a sweep wrote")
    return plan


def _run_sweep(out: Path, cells: list[dict], base: TrainConfig, jobs: int | None, progress: bool, study: str | None,
               command: str | None, version: int = 1, product_formula_bs: Sequence[float] = (), verify=lambda: None) -> dict:
    """:func:`run_sweep` in its locked, checked folder."""
    from tqdm.auto import tqdm

    plan = _plan(base, cells, study, version)
    plan_path = out / "plan.json"
    if plan_path.exists():  # the same base (checked): the cells of both plans, when both are of this design
        old = _plan_file(plan_path)
        if old.get("version", 1) == version:
            plan["cells"] = list(dict.fromkeys(old["cells"] + plan["cells"]))
    (out / "cells").mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_path, plan)

    known = _known_results(out, version)
    todo = [c for c in cells if cell_id(c) not in known]
    # the costliest cells first, so that the last ones to finish are short
    todo.sort(key=lambda c: -(c["n_steps"] + 2))
    cores = os.cpu_count() or 1
    jobs = jobs or cores
    threads = max(1, cores // jobs)
    work = [(base.to_dict(), c, out / "cells" / f"{cell_id(c)}.json", threads, version) for c in todo]
    if todo:
        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep cells", disable=not progress)
        try:
            if jobs == 1 or len(work) == 1:
                for w in work:
                    known[cell_id(w[1])] = _cell_worker(w)
                    bar.update(1)
            else:
                # a worker that dies is reported by its cell once the others finish (WorkersLost); a rerun computes it
                for _, r in run_jobs(_cell_worker, work, min(jobs, len(work)), [f"cell {cell_id(w[1])}" for w in work],
                                     rerun="run the same sweep command again: finished cells are kept, the lost ones run again"):
                    known[r["id"]] = r
                    bar.update(1)
        finally:
            bar.close()
    results = [known[i] for i in plan["cells"] if i in known]
    summary = {
        "study": study,
        "version": version,
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": _machine(),
        "base": base.to_dict(),
        "unstable_tv": UNSTABLE_TV,
        "cells": results,
    }
    if product_formula_bs:  # measured once per design (a minute), then kept in sweep.json across reruns
        summary["product_formula"] = _product_formula_of_version(out, version) or product_formula_errors(base, product_formula_bs)
    verify()  # the folder's lock is still this sweep's (not deleted or replaced meanwhile): LockLost otherwise
    atomic_write_json(out / "sweep.json", summary)
    write_report(summary, out)
    return summary


def _product_formula_of_version(out: Path, version: int) -> list[dict] | None:
    """The product formula's measured errors in ``out``'s sweep.json when it was written by this design ``version``, else None."""
    path = out / "sweep.json"
    if not path.exists():
        return None
    written = _read_sweep_file(path, "the sweep.json a sweep wrote", f"delete {path}: a rerun writes it again")
    return written.get("product_formula") if isinstance(written, dict) and written.get("version", 1) == version else None


def product_formula_errors(base: TrainConfig, bs: Sequence[float], chains: int = 20_000, steps: int = 3000,
                           step_size: float = 0.01) -> list[dict]:
    """The error of the coordinate norm's small-step density exp(−E)/∏ aᵢ on the base's 2-D target, one row per threshold ``b``.

    The formula is exact for separable energies only, and the targets (the rings) are not:
    independent unadjusted AniLA chains start at exact target draws and run ``steps`` steps
    of ``step_size`` (a minute on one core for the defaults), and their histogram is compared
    with the formula and with exp(−E) (:func:`~anila_core.sampling.small_step.check_small_step_density`).
    """
    import torch

    from anila_core.sampling.samplers import AniLA
    from anila_core.sampling.small_step import check_small_step_density
    from anila_core.sampling.targets import make_target

    target = make_target(base.target)
    rows = []
    for b in bs:
        generator = torch.Generator().manual_seed(0)
        check = check_small_step_density(AniLA(step_size, b=b, norm="coordinate"), target.energy, target.sample(chains, generator),
                                         steps, generator=generator)
        rows.append({"b": b, **dataclasses.asdict(check)})
    return rows


def load_sweep(path: str | Path) -> dict:
    """A sweep's ``sweep.json`` (give the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no sweep results here; run `python -m anila_core sweep ... --out {path.parent}` first")
    again = f"run the sweep's command again with --out {path.parent} to write it from its cell files"
    summary = _read_sweep_file(path, "the sweep.json a sweep wrote", again)
    if not isinstance(summary, dict) or not isinstance(summary.get("cells"), list) or not isinstance(summary.get("base"), dict):
        raise ValueError(f"{path}: is not an object with 'base' and 'cells'; expected the sweep.json a sweep wrote ({again})")
    for i, r in enumerate(summary["cells"]):
        check_cell_result(r, f"{path}: cell {i}", again)
    return summary


# --------------------------------------------------------------------------- summaries


def quality_key(summary: dict) -> str:
    """The metric a sweep ranks by: grid TV on 2-D targets, FID on images, sliced Wasserstein on points of a file (lower is better for all)."""
    dataset = summary["base"].get("dataset") or ""
    if dataset.startswith("points:"):
        return "sliced_wasserstein"
    return "fid" if dataset else "grid_tv"


def _stable(result: dict, key: str) -> bool:
    if result["diverged"]:
        return False
    return key != "grid_tv" or result["final"].get("grid_tv", 1.0) < UNSTABLE_TV


def summarize(summary: dict) -> list[dict]:
    """One row per setting (seeds pooled): means and spreads of the final metrics, diverged and unstable shares, wall time."""
    key = quality_key(summary)
    groups: dict[tuple, list[dict]] = {}
    for r in summary["cells"]:
        groups.setdefault(setting_key(r), []).append(r)
    rows = []
    for setting, results in groups.items():
        row = dict(zip(SETTING_FIELDS, setting))
        row["gradients"] = _gradients(results[0], summary["base"])
        finished = [r for r in results if not r["diverged"]]
        row["seeds"] = sorted(r["seed"] for r in results)
        row["diverged"] = sum(r["diverged"] for r in results)
        row["stable_share"] = sum(_stable(r, key) for r in results) / len(results)
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


def _gradients(cell: dict, base: dict) -> int:
    """Gradient evaluations per chain and iteration of a cell (cells written before it was recorded: from K and the sampler)."""
    if cell.get("gradients_per_iter") is not None:
        return cell["gradients_per_iter"]
    return cell["n_steps"] * (base.get("hmc_leapfrog", 1) if cell["kind"] == "hmc" else 1)


def main_slice(rows: list[dict]) -> tuple[int, str]:
    """The gradient budget per iteration and chain kind most settings share: the heatmaps, the stability plot and the best settings are taken there.

    A budget, not K: HMC's K = 4 transitions of 5 leapfrog steps cost what K = 20 Langevin steps cost.
    """
    counts: dict[tuple, int] = {}
    for r in rows:
        counts[(r["gradients"], r["chains"])] = counts.get((r["gradients"], r["chains"]), 0) + 1
    return max(counts, key=counts.get)


def best_settings(summary: dict) -> list[dict]:
    """Per sampler, its best setting (lowest mean final quality among settings stable for every seed) and its stable step sizes."""
    key = quality_key(summary)
    rows = summarize(summary)
    budget, chains = main_slice(rows)
    best = []
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind and r["gradients"] == budget and r["chains"] == chains]
        if not mine:
            continue
        stable = [r for r in mine if r["stable_share"] == 1 and key in r]
        winner = min(stable, key=lambda r: r[key]) if stable else None
        # the step sizes at which the best setting's b (leapfrogs, damping) is stable for every seed: pooling every b
        # would call a step size stable where only one threshold was
        steps = sorted({r["step_size"] for r in mine if r["stable_share"] == 1 and (winner is None or same_setting_but_step(r, winner))})
        best.append({"kind": kind, "best": winner, "stable_step_sizes": steps,
                     "all_step_sizes": sorted({r["step_size"] for r in mine})})
    return best


def same_setting_but_step(row: dict, other: dict) -> bool:
    """Whether two rows of :func:`summarize` differ at most in their step size (the same sampler, b, K, chains, leapfrogs and damping)."""
    return all(row.get(k) == other.get(k) for k in SETTING_FIELDS if k != "step_size")


#: the confidence of the paired intervals
CONFIDENCE = 0.95


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
    by_seed = {}
    for r in summary["cells"]:
        for name, row in (("mine", setting), ("ref", reference)):
            if setting_key(r) == setting_key(row):
                by_seed.setdefault(r["seed"], {})[name] = r
    shared = sorted(seed for seed, both in by_seed.items() if len(both) == 2)
    finished = [seed for seed in shared if all(not c["diverged"] and key in c["final"] for c in by_seed[seed].values())]
    diffs = [by_seed[seed]["mine"]["final"][key] - by_seed[seed]["ref"]["final"][key] for seed in finished]
    out = {"seeds": len(shared), "pairs": len(diffs), "metric": key,
           "diverged": sum(by_seed[seed]["mine"]["diverged"] for seed in shared),
           "reference_diverged": sum(by_seed[seed]["ref"]["diverged"] for seed in shared),
           "mean": None, "low": None, "high": None, "verdict": None}
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
    """A paired comparison in the study's words: "better", "worse", or "no difference detected (95 % interval [a, b])"."""
    if paired["verdict"] is None:
        return f"too few paired seeds ({paired['pairs']})"
    if paired["verdict"] == "same chain":
        return "the reference's own chain (no comparison)"
    interval = f"{CONFIDENCE:.0%} interval [{paired['low']:+.{digits}f}, {paired['high']:+.{digits}f}]".replace("%", " %")
    return f"{paired['verdict']} ({interval})"


def verdict_settings(summary: dict) -> list[dict]:
    """The settings (rows of :func:`summarize`) the study's verdicts rest on: each sampler's best on the main slice, and on 2-D targets the paper rule's best.

    Best: the most seeds stable, then the lowest mean final quality. An AniLA form is taken
    among its settings that clip (a setting that clips almost nothing runs Langevin's chain:
    no comparison); the paper's rule (AniLA at ε = 1 on a 2-D target) is a verdict of its own.
    """
    key = quality_key(summary)
    rows = summarize(summary)
    budget, chains = main_slice(rows)

    def best(candidates: list[dict]) -> dict | None:
        return min(candidates, key=lambda r: (-r["stable_share"], r.get(key, math.inf)), default=None)

    paper_rule = [r for r in rows if r["kind"] == "anila" and r["step_size"] == 1.0] if key == "grid_tv" else []
    chosen = []
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind and r["gradients"] == budget and r["chains"] == chains and r not in paper_rule]
        if uses_b(kind):
            mine = [r for r in mine if (r["clipped_share"] or 0) > CLIPPING_SHARE] or mine
        if best(mine) is not None:
            chosen.append(best(mine))
    if best(paper_rule) is not None:
        chosen.append(best(paper_rule))
    return chosen


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


def _fmt(value, digits: int = 3, sd=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:.{digits}f}"
    return text + (f" ± {sd:.{digits}f}" if sd else "")


def _other_settings(row: dict) -> str:
    """A setting's value besides ε: AniLA's b, HMC's leapfrogs ``L=…``, pSGLD's damping ``λ=…``, or —."""
    if row.get("b") is not None:
        return _number(row["b"])
    if row.get("leapfrog") is not None:
        return f"L={row['leapfrog']}"
    if row.get("damping") is not None:
        return f"λ={_number(row['damping'])}"
    return "—"


def _steps_text(r: dict) -> str:
    """K of a setting as the tables print it: the transitions, times the leapfrog steps of each where there are several (HMC)."""
    return str(r["n_steps"]) if r["gradients"] == r["n_steps"] else f"{r['n_steps']}×{r['gradients'] // r['n_steps']}"


def setting_table(rows: Sequence[dict], images: bool = False, points: bool = False) -> str:
    """Rows of :func:`summarize` (seeds pooled per setting) as a markdown table."""
    if images:
        header = "| sampler | ε | b / L / λ | K | chains | seeds | diverged | FID | KID | coverage | clipped | wall s |"
    elif points:
        header = "| sampler | ε | b / L / λ | K | chains | seeds | diverged | sliced Wasserstein | MMD | KDE grid TV | clipped | wall s |"
    else:
        header = ("| sampler | ε | b / L / λ | K | chains | seeds | diverged | unstable | final TV | best TV | KL | MMD | its sampler's density: TV "
                  "| clipped | wall s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        n = len(r["seeds"])
        head = (f"| {r['kind']} | {_number(r['step_size'])} | {_other_settings(r)} | {_steps_text(r)} | "
                f"{r['chains']} | {n} | {r['diverged']}/{n} |")
        clipped = "—" if r["clipped_share"] is None else f"{100 * r['clipped_share']:.1f} %"
        if images:
            tail = (f" {_fmt(r.get('fid'), 3, r.get('fid_sd'))} | {_fmt(r.get('kid'), 4)} | {_fmt(r.get('coverage'), 2)} | "
                    f"{clipped} | {r['wall_s']:.0f} |")
        elif points:
            tail = (f" {_fmt(r.get('sliced_wasserstein'), 3, r.get('sliced_wasserstein_sd'))} | {_fmt(r.get('mmd'), 4)} | "
                    f"{_fmt(r.get('kde_grid_tv'))} | {clipped} | {r['wall_s']:.0f} |")
        else:
            unstable = round((1 - r["stable_share"]) * n)
            tail = (f" {unstable}/{n} | {_fmt(r.get('grid_tv'), 3, r.get('grid_tv_sd'))} | {_fmt(r.get('best_grid_tv'))} | "
                    f"{_fmt(r.get('grid_kl'), 2)} | {_fmt(r.get('mmd'), 4)} | {_fmt(r.get('sampler_grid_tv'))} | {clipped} | {r['wall_s']:.0f} |")
        lines.append(head + tail)
    return "\n".join(lines)


def _load_text(summary: dict) -> str:
    """The machine's load while the cells ran, for the wall times beside them."""
    loads = [c["load_avg"] for c in summary["cells"] if c.get("load_avg") is not None]
    if not loads:
        return " Wall times: the machine's load was not recorded."
    return (f" Wall times were measured while the machine's one-minute load average stood at {min(loads):.1f}–{max(loads):.1f} "
            f"(at the cells' ends, {len(loads)} of {len(summary['cells'])} cells recorded it).")


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
        f"{len(summary['cells'])} training runs on **{base.get('dataset') or base['target']}**, {base['iters']} iterations each "
        f"(batch {base['batch_size']}, Adam {base['lr']:g}, {base['lr_schedule']} schedule); seeds pooled per setting "
        f"(mean ± sd over the seeds that finished). Date {summary.get('date')}, {summary['machine'].get('cpus')} CPUs"
        f"{' (' + summary['machine']['processor'] + ')' if summary['machine'].get('processor') else ''}, "
        f"torch {summary['machine'].get('torch')}.{_load_text(summary)}",
        "",
        f"Command: `{summary.get('command') or 'python -m anila_core sweep ...'}`",
        "",
        "*Diverged*: the guard stopped the run (non-finite values or an exploding energy gap). "
        + ("" if images or points else f"*Unstable*: diverged, or final grid TV ≥ {UNSTABLE_TV} (the model lost the target). "),
        "",
        *([f"FID and KID on the features of {', '.join(features)}" + ("" if features == ["inception"] else ", not Inception's: "
           "comparable between these runs, not with published FIDs") + ".", ""] if features else []),
        *(["Distances to the held-out points of the file, in the model's units; no density of the data is known.", ""] if points else []),
        "## Best setting per sampler",
        "",
    ]
    best = best_settings(summary)
    metric = QUALITY_LABELS[key]
    # K and the chain kind distinguish settings that share ε and b (the study also varies them)
    lines += [f"| sampler | step size | b / L / λ | K | chains | final {metric} | stable step sizes (every seed) |",
              "|---|---|---|---|---|---|---|"]
    for entry in best:
        w = entry["best"]
        steps = ", ".join(_number(s) for s in entry["stable_step_sizes"]) or "none"
        if w is None:
            lines.append(f"| {entry['kind']} | — | — | — | — | no setting stable for every seed | {steps} |")
        else:
            lines.append(f"| {entry['kind']} | {_number(w['step_size'])} | {_other_settings(w)} | "
                         f"{_steps_text(w)} | {w['chains']} | {_fmt(w[key], 3, w.get(key + '_sd'))} | {steps} |")
    lines += _verdict_section(summary, rows) + _tuning_section(summary, rows)
    if not images and not points:  # the rings' own sections: the paper's rule, the two densities, a fixed budget
        lines += _paper_rule_section(summary, rows, best) + _two_densities_section(rows, summary) + _budget_section(summary)
    lines += ["", "## Every setting", "", setting_table(rows, images, points)]
    return "\n".join(lines) + "\n"


def setting_text(row: dict) -> str:
    """A setting in one short phrase, e.g. ``ε=0.02, b=3, K=20, buffer`` (``L=10`` for HMC's leapfrogs, ``λ=0.1`` for pSGLD's damping)."""
    parts = [f"ε={_number(row['step_size'])}"]
    parts += [f"{label}={_number(row[k])}" for k, label in (("b", "b"), ("leapfrog", "L"), ("damping", "λ")) if row.get(k) is not None]
    return ", ".join(parts + [f"K={row['n_steps']}", row["chains"]])


def _verdict_section(summary: dict, rows: list[dict]) -> list[str]:
    """Every setting's paired difference to Langevin at its best, verdict settings first, in the words of :func:`verdict_text`."""
    key = quality_key(summary)
    chosen = verdict_settings(summary)
    reference = next((r for r in chosen if r["kind"] == "langevin"), None)
    if reference is None:
        return []
    label = QUALITY_LABELS[key]
    lines = ["", "## Verdicts: paired differences to Langevin", "",
             f"Each setting against Langevin at its best ({setting_text(reference)}), seed by seed: a seed gives both samplers the same "
             f"initial chains, network initialisation and data order. Δ = the setting's final {label} − Langevin's (lower is "
             f"better), mean over the pairs where both finished, with its {CONFIDENCE:.0%} t-interval over those pairs "
             "(scipy.stats.t). Diverged seeds are counted on each side. **Verdict settings** (each sampler's best: the most seeds "
             "stable, then the lowest mean; an AniLA among its settings that clip) come first; a study with verdict seeds reruns "
             "them at more seeds than the search that chose them.".replace("%", " %"), "",
             "| sampler | setting | verdict setting | seeds | diverged (it / Langevin) | clipped | Δ " + label + " | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    ordered = [r for r in chosen if r is not reference] + [r for r in rows if r not in chosen]
    for r in ordered:
        paired = paired_difference(summary, r, reference)
        clipped = "—" if r["clipped_share"] is None else f"{100 * r['clipped_share']:.1f} %"
        delta = "—" if paired["mean"] is None else f"{paired['mean']:+.3f}"
        note = " (clips nothing: Langevin's chain at this ε)" if uses_b(r["kind"]) and r["clipped_share"] == 0 else ""
        lines.append(f"| {r['kind']} | {setting_text(r)} | {'yes' if r in chosen else ''} | {paired['seeds']} | "
                     f"{paired['diverged']} / {paired['reference_diverged']} | {clipped} | {delta} | {verdict_text(paired)}{note} |")
    return lines


def _tuning_section(summary: dict, rows: list[dict]) -> list[str]:
    """How much tuning each sampler got on the main slice, and whether its best setting sits at an edge of its grid."""
    budget, chains = main_slice(rows)
    key = quality_key(summary)
    lines = ["", "## Tuning effort", "",
             f"Settings each sampler got at {budget} gradients per chain and iteration on {chains} chains (seeds per setting in "
             "the tables), and where its best setting sits: a best value at the edge of a searched axis means the search "
             "may have stopped short.", "",
             "| sampler | settings | step sizes | other axes | best setting | at an edge of |", "|---|---|---|---|---|---|"]
    best = {e["kind"]: e["best"] for e in best_settings(summary)}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind and r["gradients"] == budget and r["chains"] == chains
                and not (key == "grid_tv" and kind == "anila" and r["step_size"] == 1.0)]
        if not mine:
            continue
        axes = {"ε": "step_size", "b": "b", "L": "leapfrog", "λ": "damping"}
        values = {label: sorted({r[k] for r in mine if r.get(k) is not None}) for label, k in axes.items()}
        other = "; ".join(f"{label} ∈ {{{', '.join(_number(v) for v in vs)}}}" for label, vs in values.items() if vs and label != "ε")
        winner = best.get(kind)
        edges = []
        if winner is not None:
            edges = [label for label, k in axes.items() if len(values[label]) > 1 and winner.get(k) in (values[label][0], values[label][-1])]
        lines.append(f"| {kind} | {len(mine)} | {', '.join(_number(v) for v in values['ε'])} | {other or '—'} | "
                     f"{setting_text(winner) if winner else 'none stable for every seed'} | {', '.join(edges) or '—'} |")
    return lines


#: the AniLA kinds whose small-step density differs from exp(−E) (unadjusted, the step map scales the drift)
TWO_DENSITY_KINDS = ("anila", "anila_sample", "anila_pixel")
#: a setting "clips" when more than this share of coordinates had |∇E| > b, averaged over training
CLIPPING_SHARE = 0.1


def two_density_rows(rows: Sequence[dict]) -> list[dict]:
    """The settings (rows of :func:`summarize`) where exp(−E) and the sampler's small-step density differ and both were measured."""
    return [r for r in rows if r["kind"] in TWO_DENSITY_KINDS and r.get("grid_tv") is not None and r.get("sampler_grid_tv") is not None]


def _paper_rule_section(summary: dict, rows: list[dict], best: list[dict]) -> list[str]:
    """The paper's own rule, AniLA at ε = 1 (γ = b / max(b, |∇E|)), against each sampler's best setting."""
    mine = [r for r in rows if r["kind"] == "anila" and r["step_size"] == 1.0]
    if not mine:
        return []
    stable = [r for r in mine if r["stable_share"] == 1 and "grid_tv" in r]
    # each sampler at its verdict setting: a clipping AniLA, not the b that runs Langevin's chain
    winners = {r["kind"]: r for r in verdict_settings(summary) if r not in mine}
    lines = ["", "## The paper's rule: AniLA at ε = 1", "",
             "γ = b / max(b, |∇E|) per coordinate, as the paper writes it: a full unit step where the energy is flat, a drift "
             "capped at b/2 where it is steep."]
    if stable:
        top = min(stable, key=lambda r: r["grid_tv"])
        lines.append(f"Its best cell: b = {_number(top['b'])}, {top['chains']} chains, final grid TV {_fmt(top['grid_tv'])} "
                     f"({100 * (top['clipped_share'] or 0):.0f} % of coordinates clipped), against "
                     + ", ".join(f"{k} {_fmt(w['grid_tv'])}" for k, w in winners.items())
                     + " at each sampler's verdict setting.")
    else:
        lines.append(f"No setting at ε = 1 trained stably for every seed ({len(mine)} settings).")
    return lines + ["", setting_table(mine)]


def _product_formula_lines(summary: dict) -> list[str]:
    """The measured error of the product formula on the study's target (:func:`product_formula_errors`), as markdown lines."""
    rows = summary.get("product_formula") or []
    if not rows:
        return []
    lines = ["", "For the `coordinate` norm (Algorithm 1's AniLA) its sampler's density is the product formula exp(−E)/∏ aᵢ, "
             "exact only for separable energies; the rings are not. Measured on the target itself: "
             f"{rows[0]['chains']} independent unadjusted AniLA chains from exact draws, {rows[0]['steps']} steps of "
             f"ε = {_number(rows[0]['step_size'])}, histogram TV (40 × 40 bins) of where they end:", "",
             "| b | chains vs the formula | chains vs exp(−E) | noise floor | formula vs exp(−E) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_number(r['b'])} | {r['formula_tv']:.3f} | {r['energy_tv']:.3f} | {r['floor']:.3f} | {r['densities_tv']:.3f} |")
    return lines + ["", "The formula's error is the first column less the floor: read the 'its sampler's density' columns below "
                    "with that error in mind."]


def _two_densities_section(rows: list[dict], summary: dict | None = None) -> list[str]:
    """Whether AniLA-trained energies are calibrated for their sampler (exp(−E)/a) rather than for exp(−E), with the numbers either way.

    Counted over the settings that trained stably for every seed: a model that lost the target
    is far from the data in both densities and says nothing about which one training fitted.
    """
    finished = two_density_rows(rows)
    if not finished:
        return []
    mine = [r for r in finished if r["stable_share"] == 1]
    lines = ["", "## Two densities: fitted for the sampler, or for exp(−E)?", "",
             "Algorithm 1 fits the energy through its sampler. At small step, unadjusted AniLA draws from exp(−E)/a, not exp(−E) "
             "(a: its step map), so a trained energy could match the data through its sampler while exp(−E) is off. Grid TV to "
             "the target of both densities, per AniLA setting (means over seeds), counted over the settings stable for every seed:", ""]

    def mean(rs: list[dict], k: str) -> str:
        return _fmt(statistics.fmean(r[k] for r in rs))

    if mine:
        closer = [r for r in mine if r["sampler_grid_tv"] < r["grid_tv"] - 0.0005]  # closer at the printed precision
        lines.append(f"- its sampler's density is closer to the data than exp(−E) in **{len(closer)} of {len(mine)}** stable settings "
                     f"(mean TV {mean(mine, 'sampler_grid_tv')} against {mean(mine, 'grid_tv')});")
        clipping = [r for r in mine if (r["clipped_share"] or 0) > CLIPPING_SHARE]
        if clipping:
            closer_clipping = [r for r in clipping if r in closer]
            lines.append(f"- where AniLA clips more than {100 * CLIPPING_SHARE:.0f} % of coordinates: **{len(closer_clipping)} of "
                         f"{len(clipping)}** (mean TV {mean(clipping, 'sampler_grid_tv')} against {mean(clipping, 'grid_tv')});")
        rest = [r for r in mine if r not in clipping]
        if rest:
            lines.append(f"- where it clips less: mean TV {mean(rest, 'sampler_grid_tv')} against {mean(rest, 'grid_tv')} "
                         f"({len(rest)} settings).")
    else:
        lines.append("- no AniLA setting was stable for every seed.")
    lines += _product_formula_lines(summary or {})
    lines += ["", "The last two columns ask the chains themselves: the histogram TV (20 × 20 bins) of the samples the training chains "
              "hold at the end of the run against each density, so that which density was fitted rests on the chains too.", "",
              "| sampler | ε | b | K | chains | stable seeds | clipped | TV of exp(−E) | TV of its sampler's density | difference "
              "| chains vs exp(−E) | chains vs its sampler's density |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in finished:
        n = len(r["seeds"])
        lines.append(f"| {r['kind']} | {_number(r['step_size'])} | {_number(r['b'])} | {_steps_text(r)} | {r['chains']} | "
                     f"{round(r['stable_share'] * n)}/{n} | {100 * (r['clipped_share'] or 0):.1f} % | {_fmt(r['grid_tv'])} | "
                     f"{_fmt(r['sampler_grid_tv'])} | {r['sampler_grid_tv'] - r['grid_tv']:+.3f} | {_fmt(r.get('chains_tv'))} | "
                     f"{_fmt(r.get('chains_sampler_tv'))} |")
    return lines


def _budget_curves(summary: dict, clock: str) -> list[tuple[dict, tuple[list[float], list[float]]]]:
    """Each verdict setting (:func:`verdict_settings`: an AniLA that clips, never Langevin's own chain) with its quality curve (mean over seeds) against ``clock``: ``cpu_s`` or ``gradients`` per chain."""
    key = quality_key(summary)
    out = []
    for row in verdict_settings(summary):
        entry = {"kind": row["kind"], "best": row}
        results = [r for r in summary["cells"] if setting_key(r) == setting_key(entry["best"]) and not r["diverged"]]
        rows = [[h for h in r["history"] if key in h and (clock == "gradients" or clock in h)] for r in results]
        n = min((len(h) for h in rows), default=0)
        if n == 0:
            continue  # cells written before CPU time was recorded
        per_iter = _gradients(results[0], summary["base"])
        at = (lambda h: h["iter"] * per_iter) if clock == "gradients" else (lambda h: h[clock])  # noqa: E731
        out.append((entry, ([statistics.fmean(at(h[i]) for h in rows) for i in range(n)],
                            [statistics.fmean(h[i][key] for h in rows) for i in range(n)])))
    return out


def _budget_section(summary: dict) -> list[str]:
    """Quality at a fixed compute budget: each sampler's best setting at the CPU time the cheapest of them needed for its whole run."""
    curves = _budget_curves(summary, "cpu_s")
    if not curves:
        return []
    budget = min(clock[-1] for _, (clock, _) in curves)
    lines = ["", "## At a fixed compute budget", "",
             "A sampler that is stable at larger steps may need fewer of them, and a Metropolis test costs one more energy per step. "
             f"Each sampler's verdict setting (all at the same gradients per iteration), and its quality after **{budget:.0f} s** of "
             "training CPU time (the run's process, all its threads), the whole run of the cheapest of them; `quality_vs_budget.png` draws the curves "
             "against CPU time and against gradient evaluations.", "",
             "| sampler | setting | gradients per iteration | CPU s, whole run | grid TV at the budget | final grid TV |",
             "|---|---|---|---|---|---|"]
    for entry, (clock, value) in curves:
        w = entry["best"]
        within = [v for t, v in zip(clock, value) if t <= budget]
        b = "" if w["b"] is None else f", b={_number(w['b'])}"
        lines.append(f"| {entry['kind']} | ε={_number(w['step_size'])}{b} | {w['gradients']} | {clock[-1]:.0f} | "
                     f"{_fmt(within[-1]) if within else '— (not evaluated yet)'} | {_fmt(value[-1])} |")
    return lines


# --------------------------------------------------------------------------- figures


def _main_rows(summary: dict) -> tuple:
    """What the maps draw: the quality key, the pooled rows at the main gradient budget and chain kind, that budget and kind, the samplers and step sizes present."""
    key = quality_key(summary)
    rows = summarize(summary)
    budget, chains = main_slice(rows)
    rows = [r for r in rows if r["gradients"] == budget and r["chains"] == chains]
    kinds = [kind for kind in KINDS if any(r["kind"] == kind for r in rows)]
    steps = sorted({r["step_size"] for r in rows})
    return key, rows, budget, chains, kinds, steps


def plot_heatmaps(summary: dict, axes=None):
    """Mean final quality over (step size, b) for each sampler at the main gradient budget and chain kind; ✕ marks settings where a seed was unstable.

    Each panel has its own rows (the step sizes that sampler ran: HMC's ε is a leapfrog step, on
    another scale) and a width in proportion to its thresholds, so every number stays readable.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    key, rows, budget, chains, kinds, _ = _main_rows(summary)
    mine = {kind: [r for r in rows if r["kind"] == kind] for kind in kinds}
    bs = {kind: sorted({r["b"] for r in mine[kind] if r["b"] is not None}) or [None] for kind in kinds}
    steps = {kind: sorted({r["step_size"] for r in mine[kind]}) for kind in kinds}
    colorbar_axes = None
    if axes is None:
        axes, colorbar_axes = _heatmap_axes(kinds, bs, steps)
    vmax = 1.0 if key == "grid_tv" else max((r.get(key, 0) for r in rows), default=1.0) or 1.0
    image = None
    for ax, kind in zip(axes, kinds):
        grid = np.full((len(steps[kind]), len(bs[kind])), np.nan)
        for r in mine[kind]:
            i, j = steps[kind].index(r["step_size"]), bs[kind].index(r["b"])
            grid[i, j] = r.get(key, np.nan)
            mark = "" if r["stable_share"] == 1 else "✕"
            text = "div" if key not in r else f"{r[key]:.2f}"
            ax.text(j, i, f"{text}{mark}", ha="center", va="center", fontsize=9,
                    color="white" if key in r and r[key] > 0.55 * vmax else "black")
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto", origin="lower")
        ax.set_xticks(range(len(bs[kind])), ["—" if b is None else _number(b) for b in bs[kind]], fontsize=9)
        ax.set_yticks(range(len(steps[kind])), [_number(v) for v in steps[kind]], fontsize=9)
        ax.set_title(kind, fontsize=11)
        ax.set_xlabel("b" if bs[kind] != [None] else "")
        ax.set_ylabel("step size ε" if ax.get_subplotspec().is_first_col() else "")
    if image is not None:
        label = f"final {QUALITY_LABELS[key]} (lower is better)"
        if colorbar_axes is not None:
            axes[0].figure.colorbar(image, cax=colorbar_axes, label=label)
        else:
            axes[0].figure.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    axes[0].figure.suptitle(f"quality over (ε, b), {budget} gradients per iteration, {chains} chains; ✕: a seed diverged or collapsed",
                            fontsize=11)
    return axes


#: the widest row of heatmap panels, in units of one threshold column: what stays readable on a projector at 9-point numbers
HEATMAP_ROW_UNITS = 7.0


def _heatmap_axes(kinds: list[str], bs: dict, steps: dict) -> tuple[list, object]:
    """Panels for :func:`plot_heatmaps` in rows no wider than :data:`HEATMAP_ROW_UNITS`, each as wide as its thresholds need.

    One row of every sampler was about 19 inches (1900 pixels on screen) with 6-point numbers:
    unreadable at lecture size. Rows keep the figure about 11 inches wide at 9 points.
    """
    import matplotlib.pyplot as plt

    widths = {kind: max(1.0, 0.75 * len(bs[kind])) for kind in kinds}
    rows: list[list[str]] = [[]]
    for kind in kinds:
        if rows[-1] and sum(widths[k] for k in rows[-1]) + widths[kind] > HEATMAP_ROW_UNITS:
            rows.append([])
        rows[-1].append(kind)
    widest = max(sum(widths[k] for k in row) for row in rows)
    tallest = max(len(v) for v in steps.values())
    # constrained layout keeps each panel's ε labels, the titles and the colour bar apart
    fig = plt.figure(figsize=(1.45 * widest + 2.5, (0.5 * tallest + 1.5) * len(rows) + 0.6), layout="constrained")
    outer = fig.add_gridspec(len(rows), 2, width_ratios=[widest, 0.2])  # the colour bar's own column, for every row
    axes = []
    for i, row in enumerate(rows):
        # a last column takes up what the row leaves free, so every panel keeps the width of its thresholds
        free = widest - sum(widths[k] for k in row)
        inner = outer[i, 0].subgridspec(1, len(row) + (free > 0), width_ratios=[widths[k] for k in row] + ([free] if free > 0 else []))
        axes += [fig.add_subplot(inner[0, j]) for j in range(len(row))]
    return axes, fig.add_subplot(outer[:, 1])


def plot_stability(summary: dict, ax=None):
    """The stability region: for each sampler (rows) and step size (columns), the share of seeds that trained stably, at its most stable b (the best of those)."""
    import matplotlib.pyplot as plt
    import numpy as np

    key, rows, budget, chains, kinds, steps = _main_rows(summary)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.75 * len(steps) + 2.5, 0.42 * len(kinds) + 1.4))
    share = np.full((len(kinds), len(steps)), np.nan)
    for i, kind in enumerate(kinds):
        for j, step in enumerate(steps):
            mine = [r for r in rows if r["kind"] == kind and r["step_size"] == step]
            if not mine:
                continue
            # an AniLA user would pick the most stable b, and among those the best one
            best = max(mine, key=lambda r: (r["stable_share"], -r.get(key, math.inf)))
            share[i, j] = best["stable_share"]
            n = len(best["seeds"])
            b = "" if best["b"] is None else f"\nb={_number(best['b'])}"
            ax.text(j, i, f"{round(best['stable_share'] * n)}/{n}{b}", ha="center", va="center", fontsize=7)
    ax.imshow(share, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(steps)), [_number(s) for s in steps])
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xlabel("step size ε")
    ax.set_title(f"seeds that trained stably (most stable b; {budget} gradients per iteration, {chains})", fontsize=10)
    return ax


def plot_quality_vs_budget(summary: dict, axes=None):
    """The fixed-budget view: quality against training CPU time and against gradient evaluations, for each sampler's best setting (mean over its seeds).

    CPU time (one thread per cell) is what compares samplers whose cells ran while the machine
    was shared unevenly; cells written before it was recorded are left out of that panel.
    Gradient evaluations per chain (iterations × K, × the leapfrog steps for HMC) do not depend
    on the machine at all.
    """
    import matplotlib.pyplot as plt

    key = quality_key(summary)
    if axes is None:
        axes = list(plt.subplots(1, 2, figsize=(11, 3.8))[1])
    for ax, clock, label in ((axes[0], "cpu_s", "training CPU time (s, all threads of the run)"),
                             (axes[1], "gradients", "gradient evaluations per chain")):
        for entry, (x, value) in _budget_curves(summary, clock):
            w = entry["best"]
            b = "" if w["b"] is None else f", b={_number(w['b'])}"
            ax.plot(x, value, "o-", ms=3, label=f"{entry['kind']} (ε={_number(w['step_size'])}{b})")
        ax.set_xlabel(label)
        ax.set_ylabel(QUALITY_LABELS[key])
        if not ax.get_legend_handles_labels()[0]:
            ax.text(0.5, 0.5, "no setting stable for every seed\n(or no CPU time recorded)", ha="center", va="center",
                    transform=ax.transAxes)
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7)
    axes[0].set_title("quality against CPU time, each sampler's best setting", fontsize=10)
    axes[1].set_title("quality against gradient evaluations", fontsize=10)
    axes[0].figure.tight_layout()
    return axes


def plot_two_densities(summary: dict, ax=None):
    """Per AniLA setting: grid TV of exp(−E) against that of its sampler's small-step density, coloured by the clipped share.

    Below the diagonal the energy fits the data *through its sampler* better than as exp(−E).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 4.2))
    mine = two_density_rows(summarize(summary))
    if not mine:
        ax.text(0.5, 0.5, "no AniLA setting with both densities", ha="center", va="center", transform=ax.transAxes)
        return ax
    markers = {"buffer": "o", "short_run": "^"}
    for chains, marker in markers.items():
        rs = [r for r in mine if r["chains"] == chains]
        if rs:
            dots = ax.scatter([r["grid_tv"] for r in rs], [r["sampler_grid_tv"] for r in rs], marker=marker, s=28, cmap="viridis",
                              c=[100 * (r["clipped_share"] or 0) for r in rs], vmin=0, vmax=100, edgecolors="k", linewidths=0.3,
                              label=f"{chains} chains")
    top = max(max(r["grid_tv"], r["sampler_grid_tv"]) for r in mine) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.figure.colorbar(dots, ax=ax, label="clipped coordinates (%)")
    ax.set_xlabel("grid TV of exp(−E)")
    ax.set_ylabel("grid TV of its sampler's density")
    ax.set_title("AniLA: which density did training fit?", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_clipping(summary: dict, ax=None):
    """For every finished AniLA cell: the share of clipped coordinates against its final quality, coloured by step size."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    key = quality_key(summary)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    cells = [r for r in summary["cells"] if uses_b(r["kind"]) and not r["diverged"] and r.get("clipped_share") is not None
             and key in r["final"]]
    markers = {"anila": "o", "anila_sample": "s", "anila_noise": "^", "anila_mh": "D", "anila_pixel": "v"}
    steps = [r["step_size"] for r in cells] or [1.0]
    norm = LogNorm(min(steps), max(steps) if max(steps) > min(steps) else min(steps) * 10)
    dots = None
    for kind in markers:
        mine = [r for r in cells if r["kind"] == kind]
        if mine:
            dots = ax.scatter([100 * r["clipped_share"] for r in mine], [r["final"][key] for r in mine],
                              c=[r["step_size"] for r in mine], cmap="plasma", norm=norm, marker=markers[kind], s=22,
                              edgecolors="k", linewidths=0.3, label=kind)
    if dots is not None:
        ax.figure.colorbar(dots, ax=ax, label="step size ε")
        ax.legend(fontsize=7)
    ax.set_xlabel("coordinates with |∇E| > b (%, mean over training)")
    ax.set_ylabel(f"final {QUALITY_LABELS[key]}")
    ax.set_title("how much AniLA clips, and what it costs or buys", fontsize=10)
    return ax


def plot_histories(summary: dict, settings: Sequence[dict], metric: str = "energy_gap", ax=None):
    """``metric`` (e.g. ``energy_gap``, ``grid_tv``, ``clipped_share``) over training for the cells matching each of ``settings``, one line per seed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for n, wanted in enumerate(settings):
        colour = f"C{n}"
        matches = [r for r in summary["cells"] if all(r.get(k) == v for k, v in wanted.items())]
        if not matches:
            raise ValueError(f"settings: no cell of the sweep matches {wanted}")
        for i, r in enumerate(matches):
            rows = [h for h in r["history"] if metric in h]
            label = _setting_label(wanted, settings) if i == 0 else None
            ax.plot([h["iter"] for h in rows], [h[metric] for h in rows], "o-", ms=3, color=colour, alpha=0.8, label=label)
            if r["diverged"]:
                ax.axvline(r["diverged_at"], color=colour, ls=":", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.legend(fontsize=7)
    return ax


#: how plot_histories names a sampler kind and a metric in its legend and axis
_KIND_LABELS = {"langevin": "Langevin", "mala": "MALA", "anila": "AniLA", "anila_sample": "AniLA (sample norm)",
                "anila_pixel": "AniLA (pixel norm)", "anila_noise": "AniLA (noise only)", "anila_mh": "AniLA + Metropolis",
                "psgld": "pSGLD", "hmc": "HMC"}
_METRIC_LABELS = {"energy_gap": "E(data) − E(samples)", "grid_tv": "grid TV to target", "clipped_share": "share of |∇E| > b",
                  "fid": "FID"}


def _setting_label(wanted: dict, settings: Sequence[dict]) -> str:
    """A legend entry for one setting: ``Langevin, ε = 0.1``, ``AniLA, ε = 0.1, b = 30``; K, chains and seed only where the settings differ."""
    parts = [_KIND_LABELS.get(wanted["kind"], wanted["kind"])] if "kind" in wanted else []
    if "step_size" in wanted:
        parts.append(f"ε = {_number(wanted['step_size'])}")
    if wanted.get("b") is not None:
        parts.append(f"b = {_number(wanted['b'])}")
    for key, text in (("n_steps", "K = {}"), ("chains", "{} chains"), ("seed", "seed {}")):
        if key in wanted and len({str(s.get(key)) for s in settings}) > 1:
            parts.append(text.format(wanted[key]))
    return ", ".join(parts)


def write_report(summary: dict, out: str | Path) -> list[Path]:
    """``sweep.md`` and the figures in ``out``: ``heatmaps.png``, ``stability.png``, ``quality_vs_budget.png`` and, on 2-D targets with AniLA, ``two_densities.png``."""
    from anila_core.ui.report import save_figure

    out = Path(out)
    atomic_write_text(out / "sweep.md", markdown_report(summary))
    written = [out / "sweep.md"]
    plots = [("heatmaps.png", plot_heatmaps), ("stability.png", plot_stability), ("quality_vs_budget.png", plot_quality_vs_budget)]
    if two_density_rows(summarize(summary)):
        plots.append(("two_densities.png", plot_two_densities))
    for name, plot in plots:
        drawn = plot(summary)
        save_figure((drawn[0] if isinstance(drawn, list) else drawn).figure, out / name)
        written.append(out / name)
    return written


def study_base(study: Study, **overrides) -> TrainConfig:
    """The base configuration of a named study (with ``overrides`` on top)."""
    return preset(study.preset, "langevin", **{**study.overrides, **overrides})


def command_line() -> str:
    """How this process was started, for the record in sweep.json."""
    return "python -m anila_core " + " ".join(sys.argv[1:])
