"""Hamiltonian Monte Carlo: a fresh momentum, leapfrog steps and the Metropolis test, as one more sampler kernel."""

from __future__ import annotations


import torch

from anila_core.sampling.kernel import (
    SamplerState,
    StepInfo,
    energy_and_grad,
    finite_chains,
    finite_positive,
    metropolis_test,
)

from anila_core.sampling.samplers import Sampler

__all__ = ["HMC"]


class HMC(Sampler):
    """Hamiltonian Monte Carlo: a fresh momentum ``p ~ N(0, M)``, ``n_leapfrog`` leapfrog steps of size ``ε``, and the
    Metropolis test on ``H = E(x) + ½ pᵀM⁻¹p``.

    ``mass`` is the diagonal of ``M``: one number, or one per coordinate of a sample (a
    sequence with a sample's shape, flattened). Each transition costs ``n_leapfrog``
    gradients. With ``n_leapfrog = 1`` it is MALA with step size ``ε²``. The test makes it
    exact for ``exp(-E)``; a trajectory that reaches a non-finite energy is rejected.
    """

    name = "hmc"
    metropolis = True
    #: a transition is already ``n_leapfrog`` gradients: one per call keeps its compiled graph as long as that
    steps_per_call = 1

    def __init__(self, step_size: float, n_leapfrog: int = 10, mass=1.0):
        self.step_size = finite_positive("step_size", step_size)
        if isinstance(n_leapfrog, bool) or not isinstance(n_leapfrog, int) or not 1 <= n_leapfrog <= 10_000:
            raise ValueError(
                f"n_leapfrog: expected an integer in [1, 10000] (each leapfrog step is a gradient), got {n_leapfrog!r}"
            )
        self.n_leapfrog = n_leapfrog
        try:
            masses = torch.as_tensor(mass, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"mass: expected a number > 0 or a sequence of them, got {mass!r}") from None
        if masses.numel() < 1 or not bool(torch.isfinite(masses).all()) or bool((masses <= 0).any()):
            raise ValueError(f"mass: expected finite numbers > 0, got {mass!r}")
        #: the diagonal of M as plain floats (one, or one per coordinate): hashable, so also the compiled path's cache
        #: key
        self.mass = float(masses[0]) if masses.numel() == 1 else tuple(masses.tolist())

    def _mass_like(self, x: torch.Tensor):
        if isinstance(self.mass, float):
            return self.mass
        if len(self.mass) != x[0].numel():
            raise ValueError(
                f"mass: expected 1 or {x[0].numel()} values (one per coordinate of a sample), got {len(self.mass)}"
            )
        return torch.tensor(self.mass, dtype=x.dtype, device=x.device).view(x.shape[1:])

    def step(self, energy_fn, state, noise, u=None, *, evaluate=True):
        """A fresh momentum from ``noise``, the leapfrog trajectory, and the shared Metropolis test."""
        self._check_draws(u, evaluate)
        x, mass, eps = state.x, self._mass_like(state.x), self.step_size
        p = noise * mass**0.5
        kinetic = lambda q: 0.5 * (q.square() / mass).flatten(1).sum(1)  # noqa: E731
        q, q_energy, q_grad = x, state.energy, state.grad
        momentum = p - 0.5 * eps * q_grad
        for i in range(self.n_leapfrog):
            q = q + eps * momentum / mass
            q_energy, q_grad = energy_and_grad(energy_fn, q)
            momentum = momentum - (eps if i < self.n_leapfrog - 1 else 0.5 * eps) * q_grad
        # the shared test with the momentum's log density in place of the proposal's: log α = E(x) − E(q) + K(p) − K(p')
        x, energy, grad, accepted = metropolis_test(
            x, state.energy, state.grad, q, q_energy, q_grad, -kinetic(p), -kinetic(momentum), u
        )
        return SamplerState(x, energy, grad, state.extra), StepInfo(accepted, None, finite_chains(energy, grad))

    def small_step_log_weight(self, energy, grad):
        return -energy, True, "Metropolis-adjusted: exact for exp(-E)"

    def settings(self) -> dict:
        return {"sampler": self.name, "step_size": self.step_size, "n_leapfrog": self.n_leapfrog, "mass": self.mass}
