"""Statistical tests on known targets: moments against exact values, tolerances from the Monte Carlo standard error.

Each test draws many independent chains and compares the final states' mean and variance
with the exact value. With n independent draws the standard error of the mean is σ/√n and
of the variance σ²·√(2/(n−1)) (normal law); we allow ``Z`` standard errors, so a correct
sampler fails with probability about 1e-4 per check whatever the seed. Run ``pytest -s`` to
see the measured moments.
"""

import math

import pytest
import torch

from anila_core.sampling.samplers import AniLA, Langevin
from anila_core.sampling.targets import Gaussian

Z = 4.0
N_CHAINS = 20_000


def moments_within_se(samples, mean, var, label):
    """Check each coordinate's mean and variance against the exact values; return the measured ones."""
    n = samples.shape[0]
    m, v = samples.double().mean(0), samples.double().var(0)
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    se_mean, se_var = (var / n).sqrt(), var * math.sqrt(2 / (n - 1))
    print(
        f"\n{label}: mean {m.tolist()} (exact {mean.tolist()}), var {v.tolist()} (exact {var.tolist()}), "
        f"var ratio {(v / var).tolist()}"
    )
    assert ((m - mean).abs() <= Z * se_mean).all(), (
        f"{label}: mean {m.tolist()} vs {mean.tolist()} ± {Z}·{se_mean.tolist()}"
    )
    assert ((v - var).abs() <= Z * se_var).all(), f"{label}: var {v.tolist()} vs {var.tolist()} ± {Z}·{se_var.tolist()}"
    return m, v


def test_unadjusted_langevin_matches_the_discretised_chains_stationary_variance():
    """On N(0, 1), x' = (1 − h/2)x + √h ξ has stationary variance 1 / (1 − h/4), not 1."""
    h = 0.5
    target = Gaussian([1.0, 1.0])
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((N_CHAINS, 2), 5.0)  # far start: (1 − h/2)^200 forgets it completely
    x = Langevin(h).sample(target.energy, x0, 200, generator=gen)
    exact = 1 / (1 - h / 4)
    moments_within_se(x, [0.0, 0.0], [exact, exact], "ULA on N(0,1), h=0.5")
    # and the discretisation bias is visible: the variance is not the target's 1
    assert (x.var(0) - 1.0).abs().min() > Z * exact * math.sqrt(2 / (N_CHAINS - 1))


def test_unadjusted_langevin_on_the_ill_conditioned_gaussian_matches_its_discrete_variance():
    """Per coordinate with variance s², the ULA chain's variance is s² / (1 − h / (4 s²))."""
    h, scales = 0.02, [0.1, 10.0]
    target = Gaussian(scales)
    gen = torch.Generator().manual_seed(1)
    x = Langevin(h).sample(target.energy, target.sample(N_CHAINS, generator=gen), 100, generator=gen)
    exact = [s * s / (1 - h / (4 * s * s)) for s in scales]
    moments_within_se(x, [0.0, 0.0], exact, "ULA on Gaussian([0.1, 10]), h=0.02")


ADJUSTED = [
    Langevin(0.02, metropolis=True),
    AniLA(0.02, b=1.0, metropolis=True),
    AniLA(0.02, b=1.0, norm="sample", metropolis=True),
    AniLA(0.02, b=1.0, variant="noise_only", metropolis=True),
]


@pytest.mark.parametrize("sampler", ADJUSTED, ids=repr)
def test_metropolis_adjusted_chains_keep_the_ill_conditioned_gaussian_exactly(sampler):
    """Started at the target, an exact kernel stays there; the stiff coordinate mixes within steps."""
    target = Gaussian([0.1, 10.0])
    gen = torch.Generator().manual_seed(2)
    x = sampler.sample(target.energy, target.sample(N_CHAINS, generator=gen), 100, generator=gen)
    moments_within_se(x, target.mean, target.variance, f"{sampler!r} on Gaussian([0.1, 10])")


@pytest.mark.parametrize("sampler", [Langevin(0.1, metropolis=True), AniLA(0.1, b=1.0, metropolis=True)], ids=repr)
def test_metropolis_adjusted_chains_converge_from_a_far_start(sampler):
    """From a point far in the tail, the adjusted chain forgets its start and reaches the exact moments."""
    target = Gaussian([0.5, 1.5], mean=[1.0, -2.0])
    gen = torch.Generator().manual_seed(3)
    x0 = torch.tensor([[4.0, 4.0]]).expand(N_CHAINS, 2).contiguous()
    x = sampler.sample(target.energy, x0, 1500, generator=gen)
    moments_within_se(x, target.mean, target.variance, f"{sampler!r} from (4, 4)")


def test_unadjusted_anila_bias_on_the_ill_conditioned_gaussian_is_measured():
    """Unadjusted AniLA with b = 1 is biased on the stiff coordinate (γ depends on x); measure and report it.

    The bias is expected, not a failure: the test asserts that it is detectable (many
    standard errors), that the Metropolis test removes it, and prints its size.
    """
    target = Gaussian([0.1, 10.0])
    gen = torch.Generator().manual_seed(4)
    x0 = target.sample(N_CHAINS, generator=gen)
    unadjusted = AniLA(0.02, b=1.0).sample(target.energy, x0, 200, generator=gen)
    adjusted = AniLA(0.02, b=1.0, metropolis=True).sample(target.energy, x0, 200, generator=gen)
    stiff_var = 0.01
    se = stiff_var * math.sqrt(2 / (N_CHAINS - 1))
    ratio_unadjusted = unadjusted[:, 0].double().var().item() / stiff_var
    ratio_adjusted = adjusted[:, 0].double().var().item() / stiff_var
    print(
        f"\nunadjusted AniLA(b=1, ε=0.02) stiff-coordinate variance ratio: {ratio_unadjusted:.3f} "
        f"(± {Z * se / stiff_var:.3f}); Metropolis-adjusted: {ratio_adjusted:.3f}"
    )
    assert (ratio_unadjusted - 1) * stiff_var > Z * se, "the unadjusted bias should be clearly visible"
    assert abs(ratio_adjusted - 1) * stiff_var <= Z * se
