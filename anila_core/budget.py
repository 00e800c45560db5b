"""Where code runs and how much work it does: the device choice and the notebook budget (``ANILA_BUDGET``)."""

from __future__ import annotations

import os

import torch

__all__ = ["BUDGETS", "resolve_budget", "resolve_device"]

#: ``smoke``: seconds, for CI; ``cpu``: minutes on a laptop; ``gpu``: minutes on one GPU.
BUDGETS = ("smoke", "cpu", "gpu")


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
        raise ValueError(f"device: {device!r} was asked for but this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"expected 'cuda:0' to 'cuda:{torch.cuda.device_count() - 1}', 'cpu' or 'auto'")
    return dev


def resolve_budget(budget: str | None = None) -> str:
    """The notebook budget: the argument, else ``$ANILA_BUDGET``, else ``gpu`` with CUDA and ``cpu`` without."""
    budget = budget or os.environ.get("ANILA_BUDGET") or ("gpu" if torch.cuda.is_available() else "cpu")
    if budget not in BUDGETS:
        raise ValueError(f"ANILA_BUDGET: expected one of {BUDGETS}, got {budget!r}")
    return budget
