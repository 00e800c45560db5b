"""Hamiltonian Monte Carlo: its limiting case (one leapfrog step is MALA), exactness on known Gaussians within Monte
Carlo error, its settings, and training with it."""

from __future__ import annotations

import math

import pytest
import torch

from anila_core.sampling.kernel import Trace
from anila_core.sampling.hmc import HMC
from anila_core.sampling.samplers import Langevin
from anila_core.sampling.targets import Gaussian
from anila_core.training.presets import preset
from anila_core.training.trainer import Trainer

#: a correlated 2-D Gaussian: sds 1 and 2, correlation 0.8
COV = torch.tensor([[1.0, 1.6], [1.6, 4.0]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COV)


def correlated(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.einsum("ni,ij,nj->n", x, PRECISION.to(x.dtype), x)


def exact_correlated(n: int, seed: int) -> torch.Tensor:
    return (
        torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        @ torch.linalg.cholesky(COV).T
    )


def test_one_leapfrog_step_is_mala_with_the_squared_step():
    """x' = x − (ε²/2)∇E + ε ξ and the same acceptance ratio: HMC(ε, 1) and MALA(ε²) are one chain for one generator."""
    x0 = exact_correlated(200, 0).float()
    hmc = HMC(0.5, n_leapfrog=1).sample(correlated, x0, 30, generator=torch.Generator().manual_seed(1))
    mala = Langevin(0.25, metropolis=True).sample(correlated, x0, 30, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hmc, mala, rtol=1e-4, atol=1e-5)


def _within_mcse(samples: torch.Tensor, cov: torch.Tensor, k: float = 4.0) -> None:
    """Means, variances and the covariance of independent chains agree with ``cov`` within ``k`` Monte Carlo standard
    errors."""
    n = samples.shape[0]
    x = samples.double()
    mean, sample_cov = x.mean(0), torch.cov(x.T)
    sd = cov.diagonal().sqrt()
    assert bool(((mean.abs() / (sd / math.sqrt(n))) < k).all()), f"means {mean.tolist()}"
    var_se = cov.diagonal() * math.sqrt(2.0 / (n - 1))
    assert bool((((sample_cov.diagonal() - cov.diagonal()).abs() / var_se) < k).all()), (
        f"variances {sample_cov.diagonal().tolist()}"
    )
    # sd of a sample covariance for a Gaussian: sqrt((σ12² + σ1²σ2²) / (n − 1))
    cov_se = math.sqrt((cov[0, 1] ** 2 + cov[0, 0] * cov[1, 1]) / (n - 1))
    assert abs(float(sample_cov[0, 1] - cov[0, 1])) < k * cov_se, f"covariance {float(sample_cov[0, 1])}"


@pytest.mark.parametrize("mass", [1.0, (1.0, 4.0)], ids=["unit mass", "diagonal mass"])
def test_hmc_keeps_the_correlated_gaussian_exactly(mass):
    """Started from exact samples, an exact chain stays exact: moments within 4 MCSE of the target's after many
    transitions."""
    x0 = exact_correlated(4000, 2).float()
    trace = Trace()
    x = HMC(0.4, n_leapfrog=5, mass=mass).sample(
        correlated, x0, 60, generator=torch.Generator().manual_seed(3), trace=trace
    )
    _within_mcse(x, COV)
    assert 0.3 < sum(trace.acceptance_rate) / 60 < 1.0  # the test bites: some trajectories are rejected


def test_hmc_keeps_the_ill_conditioned_gaussian_exactly():
    """Gaussian([0.1, 10]): a step near the stiff direction's stability limit (2·0.1), where the unadjusted chains are
    biased."""
    target = Gaussian([0.1, 10.0])
    x0 = target.sample(4000, torch.Generator().manual_seed(4))
    trace = Trace()
    x = HMC(0.15, n_leapfrog=8).sample(target.energy, x0, 60, generator=torch.Generator().manual_seed(5), trace=trace)
    _within_mcse(x, torch.diag(target.variance))
    assert sum(trace.acceptance_rate) / 60 < 0.99


def test_a_trajectory_into_infinite_energy_is_rejected():
    box = lambda x: 0.5 * x.square().sum(1) + torch.where((x.abs() < 1.0).all(1), 0.0, math.inf)  # noqa: E731
    x = HMC(0.5, n_leapfrog=4).sample(box, torch.zeros(300, 2), 20, generator=torch.Generator().manual_seed(0))
    assert bool((x.abs() < 1.0).all())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(step_size=0.0), "step_size"),
        (dict(step_size=0.1, n_leapfrog=0), "n_leapfrog"),
        (dict(step_size=0.1, n_leapfrog=2.5), "n_leapfrog"),
        (dict(step_size=0.1, mass=-1.0), "mass"),
        (dict(step_size=0.1, mass="heavy"), "mass"),
    ],
)
def test_bad_settings_are_named(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        HMC(**kwargs)
    with pytest.raises(ValueError, match="mass: expected 1 or 2 values"):
        HMC(0.1, mass=(1.0, 2.0, 3.0)).sample(correlated, torch.zeros(3, 2), 1)


def test_hmc_trains_on_the_rings_at_the_smoke_preset():
    config = preset("smoke", "hmc", device="cpu", step_size=0.05, hmc_leapfrog=3)
    trainer = Trainer(config, progress=False)
    rows = trainer.run()
    assert trainer.iteration == config.iters and all(math.isfinite(r["grid_tv"]) for r in rows)
    assert "acceptance" in rows[-1] and 0.0 < rows[-1]["acceptance"] <= 1.0
    with pytest.raises(ValueError, match="metropolis: hmc always ends its transitions in the Metropolis test"):
        preset("smoke", "hmc", metropolis=True)
