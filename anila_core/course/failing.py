"""Notebook 05's tools for watching a training run fail: run it while recording the energy gap and the samples, plot
both, and say in words what went wrong.

Every sentence :func:`diagnose` writes is computed from the recorded numbers, with thresholds
named here, so the notebook's text follows what its runs did at any budget.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch

from anila_core.notices import collect_notices
from anila_core.training.config import TrainConfig
from anila_core.training.guard import TrainingDiverged
from anila_core.training.trainer import Trainer
from anila_core.ui.plots import show_image_grid

__all__ = [
    "Watched",
    "watch_run",
    "plot_watched",
    "diagnose",
    "saturated_share",
    "RUNAWAY_GAP",
    "SATURATED",
    "LAGGING_GAP",
]

#: |energy gap| beyond which a run is called runaway (the loss of a healthy digits run stays within about ±1)
RUNAWAY_GAP = 10.0
#: share of pixels within 0.01 of ±1 beyond which the samples are called saturated (the digits have about half their
#: pixels at −1)
SATURATED = 0.9
#: an energy gap below this over the second half of the run: the chains lag behind the model
LAGGING_GAP = -0.5


def saturated_share(x: torch.Tensor) -> float:
    """The share of pixels within 0.01 of the ends of the range [−1, 1]: near 1 for chains thrown against the box's
    walls."""
    return float((x.abs() > 0.99).float().mean())


@dataclass
class Watched:
    """A run watched by :func:`watch_run`: its trainer, a row per evaluation, sample snapshots, and how it ended."""

    trainer: Trainer
    rows: list[dict] = field(default_factory=list)
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        """Whether the guard stopped the run before its last iteration."""
        return self.error is not None


def watch_run(config: TrainConfig, snapshot_images: int = 16) -> Watched:
    """Train ``config`` (a digits or image config), recording at each evaluation the energies, the saturation and a few
    samples.

    A divergence the guard catches does not raise here: it is recorded in ``error`` (with the
    rollbacks the trainer took, in ``trainer.rollbacks``), so a notebook can show it.
    """
    watched = Watched(Trainer(config, progress=False))

    def record(trainer, row):
        x = trainer.samples.detach().cpu()
        watched.rows.append({**row, "saturated": saturated_share(x)})
        watched.snapshots[row["iter"]] = x[:snapshot_images].clone()

    with collect_notices() as notes:  # the rollback notices: the notebook shows them in its own text
        try:
            watched.trainer.run(callback=record)
        except TrainingDiverged as err:
            watched.error = str(err)
            if watched.trainer.samples is not None:  # the samples of the iteration that failed, when they are finite
                x = watched.trainer.samples.detach().cpu()
                if torch.isfinite(x).all():
                    watched.snapshots[watched.trainer.iteration] = x[:snapshot_images].clone()
    watched.notes = list(notes)
    return watched


def plot_watched(runs: dict[str, Watched], snapshots: int = 4, title: str = ""):
    """Left the energy gap of every run (symmetric log scale: a runaway gap spans decades); right, each run's samples at
    a few evaluations."""
    n = len(runs)
    fig = plt.figure(figsize=(4.8 + 1.9 * snapshots, 2.1 * n + 0.6), layout="constrained")
    grid = fig.add_gridspec(n, 1 + snapshots, width_ratios=[2.6] + [1] * snapshots)
    ax = fig.add_subplot(grid[:, 0])
    for label, w in runs.items():
        iters = [r["iter"] for r in w.rows]
        (line,) = ax.plot(iters, [r["energy_gap"] for r in w.rows], "o-", ms=3, label=label)
        if w.stopped:
            ax.plot(iters[-1:], [w.rows[-1]["energy_gap"]] if w.rows else [], "x", ms=10, color=line.get_color())
    ax.set_yscale("symlog", linthresh=1.0)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="iteration", ylabel="E(data) − E(samples), symlog")
    ax.legend(fontsize=8)
    ax.set_title(title or "energy gap (× where the guard stopped a run)", fontsize=10)
    for i, (label, w) in enumerate(runs.items()):
        shown = sorted(w.snapshots)
        shown = [shown[round(j * (len(shown) - 1) / max(1, snapshots - 1))] for j in range(min(snapshots, len(shown)))]
        for j in range(snapshots):
            a = fig.add_subplot(grid[i, 1 + j])
            if j < len(shown):
                # the run's name wrapped to the panel's width, so that a long one does not run over its neighbour
                name = textwrap.fill(label, 22)
                show_image_grid(
                    w.snapshots[shown[j]],
                    nrow=4,
                    ax=a,
                    title=f"{name}\niteration {shown[j]}" if j == 0 else f"iteration {shown[j]}",
                )
            else:
                a.set_axis_off()
    return fig


def diagnose(label: str, w: Watched) -> str:
    """One Markdown line on how the run ended, from its numbers: stopped by the guard, runaway, lagging, saturated, or
    healthy."""
    if not w.rows:
        return f"* **{label}**: no evaluation recorded" + (f"; the guard stopped it: {w.error}" if w.error else ".")
    gaps = [r["energy_gap"] for r in w.rows]
    last = w.rows[-1]
    late = gaps[len(gaps) // 2 :]
    parts = []
    if w.trainer.rollbacks:
        parts.append(
            f"rolled back {len(w.trainer.rollbacks)} time(s) (at iteration "
            + ", ".join(str(r["iter"]) for r in w.trainer.rollbacks)
            + f"; learning rate now ×{w.trainer.lr_factor:g})"
        )
    if w.stopped:
        parts.append(f"**stopped by the guard** after iteration {w.trainer.iteration}: {w.error.split(';')[0]}")
    largest = max(abs(g) for g in gaps)
    if largest > RUNAWAY_GAP and abs(gaps[-1]) > 2 * abs(late[0]):
        # still growing: at the end more than twice what it was halfway through
        parts.append(
            f"**the energy gap ran away** (|gap| {abs(late[0]):.3g} halfway, {abs(gaps[-1]):.3g} at the end, against "
            "±1 for "
            "a healthy run): the loss pushes the data down and the samples up without limit"
        )
    elif largest > RUNAWAY_GAP:
        parts.append(
            f"**the energy gap swung far** (up to {largest:.3g} in size, against ±1 for a healthy run) but did not "
            "keep "
            f"growing (last {gaps[-1]:+.3g}): the chains did not keep up with the model, and something held the gap "
            "back"
        )
    elif sum(late) / len(late) < LAGGING_GAP:
        parts.append(
            f"**the chains lag**: the gap averaged {sum(late) / len(late):+.2f} over the second half, the samples sit "
            "above the data in energy"
        )
    if last["saturated"] > SATURATED:
        parts.append(
            f"**saturated samples**: {last['saturated']:.0%} of the pixels at ±1, chains thrown against the walls of "
            "the box"
        )
    if not parts:
        parts.append(
            f"no sign of failure in these numbers: the gap stayed within ±{max(abs(g) for g in gaps):.2g} and "
            f"{last['saturated']:.0%} of the sample pixels are at ±1 (about half of a digit's pixels are background, "
            "at −1)"
        )
    scale = (
        f"E(data) ended at {last['energy_data']:+.3g}"
        if math.isfinite(last["energy_data"])
        else "E(data) is not finite"
    )
    return f"* **{label}**: " + "; ".join(parts) + f". ({scale}.)"
