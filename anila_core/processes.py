"""Worker processes: a spawned pool that always ends cleanly (joined after the work, terminated on an error or Ctrl-C), and a thread count for one job."""

from __future__ import annotations

import multiprocessing as mp
from contextlib import contextmanager
from typing import Iterator

__all__ = ["process_pool", "torch_threads"]


@contextmanager
def process_pool(processes: int) -> Iterator[mp.pool.Pool]:
    """``with process_pool(n) as pool: ...`` — spawned (not forked: torch's threads do not survive a fork) workers."""
    pool = mp.get_context("spawn").Pool(processes)
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
