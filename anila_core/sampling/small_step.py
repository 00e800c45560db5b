"""Where an unadjusted chain goes as its step size shrinks: the small-step density of each sampler, on the 2-D grid.

With step sizes γ = ε·a(x), the unadjusted chain is the Euler scheme, in time ε, of
dX = −(a/2)∇E dt + τ·√a dW. Its stationary law solves the zero-flux condition
(a/2)∇E·p + (τ²/2)∇(a·p) = 0. For Langevin (a = 1) that is exp(−E/τ²), the target at τ = 1.
For a step map that is one number per sample (AniLA's ``sample`` norm,
a = b / max(b, ‖∇E‖)), ``a·p ∝ exp(−E/τ²)`` solves it exactly, so the chain's small-step law is

    p ∝ exp(−E/τ²) / a = exp(−E/τ²) · max(b, ‖∇E‖) / b,

for any energy: the bias does not vanish as ε → 0, because the scheme lacks the divergence
term ½∇·a of a sampler with position-dependent steps. With per-coordinate steps
(``coordinate`` norm) the same argument coordinate by coordinate gives exp(−E/τ²) / ∏ᵢ aᵢ
when E is separable (each aᵢ a function of xᵢ alone); for any other energy that product is
only an approximation. A Metropolis test (and HMC) makes the chain exact: exp(−E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from anila_core.sampling.distances import GRID_EXTENT, GRID_SIZE, grid_log_probs, grid_points, histogram_tv
from anila_core.sampling.kernel import EnergyFn, energy_and_grad

__all__ = ["SmallStepDensity", "small_step_log_probs", "SmallStepCheck", "check_small_step_density"]


@dataclass
class SmallStepDensity:
    """A sampler's small-step density on the grid: ``log_probs`` ``(size, size)`` normalised on it, whether it is
    ``exact``, and why."""

    log_probs: torch.Tensor
    exact: bool
    note: str


def small_step_log_probs(
    sampler, energy_fn: EnergyFn, extent: float = GRID_EXTENT, size: int = GRID_SIZE, batch: int = 8192, device=None
) -> SmallStepDensity:
    """The density ``sampler``'s chains approach as ε → 0 on a 2-D energy, normalised on the ``size × size`` grid over
    ±``extent``.

    Exact for Langevin, for AniLA's ``sample`` norm and for Metropolis-adjusted chains; the
    product formula, marked ``exact=False``, for AniLA's ``coordinate`` norm (exact only for
    separable energies). Samplers with no such law as a function of x (pSGLD's step depends on
    the chain's history; AniLA's ``noise_only`` variant) raise ``ValueError``.
    """
    _, pts = grid_points(extent, size)
    if device is not None:
        pts = pts.to(device)
    logits, exact, note = [], True, ""
    for chunk in pts.split(batch):
        energy, grad = energy_and_grad(energy_fn, chunk)
        log_w, exact, note = sampler.small_step_log_weight(energy.double(), grad.double())
        logits.append(log_w)
    logits = torch.cat(logits)
    if not torch.isfinite(logits).any():
        raise ValueError("energy_fn: returned no finite energy on the grid")
    return SmallStepDensity((logits - torch.logsumexp(logits, 0)).view(size, size).cpu(), exact, note)


@dataclass
class SmallStepCheck:
    """Unadjusted chains at a small step against two densities on the grid (histogram TV): the sampler's small-step
    density and exp(−E/τ²).

    ``floor`` is the TV that exact, independent draws of the small-step density would score
    on average (the histogram's own noise, ½ Σ √(2 q(1−q)/(π n)) over the bins' masses q), so
    ``formula_tv − floor`` is the formula's error plus the step's bias; ``densities_tv`` is
    how far apart the two densities are, the scale that error is to be read against.
    """

    formula_tv: float
    energy_tv: float
    floor: float
    densities_tv: float
    exact: bool
    chains: int
    steps: int
    step_size: float


def check_small_step_density(
    sampler,
    energy_fn: EnergyFn,
    x0: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    bins: int = 40,
    extent: float = GRID_EXTENT,
) -> SmallStepCheck:
    """Run ``sampler`` from ``x0`` (independent chains) for ``n_steps`` and compare where the chains end with
    :func:`small_step_log_probs`.

    The product formula exp(−E)/∏ aᵢ of AniLA's ``coordinate`` norm is derived for separable
    energies only; this measures its error on any 2-D energy, e.g. a correlated Gaussian or
    the rings. Start the chains from (or near) either density, and give them enough steps to
    forget the start: the last positions of independent chains are independent draws.
    """
    size = bins * 5
    formula = small_step_log_probs(sampler, energy_fn, extent=extent, size=size)
    energy = grid_log_probs(energy_fn, extent=extent, size=size) / sampler.noise_scale**2
    energy = energy - torch.logsumexp(energy.flatten(), 0)
    x = sampler.sample(energy_fn, x0, n_steps, generator=generator, fast=False)
    q = formula.log_probs.exp().view(bins, 5, bins, 5).sum((1, 3)).flatten()
    floor = 0.5 * float((2 * q * (1 - q) / (math.pi * len(x))).sqrt().sum())
    return SmallStepCheck(
        formula_tv=histogram_tv(x, formula.log_probs, extent, bins),
        energy_tv=histogram_tv(x, energy, extent, bins),
        floor=floor,
        densities_tv=0.5 * float((formula.log_probs.exp() - energy.exp()).abs().sum()),
        exact=formula.exact,
        chains=len(x),
        steps=n_steps,
        step_size=sampler.step_size,
    )
