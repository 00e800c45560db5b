"""AniLA: energy-based models trained with Anisotropic Langevin dynamics — targets, samplers, training, metrics.

The package's parts: ``sampling`` (targets, samplers, the compiled step), ``training``
(config, the loop, runs), ``images`` (datasets, ConvNets, FID/KID), ``study`` (sweeps) and
``ui`` (plots, widgets, live figures); ``cli`` is ``python -m anila_core``.
"""

__version__ = "0.1.0"

from anila_core.budget import resolve_budget
from anila_core.device import resolve_device
from anila_core.sampling.kernel import NonFiniteChainError, SamplerState, StepInfo, Trace, energy_and_grad
from anila_core.sampling.registry import SAMPLERS, make_sampler
from anila_core.sampling.hmc import HMC
from anila_core.sampling.samplers import AniLA, Langevin, PSGLD, Sampler
from anila_core.sampling.targets import Gaussian, GaussianMixture, Rings, make_target

__all__ = [
    "AniLA",
    "Langevin",
    "PSGLD",
    "HMC",
    "Sampler",
    "Trace",
    "SamplerState",
    "StepInfo",
    "NonFiniteChainError",
    "SAMPLERS",
    "energy_and_grad",
    "make_sampler",
    "Gaussian",
    "GaussianMixture",
    "Rings",
    "make_target",
    "resolve_budget",
    "resolve_device",
]
