"""Errors that stop a run for a reason outside its input (a full disk, too little memory): one message, exit code 3 on
the command line."""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["RunFailure", "DiskFull", "OutOfMemory", "LockLost", "disk_full", "is_out_of_memory"]


class RunFailure(RuntimeError):
    """A run stopped by the machine it runs on; the message names the cause and what to do."""


class DiskFull(RunFailure):
    """No space left on the device while a run file was written (the file it was to replace is intact)."""


class OutOfMemory(RunFailure):
    """An allocation failed (CPU or GPU); the message names the sizes to reduce."""


class LockLost(RunFailure):
    """The folder's lock file is no longer the one this writer took (deleted, replaced, or the folder moved): it stops
    writing."""


#: errno values of a write that failed for lack of space (ENOSPC) or quota (EDQUOT)
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def disk_full(err: BaseException, path: str | Path) -> DiskFull | None:
    """The :class:`DiskFull` that ``err``, raised while writing ``path``, stands for; ``None`` for any other error.

    ``torch.save`` does not raise ``OSError`` on a full disk: its zip writer checks how far each
    write got and raises ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected pos``
    (or "file write failed") instead.
    """
    if isinstance(err, DiskFull):
        return err
    full = isinstance(err, OSError) and err.errno in _NO_SPACE
    full = full or (isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "file write failed" in str(err)))
    if not full:
        return None
    return DiskFull(
        f"disk full / no space left while writing {path} (the file it was to replace, if any, is kept as it was)"
    )


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a failed allocation: ``MemoryError``, CUDA's ``torch.OutOfMemoryError``, or the CPU
    allocator's ``RuntimeError``."""
    if isinstance(err, (MemoryError, OutOfMemory)):
        return True
    import torch

    if isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
