"""What a run is made of that does not change while it trains: its settings, data kind, sampler, networks and device."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anila_core.sampling.samplers import Sampler
from anila_core.training.config import TrainConfig
from anila_core.training.distributed import DistInfo
from anila_core.training.kinds import DataKind
from anila_core.training.networks import Networks

__all__ = ["RunParts"]


@dataclass(frozen=True)
class RunParts:
    """The fixed parts of a run, beside its :class:`~anila_core.training.state.TrainState` (what changes)."""

    config: TrainConfig
    kind: DataKind
    shape: tuple[int, ...]  # one data point's: (d,) or (C, H, W)
    sampler: Sampler
    nets: Networks
    device: torch.device
    dist: DistInfo
