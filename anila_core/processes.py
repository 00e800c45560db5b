"""A pool of spawned worker processes that always ends cleanly: joined after the work, terminated on an error or Ctrl-C."""

from __future__ import annotations

import multiprocessing as mp
from contextlib import contextmanager
from typing import Iterator

__all__ = ["process_pool"]


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
