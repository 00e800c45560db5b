"""Convergence curves: distances fall from a bad start to the exact-sample floor for an exact chain; unadjusted chains
show their bias."""

import math

import pytest

from anila_core.sampling.convergence import (
    compare_convergence,
    convergence_curve,
    log_step_grid,
    noise_floor,
    stationary_variance,
)
from anila_core.sampling.samplers import AniLA, Langevin
from anila_core.sampling.targets import Gaussian


def test_log_step_grid():
    assert log_step_grid(1000) == [0, 1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]
    assert log_step_grid(7, include_zero=False) == [1, 2, 5, 7]
    assert log_step_grid(1) == [0, 1]
    with pytest.raises(ValueError, match="max_steps"):
        log_step_grid(0)


@pytest.fixture(scope="module")
def mala_curve():
    sampler = Langevin(0.2, metropolis=True)
    return convergence_curve(sampler, "gaussian", steps=log_step_grid(150), n_chains=400, seed=1, floor_repeats=8)


def test_mala_forgets_its_start_and_reaches_the_noise_floor(mala_curve):
    res = mala_curve
    assert res.steps[0] == 0 and res.steps[-1] == 150
    # all chains at (3.5, 3.5): every sample sits in one bin far in the tail
    assert res.tv[0] > 0.99 and res.mmd[0] > 1.0
    assert res.tv[-1] < 0.5 * res.tv[0] and res.mmd[-1] < 1e-2 * res.mmd[0]
    # the early part of the curve falls step after step (later it is noise around the floor)
    early = [i for i, t in enumerate(res.steps) if 1 <= t <= 22]
    assert all(res.mmd[i] > res.mmd[j] for i, j in zip(early, early[1:]))
    # at the end it is as close as exact samples of the same size get: the TV floor's spread
    # over repeats is ≈ 0.01 here, the MMD floor is the estimator's own RMS
    assert abs(res.tv[-1] - res.tv_floor) < 0.06
    assert abs(res.mmd[-1]) < 4 * res.mmd_floor
    assert 0.5 < res.acceptance_rate <= 1.0


def test_noise_floor_matches_exact_samples_and_shrinks_with_n():
    g = Gaussian([1.0, 1.0])
    small, large = noise_floor(g, 200, "tv", repeats=4), noise_floor(g, 3200, "tv", repeats=4)
    # the histogram's sampling noise falls like 1/sqrt(n): 16x the samples, about 1/4 the floor
    assert 0.15 < large / small < 0.4
    assert noise_floor(g, 100, "mmd", repeats=4) > noise_floor(g, 800, "mmd", repeats=4)


def test_curves_share_the_start_and_record_acceptance_only_for_metropolis():
    res = compare_convergence(
        {"ULA": Langevin(0.1), "AniLA+MH": AniLA(0.1, 1.0, metropolis=True)},
        "gaussian",
        steps=[0, 5, 20],
        n_chains=100,
        metrics=("tv",),
        floor_repeats=2,
    )
    assert res["ULA"].tv[0] == res["AniLA+MH"].tv[0]  # same start
    assert res["ULA"].acceptance_rate is None and res["AniLA+MH"].acceptance_rate is not None
    assert res["ULA"].mmd == [] and math.isnan(res["ULA"].mmd_floor)
    with pytest.raises(ValueError, match="not recorded"):
        res["ULA"].distances("mmd")


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="start"):
        convergence_curve(Langevin(0.1), "gaussian", steps=[1], start=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="steps"):
        convergence_curve(Langevin(0.1), "gaussian", steps=[0])
    with pytest.raises(ValueError, match="metrics"):
        convergence_curve(Langevin(0.1), "gaussian", steps=[1], metrics=("kl",))
    with pytest.raises(ValueError, match="metrics"):
        convergence_curve(Langevin(0.1), Gaussian([1.0, 1.0, 1.0]), steps=[1], start=(0, 0, 0))
    with pytest.raises(ValueError, match="target"):
        convergence_curve(Langevin(0.1), "banana", steps=[1])


def test_unadjusted_anila_inflates_the_stiff_variance_and_mala_does_not():
    # Gaussian([0.1, 10]) with b = 1, ε = 0.02: |g| = 100|x| > b almost everywhere on the stiff
    # coordinate, so its step depends on the position and the unadjusted chain is biased.
    target, n = Gaussian([0.1, 10.0]), 3000
    biased = stationary_variance(AniLA(0.02, 1.0), target, n_chains=n, n_steps=150, seed=0)
    exact = stationary_variance(AniLA(0.02, 1.0, metropolis=True), target, n_chains=n, n_steps=150, seed=0)
    se = biased["exact_variance"][0] * math.sqrt(2 / (n - 1))  # the standard error of a variance, ≈ 2.6 %
    assert biased["exact_variance"][0] == pytest.approx(0.01)
    assert biased["variance"][0] > 0.01 + 8 * se  # inflated far beyond Monte Carlo error
    assert abs(exact["variance"][0] - 0.01) < 4 * se
    assert biased["acceptance_rate"] is None and 0.5 < exact["acceptance_rate"] < 1.0
