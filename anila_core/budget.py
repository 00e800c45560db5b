"""How much work the notebooks do: the budget ``smoke`` (CI), ``cpu`` (a laptop) or ``gpu``, from ``$ANILA_BUDGET``."""

from __future__ import annotations

import os

import torch

__all__ = ["BUDGETS", "resolve_budget"]

#: ``smoke``: seconds, for CI; ``cpu``: minutes on a laptop; ``gpu``: minutes on one GPU.
BUDGETS = ("smoke", "cpu", "gpu")


def resolve_budget(budget: str | None = None) -> str:
    """The notebook budget: the argument, else ``$ANILA_BUDGET``, else ``gpu`` with CUDA and ``cpu`` without."""
    budget = budget or os.environ.get("ANILA_BUDGET") or ("gpu" if torch.cuda.is_available() else "cpu")
    if budget not in BUDGETS:
        raise ValueError(f"ANILA_BUDGET: expected one of {BUDGETS}, got {budget!r}")
    return budget
