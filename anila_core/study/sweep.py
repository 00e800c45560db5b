"""Running the sampler study: each cell trained and saved as it ends, in a locked, resumable folder, then reported."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

from anila_core.device import processor_name
from anila_core.fileio import LOCK_FILE, atomic_write_json, atomic_write_text, locked_folder
from anila_core.processes import check_jobs
from anila_core.study.cell import cell_worker, scratch_folder
from anila_core.study.figures import plot_heatmaps, plot_quality_vs_budget, plot_stability, plot_two_densities
from anila_core.study.grid import cell_config, cell_id
from anila_core.study.reports import markdown_report
from anila_core.study.results import (
    UNSTABLE_TV,
    known_results,
    read_plan,
    read_sweep_file,
    summarize,
    two_density_rows,
    verdict_cells,
)
from anila_core.study.runner import Cell, Executor, default_jobs, print_commands, run_cells, threads_per_cell
from anila_core.training.config import TrainConfig, changed_settings
from anila_core.training.kinds import data_kind
from anila_core.training.limits import check_memory

__all__ = [
    "run_sweep",
    "run_sweep_cell",
    "write_report",
    "product_formula_errors",
    "command_line",
]


def _plan(base: TrainConfig, cells: list[dict], study: str | None, version: int) -> dict:
    return {"study": study, "version": version, "base": base.to_dict(), "cells": [cell_id(c) for c in cells]}


def _machine() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": processor_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _checked_cells(cells: Sequence[dict], base: TrainConfig) -> list[dict]:
    """``cells`` as a list, refused (before anything is written) when empty, listed twice or of an absurd size."""
    cells = list(cells)
    if not cells:
        raise ValueError("cells: the sweep has no cells")
    ids = [cell_id(c) for c in cells]
    if len(set(ids)) != len(ids):
        raise ValueError("cells: the same cell is listed twice")
    for c in cells:  # arithmetic on each cell's settings: an absurd size is refused before anything is written
        check_memory(cell_config(base, c))
    return cells


def run_sweep(
    out: str | Path,
    cells: Sequence[dict],
    base: TrainConfig,
    jobs: int | None = None,
    progress: bool = True,
    study: str | None = None,
    command: str | None = None,
    verdict_seeds: Sequence[int] = (),
    version: int = 1,
    product_formula_check: bool = False,
    executor: str = "local",
    partition: str | None = None,
    time_min: int | None = None,
    cell_command: Callable[[dict], Sequence[str]] | None = None,
    print_only: bool = False,
) -> dict | None:
    """Run every cell not yet finished in ``out`` and write ``sweep.json``, ``sweep.md`` and the figures; return the
    summary.

    Cells run in ``jobs`` processes (default: one per CPU core, one thread each), or with
    ``executor="submitit"`` as a SLURM array (``partition``, ``time_min`` per cell; submitit's
    local processes where there is no SLURM), its files in ``out/submitit``. Each finished cell
    is written at once to ``out/cells/<id>.json``, so running the same sweep again (after a
    crash, or to add cells) never recomputes a finished one. An interrupted cell resumes from
    its last checkpoint: a running cell saves its trainer's state every few minutes in
    ``out/partial/<id>/`` (deleted once its result is written; see
    :func:`~anila_core.study.cell.run_cell`), and its result is the one of a cell run straight,
    but for its ``wall_s`` and ``cpu_s``, which sum the pieces it ran in. A folder that holds a sweep with
    another base configuration is refused, and so is a folder another sweep is writing
    (``out/.lock``); the worker processes end when this process ends.

    ``cell_command(cell)``: the arguments of the ``python -m anila_core`` command that runs one
    cell alone. With ``print_only`` the unfinished cells' commands are printed instead of run
    and ``None`` is returned; once they ran (on any scheduler), the same call collects them.

    ``verdict_seeds``: when every listed cell is done, the settings of :func:`verdict_settings`
    run again at these seeds (the paired comparisons rest on them). ``version``: the design's
    number; cells written by another version are not reused. ``product_formula_check``: on a
    2-D target, also measure the error of AniLA's product formula on the target itself
    (:func:`product_formula_errors`), which the two-densities section prints.
    """
    out = Path(out)
    base = base.validate()
    check_jobs(jobs)  # before anything is written: at least one, at most what the cores can use
    # its settings checked before anything is written
    Executor(executor, jobs or 1, out / "submitit", partition, time_min)
    cells = _checked_cells(cells, base)
    if print_only and cell_command is None:
        raise ValueError("print_only: needs cell_command, the command of one cell")
    # one sweep writes a folder at a time (its workers end with it); a refused folder is left as it was
    checked_bs = (
        sorted({c["b"] for c in cells if c["kind"] == "anila" and c["b"]})
        if product_formula_check and data_kind(base).has_density
        else []
    )
    how = dict(
        jobs=jobs,
        progress=progress,
        study=study,
        command=command,
        version=version,
        product_formula_bs=checked_bs,
        executor=executor,
        partition=partition,
        time_min=time_min,
        cell_command=cell_command,
        print_only=print_only,
    )
    with locked_folder(out, check=lambda: _check_folder(out, base)) as lock:
        summary = _run_sweep(out, cells, base, verify=lock.verify, **how)
        extra = verdict_cells(summary, verdict_seeds) if summary is not None else []
        if extra:
            summary = _run_sweep(out, cells + extra, base, verify=lock.verify, **how)
        return summary


def run_sweep_cell(
    out: str | Path,
    cells: Sequence[dict],
    base: TrainConfig,
    wanted: str,
    verdict_seeds: Sequence[int] = (),
    version: int = 1,
) -> dict:
    """Train the one cell ``wanted`` (its id) of the sweep in ``out`` and write its cell file; return its result.

    What a command of :func:`run_sweep`'s ``print_only`` runs, on any machine that sees
    ``out``: the sweep's own folder (its plan.json, with the same base settings) is required,
    the folder is not locked (a scheduler runs many cells at once; each writes only its own
    file, atomically), and a cell already finished is kept. The cell is one of ``cells`` or,
    once they are all finished, of the verdict cells they call for.
    """
    out = Path(out)
    base = base.validate()
    cells = _checked_cells(cells, base)
    if not (out / "plan.json").is_file():
        raise ValueError(
            f"out: {out} holds no sweep; run the sweep's command with --print-commands first, which writes its plan"
        )
    _check_folder(out, base)
    known = known_results(out, version)
    if wanted in known:
        print(f"cell {wanted}: finished earlier, kept", flush=True)
        return known[wanted]
    candidates = {cell_id(c): c for c in cells}
    if wanted not in candidates and all(i in known for i in candidates):
        done = {"base": base.to_dict(), "cells": [known[i] for i in candidates]}
        candidates.update({cell_id(c): c for c in verdict_cells(done, verdict_seeds)})
    if wanted not in candidates:
        raise ValueError(
            f"cell: {wanted!r} is not a cell of this sweep (nor, once its cells are finished, one of its verdict cells)"
        )
    (out / "cells").mkdir(exist_ok=True)
    return cell_worker((base.to_dict(), candidates[wanted], out, 1, version))


def _check_folder(out: Path, base: TrainConfig) -> None:
    """Refuse ``out`` when it holds files that are not a sweep, or a sweep with another base configuration."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = read_plan(plan_path)
        try:  # a setting added to TrainConfig since then takes its default: the same runs
            old_base = TrainConfig.from_dict(old["base"]).to_dict()
        except (ValueError, TypeError) as err:
            raise ValueError(f"{plan_path}: written by another version of anila_core ({err})") from None
        changed = sorted(changed_settings(old_base, base.to_dict(), ignore=()))
        if changed:
            raise ValueError(
                f"out: {out} holds a sweep with other base settings ({', '.join(changed)}); "
                "choose another folder or run that sweep's own command"
            )
    elif any(p.name != LOCK_FILE for p in out.iterdir()):
        raise ValueError(f"out: {out} already holds files that are not a sweep; choose another folder")


def _run_sweep(
    out: Path,
    cells: list[dict],
    base: TrainConfig,
    jobs: int | None,
    progress: bool,
    study: str | None,
    command: str | None,
    version: int,
    product_formula_bs: Sequence[float],
    executor: str,
    partition: str | None,
    time_min: int | None,
    cell_command: Callable[[dict], Sequence[str]] | None,
    print_only: bool,
    verify: Callable[[], None],
) -> dict | None:
    """:func:`run_sweep` in its locked, checked folder (``None`` when it only printed the unfinished cells'
    commands)."""
    from tqdm.auto import tqdm

    plan = _plan(base, cells, study, version)
    plan_path = out / "plan.json"
    if plan_path.exists():  # the same base (checked): the cells of both plans, when both are of this design
        old = read_plan(plan_path)
        if old.get("version", 1) == version:
            plan["cells"] = list(dict.fromkeys(old["cells"] + plan["cells"]))
    (out / "cells").mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan_path, plan)

    known = known_results(out, version)
    todo = [c for c in cells if cell_id(c) not in known]
    for c in cells:  # the scratch folder of a cell whose worker ended between its result and the folder's removal
        if cell_id(c) in known:
            shutil.rmtree(scratch_folder(out, c), ignore_errors=True)
    # the costliest cells first, so that the last ones to finish are short
    todo.sort(key=lambda c: -(c["n_steps"] + 2))
    threads = threads_per_cell(executor, jobs)
    work = [
        Cell(
            f"cell {cell_id(c)}",
            (base.to_dict(), c, out, threads, version),
            tuple(cell_command(c)) if cell_command else (),
        )
        for c in todo
    ]
    if todo and print_only:
        print_commands(work)
        return None
    if todo:
        where = Executor(executor, default_jobs(jobs, len(work)), out / "submitit", partition, time_min)
        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep cells", disable=not progress)
        try:  # a cell lost with its worker is named once the others finish (WorkersLost); a rerun computes it
            for _, r in run_cells(
                cell_worker,
                work,
                where,
                rerun="run the same sweep command again: finished cells are kept, the lost ones run again",
            ):
                known[r["id"]] = r
                bar.update(1)
        finally:
            bar.close()
    results = [known[i] for i in plan["cells"] if i in known]
    written = _written_by_version(out, version)  # read once: where and when it ran, the product formula's errors
    # collecting finished cells again (on another machine, another day) must not relabel where and when they ran
    last = None if todo else written
    summary = {
        "study": study,
        "version": version,
        "command": command,
        "date": last["date"] if last and "date" in last else datetime.date.today().isoformat(),
        "machine": last["machine"] if last and "machine" in last else _machine(),
        "base": base.to_dict(),
        "unstable_tv": UNSTABLE_TV,
        "cells": results,
    }
    if product_formula_bs:  # measured once per design (a minute), then kept in sweep.json across reruns
        kept = written and written.get("product_formula")
        summary["product_formula"] = kept or product_formula_errors(base, product_formula_bs)
    verify()  # the folder's lock is still this sweep's (not deleted or replaced meanwhile): LockLost otherwise
    atomic_write_json(out / "sweep.json", summary)
    write_report(summary, out)
    return summary


def _written_by_version(out: Path, version: int) -> dict | None:
    """``out``'s sweep.json when this design ``version`` wrote it, else None."""
    path = out / "sweep.json"
    if not path.exists():
        return None
    written = read_sweep_file(path, "the sweep.json a sweep wrote", f"delete {path}: a rerun writes it again")
    return written if isinstance(written, dict) and written.get("version", 1) == version else None


def product_formula_errors(
    base: TrainConfig, bs: Sequence[float], chains: int = 20_000, steps: int = 3000, step_size: float = 0.01
) -> list[dict]:
    """The error of the coordinate norm's small-step density exp(−E)/∏ aᵢ on the base's 2-D target, one row per
    threshold ``b``.

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
        check = check_small_step_density(
            AniLA(step_size, b=b, norm="coordinate"),
            target.energy,
            target.sample(chains, generator),
            steps,
            generator=generator,
        )
        rows.append({"b": b, **dataclasses.asdict(check)})
    return rows


def write_report(summary: dict, out: str | Path) -> list[Path]:
    """``sweep.md`` and the figures in ``out``: ``heatmaps.png``, ``stability.png``, ``quality_vs_budget.png`` and, on
    2-D targets with AniLA, ``two_densities.png``."""
    from anila_core.ui.report import save_figure

    out = Path(out)
    atomic_write_text(out / "sweep.md", markdown_report(summary))
    written = [out / "sweep.md"]
    plots = [
        ("heatmaps.png", plot_heatmaps),
        ("stability.png", plot_stability),
        ("quality_vs_budget.png", plot_quality_vs_budget),
    ]
    if two_density_rows(summarize(summary)):
        plots.append(("two_densities.png", plot_two_densities))
    for name, plot in plots:
        drawn = plot(summary)
        save_figure((drawn[0] if isinstance(drawn, list) else drawn).figure, out / name)
        written.append(out / name)
    return written


def command_line() -> str:
    """How this process was started, for the record in sweep.json."""
    return "python -m anila_core " + " ".join(sys.argv[1:])
