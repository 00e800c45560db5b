"""Matplotlib figures for 2-D targets and samplers: densities, samples, trajectories, AniLA step-size maps, comparisons,
convergence curves and image grids."""

from __future__ import annotations

from typing import Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm

from anila_core.sampling import distances as metrics
from anila_core.sampling.distances import GRID_EXTENT, GRID_SIZE
from anila_core.sampling.kernel import Trace, energy_and_grad
from anila_core.sampling.samplers import Sampler

__all__ = [
    "density_grid",
    "plot_density",
    "set_density",
    "plot_samples",
    "set_samples",
    "trace_paths",
    "plot_trajectories",
    "step_size_map",
    "plot_step_size_map",
    "set_step_size_map",
    "plot_comparison",
    "plot_convergence",
    "plot_stationary_variance",
    "sample_image_grid",
    "show_image_grid",
]

SAMPLE_KINDS = ("scatter", "hist")
MAP_REDUCTIONS = ("min", "mean", "max")


def _axes(ax):
    """The given axes, or a fresh figure's single axes (plain ``plt.subplots`` so every backend shows it)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    return ax


def _extent_box(extent: float) -> tuple[float, float, float, float]:
    return (-extent, extent, -extent, extent)


def _square(ax, extent: float) -> None:
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")


def _energy_fn(density) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(density, "energy"):
        return density.energy
    if callable(density):
        return density
    raise ValueError(f"density: expected a target (with .energy) or an energy function, got {type(density).__name__}")


def _to_numpy_2d(x, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected an array of shape (N, 2), got {arr.shape}")
    return arr.astype(np.float64)


# --------------------------------------------------------------------------- densities


def density_grid(density, extent: float = GRID_EXTENT, size: int = GRID_SIZE, log: bool = False) -> np.ndarray:
    """Cell probabilities (or their logs) of ``exp(-E)`` normalised on the ``size × size`` grid over ``±extent``.

    ``density`` is a target, an energy function, or a precomputed ``(size, size)`` tensor of
    grid log-probabilities (``metrics.grid_log_probs``). Rows are y, so the array is ready
    for ``imshow(origin="lower")``.
    """
    if isinstance(density, torch.Tensor):
        if density.shape != (size, size):
            raise ValueError(
                f"density: a precomputed grid must have shape ({size}, {size}), got {tuple(density.shape)}"
            )
        log_p = density.double().cpu()
    else:
        log_p = metrics.grid_log_probs(_energy_fn(density), extent, size)
    return (log_p if log else log_p.exp()).numpy()


def plot_density(
    density,
    ax=None,
    extent: float = GRID_EXTENT,
    size: int = GRID_SIZE,
    log: bool = False,
    cmap: str = "viridis",
    **imshow_kw,
):
    """Draw a density on the grid as an image and return the ``AxesImage`` (its axes is ``image.axes``).

    ``log=True`` shows grid log-probabilities, which reveals the tails and the gaps between
    modes that a linear colour scale hides.
    """
    ax = _axes(ax)
    values = density_grid(density, extent, size, log=log)
    image = ax.imshow(
        values, origin="lower", extent=_extent_box(extent), cmap=cmap, interpolation="nearest", **imshow_kw
    )
    _square(ax, extent)
    return image


def set_density(image, density, extent: float = GRID_EXTENT, size: int = GRID_SIZE, log: bool = False) -> None:
    """Replace the data of an image made by ``plot_density`` in place and rescale its colours."""
    values = density_grid(density, extent, size, log=log)
    image.set_data(values)
    image.set_clim(float(np.nanmin(values)), float(np.nanmax(values)))


# --------------------------------------------------------------------------- samples


def _hist(x: np.ndarray, extent: float, bins: int) -> np.ndarray:
    # histogram2d indexes [x_bin, y_bin]; imshow wants rows = y, hence the transpose
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[[-extent, extent], [-extent, extent]])
    return counts.T


def plot_samples(
    x,
    ax=None,
    kind: str = "scatter",
    extent: float = GRID_EXTENT,
    bins: int = 100,
    s: float = 2.0,
    alpha: float = 0.5,
    color=None,
    **kw,
):
    """Draw 2-D samples ``(N, 2)`` as a scatter (returns the ``PathCollection``) or a 2-D histogram (returns the
    ``AxesImage``).

    Non-finite samples (a diverged chain) are simply not drawn; the axes stay at ``±extent``
    so that panels side by side share one frame.
    """
    if kind not in SAMPLE_KINDS:
        raise ValueError(f"kind: expected one of {SAMPLE_KINDS}, got {kind!r}")
    ax = _axes(ax)
    pts = _to_numpy_2d(x, "x")
    if kind == "scatter":
        artist = ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, color=color or "tab:orange", linewidths=0, **kw)
    else:
        artist = ax.imshow(
            _hist(pts, extent, bins), origin="lower", extent=_extent_box(extent), cmap=kw.pop("cmap", "viridis"), **kw
        )
    _square(ax, extent)
    return artist


def set_samples(artist, x, extent: float = GRID_EXTENT, bins: int = 100) -> None:
    """Update a scatter or histogram made by ``plot_samples`` with new samples, in place."""
    pts = _to_numpy_2d(x, "x")
    if hasattr(artist, "set_offsets"):
        artist.set_offsets(pts)
    else:
        counts = _hist(pts, extent, bins)
        artist.set_data(counts)
        artist.set_clim(0.0, max(float(counts.max()), 1.0))


# --------------------------------------------------------------------------- trajectories


def trace_paths(trace: Trace) -> tuple[list[int], torch.Tensor]:
    """The steps a ``Trace`` recorded positions at, and those positions stacked to ``(T, N, d)``."""
    if not trace.positions:
        raise ValueError("trace: recorded no positions; create it with Trace(positions_at=range(K + 1))")
    steps = sorted(trace.positions)
    return steps, torch.stack([trace.positions[t] for t in steps])


def plot_trajectories(
    paths, ax=None, density=None, n_show: int = 5, extent: float = GRID_EXTENT, size: int = GRID_SIZE, colors=None
) -> list:
    """Draw the paths of the first ``n_show`` chains over an optional density; returns the ``Line2D`` list.

    ``paths`` is a ``Trace`` with recorded positions or a tensor ``(T, N, 2)``. Each chain's
    start is marked with a circle and its end with a cross.
    """
    if isinstance(paths, Trace):
        _, paths = trace_paths(paths)
    arr = paths.detach().cpu().numpy() if isinstance(paths, torch.Tensor) else np.asarray(paths)
    if arr.ndim != 3 or arr.shape[2] != 2:
        raise ValueError(f"paths: expected shape (T, N, 2), got {arr.shape}")
    if isinstance(n_show, bool) or not isinstance(n_show, int) or n_show < 1:
        raise ValueError(f"n_show: expected an integer >= 1, got {n_show!r}")
    ax = _axes(ax)
    if density is not None:
        plot_density(density, ax=ax, extent=extent, size=size, cmap="Greys")
    colors = colors or plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lines = []
    for i in range(min(n_show, arr.shape[1])):
        c = colors[i % len(colors)]
        (line,) = ax.plot(arr[:, i, 0], arr[:, i, 1], "-", lw=0.8, color=c, alpha=0.9)
        ax.plot(arr[0, i, 0], arr[0, i, 1], "o", color=c, ms=4)
        ax.plot(arr[-1, i, 0], arr[-1, i, 1], "x", color=c, ms=6)
        lines.append(line)
    _square(ax, extent)
    return lines


# --------------------------------------------------------------------------- AniLA's step sizes


def step_size_map(sampler: Sampler, density, extent: float = GRID_EXTENT, size: int = GRID_SIZE) -> torch.Tensor:
    """Relative step sizes ``γ/ε`` the sampler would take at each grid cell, shape ``(size, size, 2)``.

    ``γ`` comes from ``sampler.step_sizes(grad)`` with ``grad = ∇E`` at the cell centre, so for
    AniLA it is ``b / max(b, |g|)`` (under the sampler's norm) and for Langevin it is 1.
    """
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler: expected a Sampler, got {type(sampler).__name__}")
    _, pts = metrics.grid_points(extent, size)
    _, grad = energy_and_grad(_energy_fn(density), pts)
    return (sampler.step_sizes(grad) / sampler.step_size).view(size, size, 2).cpu()


def _reduce_map(ratio: torch.Tensor, reduce) -> np.ndarray:
    if isinstance(reduce, int) and not isinstance(reduce, bool):
        if not 0 <= reduce < ratio.shape[-1]:
            raise ValueError(f"reduce: a coordinate index must be in [0, {ratio.shape[-1]}), got {reduce}")
        return ratio[..., reduce].numpy()
    if reduce not in MAP_REDUCTIONS:
        raise ValueError(f"reduce: expected one of {MAP_REDUCTIONS} or a coordinate index, got {reduce!r}")
    if reduce == "mean":
        return ratio.mean(-1).numpy()
    return getattr(ratio, reduce)(-1).values.numpy()


def plot_step_size_map(
    sampler: Sampler,
    density,
    ax=None,
    reduce="min",
    extent: float = GRID_EXTENT,
    size: int = GRID_SIZE,
    log: bool = True,
    vmin: float = 1e-3,
    cmap: str = "magma",
):
    """Show ``γ/ε`` over the grid (1 = full step, small = AniLA shrank it) and return the ``AxesImage``.

    With ``norm="coordinate"`` each coordinate has its own step; ``reduce`` picks what to
    show per cell: ``"min"`` (the most shrunk coordinate), ``"mean"``, ``"max"``, or a
    coordinate index. A log colour scale is the default because ``b/|g|`` spans decades.
    """
    ax = _axes(ax)
    values = _reduce_map(step_size_map(sampler, density, extent, size), reduce)
    norm = LogNorm(vmin=vmin, vmax=1.0, clip=True) if log else None
    kw = {"norm": norm} if log else {"vmin": 0.0, "vmax": 1.0}
    image = ax.imshow(values, origin="lower", extent=_extent_box(extent), cmap=cmap, interpolation="nearest", **kw)
    _square(ax, extent)
    return image


def set_step_size_map(
    image, sampler: Sampler, density, reduce="min", extent: float = GRID_EXTENT, size: int = GRID_SIZE
) -> None:
    """Recompute the map of an image made by ``plot_step_size_map`` (new ``b``, ``ε`` or target), in place."""
    image.set_data(_reduce_map(step_size_map(sampler, density, extent, size), reduce))


# --------------------------------------------------------------------------- comparison grid


def plot_comparison(
    samples: Mapping[str, Mapping[str, torch.Tensor]],
    densities: Mapping[str, object] | None = None,
    axes=None,
    kind: str = "scatter",
    extent: float = GRID_EXTENT,
    size: int = 100,
    panel_size: float = 2.6,
) -> np.ndarray:
    """A grid of sample panels: ``samples[row][column]`` (rows = targets or samplers); returns the axes array.

    With ``densities`` (one per row) a first column shows the exact density and every
    scatter is drawn over it, so one can see where the mass is missing. ``axes`` may be a
    pre-made array of shape (rows, columns [+1]).
    """
    rows = list(samples)
    if not rows:
        raise ValueError("samples: expected at least one row")
    columns = list(dict.fromkeys(c for r in rows for c in samples[r]))
    extra = 1 if densities is not None else 0
    shape = (len(rows), len(columns) + extra)
    if axes is None:
        _, axes = plt.subplots(*shape, figsize=(panel_size * shape[1], panel_size * shape[0]), squeeze=False)
    axes = np.asarray(axes, dtype=object).reshape(shape)
    for i, row in enumerate(rows):
        density = densities.get(row) if densities is not None else None
        if extra:
            plot_density(density, ax=axes[i, 0], extent=extent, size=size)
            axes[i, 0].set_title("exact" if i == 0 else "")
        for j, col in enumerate(columns):
            ax = axes[i, j + extra]
            if col not in samples[row]:
                ax.set_axis_off()
                continue
            if density is not None and kind == "scatter":
                plot_density(density, ax=ax, extent=extent, size=size, cmap="Greys")
            plot_samples(samples[row][col], ax=ax, kind=kind, extent=extent)
            if i == 0:
                ax.set_title(col)
        axes[i, 0].set_ylabel(row)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


# --------------------------------------------------------------------------- convergence


def plot_convergence(results, ax=None, metric: str = "tv", logx: bool = True, floor: bool = True) -> dict:
    """Distance to the target against steps on a log y-axis, one line per result, with the noise floor dashed.

    ``results`` is one ``ConvergenceResult`` or a mapping label → result. Step 0 cannot sit on
    a log axis and is left out. A non-positive distance (an unbiased MMD² scatters around zero
    once the chains are at the target, so it can dip below) is drawn as a downward triangle at
    a tenth of the noise floor, on its line, so a line never vanishes without a word; the
    legend says so. Geometric ergodicity, ``distance ≤ C ρ^k``, is a straight line when
    ``logx=False``; ``logx=True`` spreads out the first steps. Returns label → ``Line2D``
    (the floor under the key ``"noise floor"``).
    """
    if hasattr(results, "steps"):
        results = {results.label: results}
    if not results:
        raise ValueError("results: expected at least one convergence result")
    ax = _axes(ax)
    lines = {}
    level = float(np.mean([res.floor(metric) for res in results.values()]))
    positive = [d for res in results.values() for d in res.distances(metric) if d > 0]
    # where a value <= 0 is drawn: a tenth of the floor (or of the smallest positive value when the floor is not
    # positive)
    low = (level if level > 0 else min(positive, default=1.0)) / 10
    clipped_any = False
    for label, res in results.items():
        steps = np.asarray(res.steps, dtype=float)
        dist = np.asarray(res.distances(metric), dtype=float)
        keep = steps > 0
        shown = np.where(dist > 0, dist, low)
        (lines[label],) = ax.plot(steps[keep], shown[keep], "o-", ms=3, label=label)
        below = keep & (dist <= 0)
        if below.any():
            clipped_any = True
            ax.plot(steps[below], shown[below], "v", ms=7, mfc="none", color=lines[label].get_color())
    if floor:
        lines["noise floor"] = ax.axhline(level, color="grey", ls="--", lw=1, label="noise floor (exact samples)")
    if clipped_any:
        ax.plot(
            [],
            [],
            "v",
            ms=7,
            mfc="none",
            color="grey",
            label="≤ 0 (an unbiased estimate at the floor), drawn at floor/10",
        )
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("steps k")
    ax.set_ylabel({"tv": "histogram TV to target", "mmd": "MMD² to target"}.get(metric, metric))
    ax.legend(fontsize=8)
    return lines


def plot_stationary_variance(results: Mapping[str, Mapping], coordinate: int = 0, ax=None):
    """Bars of one coordinate's sample variance per sampler, ±2 standard errors, and the exact variance as a line.

    ``results`` maps label → the dict returned by ``convergence.stationary_variance``.
    Returns the ``BarContainer``.
    """
    if not results:
        raise ValueError("results: expected at least one sampler's variances")
    ax = _axes(ax)
    labels = list(results)
    values = [results[k]["variance"][coordinate] for k in labels]
    errors = [2 * results[k]["std_error"][coordinate] for k in labels]
    bars = ax.bar(labels, values, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
    exact = results[labels[0]]["exact_variance"][coordinate]
    ax.axhline(exact, color="black", ls="--", lw=1, label=f"exact {exact:.3g}")
    ax.set_ylabel(f"variance of coordinate {coordinate}")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=20)
    return bars


# --------------------------------------------------------------------------- image batches


def sample_image_grid(x: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile an image batch ``(N, C, H, W)`` with values in ``[-1, 1]`` into one array in ``[0, 1]``.

    ``nrow`` images per row. Returns ``(H', W', 3)`` for colour and ``(H', W')`` for one
    channel, ready for ``imshow``. Values outside ``[-1, 1]`` (a sampler overshooting) are
    clipped rather than rescaled, so a grid never hides how far off the samples are by
    stretching them.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a tensor of shape (N, C, H, W) with C in (1, 3) and N >= 1, got {shape}")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow: expected an integer >= 1, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding: expected an integer >= 0, got {padding!r}")
    n, c, h, w = x.shape
    imgs = ((x.detach().float().cpu().nan_to_num(0.0).clamp(-1, 1) + 1) / 2).numpy()
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value, dtype=np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = imgs[k]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_image_grid(x: torch.Tensor, nrow: int = 8, ax=None, padding: int = 2, title: str | None = None):
    """Draw ``sample_image_grid(x, nrow)`` without axes ticks and return the ``AxesImage``."""
    grid = sample_image_grid(x, nrow, padding)
    ax = _axes(ax)
    image = ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return image
