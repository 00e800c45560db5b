"""Figures and tables a finished run or comparison writes: densities or sample grids, training and FID curves, step-size
maps, side-by-side figures."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from anila_core.fileio import atomic_write
from anila_core.sampling.distances import grid_log_probs
from anila_core.ui.plots import plot_density, plot_samples, show_image_grid

__all__ = [
    "distinguish_runs",
    "wall_time_note",
    "save_run_figures",
    "plot_training_curves",
    "plot_energy_gap",
    "plot_clipped_share",
    "plot_side_by_side",
    "model_densities",
    "save_figure",
    "settings_text",
    "markdown_table",
    "diverged_text",
    "save_image_run_figures",
    "plot_image_training_curves",
    "plot_fid_curve",
    "plot_step_size_image",
    "STEP_MAP_LABEL",
    "plot_image_side_by_side",
    "image_markdown_table",
]


def save_figure(fig, path: str | Path) -> None:
    """Save a figure atomically as PNG and close it."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def plot_training_curves(history: Sequence[dict], axes=None, label: str | None = None):
    """Grid TV, the energy gap and the sampler's clipped share against iteration (one column each)."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    iters = [r["iter"] for r in history]
    axes[0].plot(iters, [r["grid_tv"] for r in history], "o-", ms=3, label=label)
    axes[0].set_ylabel("grid TV to target")
    axes[0].set_ylim(0, 1)
    axes[0].set_xlabel("iteration")
    plot_energy_gap(history, axes[1], label)
    plot_clipped_share(history, axes[2], label)
    if label is not None:
        axes[0].legend(fontsize=8)
    return axes


def plot_energy_gap(history: Sequence[dict], ax, label: str | None = None) -> None:
    """E(data) − E(samples) against iteration, with the zero line: the panel every run's training figure has."""
    ax.plot([r["iter"] for r in history], [r["energy_gap"] for r in history], "o-", ms=3, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("E(data) − E(samples)")
    ax.set_xlabel("iteration")


def plot_clipped_share(history: Sequence[dict], ax, label: str | None = None) -> None:
    """AniLA's share of coordinates with |∇E| > b against iteration (NaN where a row has none: other samplers)."""
    ax.plot(
        [r["iter"] for r in history], [r.get("clipped_share", float("nan")) for r in history], "o-", ms=3, label=label
    )
    ax.set_ylabel("share of |∇E| > b")
    ax.set_xlabel("iteration")


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
    plot_samples(
        trainer.samples.cpu() if trainer.samples is not None else trainer.sample_for_eval(), ax=ax, color="tab:blue"
    )
    ax.set_title(f"negative samples ({trainer.config.sampler})", fontsize=9)
    save_figure(fig, out / "samples.png")
    # constrained layout: each panel's y label gets its own room instead of reaching into the panel on its left
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    plot_training_curves(trainer.history, axes=axes)
    save_figure(fig, out / "training.png")


def model_densities(trainer) -> dict:
    """A trained 2-D model's two densities on the grid: ``log_p`` of exp(−E) and ``sampler_log_p``, what its sampler
    draws at small step.

    The second is ``None`` where the sampler has no such law (pSGLD); for Langevin and the
    Metropolis-adjusted samplers it equals the first (see :mod:`anila_core.sampling.small_step`).
    """
    from anila_core.sampling.distances import grid_log_probs
    from anila_core.sampling.small_step import small_step_log_probs

    model = trainer.eval_model()
    with torch.no_grad():
        log_p = grid_log_probs(model, device=trainer.device)
    try:
        sampler_log_p = small_step_log_probs(trainer.sampler, model, device=trainer.device).log_probs
    except ValueError:
        sampler_log_p = None
    return {"log_p": log_p, "sampler_log_p": sampler_log_p}


def plot_side_by_side(runs: Mapping[str, dict], target, fig=None):
    """The paper's Figure 1, with the second density: the true density, then per run exp(−E), its sampler's small-step
    density and its samples.

    ``runs`` maps a run's label to ``{"log_p": grid log-probs of exp(−E), "sampler_log_p": those
    of the density its sampler draws as ε → 0 (or ``None``), "samples": (N, 2), "final": final.json}``
    (:func:`model_densities` gives the first two). Where AniLA clips, the two rows differ: the
    energy was fitted so that its *sampler* matches the data.
    """
    n = len(runs)
    if fig is None:
        fig = plt.figure(figsize=(3.2 * (n + 1), 9.2))
    axes = fig.subplots(3, n + 1, squeeze=False)
    plot_density(target, ax=axes[0, 0])
    axes[0, 0].set_title("true density")
    axes[1, 0].axis("off")
    axes[1, 0].text(
        0.5,
        0.5,
        "row 2: the density each\nsampler draws from its\ntrained energy at small step\n"
        "(exp(−E)/a for AniLA;\nexp(−E) for Langevin)",
        ha="center",
        va="center",
        fontsize=9,
        transform=axes[1, 0].transAxes,
    )
    plot_samples(target.sample(2000, generator=torch.Generator().manual_seed(0)), ax=axes[2, 0], color="tab:green")
    axes[2, 0].set_title("data samples")
    for j, (label, run) in enumerate(runs.items(), start=1):
        final = run["final"]
        if final.get("diverged"):
            _diverged_column(axes[:, j], label, final)
            continue
        plot_density(run["log_p"], ax=axes[0, j])
        axes[0, j].set_title(f"{label}: exp(−E), TV {final['grid_tv']:.3f}", fontsize=10)
        if run.get("sampler_log_p") is not None:
            plot_density(run["sampler_log_p"], ax=axes[1, j])
            tv = final.get("sampler_grid_tv")
            axes[1, j].set_title(
                f"{label}: its sampler's density" + ("" if tv is None else f", TV {tv:.3f}"), fontsize=9
            )  # the longest title: kept within its column
        else:
            axes[1, j].axis("off")
            axes[1, j].set_title(f"{label}: no small-step density", fontsize=10)
        plot_samples(run["samples"], ax=axes[2, j], color="tab:blue")
        clipped = final.get("clipped_share")
        axes[2, j].set_title(
            f"{label}: samples" + ("" if clipped is None else f", {100 * clipped:.0f} % clipped"), fontsize=10
        )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _diverged_column(axes, label: str, final: Mapping) -> None:
    """A run that diverged, in a side-by-side figure: no density and no samples, where and why it stopped instead."""
    for ax in axes:
        ax.axis("off")
    axes[0].set_title(f"{label}: diverged", fontsize=10)
    axes[0].text(
        0.5,
        0.5,
        f"diverged at iteration\n{final['diverged_at']} of {final['config']['iters']}:\nno trained energy",
        ha="center",
        va="center",
        fontsize=10,
        color="tab:red",
        transform=axes[0].transAxes,
    )


def diverged_text(final: Mapping) -> str:
    """A table's cell for a run that diverged: ``diverged at iteration 1481``."""
    return f"diverged at iteration {final['diverged_at']}"


def _maybe(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def settings_text(c: Mapping) -> str:
    """A run's sampler settings for a table row, from its config dict: ``ε=0.01, K=30, b=3, norm=coordinate, seed=0``.

    The noise scale τ shows when it is not 1 (the image presets' cold chains), AniLA's
    noise-only variant when chosen.
    """
    settings = f"ε={c['step_size']:g}"
    if c.get("noise_scale", 1.0) != 1.0:
        settings += f", τ={c['noise_scale']:g}"
    settings += f", K={c['n_steps']}"
    if c["sampler"] == "anila":
        settings += f", b={c['b']:g}, norm={c['norm']}" + (", noise only" if c.get("variant") == "noise_only" else "")
    if c["sampler"] == "hmc":
        settings += f", L={c['hmc_leapfrog']}"
    if c.get("metropolis"):
        settings += ", MALA"
    return settings + f", seed={c['seed']}"


def _percent(share) -> str:
    return "—" if share is None else f"{100 * share:.1f} %"


def markdown_table(finals: Mapping[str, dict]) -> str:
    """One row per run: final and best grid TV of exp(−E), grid KL, the grid TV of the sampler's small-step density,
    AniLA's clipped share, MMD, iterations, wall time, settings."""
    lines = [
        "| run | grid TV (final) | grid TV (best, iter) | grid KL (nats) | its sampler's density: grid TV | clipped | "
        "MMD² | iters | wall s | settings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, f in finals.items():
        settings = settings_text(f["config"])
        if f.get("diverged"):  # counted, not dropped: the row says where it stopped
            dashes = " | ".join(["—"] * 5)
            lines.append(f"| {label} | {diverged_text(f)} | {dashes} | {f['iters']} | {f['wall_s']:.0f} | {settings} |")
            continue
        lines.append(
            f"| {label} | {f['grid_tv']:.3f} | {f['best_grid_tv']:.3f} ({f['best_iter']}) | {f['grid_kl']:.3f} | "
            f"{_maybe(f.get('sampler_grid_tv'), '.3f')} | {_percent(f.get('clipped_share'))} | {f['mmd']:.4f} | "
            f"{f['iters']} | "
            f"{f['wall_s']:.0f} | {settings} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- image runs


def plot_image_training_curves(history: Sequence[dict], axes=None, label: str | None = None):
    """The energy gap, the chains' per-coordinate gradient scale and AniLA's clipped share against iteration."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    plot_energy_gap(history, axes[0], label)
    axes[1].plot(
        [r["iter"] for r in history], [r.get("grad_rms", float("nan")) for r in history], "o-", ms=3, label=label
    )
    axes[1].set_ylabel("rms of ∇E per coordinate")
    plot_clipped_share(history, axes[2], label)
    axes[1].set_xlabel("iteration")
    axes[2].set_ylim(-0.02, 1.02)
    if label is not None:
        axes[0].legend(fontsize=8)
    return axes


def plot_fid_curve(histories: Mapping[str, Sequence[dict]], ax=None, metric: str = "fid", floor: float | None = None):
    """FID (or ``metric="kid"``) against iteration, one line per run: the paper's FID-vs-iteration curve.

    Rows without the metric (evaluations between FID points, or ``None`` when it could not be
    computed) are skipped. ``floor``: a reference drawn dashed, e.g. held-out real images' FID.
    Returns the axes, or ``None`` when no run has a value to draw.
    """
    series = {label: [(r["iter"], r[metric]) for r in h if r.get(metric) is not None] for label, h in histories.items()}
    if not any(series.values()):
        return None
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points), "o-", ms=3, label=label)
    if floor is not None:
        ax.axhline(floor, color="grey", ls="--", lw=1, label="real images")
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric.upper() + " (lower is better)")
    ax.legend(fontsize=8)
    return ax


#: the colour bar of every step-size map: what its colours mean
STEP_MAP_LABEL = "γ/ε (1: full step, 0: shrunk away)"


def plot_step_size_image(ratio: torch.Tensor, ax=None, title: str | None = None, colorbar: bool = True):
    """Show a per-pixel map of ``γ/ε`` (``Trainer.step_size_image``): 1 = full step, dark = AniLA shrank it."""
    if not isinstance(ratio, torch.Tensor) or ratio.ndim != 2:
        raise ValueError(f"ratio: expected an (H, W) tensor, got {getattr(ratio, 'shape', type(ratio).__name__)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.2))
    image = ax.imshow(ratio.numpy(), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"γ/ε per pixel (mean {float(ratio.mean()):.2f})", fontsize=9)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, label=STEP_MAP_LABEL)
    return image


def save_image_run_figures(trainer, out: str | Path, n_show: int = 64) -> None:
    """samples.png, training.png, fid.png (when FID was computed) and step_sizes.png (AniLA) for one image run."""
    out = Path(out)
    c = trainer.config
    samples = trainer.samples if trainer.samples is not None else trainer.sample_for_eval(min(n_show, c.fid_samples))
    samples = samples[:n_show].detach().float().cpu()
    side = max(1, int(len(samples) ** 0.5))
    fig, ax = plt.subplots(figsize=(4.4, 4.6))
    show_image_grid(samples, nrow=side, ax=ax, title=f"{c.sampler} on {c.data_name}, iteration {trainer.iteration}")
    save_figure(fig, out / "samples.png")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    plot_image_training_curves(trainer.history, axes=axes)
    fig.tight_layout()
    save_figure(fig, out / "training.png")
    ax = plot_fid_curve({c.sampler: trainer.history})
    if ax is not None:
        ax.set_title(f"FID on {c.data_name} ({c.fid_samples} samples)", fontsize=9)
        save_figure(ax.figure, out / "fid.png")
    if c.sampler == "anila":
        ratio = trainer.step_size_image(samples.to(trainer.device))
        fig, ax = plt.subplots(figsize=(3.8, 3.4))
        plot_step_size_image(
            ratio,
            ax=ax,
            title=f"AniLA γ/ε per pixel, b = {c.b:g}\n(mean over {len(samples)} samples: {float(ratio.mean()):.2f})",
        )
        save_figure(fig, out / "step_sizes.png")


def plot_image_side_by_side(
    samples: Mapping[str, torch.Tensor], finals: Mapping[str, dict] | None = None, nrow: int = 8, fig=None
):
    """The paper's Figures 2 and 3: one sample grid per sampler, side by side, with FID in the titles when known."""
    n = len(samples)
    if n == 0:
        raise ValueError("samples: expected at least one run's images")
    if fig is None:
        fig = plt.figure(figsize=(4.2 * n, 4.5))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (label, x) in zip(axes, samples.items()):
        title = label
        f = (finals or {}).get(label, {})
        if f.get("fid") is not None:
            title += f": FID {f['fid']:.3g} at iteration {f.get('fid_iter', f.get('iters'))}"
        show_image_grid(x[: nrow * nrow].float().cpu(), nrow=nrow, ax=ax, title=title)
    fig.tight_layout()
    return fig


def image_markdown_table(finals: Mapping[str, dict]) -> str:
    """One row per image run: FID, KID, best FID, coverage (digits), iterations, wall time, settings."""
    lines = [
        "| sampler | FID | KID | best FID (iter) | coverage | iters | wall s | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def num(v, spec):
        return "n/a" if v is None else format(v, spec)

    for label, f in finals.items():
        settings = settings_text(f["config"])
        if f.get("diverged"):  # counted, not dropped
            dashes = " | ".join(["—"] * 3)
            lines.append(f"| {label} | {diverged_text(f)} | {dashes} | {f['iters']} | {f['wall_s']:.0f} | {settings} |")
            continue
        best = "n/a" if f.get("best_fid") is None else f"{f['best_fid']:.3g} ({f['best_fid_iter']})"
        lines.append(
            f"| {label} | {num(f.get('fid'), '.3g')} | {num(f.get('kid'), '.3g')} | {best} | "
            f"{num(f.get('coverage'), '.0%')} | "
            f"{f['iters']} | {f['wall_s']:.0f} | {settings} |"
        )
    note = ""
    features = {f.get("fid_features") for f in finals.values() if f.get("fid_features")}
    if features:
        # a folder of your own may be scored on its own features: never to be read as Inception's FID
        own = (
            ""
            if features <= {"inception", "digits classifier"}
            else ", not Inception's: comparable between runs on that folder only"
        )
        note = f"\nFID/KID on {', '.join(sorted(features))} features{own}.\n"
    return "\n".join(lines) + "\n" + note


#: per run, in order of appearance: line style, marker, line width, z-order. The first run is drawn widest and lowest,
#: so a later run with the same numbers (AniLA at a b above every gradient is Langevin) lies on it, dashed, and both
#: stay visible
RUN_STYLES = (
    ("-", "o", 3.0, 1),
    ("--", "s", 1.6, 2),
    (":", "^", 1.6, 3),
    ("-.", "D", 1.4, 4),
    ((0, (1, 1)), "v", 1.4, 5),
)


def distinguish_runs(axes) -> dict[str, dict]:
    """Give each labelled run on ``axes`` its own line style, marker and width (colours kept), and redraw the legends.

    Returns label → the style given. Runs beyond :data:`RUN_STYLES` reuse its styles in turn.
    """
    axes = list(np.ravel(axes)) if not hasattr(axes, "get_lines") else [axes]
    styles: dict[str, dict] = {}
    for ax in axes:
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            if label not in styles:
                ls, marker, lw, z = RUN_STYLES[len(styles) % len(RUN_STYLES)]
                styles[label] = dict(linestyle=ls, marker=marker, linewidth=lw, zorder=z, markersize=4 if z == 1 else 3)
            line.set(**styles[label])
        if ax.get_legend() is not None:
            ax.legend(fontsize=8)
    return styles


def wall_time_note(trainers: Mapping) -> str:
    """A Markdown paragraph on the runs' wall times: each run's iterations per second from its own rows, and what they
    do not measure.

    The seconds are those of the machine that trained each run, shared with whatever else ran
    there (other runs of the same ``compare`` included), so runs with the same work per
    iteration can differ several-fold; the note says so with the rates that show it.
    """
    rates = {}
    for label, t in trainers.items():
        rows = [(r["iter"], r["wall_s"]) for r in t.history if r.get("wall_s") is not None]
        steps = [(i1 - i0) / (w1 - w0) for (i0, w0), (i1, w1) in zip(rows, rows[1:]) if w1 > w0]
        if steps:
            rates[label] = (min(steps), float(np.median(steps)), max(steps))
    if not rates:
        return ""
    text = (
        "**Wall times** are seconds of training on the machine that ran each run, shared with whatever else ran there. "
        "Iterations per second, from each run's own rows (lowest–highest between evaluations, median): "
        + ", ".join(f"{label} {lo:.3g}–{hi:.3g} ({mid:.3g})" for label, (lo, mid, hi) in rates.items())
        + "."
    )
    medians = [mid for _, mid, _ in rates.values()]
    if max(medians) > 1.5 * min(medians):
        text += (
            f" A ×{max(medians) / min(medians):.1f} difference that the samplers cannot explain (their work per "
            "iteration is "
            "the same network and K; AniLA's step map adds a few elementwise operations): the machine's load differed "
            "while "
            "each ran — `compare` and `demo` train runs in parallel processes, so runs that overlap share the cores. "
            "Do not "
            "rank speed by this column; `make bench` (benchmarks/RESULTS.md) measures it."
        )
    return text
