"""Worker processes: a spawned pool that always ends cleanly (joined after the work, terminated on an error or Ctrl-C, gone when the parent dies), and the torch thread count of one job or training process."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["process_pool", "torch_threads", "training_threads", "die_with_parent", "THREADS_ENV"]

#: Linux's prctl option that sends the child a signal when its parent dies
_PR_SET_PDEATHSIG = 1
#: how often the portable watchdog looks whether the parent is still there (seconds)
_WATCHDOG_PERIOD = 0.5
#: the environment variable that overrides the one thread a training process gets on a CPU
THREADS_ENV = "ANILA_TORCH_THREADS"


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
    """``with process_pool(n) as pool: ...`` — spawned (not forked: torch's threads do not survive a fork) workers that end with this process."""
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
    """torch's thread count for one training process on ``device`` (a ``torch.device`` or its name), ``jobs`` of them at once.

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
        raise ValueError(f"${THREADS_ENV}: expected an integer >= 1 (torch threads per training process on a CPU), got {wanted!r}")
    return threads
