"""Figures and tables a finished run or comparison writes: densities, samples, training curves, the side-by-side figure."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from .fileio import atomic_write
from .metrics import grid_log_probs
from .plots import plot_density, plot_samples

__all__ = ["save_run_figures", "plot_training_curves", "plot_side_by_side", "save_figure", "markdown_table"]


def save_figure(fig, path: str | Path) -> None:
    """Save a figure atomically as PNG and close it."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_training_curves(history: Sequence[dict], axes=None, label: str | None = None):
    """Grid TV, the energy gap and the sampler's clipped share against iteration (one column each)."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    iters = [r["iter"] for r in history]
    axes[0].plot(iters, [r["grid_tv"] for r in history], "o-", ms=3, label=label)
    axes[0].set_ylabel("grid TV to target")
    axes[0].set_ylim(0, 1)
    axes[1].plot(iters, [r["energy_gap"] for r in history], "o-", ms=3, label=label)
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set_ylabel("E(data) − E(samples)")
    axes[2].plot(iters, [r.get("clipped_share", 0.0) for r in history], "o-", ms=3, label=label)
    axes[2].set_ylabel("share of |∇E| > b")
    for ax in axes:
        ax.set_xlabel("iteration")
    if label is not None:
        axes[0].legend(fontsize=8)
    return axes


def save_run_figures(trainer, out: str | Path) -> None:
    """true_density.png, learned_density.png, samples.png and training.png for one run."""
    out = Path(out)
    model = trainer.eval_model().eval()
    with torch.no_grad():
        learned = grid_log_probs(model, device=trainer.device)
    trainer.model.train()
    for name, density, title in (
        ("true_density.png", trainer.target, f"true density ({trainer.config.target})"),
        ("learned_density.png", learned, f"learned density ({trainer.config.sampler}, iter {trainer.iteration})"),
    ):
        fig, ax = plt.subplots(figsize=(4, 4))
        plot_density(density, ax=ax)
        ax.set_title(title, fontsize=9)
        save_figure(fig, out / name)
    fig, ax = plt.subplots(figsize=(4, 4))
    plot_samples(trainer.samples.cpu() if trainer.samples is not None else trainer.sample_for_eval(), ax=ax, color="tab:blue")
    ax.set_title(f"negative samples ({trainer.config.sampler})", fontsize=9)
    save_figure(fig, out / "samples.png")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    plot_training_curves(trainer.history, axes=axes)
    save_figure(fig, out / "training.png")


def plot_side_by_side(runs: Mapping[str, dict], target, fig=None):
    """The paper's Figure 1: the true density, then each sampler's learned density and samples.

    ``runs`` maps a sampler label to ``{"log_p": grid log-probs, "samples": (N, 2), "final": final.json}``.
    """
    n = len(runs)
    if fig is None:
        fig = plt.figure(figsize=(3.2 * (n + 1), 6.4))
    axes = fig.subplots(2, n + 1, squeeze=False)
    plot_density(target, ax=axes[0, 0])
    axes[0, 0].set_title("true density")
    plot_samples(target.sample(2000, generator=torch.Generator().manual_seed(0)), ax=axes[1, 0], color="tab:green")
    axes[1, 0].set_title("data samples")
    for j, (label, run) in enumerate(runs.items(), start=1):
        plot_density(run["log_p"], ax=axes[0, j])
        axes[0, j].set_title(f"{label}: TV {run['final']['grid_tv']:.3f}")
        plot_samples(run["samples"], ax=axes[1, j], color="tab:blue")
        axes[1, j].set_title(f"{label}: samples")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def markdown_table(finals: Mapping[str, dict]) -> str:
    """One row per sampler: final and best grid TV, grid KL, MMD, iterations, wall time, and its settings."""
    lines = [
        "| sampler | grid TV (final) | grid TV (best, iter) | grid KL (nats) | MMD² | iters | wall s | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, f in finals.items():
        c = f["config"]
        settings = f"ε={c['step_size']:g}, K={c['n_steps']}"
        if c["sampler"] == "anila":
            settings += f", b={c['b']:g}, norm={c['norm']}"
        if c.get("metropolis"):
            settings += ", MALA"
        settings += f", seed={c['seed']}"
        lines.append(
            f"| {label} | {f['grid_tv']:.3f} | {f['best_grid_tv']:.3f} ({f['best_iter']}) | {f['grid_kl']:.3f} | "
            f"{f['mmd']:.4f} | {f['iters']} | {f['wall_s']:.0f} | {settings} |"
        )
    return "\n".join(lines) + "\n"
