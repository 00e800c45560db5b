"""Known targets: exact normalisation, energy = −log p, and sample moments against exact values."""

import math

import pytest
import torch

from anila_core.sampling.distances import grid_points
from anila_core.sampling.targets import Gaussian, GaussianMixture, Rings, make_target

Z = 4.0


@pytest.mark.parametrize(
    "target", [Rings(), GaussianMixture(), Gaussian([0.7, 1.3]), Gaussian([0.5, 2.0], mean=[1.0, -1.0])], ids=repr
)
def test_log_prob_integrates_to_one(target):
    extent, size = 9.0, 900
    _, pts = grid_points(extent, size)
    cell = (2 * extent / size) ** 2
    mass = float(target.log_prob(pts.double()).exp().sum() * cell)
    assert mass == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("target", [Rings(), GaussianMixture(), Gaussian([0.1, 10.0])], ids=repr)
def test_energy_is_minus_log_prob_and_has_one_value_per_sample(target):
    x = target.sample(7, generator=torch.Generator().manual_seed(0))
    assert x.shape == (7, target.dim)
    assert target.energy(x).shape == (7,)
    torch.testing.assert_close(target.energy(x), -target.log_prob(x))


def test_rings_samples_have_the_exact_radial_moments():
    n = 40_000
    r = Rings().sample(n, generator=torch.Generator().manual_seed(1)).double().norm(dim=1)
    # mixture of N(k, 0.15²), k = 1..4 equally: mean 2.5, variance 1.25 + 0.0225
    var = 1.25 + 0.15**2
    assert abs(r.mean() - 2.5) <= Z * math.sqrt(var / n)
    assert abs(r.var() - var) <= Z * 0.05  # the variance of r² terms is bounded by 0.05² · n here
    # each ring holds a quarter of the points
    counts = torch.bincount(r.round().long().clamp(1, 4) - 1, minlength=4).double() / n
    assert (counts - 0.25).abs().max() <= Z * math.sqrt(0.25 * 0.75 / n)


def test_gaussian_samples_have_the_exact_moments():
    n = 40_000
    g = Gaussian([0.1, 10.0], mean=[1.0, 2.0])
    x = g.sample(n, generator=torch.Generator().manual_seed(2)).double()
    assert ((x.mean(0) - g.mean).abs() <= Z * g.scales / math.sqrt(n)).all()
    assert ((x.var(0) - g.variance).abs() <= Z * g.variance * math.sqrt(2 / (n - 1))).all()


def test_mixture_samples_sit_on_their_circle():
    n = 40_000
    x = GaussianMixture().sample(n, generator=torch.Generator().manual_seed(3)).double()
    # E‖x‖² = R² + d·sd² for an equal mixture of modes on a circle of radius R
    sq = x.square().sum(1)
    assert abs(sq.mean() - (9.0 + 2 * 0.09)) <= Z * sq.std() / math.sqrt(n)


def test_same_generator_seed_same_samples():
    a = Rings().sample(10, generator=torch.Generator().manual_seed(4))
    b = Rings().sample(10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: Rings(sd=0), "sd"),
        (lambda: Rings(radii=[]), "radii"),
        (lambda: Gaussian([1.0, -1.0]), "scales"),
        (lambda: Gaussian([1.0], mean=[0.0, 0.0]), "mean"),
        (lambda: GaussianMixture(n_modes=0), "n_modes"),
        (lambda: make_target("moons"), "target"),
        (lambda: Rings().sample(0), "n"),
        (lambda: Rings().log_prob(torch.zeros(3, 3)), "x"),
    ],
)
def test_bad_arguments_are_named(build, name):
    with pytest.raises(ValueError, match=name):
        build()
