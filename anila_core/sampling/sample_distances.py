"""Distances between two sets of points when no density is known: sliced Wasserstein, a kernel density estimate on the
grid, and MMD scaled to the dimension."""

from __future__ import annotations

import math

import torch

from anila_core.sampling.distances import GRID_EXTENT, GRID_SIZE, grid_points, mmd

__all__ = [
    "sliced_wasserstein",
    "wasserstein_1d",
    "scott_bandwidth",
    "kde_grid_log_probs",
    "scaled_mmd",
    "MMD_BANDWIDTHS",
]

#: the rings' MMD bandwidths; :func:`scaled_mmd` multiplies them by sqrt(D / 2), so they mean the same in D dimensions
#: as in two
MMD_BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)


def _points(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected points of shape (N, D) with N >= 1, got {shape}")
    return x.detach().double().cpu()


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``W_p^p`` between the empirical measures of each row of ``a`` ``(L, n)`` and of ``b`` ``(L, m)``: ``(L,)``,
    exact.

    The quantile function of ``n`` equally weighted points is a step function with jumps at
    ``i / n``; between consecutive jumps of either set both quantile functions are constant,
    so the integral ``∫₀¹ |Qa(u) − Qb(u)|^p du`` is a finite sum over those intervals. That
    holds for ``n ≠ m`` too, without resampling either set.
    """
    a, b = a.sort(dim=1).values, b.sort(dim=1).values
    n, m = a.shape[1], b.shape[1]
    # equal fractions i/n = j/m give the same float (each is the correctly rounded rational), so unique() merges them
    ends = torch.cat(
        [torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m]
    ).unique()
    widths = torch.diff(ends, prepend=torch.zeros(1, dtype=torch.float64))
    middle = ends - widths / 2
    ia = (middle * n).floor().long().clamp(max=n - 1)
    ib = (middle * m).floor().long().clamp(max=m - 1)
    return (a[:, ia] - b[:, ib]).abs().pow(p) @ widths


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, n_directions: int = 128, p: float = 2.0, seed: int = 0
) -> float:
    """Sliced ``p``-Wasserstein distance ``(E_θ W_p^p(θ·x, θ·y))^{1/p}`` over ``n_directions`` random unit directions.

    The directions come from a generator seeded ``seed``, so the same two sets always give
    the same number. 0 for identical sets; for one-dimensional sets shifted by ``c`` it is
    ``|c|`` exactly; in D dimensions a shift by the vector ``v`` gives about ``|v| / sqrt(D)``
    (for p = 2, the mean of ``(θ·v)²`` over directions is ``|v|² / D``).
    """
    x, y = _points("x", x), _points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: expected points of dimension {x.shape[1]} like x, got {y.shape[1]}")
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ValueError(f"n_directions: expected an integer >= 1, got {n_directions!r}")
    if not p >= 1:
        raise ValueError(f"p: expected a number >= 1, got {p!r}")
    directions = torch.randn(
        n_directions, x.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    directions = directions / directions.norm(dim=1, keepdim=True)
    cost = wasserstein_1d(directions @ x.T, directions @ y.T, p)
    return float(cost.mean() ** (1 / p))


def scott_bandwidth(points: torch.Tensor) -> torch.Tensor:
    """Scott's rule: each coordinate's standard deviation times ``n^(−1/(D+4))``, ``(D,)``; a coordinate that never
    varies gets that of the others."""
    x = _points("points", points)
    n, d = x.shape
    sd = x.std(dim=0, unbiased=True) if n > 1 else torch.ones(d, dtype=torch.float64)
    fallback = sd[sd > 0].mean() if bool((sd > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
    return torch.where(sd > 0, sd, fallback) * n ** (-1.0 / (d + 4))


@torch.no_grad()
def kde_grid_log_probs(
    points: torch.Tensor,
    extent: float = GRID_EXTENT,
    size: int = GRID_SIZE,
    bandwidth: torch.Tensor | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """Log-probabilities of the grid cells under a Gaussian kernel density estimate of 2-D ``points``, normalised on the
    grid: ``(size, size)``.

    The same grid as :func:`anila_core.sampling.distances.grid_log_probs`, so the two compare
    with :func:`~anila_core.sampling.distances.grid_tv`. ``bandwidth`` defaults to
    :func:`scott_bandwidth`. The estimate is smoothed, so even a perfect model keeps a small
    distance to it; compare runs at equal numbers of points.
    """
    x = _points("points", points)
    if x.shape[1] != 2:
        raise ValueError(f"points: a density on the 2-D grid needs points of dimension 2, got {x.shape[1]}")
    h = scott_bandwidth(x) if bandwidth is None else torch.as_tensor(bandwidth, dtype=torch.float64)
    _, grid = grid_points(extent, size)
    scaled = x / h
    out = []
    for part in (grid.double() / h).split(chunk):
        out.append(torch.logsumexp(-0.5 * torch.cdist(part, scaled).square(), dim=1))
    logits = torch.cat(out)  # the kernel's constant and 1/n cancel in the normalisation below
    return (logits - torch.logsumexp(logits, 0)).view(size, size)


def scaled_mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with the rings' Gaussian bandwidths times ``sqrt(D / 2)``: in two dimensions, the rings' own
    MMD.

    Distances between points grow as ``sqrt(D)``; scaling the bandwidths with them keeps the
    kernels from seeing every pair of points in D = 50 as infinitely far apart.
    """
    x, y = _points("x", x), _points("y", y)
    factor = math.sqrt(x.shape[1] / 2)
    return mmd(x, y, bandwidths=tuple(h * factor for h in MMD_BANDWIDTHS))
