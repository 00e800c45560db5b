"""Worker processes: a spawned pool that always ends cleanly (joined after the work, terminated on an error or Ctrl-C,
gone when the parent dies) and notices a worker that dies, and the torch thread count of one job or training process."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from anila_core.failures import RunFailure

__all__ = [
    "process_pool",
    "run_jobs",
    "check_jobs",
    "JobLost",
    "WorkersLost",
    "portable_error",
    "torch_threads",
    "training_threads",
    "die_with_parent",
    "THREADS_ENV",
    "MAX_JOBS",
]

#: Linux's prctl option that sends the child a signal when its parent dies
_PR_SET_PDEATHSIG = 1
#: how often the portable watchdog looks whether the parent is still there (seconds)
_WATCHDOG_PERIOD = 0.5
#: the environment variable that overrides the one thread a training process gets on a CPU
THREADS_ENV = "ANILA_TORCH_THREADS"
#: the most worker processes a pool may start per CPU core, and at all: each imports torch (a few hundred MB) and trains
#: on a core of its own, so more workers than a few per core only add memory and switching
JOBS_PER_CORE, MAX_JOBS = 4, 256


def check_jobs(jobs, name: str = "jobs") -> None:
    """``ValueError`` naming ``name`` unless ``jobs`` is ``None`` or an integer in [1, the most this machine can
    use]."""
    if jobs is None:
        return
    cores = os.cpu_count() or 1
    most = min(MAX_JOBS, JOBS_PER_CORE * cores)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {jobs!r}")
    if jobs > most:
        shown = f"{jobs:.3g}" if jobs > 10**15 else str(jobs)
        raise ValueError(
            f"{name}: expected at most {most} (worker processes: {JOBS_PER_CORE} per CPU core of the {cores} here, "
            f"{MAX_JOBS} at most; each holds torch in memory and needs a core to make progress), got {shown}"
        )


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` ends, however it ends (a pool worker's initializer).

    A worker trains for minutes; without this a ``kill -9`` of the parent would leave it
    training and writing its run folder. On Linux the kernel sends SIGKILL at the parent's
    death (``prctl(PR_SET_PDEATHSIG)``); elsewhere, and as a second line, a daemon thread
    exits when the parent pid changes (the worker is then re-parented).
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog below still works
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        import time

        while os.getppid() == parent_pid:
            time.sleep(_WATCHDOG_PERIOD)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


@contextmanager
def process_pool(processes: int) -> Iterator[mp.pool.Pool]:
    """``with process_pool(n) as pool: ...`` — spawned (not forked: torch's threads do not survive a fork) workers that
    end with this process."""
    pool = mp.get_context("spawn").Pool(processes, initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()  # the workers exit on their own: terminating them would leak their semaphores
    finally:
        pool.join()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block and restored after it.

    A job runs in a pool worker or, with one job, in the caller's own process: restoring
    keeps it from changing the caller's setting.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def training_threads(device, jobs: int = 1) -> int:
    """torch's thread count for one training process on ``device`` (a ``torch.device`` or its name), ``jobs`` of them at
    once.

    On a CPU: one, whatever the number of cores. The course's networks (a 2-D MLP, a small
    ConvNet on 8×8 digits) do micro- to milliseconds of work per operation, so a second thread
    mostly adds hand-off time; and on a shared machine each extra thread spins waiting for a
    core that another process holds. Measured on 2 cores at a load average of 4.5-7.8, the
    rings' cpu preset trained at 14 iterations/s on one thread and at 0.9 on two; notebook 02
    ran past 25 minutes that way. ``$ANILA_TORCH_THREADS`` gives another count (a big idle
    machine training images). On CUDA the CPU only feeds the GPU: the cores are shared out
    among the jobs, as before.
    """
    if str(device).startswith("cuda"):
        return max(1, (os.cpu_count() or 1) // max(1, jobs))
    wanted = os.environ.get(THREADS_ENV, "").strip()
    if not wanted:
        return 1
    try:
        threads = int(wanted)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(
            f"${THREADS_ENV}: expected an integer >= 1 (torch threads per training process on a CPU), got {wanted!r}"
        )
    return threads


# --------------------------------------------------------------------------- a pool that notices a dead worker


class JobLost(RunFailure):
    """A job whose worker process died (killed by a signal, the OOM killer, or exited) before it returned."""

    def __init__(self, name: str, how: str):
        super().__init__(
            f"{name}: {'it' if how.startswith('called') else 'its worker process'} {how} before it finished"
        )
        self.name, self.how = name, how


class WorkersLost(RunFailure):
    """Raised after the other jobs finished, when some jobs' workers died: it names each job and how its worker
    ended."""

    def __init__(self, lost: list[JobLost], rerun: str):
        self.lost = lost
        listed = "; ".join(f"{job.name} ({job.how})" for job in lost)
        super().__init__(
            f"{len(lost)} job(s) lost with their worker process: {listed}; every other job finished and was "
            f"kept; {rerun}"
        )


def _ended(exitcode: int | None) -> str:
    """How a process ended, in words: ``was killed by SIGKILL (signal 9)``, ``exited with code 1``."""
    if exitcode is None:
        return "vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ": the out-of-memory killer sends it, as does kill -9" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name} (signal {-exitcode}{hint})"
    return f"exited with code {exitcode}"


def _worker_loop(conn, parent_pid: int) -> None:
    """A pool worker: runs ``(index, function, job)`` messages until ``None``, answering ``(index, ok, result or
    error)``."""
    die_with_parent(parent_pid)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, function, job = message
        try:
            answer = (index, True, function(job))
        except SystemExit as err:  # user code that ended the program: the job is lost, the worker goes on
            answer = (index, None, f"called sys.exit({err.code!r})")
        except BaseException as err:  # the job failed, the worker goes on
            answer = (index, False, portable_error(err))
        try:
            conn.send(answer)
        except Exception as err:  # a result that cannot be pickled
            conn.send((index, False, RuntimeError(f"its result could not be sent back: {type(err).__name__}: {err}")))


def portable_error(err: BaseException) -> BaseException:
    """``err`` if it survives pickling, else a ``RuntimeError`` with its type and message.

    Pickling keeps an exception's type and its attributes (a ``TrainingDiverged``'s iteration and
    cause), so the parent re-raises what the worker raised and recognises it by its type.
    """
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def run_jobs(
    function, jobs: list, processes: int, names: list[str], rerun: str = "run the same command again to redo them"
):
    """Run ``function(job)`` for each of ``jobs`` in ``processes`` spawned workers; yield ``(index, result)`` as each
    finishes.

    Unlike ``multiprocessing.Pool`` (which waits forever for the result of a worker that was
    killed), this watches every worker: when one dies (SIGKILL, SIGTERM, the OOM killer), the
    job it was running is known by its name (``names[i]``), a new worker takes the remaining
    jobs, and once every other job has finished :class:`WorkersLost` is raised naming each
    lost job and how its worker ended (``rerun`` says how to redo them); each is also reported
    on stderr as it dies. A job that raises does not stop the others either; the error of the
    first such job is raised once all have finished.
    On Ctrl-C or any error of the caller the workers are terminated; they end with this
    process whatever way it ends (:func:`die_with_parent`).
    """
    from multiprocessing.connection import wait

    context = mp.get_context("spawn")
    pending = list(range(len(jobs)))[::-1]  # popped from the end: in the given order
    workers: dict = {}  # process -> [connection, index of its job or None]
    lost: list[JobLost] = []
    failed: dict[int, BaseException] = {}

    def report(job: JobLost) -> None:  # at once, not only at the end: the others may run for hours
        lost.append(job)
        print(f"error: {job}; the other jobs go on", file=sys.stderr, flush=True)

    def start() -> None:
        here, there = context.Pipe()
        process = context.Process(target=_worker_loop, args=(there, os.getpid()), daemon=True)
        process.start()
        there.close()
        workers[process] = [here, None]

    def assign(process) -> None:
        conn, _ = workers[process]
        if pending:
            index = pending.pop()
            workers[process][1] = index
            conn.send((index, function, jobs[index]))
        else:
            workers[process][1] = None
            conn.send(None)

    try:
        for _ in range(max(1, min(processes, len(jobs)))):
            start()
        for process in list(workers):
            assign(process)
        while any(job is not None for _, job in workers.values()):
            busy = {conn: p for p, (conn, job) in workers.items() if job is not None}
            ready = wait(list(busy) + [p.sentinel for p, (_, job) in workers.items() if job is not None], timeout=1.0)
            for process, (conn, job) in list(workers.items()):
                if job is None:
                    continue
                answered = False
                try:
                    if conn in ready or conn.poll():
                        index, ok, value = conn.recv()
                        answered = True
                except (EOFError, OSError):
                    pass
                if answered:
                    if ok:
                        yield index, value
                    elif ok is None:
                        report(JobLost(names[index], value))
                    else:
                        failed[index] = value
                    assign(process)
                elif process.sentinel in ready or not process.is_alive():
                    process.join(timeout=5)
                    report(JobLost(names[job], _ended(process.exitcode)))
                    conn.close()
                    del workers[process]
                    if pending:  # the others go on in a fresh worker
                        start()
                        assign(list(workers)[-1])
    except BaseException:
        for process in workers:
            process.terminate()
        raise
    finally:
        for process, (conn, _) in workers.items():
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
            conn.close()
    if failed:  # the first job's error, in the jobs' order (the lost ones were reported as they died)
        raise failed[min(failed)]
    if lost:
        raise WorkersLost(lost, rerun)
