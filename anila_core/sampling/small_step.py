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

from dataclasses import dataclass

import torch

from anila_core.sampling.distances import GRID_EXTENT, GRID_SIZE, grid_points
from anila_core.sampling.kernel import EnergyFn, energy_and_grad

__all__ = ["SmallStepDensity", "small_step_log_probs"]


@dataclass
class SmallStepDensity:
    """A sampler's small-step density on the grid: ``log_probs`` ``(size, size)`` normalised on it, whether it is ``exact``, and why."""

    log_probs: torch.Tensor
    exact: bool
    note: str


def small_step_log_probs(sampler, energy_fn: EnergyFn, extent: float = GRID_EXTENT, size: int = GRID_SIZE,
                         batch: int = 8192, device=None) -> SmallStepDensity:
    """The density ``sampler``'s chains approach as ε → 0 on a 2-D energy, normalised on the ``size × size`` grid over ±``extent``.

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
