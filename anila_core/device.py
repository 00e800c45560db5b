"""Where code runs: ``resolve_device`` turns ``"auto"``, ``"cpu"`` or ``"cuda[:N]"`` into a checked ``torch.device``;
``processor_name`` says which CPU."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import torch

__all__ = ["resolve_device", "processor_name"]


def processor_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says: results and timings record it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _NoCudaRuntimeNotice(logging.Filter):
    """Drops torch's ``No CUDA runtime is found, using CUDA_HOME=...`` notice, and no other record.

    ``torch.utils.cpp_extension`` logs it when it is imported on a machine that has a CUDA
    toolkit but no GPU, and inductor imports it while it compiles a sampler's transition for the
    CPU: each process that compiles printed it once (twice in ``make demo``, one per run). Such a
    compile builds C++ for the CPU and never reads CUDA_HOME, so the notice only alarms; every
    other message of that logger, warnings included, still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("No CUDA runtime is found"))


_CPP_EXTENSION_LOG = logging.getLogger("torch.utils.cpp_extension")  # the logger that module gets: same name
if not any(isinstance(f, _NoCudaRuntimeNotice) for f in _CPP_EXTENSION_LOG.filters):
    _CPP_EXTENSION_LOG.addFilter(_NoCudaRuntimeNotice())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device: {device!r} was asked for but this machine has {torch.cuda.device_count()} CUDA device(s); "
            f"expected 'cuda:0' to 'cuda:{torch.cuda.device_count() - 1}', 'cpu' or 'auto'"
        )
    return dev
