"""Distances between a model and a known 2-D target: grid TV and KL, sample-histogram TV, and kernel MMD."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = [
    "grid_points",
    "grid_log_probs",
    "grid_tv",
    "grid_kl",
    "histogram_tv",
    "mmd",
    "GRID_EXTENT",
    "GRID_SIZE",
]

GRID_EXTENT = 4.6
GRID_SIZE = 200

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


def grid_points(extent: float = GRID_EXTENT, size: int = GRID_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of a ``size × size`` grid over ``[-extent, extent]²``: the 1-D axis and the ``(size², 2)`` points.

    Points are laid out row-major with y along rows, so ``values.view(size, size)`` is ready
    for ``imshow(origin="lower")``.
    """
    if not math.isfinite(extent) or extent <= 0:
        raise ValueError(f"extent: expected a finite number > 0, got {extent!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size: expected an integer >= 2, got {size!r}")
    step = 2 * extent / size
    axis = torch.linspace(-extent + step / 2, extent - step / 2, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return axis, torch.stack([xx.flatten(), yy.flatten()], dim=1)


@torch.no_grad()
def grid_log_probs(
    energy_fn: EnergyFn, extent: float = GRID_EXTENT, size: int = GRID_SIZE, batch: int = 8192, device=None
) -> torch.Tensor:
    """Log-probabilities of the grid cells under ``exp(-energy)`` normalised on the grid, shape ``(size, size)``."""
    _, pts = grid_points(extent, size)
    if device is not None:
        pts = pts.to(device)
    energies = torch.cat([energy_fn(chunk).detach().reshape(-1) for chunk in pts.split(batch)])
    if energies.shape != (size * size,):
        raise ValueError(f"energy_fn: expected one energy per grid point ({size * size}), got {tuple(energies.shape)}")
    if not torch.isfinite(energies).any():
        raise ValueError("energy_fn: returned no finite energy on the grid")
    logits = -energies.double()
    return (logits - torch.logsumexp(logits, 0)).view(size, size).cpu()


def _log_probs(density, extent, size) -> torch.Tensor:
    """Accept an energy function, a target (anything with ``.energy``) or a precomputed grid."""
    if isinstance(density, torch.Tensor):
        if density.shape != (size, size):
            raise ValueError(f"grid: expected log-probabilities of shape ({size}, {size}), got {tuple(density.shape)}")
        return density.double().cpu()
    fn = density.energy if hasattr(density, "energy") else density
    return grid_log_probs(fn, extent, size)


def grid_tv(model, target, extent: float = GRID_EXTENT, size: int = GRID_SIZE) -> float:
    """Total variation ``½ Σ |p − q|`` between two densities normalised on the grid: 0 (equal) to 1 (disjoint)."""
    p = _log_probs(model, extent, size).exp()
    q = _log_probs(target, extent, size).exp()
    return float(0.5 * (p - q).abs().sum())


def grid_kl(model, target, extent: float = GRID_EXTENT, size: int = GRID_SIZE) -> float:
    """``KL(target || model)`` in nats on the grid: how many nats the model wastes coding target points."""
    log_p = _log_probs(model, extent, size)
    log_q = _log_probs(target, extent, size)
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
    return float(terms.sum())


def histogram_tv(samples: torch.Tensor, target, extent: float = GRID_EXTENT, bins: int = 40) -> float:
    """TV between a histogram of 2-D ``samples`` and the target's mass in the same bins.

    Samples outside the window count as misplaced mass, and the target's mass is
    normalised inside the window: use it for targets that live inside ±extent (the rings,
    the mixture), not for wide ones such as ``Gaussian([0.1, 10])``. With n samples the value has a floor
    of roughly ``sqrt(bins² / (2π n))`` even for exact samples, so compare chains at equal n.
    """
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples: expected shape (n, 2), got {tuple(samples.shape)}")
    # a precomputed grid is integrated over blocks of its own cells; anything else on a 5x finer grid than the bins
    fine_size = target.shape[-1] if isinstance(target, torch.Tensor) else bins * 5
    if fine_size % bins:
        raise ValueError(f"bins: expected a divisor of the grid's size {fine_size}, got {bins}")
    s = samples.detach().double().cpu()
    idx = ((s + extent) / (2 * extent) * bins).floor().long()
    inside = ((idx >= 0) & (idx < bins)).all(1)
    counts = torch.zeros(bins * bins, dtype=torch.float64)
    counts.index_add_(0, idx[inside, 1] * bins + idx[inside, 0], torch.ones(int(inside.sum()), dtype=torch.float64))
    p = counts / len(s)
    fine = _log_probs(target, extent, fine_size).exp()
    r = fine_size // bins
    q = fine.view(bins, r, bins, r).sum((1, 3)).flatten()
    return float(0.5 * ((p - q).abs().sum() + (1 - p.sum())))


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.3, 1.0, 3.0)) -> float:
    """Unbiased squared MMD between samples ``x`` and ``y`` with a sum of Gaussian kernels (0 in expectation when
    equal)."""
    x, y = x.detach().flatten(1).double(), y.detach().flatten(1).to(x.device).double()
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"mmd: expected at least 2 samples in each set, got {len(x)} and {len(y)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd: x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")

    def kernel(a, b):
        d2 = torch.cdist(a, b).square()
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())
