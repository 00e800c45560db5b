"""Independence Metropolis moves: jumps to a fresh Gaussian point, accepted with the model's Metropolis ratio, so chains
can change modes.

Langevin-type chains move by small steps along the gradient. Once an energy has sharp, separated modes (the rings), a
chain stays in the mode it fell into, and persistent chains stop telling the training loop how much mass each mode
should have: the modes' relative energies then drift (README, "The long run needs chains that change rings"). An
independence move proposes ``y ~ N(0, s² I)`` regardless of the current point ``x`` and accepts it with probability

    min(1, exp(E(x) − E(y)) · q(x) / q(y)),   q = the density of N(0, s² I),

which leaves ``exp(−E)`` exactly invariant, whatever the energy, whenever the Gaussian covers
its mass. It costs one energy evaluation per move (no gradient). In two dimensions a good
share of proposals lands in some mode and is accepted (≈ 35–40 % on the trained rings); in image
dimensions almost none is, so it is meant for low-dimensional targets.
"""

from __future__ import annotations

from typing import Callable

import torch

from anila_core.sampling.kernel import check_energies, check_generator, check_positions, finite_positive

__all__ = ["independence_moves"]


def independence_moves(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n_moves: int,
    scale: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_moves`` independence Metropolis moves of every chain in ``x`` with the proposal ``N(0, scale² I)``.

    Returns the new points and the share of proposals accepted, a 0-d tensor (NaN for
    ``n_moves = 0``; a tensor, so that a training loop on a GPU need not wait for it).
    Per move it draws the proposal, then one uniform per chain, from ``generator``. A
    proposal whose energy is not finite is rejected.
    """
    if isinstance(n_moves, bool) or not isinstance(n_moves, int) or n_moves < 0:
        raise ValueError(f"n_moves: expected an integer >= 0, got {n_moves!r}")
    scale = finite_positive("scale", scale)
    x = check_positions(x, "x")
    check_generator(generator, x)
    if n_moves == 0:
        return x, torch.tensor(float("nan"), device=x.device)
    dims = tuple(range(1, x.ndim))
    accepted = torch.zeros((), device=x.device)
    with torch.no_grad():
        energy = energy_fn(x)
        check_energies(energy, x)
        energy = energy.float()
        for _ in range(n_moves):
            proposal = scale * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            proposal_energy = energy_fn(proposal).float()
            # log q(x) − log q(y) for the Gaussian proposal: (|y|² − |x|²) / (2 s²)
            log_ratio = (
                energy - proposal_energy + (proposal.square().sum(dims) - x.square().sum(dims)).float() / (2 * scale**2)
            )
            u = torch.rand(x.shape[0], generator=generator, device=x.device)
            # NaN compares False; an energy of −inf would win every test, so it is refused explicitly
            accept = (u.log() < log_ratio) & torch.isfinite(proposal_energy)
            x = torch.where(accept.view(-1, *([1] * (x.ndim - 1))), proposal, x)
            energy = torch.where(accept, proposal_energy, energy)
            accepted = accepted + accept.float().mean()
    return x, accepted / n_moves
