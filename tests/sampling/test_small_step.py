"""The small-step density of each sampler: exact formulas on fixed inputs, its limiting cases, and long unadjusted
chains at small step sizes, with Monte Carlo tolerances."""

from __future__ import annotations

import math

import pytest
import torch

from anila_core.sampling.distances import grid_log_probs, grid_points
from anila_core.sampling.hmc import HMC
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin
from anila_core.sampling.small_step import check_small_step_density, small_step_log_probs

S1, S2 = 0.3, 1.0
ROTATION = torch.tensor([[math.cos(0.6), -math.sin(0.6)], [math.sin(0.6), math.cos(0.6)]])


def separable(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x[:, 0] / S1) ** 2 + 0.5 * (x[:, 1] / S2) ** 2


def rotated(x: torch.Tensor) -> torch.Tensor:
    """The same Gaussian turned by 0.6 rad: no longer separable in the coordinates."""
    return separable(x @ ROTATION)


def grid_covariance(log_probs: torch.Tensor) -> torch.Tensor:
    _, pts = grid_points()
    p, pts = log_probs.flatten().exp(), pts.double()
    centred = pts - (p[:, None] * pts).sum(0)
    return (p[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)


def test_the_formula_on_fixed_points():
    energy = torch.tensor([0.5, 2.0], dtype=torch.float64)
    grad = torch.tensor([[0.5, 3.0], [4.0, 0.0]], dtype=torch.float64)
    log_w, exact, _ = AniLA(0.1, b=1.0, norm="sample").small_step_log_weight(energy, grad)
    # exp(-E) · max(b, ‖g‖) / b
    torch.testing.assert_close(
        log_w, -energy + torch.tensor([math.log(math.hypot(0.5, 3.0)), math.log(4.0)], dtype=torch.float64)
    )
    assert exact
    log_w, exact, note = AniLA(0.1, b=1.0).small_step_log_weight(energy, grad)
    # exp(-E) · ∏ max(b, |g_i|) / b
    torch.testing.assert_close(log_w, -energy + torch.tensor([math.log(3.0), math.log(4.0)], dtype=torch.float64))
    assert not exact and "approximation" in note
    log_w, _, _ = Langevin(0.1, noise_scale=0.5).small_step_log_weight(energy, grad)
    torch.testing.assert_close(log_w, -energy / 0.25)  # cold chains: exp(-E/τ²)


def test_limiting_cases_are_the_target():
    target = grid_log_probs(rotated)
    for sampler in (Langevin(0.1), AniLA(0.1, b=math.inf), AniLA(0.1, b=0.5, metropolis=True), HMC(0.1)):
        density = small_step_log_probs(sampler, rotated)
        assert density.exact
        torch.testing.assert_close(density.log_probs, target, rtol=1e-6, atol=1e-9)
    for sampler, why in (
        (PSGLD(0.1), "history"),
        (AniLA(0.1, b=1.0, variant="noise_only"), "drift and noise differently"),
    ):
        with pytest.raises(ValueError, match=why):
            small_step_log_probs(sampler, rotated)


def _chain_covariance(sampler_at, energy, x0, time: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Covariance of independent chains run for ``time / ε`` steps at ε = 0.004 and 0.002, extrapolated to ε → 0
    (Richardson, bias O(ε)), and its standard error."""
    covs = {}
    for eps in (0.004, 0.002):
        x = sampler_at(eps).sample(energy, x0, int(time / eps), generator=torch.Generator().manual_seed(0))
        covs[eps] = torch.cov(x.double().T)
    limit = 2 * covs[0.002] - covs[0.004]
    n = len(x0)
    var = limit.diagonal()
    # Gaussian standard errors of sample (co)variances, through 2a − b of two independent estimates
    se = torch.sqrt((var[:, None] * var[None, :] + limit**2) / (n - 1)) * math.sqrt(5)
    return limit, se


def _start(n: int, rotate: bool) -> torch.Tensor:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([S1, S2])
    return x @ ROTATION.T if rotate else x


@pytest.mark.slow
def test_long_chains_reach_the_predicted_density_on_a_separable_energy():
    predicted = small_step_log_probs(AniLA(0.01, b=1.0), separable)
    limit, se = _chain_covariance(lambda eps: AniLA(eps, b=1.0), separable, _start(20_000, rotate=False))
    expected = grid_covariance(predicted.log_probs)
    assert bool(((limit - expected).abs() < 4 * se).all()), f"chains {limit.tolist()} predicted {expected.tolist()}"
    # and the bias is real: the target's variances are far off (0.09 and 1 against ≈ 0.17 and 1.4)
    assert float(limit[0, 0]) > 1.5 * S1**2 and float(limit[1, 1]) > 1.2 * S2**2


@pytest.mark.slow
def test_with_one_step_size_per_sample_the_prediction_is_exact_on_a_non_separable_energy():
    predicted = small_step_log_probs(AniLA(0.01, b=1.0, norm="sample"), rotated)
    limit, se = _chain_covariance(lambda eps: AniLA(eps, b=1.0, norm="sample"), rotated, _start(20_000, rotate=True))
    expected = grid_covariance(predicted.log_probs)
    assert bool(((limit - expected).abs() < 4 * se).all()), f"chains {limit.tolist()} predicted {expected.tolist()}"
    target = grid_covariance(grid_log_probs(rotated))
    assert float(limit[0, 0]) > 1.1 * float(target[0, 0])  # away from exp(-E)


@pytest.mark.slow
def test_the_product_formula_holds_for_a_separable_energy_and_misses_a_non_separable_one():
    """The coordinate norm's exp(−E)/∏ aᵢ: at the histogram's noise floor on a separable energy, far above it once the
    energy is turned."""
    n, eps = 8000, 0.01
    results = {}
    for name, energy in (("separable", separable), ("rotated", rotated)):
        results[name] = check_small_step_density(
            AniLA(eps, b=1.0),
            energy,
            _start(n, rotate=name == "rotated"),
            1500,
            generator=torch.Generator().manual_seed(0),
            bins=16,
            extent=3.0,
        )
    ok, off = results["separable"], results["rotated"]
    # The TV of n independent draws scatters about its floor by a few thousandths here (256 bins, 8000 draws), and the
    # step's own O(ε) bias adds about as much: 0.03 leaves room for both, while the two densities differ by about 0.3 at
    # b = 1.
    assert ok.formula_tv < ok.floor + 0.03, ok
    assert ok.energy_tv > ok.floor + 0.1, ok  # the bias is real: the chains are not at exp(−E)
    assert off.densities_tv > 0.1 and not off.exact
    assert off.formula_tv > off.floor + 0.05, (
        off
    )  # turned, the same formula misses by far more than noise and step bias


def test_every_rings_run_reports_both_densities():
    """exp(−E) and the density its sampler draws at small step: the same for Langevin, different for an AniLA that
    clips."""
    from anila_core.training.presets import preset
    from anila_core.training.trainer import Trainer

    finals = {}
    for name in ("langevin", "anila"):
        trainer = Trainer(preset("smoke", name, device="cpu", iters=10, eval_every=10, b=0.05), progress=False)
        trainer.run()
        finals[name] = trainer.summary()
        assert "sampler_grid_tv" in trainer.history[-1] and "sampler_grid_kl" in trainer.history[-1]
    assert finals["langevin"]["sampler_grid_tv"] == pytest.approx(finals["langevin"]["grid_tv"], abs=1e-9)
    assert abs(finals["anila"]["sampler_grid_tv"] - finals["anila"]["grid_tv"]) > 1e-3
    psgld = Trainer(preset("smoke", "psgld", device="cpu", iters=10, eval_every=10), progress=False)
    assert psgld.run()[-1]["sampler_grid_tv"] is None  # no small-step law as a function of x
