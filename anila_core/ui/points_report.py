"""Figures and tables of runs on points of a file: in 2-D the rings' densities and samples, in more dimensions
two-dimensional projections; training curves; the comparison's figure and table."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from anila_core.sampling.distances import grid_log_probs
from anila_core.sampling.sample_distances import kde_grid_log_probs
from anila_core.ui.plots import plot_density, plot_samples
from anila_core.ui.report import diverged_text, plot_clipped_share, plot_energy_gap, save_figure, settings_text

__all__ = [
    "principal_axes",
    "project",
    "plot_points_training_curves",
    "save_points_run_figures",
    "plot_pairs",
    "plot_points_side_by_side",
    "points_markdown_table",
]

#: at most this many coordinate pairs in a figure of projections
_MAX_PAIRS = 3


def principal_axes(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean ``(D,)`` and the two leading principal directions ``(D, 2)`` of ``points``: the plane that shows most of
    their spread."""
    x = points.detach().double().cpu()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    return mean, vh[:2].T


def project(x: torch.Tensor, mean: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
    """Points ``(N, D)`` on the plane of :func:`principal_axes`: ``(N, 2)``."""
    return (x.detach().double().cpu() - mean) @ axes


def _reach(*sets: torch.Tensor) -> float:
    """Half-width of a square that holds every finite point of ``sets``, with a margin."""
    values = torch.cat([s[torch.isfinite(s).all(1)].abs().flatten() for s in sets])
    return 1.1 * float(values.max()) if len(values) else 1.0


def _model_samples(trainer) -> torch.Tensor:
    """Samples of a trainer for its figures: those its evaluation measures (``eval_samples`` chains), more than one
    batch of negatives."""
    return trainer.sample_for_eval().detach().float().cpu()


def plot_points_training_curves(history: Sequence[dict], axes=None, label: str | None = None):
    """Sliced Wasserstein (and the KDE grid TV in 2-D), the energy gap and AniLA's clipped share against iteration."""
    if axes is None:
        _, axes = plt.subplots(
            1, 3, figsize=(12, 3.2), layout="constrained"
        )  # y labels clear of the panel on their left
    iters = [r["iter"] for r in history]
    line = axes[0].plot(iters, [r["sliced_wasserstein"] for r in history], "o-", ms=3, label=label)[0]
    axes[0].set_ylabel("sliced Wasserstein to held-out")
    if any("kde_grid_tv" in r for r in history):
        axes[0].plot(
            iters,
            [r.get("kde_grid_tv", float("nan")) for r in history],
            "s--",
            ms=3,
            color=line.get_color(),
            label=None if label is None else f"{label}: KDE grid TV",
        )
        axes[0].set_ylabel("sliced W (—), KDE grid TV (--)")
    axes[0].set_xlabel("iteration")
    plot_energy_gap(history, axes[1], label)
    plot_clipped_share(history, axes[2], label)
    if label is not None:
        axes[0].legend(fontsize=8)
    return axes


def plot_pairs(data: torch.Tensor, samples: torch.Tensor | None = None, axes=None, title: str = ""):
    """Data (grey) and samples (blue) on pairs of the first coordinates, ``(0, 1), (0, 2), (1, 2)``: one panel each."""
    pairs = list(itertools.combinations(range(data.shape[1]), 2))[:_MAX_PAIRS]
    if axes is None:
        _, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.6), squeeze=False)
        axes = list(axes[0])
    reach = _reach(data) if samples is None else _reach(data, samples)
    for ax, (i, j) in zip(axes, pairs):
        plot_samples(data[:, [i, j]], ax=ax, extent=reach, color="grey", s=3, alpha=0.4)
        if samples is not None:
            plot_samples(samples[:, [i, j]], ax=ax, extent=reach, color="tab:blue", s=3, alpha=0.5)
        ax.set_xlabel(f"x{i}")
        ax.set_ylabel(f"x{j}")
        ax.set_title(f"{title}coordinates {i} and {j}", fontsize=9)
    return axes


def save_points_run_figures(trainer, out: str | Path) -> None:
    """samples.png and training.png, and in 2-D data_density.png and learned_density.png, else projections.png, for one
    run."""
    out = Path(out)
    points, c = trainer.dataset, trainer.config
    samples = _model_samples(trainer)
    data = torch.cat([points.train, points.held_out])
    if points.dim == 2:
        window = points.window
        model = trainer.eval_model().eval()
        with torch.no_grad():
            learned = grid_log_probs(model, extent=window, device=trainer.device)
        trainer.model.train()
        for name, density, title in (
            (
                "data_density.png",
                kde_grid_log_probs(points.held_out, extent=window),
                f"held-out points of {c.data_name}: a KDE",
            ),
            ("learned_density.png", learned, f"learned density ({c.sampler}, iter {trainer.iteration})"),
        ):
            fig, ax = plt.subplots(figsize=(4, 4))
            plot_density(density, ax=ax, extent=window)
            ax.set_title(title, fontsize=9)
            save_figure(fig, out / name)
        fig, ax = plt.subplots(figsize=(4, 4))
        plot_samples(data, ax=ax, extent=window, color="grey", s=3, alpha=0.3)
        plot_samples(samples, ax=ax, extent=window, color="tab:blue")
        ax.set_title(f"negative samples ({c.sampler}) over the data (grey)", fontsize=9)
        save_figure(fig, out / "samples.png")
    else:
        mean, axes2 = principal_axes(data)
        on_data, on_samples = project(data, mean, axes2), project(samples, mean, axes2)
        fig, ax = plt.subplots(figsize=(4, 4))
        reach = _reach(on_data, on_samples)
        plot_samples(on_data, ax=ax, extent=reach, color="grey", s=3, alpha=0.3)
        plot_samples(on_samples, ax=ax, extent=reach, color="tab:blue")
        ax.set_xlabel("first principal axis of the data")
        ax.set_ylabel("second principal axis")
        ax.set_title(f"negative samples ({c.sampler}) over the data (grey), D = {points.dim}", fontsize=9)
        save_figure(fig, out / "samples.png")
        drawn = plot_pairs(data, samples, title=f"{c.sampler}: ")
        save_figure(drawn[0].figure, out / "projections.png")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    plot_points_training_curves(trainer.history, axes=axes)
    fig.tight_layout()
    save_figure(fig, out / "training.png")


def plot_points_side_by_side(runs: Mapping[str, dict], points, fig=None):
    """The rings' Figure 1 for points of a file: the data, then each sampler's samples (and, in 2-D, learned density
    above them).

    ``runs`` maps a label to ``{"samples": (N, D), "final": final.json, "log_p": grid log-probs on the window (2-D
    only)}``.
    In more than two dimensions everything is drawn on the data's two leading principal axes.
    """
    n = len(runs)
    two_d = points.dim == 2
    data = torch.cat([points.train, points.held_out])
    if fig is None:
        fig = plt.figure(figsize=(3.2 * (n + 1), 6.4 if two_d else 3.4))
    axes = fig.subplots(2 if two_d else 1, n + 1, squeeze=False)
    if two_d:
        window = points.window
        plot_density(kde_grid_log_probs(points.held_out, extent=window), ax=axes[0, 0], extent=window)
        axes[0, 0].set_title("held-out data (KDE)")
        plot_samples(data, ax=axes[1, 0], extent=window, color="tab:green")
        axes[1, 0].set_title("data points")
        for j, (label, run) in enumerate(runs.items(), start=1):
            f = run["final"]
            plot_density(run["log_p"], ax=axes[0, j], extent=window)
            axes[0, j].set_title(f"{label}: KDE TV {f['kde_grid_tv']:.3f}", fontsize=9)
            plot_samples(run["samples"], ax=axes[1, j], extent=window, color="tab:blue")
            axes[1, j].set_title(f"{label}: SW {f['sliced_wasserstein']:.3f}", fontsize=9)
    else:
        mean, plane = principal_axes(data)
        on_data = project(data, mean, plane)
        shown = {label: project(run["samples"], mean, plane) for label, run in runs.items()}
        reach = _reach(on_data, *shown.values())
        plot_samples(on_data, ax=axes[0, 0], extent=reach, color="tab:green")
        axes[0, 0].set_title(f"data (D = {points.dim}, principal axes)", fontsize=9)
        for j, (label, x) in enumerate(shown.items(), start=1):
            plot_samples(x, ax=axes[0, j], extent=reach, color="tab:blue")
            axes[0, j].set_title(f"{label}: SW {runs[label]['final']['sliced_wasserstein']:.3f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def points_markdown_table(finals: Mapping[str, dict]) -> str:
    """One row per sampler: sliced Wasserstein (final, best), MMD², KDE grid TV (2-D), iterations, wall time,
    settings."""
    lines = [
        "| sampler | sliced Wasserstein (final) | sliced Wasserstein (best, iter) | MMD² | KDE grid TV | clipped | "
        "iters | wall s | settings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, f in finals.items():
        settings = settings_text(f["config"])
        if f.get("diverged"):  # counted, not dropped
            dashes = " | ".join(["—"] * 4)
            lines.append(f"| {label} | {diverged_text(f)} | {dashes} | {f['iters']} | {f['wall_s']:.0f} | {settings} |")
            continue
        kde = "—" if f.get("kde_grid_tv") is None else f"{f['kde_grid_tv']:.3f}"
        clipped = "—" if f.get("clipped_share") is None else f"{f['clipped_share']:.1%}"  # AniLA's share of |∇E| > b
        lines.append(
            f"| {label} | {f['sliced_wasserstein']:.4f} | {f['best_sliced_wasserstein']:.4f} ({f['best_iter']}) | "
            f"{f['mmd']:.4f} | {kde} | {clipped} | {f['iters']} | {f['wall_s']:.0f} | {settings} |"
        )
    first = next((f for f in finals.values() if not f.get("diverged")), None)
    if first is not None:
        lines += [
            "",
            f"Distances to the {first['n_held_out']} held-out points of {first['dataset']} (D = {first['dim']}), in "
            "the "
            f"model's units{' (standardised)' if first['units']['standardized'] else ''}; no density of the data is "
            "known, "
            "so none of them is an exact grid TV.",
        ]
    return "\n".join(lines) + "\n"
