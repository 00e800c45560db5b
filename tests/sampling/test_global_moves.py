"""Independence Metropolis moves: exact invariance on a known bimodal target, limiting cases, validation, and their use
in training."""

import math

import pytest
import torch

from anila_core.training.config import TrainConfig
from anila_core.training.presets import preset
from anila_core.sampling.global_moves import independence_moves
from anila_core.training.runs import Run

# Two modes with unequal weights, six sd apart: a Langevin chain practically never crosses between them.
WEIGHTS = (0.25, 0.75)
CENTRES = (-3.0, 3.0)
SD = 1.0


def bimodal_energy(x: torch.Tensor) -> torch.Tensor:
    """−log of the mixture density of WEIGHTS at (CENTRES[k], 0) with sd SD (normalised; the moves only see
    differences)."""
    logs = [math.log(w) - ((x[:, 0] - c) ** 2 + x[:, 1] ** 2) / (2 * SD**2) for w, c in zip(WEIGHTS, CENTRES)]
    return -torch.logsumexp(torch.stack(logs), dim=0) + math.log(2 * math.pi * SD**2)


def test_chains_started_in_one_mode_reach_the_exact_mode_weights_and_moments():
    n = 20_000
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([CENTRES[0], 0.0]) + SD * torch.randn(n, 2, generator=gen)  # every chain in the light mode
    x, accept = independence_moves(bimodal_energy, x0, n_moves=100, scale=3.0, generator=gen)
    assert 0.1 < float(accept) < 0.5  # ≈ 0.21
    right = (x[:, 0] > 0).double()
    se = math.sqrt(WEIGHTS[1] * WEIGHTS[0] / n)
    # the chains are independent, so the binomial SE applies; what is left of the start after 100 moves
    # is below it (followed over 400 moves: from move 50 on the share stayed within 0.75 ± 1.2 SE)
    assert abs(right.mean().item() - WEIGHTS[1]) < 4 * se
    mean_x = sum(w * c for w, c in zip(WEIGHTS, CENTRES))
    var_x = SD**2 + sum(w * (c - mean_x) ** 2 for w, c in zip(WEIGHTS, CENTRES))
    assert abs(x[:, 0].double().mean().item() - mean_x) < 4 * math.sqrt(var_x / n)
    assert abs(x[:, 1].double().var().item() - SD**2) < 4 * SD**2 * math.sqrt(2 / n)


def test_an_energy_equal_to_the_proposal_accepts_every_move():
    scale = 1.7
    energy = lambda z: z.square().sum(1) / (2 * scale**2)  # noqa: E731  - exp(−E) ∝ the proposal's density
    x0 = torch.randn(500, 2)
    x, accept = independence_moves(energy, x0, n_moves=3, scale=scale, generator=torch.Generator().manual_seed(1))
    assert float(accept) == 1.0
    # the last proposal, drawn in the documented order: per move the proposal, then the uniforms
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        proposal = scale * torch.randn(x0.shape, generator=gen)
        torch.rand(len(x0), generator=gen)
    assert torch.equal(x, proposal)


def test_non_finite_proposals_are_rejected_and_zero_moves_change_nothing():
    x0 = torch.randn(64, 2)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x, accept = independence_moves(lambda z: torch.full((len(z),), bad), x0, n_moves=2, scale=1.0)
        assert torch.equal(x, x0) and float(accept) == 0.0, bad
    x, accept = independence_moves(bimodal_energy, x0, n_moves=0, scale=1.0)
    assert torch.equal(x, x0) and math.isnan(float(accept))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_moves=-1), "n_moves"),
        (dict(n_moves=1.5), "n_moves"),
        (dict(scale=0.0), "scale"),
        (dict(scale=float("inf")), "scale"),
        (dict(x=torch.zeros(3)), "^x: expected shape"),
        (dict(energy_fn=lambda z: z), "energy_fn"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    args = dict(energy_fn=bimodal_energy, x=torch.zeros(4, 2), n_moves=1, scale=1.0) | kwargs
    with pytest.raises(ValueError, match=name):
        independence_moves(**args)


def test_global_moves_need_the_gaussian_start():
    with pytest.raises(ValueError, match="global_moves"):
        TrainConfig(global_moves=2, init="uniform").validate()
    with pytest.raises(ValueError, match="global_moves"):
        TrainConfig(global_moves=-1, init="gaussian").validate()


def test_training_with_global_moves_logs_their_acceptance_and_resumes_exactly(tmp_path):
    cfg = preset(
        "smoke", "langevin", device="cpu", init="gaussian", init_scale=2.0, global_moves=2, checkpoint_every=10
    )
    straight = Run(tmp_path / "straight", cfg.replace(iters=20), progress=False)
    final = straight.train()
    rows = straight.trainer.history
    assert all(0.0 <= r["global_accept"] <= 1.0 for r in rows)
    assert final["global_accept"] == rows[-1]["global_accept"]
    Run(tmp_path / "split", cfg.replace(iters=10), progress=False).train()
    resumed = Run(tmp_path / "split", resume=True, iters=20, progress=False)
    resumed.train()
    for a, b in zip(straight.trainer.model.parameters(), resumed.trainer.model.parameters()):
        assert torch.equal(a, b)


def test_the_long_preset_uses_them_for_both_samplers():
    assert preset("cpu_long", "langevin").global_moves == preset("cpu_long", "anila").global_moves > 0
    assert preset("cpu", "langevin").global_moves == 0
