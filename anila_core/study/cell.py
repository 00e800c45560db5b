"""One sweep cell: a training run in memory, checkpointed now and then in its scratch folder, resumed from there."""

from __future__ import annotations

import math
import os
import shutil
import time
import warnings
from pathlib import Path

from anila_core.device import processor_name
from anila_core.fileio import atomic_torch_save, atomic_write_json
from anila_core.processes import torch_threads
from anila_core.study.grid import CELL_FIELDS, cell_config, cell_id, gradients_per_iteration
from anila_core.study.results import QUALITY_FIELDS
from anila_core.training.config import TrainConfig, changed_settings, describe_changes
from anila_core.training.kinds import data_kind

__all__ = ["HISTORY_FIELDS", "CHECKPOINT_S", "run_cell", "cell_worker", "cell_file", "scratch_folder"]


#: what a cell keeps of each evaluation row
HISTORY_FIELDS = ("iter", "wall_s", "cpu_s", *QUALITY_FIELDS, "energy_gap", "clipped_share", "acceptance")


#: wall seconds between a cell's checkpoints. They are taken where the cell's configuration checkpoints (every
#: ``checkpoint_every`` iterations), the first such point once this long has passed since the last save: a cell of a
#: minute writes none, a 40-minute cell of the rings_paper study one every 2000 iterations (about 4 minutes)
CHECKPOINT_S = 180.0


#: the checkpoint's file in the scratch folder, and the key of the cell's own record (id, design, clock) in it
_CHECKPOINT, _RECORD = "checkpoint.pt", "sweep_cell"


def cell_file(out: str | Path, cell: dict) -> Path:
    """Where a finished cell's result lives in the sweep folder ``out``: ``out/cells/<id>.json``."""
    return Path(out) / "cells" / f"{cell_id(cell)}.json"


def scratch_folder(out: str | Path, cell: dict) -> Path:
    """Where an unfinished cell keeps its checkpoint: ``out/partial/<id>/`` (no reader of results looks there)."""
    return Path(out) / "partial" / cell_id(cell)


def cell_worker(job: tuple) -> dict:
    """Run one cell of the sweep folder ``out`` (a job: base settings, cell, ``out``, torch threads, design version),
    write its result file, then delete its scratch folder; return the result."""
    base_dict, cell, out, threads, version = job
    scratch = scratch_folder(out, cell)
    with torch_threads(threads):
        result = {**run_cell(TrainConfig.from_dict(base_dict), cell, scratch, version), "version": version}
    atomic_write_json(cell_file(out, cell), result)  # written by the worker: a finished cell survives a lost sweep
    shutil.rmtree(scratch, ignore_errors=True)  # after the result: a cell killed in between is finished, not lost
    return result


class _Clock:
    """A cell's wall and CPU seconds summed over the pieces it ran in: what the earlier pieces saved, plus this one's
    (its wall time from ``wall_start``, its CPU time from now)."""

    def __init__(self, wall_start: float, earlier: dict):
        self._wall_zero = wall_start - earlier["wall_s"]
        self._cpu_zero = time.process_time() - earlier["cpu_s"]
        self._last_save = time.perf_counter()

    def wall_s(self) -> float:
        return time.perf_counter() - self._wall_zero

    def cpu_s(self) -> float:
        # the process's CPU time: unlike wall time, it does not grow when other jobs share the cores
        return time.process_time() - self._cpu_zero

    def since_save(self) -> float:
        return time.perf_counter() - self._last_save

    def saved(self) -> None:
        self._last_save = time.perf_counter()


def run_cell(
    base: TrainConfig, cell: dict, scratch: Path | None = None, version: int = 1, checkpoint_s: float | None = None
) -> dict:
    """Train one cell in memory and return its result (a divergence is a result, not an error).

    With ``scratch`` (its folder, :func:`scratch_folder`) the cell saves its trainer's state
    there every ``checkpoint_s`` seconds of wall time (default :data:`CHECKPOINT_S`, at its
    configuration's checkpoint iterations), and a cell that finds a checkpoint there resumes
    from it. The trainer's resume is exact, so the result does not depend on the
    interruption, but for ``wall_s`` and the history's ``cpu_s``, which sum the pieces the
    cell ran in (the time lost after its last checkpoint not counted). A checkpoint that is
    damaged, of another cell, of other settings or of another design ``version`` is named in
    a warning, deleted, and the cell starts over.
    """
    from anila_core.failures import is_out_of_memory
    from anila_core.training.guard import TrainingDiverged
    from anila_core.training.limits import out_of_memory

    every = CHECKPOINT_S if checkpoint_s is None else checkpoint_s
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every >= 0:
        raise ValueError(f"checkpoint_s: expected a number of seconds >= 0, got {checkpoint_s!r}")
    config = cell_config(base, cell)
    trainer, clock = _start(config, cell, scratch, version)

    def cpu_time(trainer, row):
        row["cpu_s"] = round(clock.cpu_s(), 3)

    def checkpoint(trainer):
        # none at the end: the result file follows at once
        if scratch is not None and trainer.iteration < config.iters and clock.since_save() >= every:
            _save(trainer, scratch, cell, version, clock)

    diverged = None
    try:
        trainer.run(callback=cpu_time, on_checkpoint=checkpoint)
    except TrainingDiverged as err:
        diverged = {"iter": trainer.iteration, "cause": err.cause or str(err)}
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise out_of_memory(err, config, f"in sweep cell {cell_id(cell)}") from None
    return _result(trainer, config, cell, diverged, clock)


def _build(config: TrainConfig, cell: dict):
    """The cell's trainer, a failed allocation answered by the sizes to reduce."""
    from anila_core.failures import is_out_of_memory
    from anila_core.training.limits import out_of_memory
    from anila_core.training.trainer import Trainer

    try:
        return Trainer(config, progress=False)
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise out_of_memory(err, config, f"building sweep cell {cell_id(cell)}") from None


def _start(config: TrainConfig, cell: dict, scratch: Path | None, version: int):
    """The cell's trainer and clock: resumed from the checkpoint in ``scratch`` when there is a usable one, else
    new."""
    from anila_core.training.checkpoint_file import load_checkpoint

    wall_start = time.perf_counter()
    nothing = {"wall_s": 0.0, "cpu_s": 0.0}
    trainer = _build(config, cell)
    path = None if scratch is None else scratch / _CHECKPOINT
    if path is None or not path.exists():
        return trainer, _Clock(wall_start, nothing)
    try:
        state = load_checkpoint(path)
        earlier = _cell_record(state, cell, version, trainer.config)
        trainer.load_state_dict(state)  # checks the state fits first, so a refused one leaves the trainer as it was
        return trainer, _Clock(wall_start, earlier)
    except (ValueError, KeyError, TypeError) as err:
        warnings.warn(
            f"{path}: cannot resume sweep cell {cell_id(cell)} from it ({str(err).removeprefix(f'{path}: ')}); "
            "the cell starts over",
            RuntimeWarning,
            stacklevel=3,
        )
        shutil.rmtree(scratch, ignore_errors=True)
        # a trainer built anew: a state refused halfway through loading must leave nothing in it
        return _build(config, cell), _Clock(wall_start, nothing)


def _cell_record(state, cell: dict, version: int, config: TrainConfig) -> dict:
    """The clock saved with a checkpoint of this very cell: a ``ValueError`` when the checkpoint is another cell's, of
    other settings or of another design."""
    record = state.get(_RECORD) if isinstance(state, dict) else None
    if not isinstance(record, dict):
        raise ValueError("it is not the checkpoint of a sweep cell")
    if record.get("id") != cell_id(cell):
        raise ValueError(f"it is the checkpoint of cell {record.get('id')!r}")
    if record.get("version") != version:
        raise ValueError(f"it was written by version {record.get('version')!r} of the design, this is {version}")
    saved, mine = state.get("config"), config.to_dict()
    differ = changed_settings(saved, mine, ignore=()) if isinstance(saved, dict) else ["config"]
    if differ:
        other = describe_changes(differ, saved, mine, "there", "now") if isinstance(saved, dict) else "none saved"
        raise ValueError(f"it was trained with other settings ({other})")
    for key in ("wall_s", "cpu_s"):
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"its {key} is {value!r}, not a number of seconds >= 0")
    return record


def _save(trainer, scratch: Path, cell: dict, version: int, clock: _Clock) -> None:
    """Save the trainer's state with the cell's record in ``scratch``, atomically; not when the parameters are no
    longer finite (the last good checkpoint stays, and the run goes on as a straight one would)."""
    from anila_core.training.guard import parameters_finite

    if not parameters_finite(trainer.model, trainer.ema_model):
        return
    state = trainer.state_dict()
    state[_RECORD] = {"id": cell_id(cell), "version": version, "wall_s": clock.wall_s(), "cpu_s": clock.cpu_s()}
    scratch.mkdir(parents=True, exist_ok=True)
    for stale in scratch.glob(f".{_CHECKPOINT}.*.tmp"):  # what a cell killed while saving left behind
        stale.unlink(missing_ok=True)
    atomic_torch_save(scratch / _CHECKPOINT, state)
    clock.saved()


def _fields(row: dict, names) -> dict:
    return {k: row[k] for k in names if row.get(k) is not None}


def _result(trainer, config: TrainConfig, cell: dict, diverged: dict | None, clock: _Clock) -> dict:
    """The cell's result file: its settings, how it ended, its evaluation rows and its summary measures."""
    history = trainer.history
    result = {
        "id": cell_id(cell),
        **{k: cell.get(k) for k in CELL_FIELDS},
        "diverged": diverged is not None,
        "diverged_at": diverged and diverged["iter"],
        "cause": diverged and diverged["cause"],
        "iters": trainer.iteration,
        "wall_s": round(clock.wall_s(), 2),
        "load_avg": _load_average(),
        "cpu": processor_name(),  # a resumed study's cells may run on several machines: the report counts them
        "gradients_per_iter": gradients_per_iteration(config),
        "history": [_fields(r, HISTORY_FIELDS) for r in history],
    }
    result["final"] = {} if diverged or not history else _fields(history[-1], QUALITY_FIELDS)
    clipped = [r["clipped_share"] for r in history if "clipped_share" in r]
    result["clipped_share"] = sum(clipped) / len(clipped) if clipped else None
    result["energy_gap"] = history[-1]["energy_gap"] if history else None
    if data_kind(config).has_density and history and not diverged:
        result["best_grid_tv"] = min(r["grid_tv"] for r in history)
    scored = [r for r in history if r.get("fid_features")]
    if scored:  # a folder of your own: which features its FID/KID are on (Inception's only where its weights are)
        result["fid_features"] = scored[-1]["fid_features"]
    return result


def _load_average() -> float | None:
    """The machine's one-minute load average as a cell ends: wall times mean little without it (None where unknown)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
