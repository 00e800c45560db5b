"""Worker processes: a spawned pool that always ends cleanly (joined after the work, terminated on an error or Ctrl-C, gone when the parent dies), and a thread count for one job."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["process_pool", "torch_threads", "die_with_parent"]

#: Linux's prctl option that sends the child a signal when its parent dies
_PR_SET_PDEATHSIG = 1
#: how often the portable watchdog looks whether the parent is still there (seconds)
_WATCHDOG_PERIOD = 0.5


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
