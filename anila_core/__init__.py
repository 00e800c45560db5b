"""AniLA: energy-based models trained with Anisotropic Langevin dynamics — targets, samplers, training, metrics."""

from .samplers import AniLA, Langevin, PSGLD, Sampler, Trace, energy_and_grad, make_sampler
from .targets import Gaussian, GaussianMixture, Rings, make_target

__version__ = "0.1.0"

__all__ = [
    "AniLA",
    "Langevin",
    "PSGLD",
    "Sampler",
    "Trace",
    "energy_and_grad",
    "make_sampler",
    "Gaussian",
    "GaussianMixture",
    "Rings",
    "make_target",
]
