"""Metrics on cases with known answers: identical densities, disjoint ones, analytic KL, MMD of equal laws."""

import math

import pytest
import torch

from anila_core.sampling.distances import grid_kl, grid_log_probs, grid_points, grid_tv, histogram_tv, mmd
from anila_core.sampling.targets import Gaussian, Rings


def test_grid_is_cell_centred_and_symmetric():
    axis, pts = grid_points(4.6, 200)
    assert pts.shape == (40_000, 2)
    assert axis[0] == pytest.approx(-4.6 + 4.6 / 200) and axis[-1] == pytest.approx(4.6 - 4.6 / 200)
    assert not (axis == 0).any()


def test_identical_densities_give_zero():
    rings = Rings()
    assert grid_tv(rings, rings) == 0.0
    assert grid_kl(rings, rings) == 0.0
    # a constant shift of the energy is the same density once normalised
    assert grid_tv(lambda x: rings.energy(x) + 7.0, rings) == pytest.approx(0.0, abs=1e-6)  # float32 rounding


def test_disjoint_densities_give_tv_one():
    left = lambda x: torch.where(x[:, 0] < 0, 0.0, 1e4)  # noqa: E731
    right = lambda x: torch.where(x[:, 0] > 0, 0.0, 1e4)  # noqa: E731
    assert grid_tv(left, right) == pytest.approx(1.0, abs=1e-12)


def test_kl_matches_the_analytic_value_for_two_gaussians():
    p, q = Gaussian([1.0, 1.0]), Gaussian([1.0, 1.0], mean=[0.5, 0.0])
    # KL(q || p) = ½‖μ_q − μ_p‖² for unit covariances
    assert grid_kl(p, q) == pytest.approx(0.125, rel=1e-3)
    # TV between N(0,1) and N(0.5,1) is 2Φ(0.25) − 1
    assert grid_tv(p, q) == pytest.approx(math.erf(0.25 / math.sqrt(2)), rel=1e-3)


def test_grid_log_probs_are_normalised():
    lp = grid_log_probs(Rings().energy)
    assert lp.shape == (200, 200)
    assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_histogram_tv_of_exact_samples_is_near_its_floor_and_wrong_samples_are_far():
    rings = Rings()
    exact = rings.sample(20_000, generator=torch.Generator().manual_seed(0))
    floor = math.sqrt(40 * 40 / (2 * math.pi * 20_000))
    assert histogram_tv(exact, rings) < 1.5 * floor
    wrong = Gaussian([1.0, 1.0]).sample(20_000, generator=torch.Generator().manual_seed(0))
    assert histogram_tv(wrong, rings) > 0.5


def test_mmd_is_about_zero_for_equal_laws_and_positive_otherwise():
    gen = torch.Generator().manual_seed(1)
    a, b = Rings().sample(2000, generator=gen), Rings().sample(2000, generator=gen)
    c = Gaussian([1.0, 1.0]).sample(2000, generator=gen)
    same, different = mmd(a, b), mmd(a, c)
    assert abs(same) < 0.01
    assert different > 20 * abs(same) and different > 0.05


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="extent"):
        grid_points(-1.0)
    with pytest.raises(ValueError, match="samples"):
        histogram_tv(torch.zeros(5, 3), Rings())
    with pytest.raises(ValueError, match="mmd"):
        mmd(torch.zeros(1, 2), torch.zeros(5, 2))
