"""The one runner of cells (one training run each): here, in a local pool, through submitit, or as commands."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from anila_core.processes import JobLost, WorkersLost, check_jobs, portable_error, run_jobs

__all__ = [
    "EXECUTORS",
    "Cell",
    "Executor",
    "run_cells",
    "print_commands",
    "config_flags",
    "default_jobs",
    "threads_per_cell",
]

#: where cells run: ``local`` (this machine: this process for one job, else a pool of worker processes) or ``submitit``
#: (a SLURM array where SLURM is, else submitit's own local processes)
EXECUTORS = ("local", "submitit")
#: how often the submitit runner asks whether a job ended (seconds): its local processes at once, a cluster's queue
#: gently
_POLL_LOCAL_S, _POLL_CLUSTER_S = 1.0, 30.0
#: a submitit job's time limit when none is given (minutes): submitit's own default, 5, would stop most cells
DEFAULT_TIME_MIN = 60


@dataclass(frozen=True)
class Cell:
    """One training run: ``name`` in messages, ``job`` the argument its worker function gets, ``command`` the arguments
    of the ``python -m anila_core`` command that runs it alone (what ``--print-commands`` lists for another
    scheduler)."""

    name: str
    job: object
    command: tuple[str, ...] = ()

    def command_line(self) -> str:
        """The cell's command as a shell line."""
        if not self.command:
            raise ValueError(f"print_commands: {self.name} has no command of its own")
        return shlex.join(["python", "-m", "anila_core", *self.command])


@dataclass(frozen=True)
class Executor:
    """Where :func:`run_cells` runs the cells: ``kind`` (one of :data:`EXECUTORS`), ``jobs`` at once; for submitit its
    ``folder`` (job files and logs), and on SLURM the ``partition`` and the time limit per cell ``time_min``."""

    kind: str = "local"
    jobs: int = 1
    folder: Path | None = None
    partition: str | None = None
    time_min: int | None = None

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        check_jobs(self.jobs)
        if self.kind == "submitit" and self.folder is None:
            raise ValueError("executor: submitit needs a folder for its job files")
        if self.time_min is not None and (not isinstance(self.time_min, int) or self.time_min < 1):
            raise ValueError(f"time_min: expected an integer >= 1 (minutes per cell), got {self.time_min!r}")


def threads_per_cell(executor: str, jobs: int | None) -> int:
    """torch threads of one cell: the cores here shared among ``jobs`` cells at once (one per core by default); one
    under submitit, whose job asks its scheduler for one CPU."""
    cores = os.cpu_count() or 1
    return 1 if executor == "submitit" else max(1, cores // (jobs or cores))


def default_jobs(jobs: int | None, cells: int) -> int:
    """The cells run at once: ``jobs`` when given, else one per CPU core, never more than there are cells."""
    return max(1, min(jobs or os.cpu_count() or 1, cells))


def run_cells(
    function: Callable, cells: Sequence[Cell], executor: Executor, rerun: str
) -> Iterator[tuple[int, object]]:
    """Run ``function(cell.job)`` for every cell where ``executor`` says; yield ``(index, result)`` as each finishes.

    One job (or one cell) runs in this process. A local pool notices a worker that dies
    (:func:`anila_core.processes.run_jobs`), and submitit a job that ended without a result:
    either way the other cells finish, then :class:`WorkersLost` names the lost ones (``rerun``
    says how to redo them). A cell that raises does not stop the others; the first such
    error (in the cells' order) is raised at the end with its own type and fields.
    """
    if executor.kind == "submitit":
        yield from _run_with_submitit(function, cells, executor, rerun)
    elif executor.jobs == 1 or len(cells) == 1:
        for index, cell in enumerate(cells):
            yield index, function(cell.job)
    else:
        yield from run_jobs(
            function, [c.job for c in cells], min(executor.jobs, len(cells)), [c.name for c in cells], rerun=rerun
        )


def _answer(function: Callable, job: object) -> tuple[bool, object]:
    """A submitit job: ``(True, result)``, or ``(False, the exception)`` so that the caller gets its type and fields,
    not a traceback's text."""
    try:
        return True, function(job)
    except Exception as err:
        return False, portable_error(err)


def _run_with_submitit(function: Callable, cells: Sequence[Cell], executor: Executor, rerun: str):
    try:
        import submitit
        from submitit.core.utils import FailedJobError, UncompletedJobError
    except ImportError:
        raise ValueError("executor: submitit is not installed; pip install 'anila_core[cluster]'") from None
    runner = submitit.AutoExecutor(folder=executor.folder)
    # one CPU per cell: a cell trains on one torch thread (see threads_per_cell)
    options = {
        "timeout_min": executor.time_min or DEFAULT_TIME_MIN,
        "slurm_partition": executor.partition,
        "slurm_array_parallelism": executor.jobs,
        "cpus_per_task": 1,
    }
    runner.update_parameters(**{k: v for k, v in options.items() if v is not None})
    submitted = runner.map_array(_answer, [function] * len(cells), [c.job for c in cells])
    where = {job.job_id: index for index, job in enumerate(submitted)}
    lost: list[JobLost] = []
    failed: dict[int, BaseException] = {}
    poll = _POLL_LOCAL_S if runner.cluster == "local" else _POLL_CLUSTER_S
    try:
        for job in submitit.helpers.as_completed(submitted, poll_frequency=poll):
            index = where[job.job_id]
            try:
                ok, value = job.result()
            except (FailedJobError, UncompletedJobError) as err:  # the job's process died or its scheduler ended it
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                lost.append(JobLost(cells[index].name, f"ended without a result (submitit job {job.job_id}: {first})"))
                print(f"error: {lost[-1]}; the other jobs go on", file=sys.stderr, flush=True)
                continue
            if ok:
                yield index, value
            else:
                failed[index] = value
    except BaseException:
        for job in submitted:
            job.cancel(check=False)
        raise
    if failed:
        raise failed[min(failed)]
    if lost:
        raise WorkersLost(lost, rerun)


def print_commands(cells: Sequence[Cell], file=None) -> None:
    """One command per cell, one a line: paste them into any scheduler; each runs its cell alone."""
    for cell in cells:
        print(cell.command_line(), file=file or sys.stdout, flush=True)


def config_flags(settings: dict) -> list[str]:
    """``train``'s flags that set ``settings`` (TrainConfig fields): ``{"step_size": 0.01, "ema": False}`` →
    ``--step-size 0.01 --no-ema``."""
    flags = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:  # repr keeps every digit of a float; argparse reads it back exactly
            flags += [flag, repr(value) if isinstance(value, float) else str(value)]
    return flags
