"""What a run measures at its evaluation points: a row of energies and chain statistics, plus its data kind's own
measures."""

from __future__ import annotations

import torch

from anila_core.sampling.kernel import Trace
from anila_core.training.parts import RunParts
from anila_core.training.state import TrainState

__all__ = ["is_eval_point", "evaluate"]


def is_eval_point(parts: RunParts, iteration: int, end: int) -> bool:
    """Whether a row of diagnostics follows ``iteration``: each ``eval_every`` iterations, at FID points, at the end."""
    return iteration % parts.config.eval_every == 0 or iteration == end or parts.kind.is_fid_point(iteration, end)


@torch.no_grad()
def evaluate(parts: RunParts, state: TrainState, stats: dict, trace: Trace | None, fid: bool | None = None) -> dict:
    """A row of diagnostics after a step: energies and their gap, chain statistics, and the data kind's measures.

    2-D targets: exact density distances (grid TV and KL) and the MMD to exact samples.
    Points of a file: distances to the held-out points. Images: FID/KID (and the digits'
    class coverage) when ``fid`` (default: at ``fid_every`` iterations and at the end).
    """
    state.eval_model().eval()  # spectral norm's power iteration and dropout stay as trained while the model is measured
    row = {
        "iter": state.iteration,
        "wall_s": round(state.wall_s, 3),
        "lr": state.learning_rate(parts.config, state.iteration - 1),
        "loss": float(stats["loss"]),
        "energy_data": float(stats["energy_data"]),
        "energy_samples": float(stats["energy_samples"]),
        "energy_gap": float(stats["energy_data"] - stats["energy_samples"]),
    }
    row.update(parts.kind.metrics(parts, state, fid))
    if "global_accept" in stats:
        row["global_accept"] = float(stats["global_accept"])
    if trace is not None:
        row.update(parts.kind.chain_statistics(trace, parts.shape))
    state.model.train()
    return row
