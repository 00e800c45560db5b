"""The one map from a sampler's name to its class and to the training settings it is built from; every part of the
package builds samplers here."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from anila_core.sampling.hmc import HMC
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin, Sampler

__all__ = ["SamplerEntry", "SAMPLERS", "make_sampler", "applicable", "sampler_from_config"]


@dataclass(frozen=True)
class SamplerEntry:
    """A sampler's class, what it is, and which ``TrainConfig`` field feeds each constructor argument."""

    cls: type[Sampler]
    summary: str
    settings: dict[str, str]
    #: why ``metropolis=True`` is not a setting of this sampler ('' when it is one)
    no_metropolis_setting: str = ""


_COMMON = {"step_size": "step_size", "noise_scale": "noise_scale"}
SAMPLERS: dict[str, SamplerEntry] = {
    "langevin": SamplerEntry(
        Langevin, "unadjusted Langevin (ULA); MALA with metropolis", {**_COMMON, "metropolis": "metropolis"}
    ),
    "anila": SamplerEntry(
        AniLA,
        "anisotropic Langevin: steps shrink where |∇E| > b",
        {**_COMMON, "b": "b", "norm": "norm", "variant": "variant", "metropolis": "metropolis"},
    ),
    "psgld": SamplerEntry(
        PSGLD,
        "preconditioned SGLD (RMSprop-scaled steps)",
        {**_COMMON, "alpha": "psgld_alpha", "damping": "psgld_damping"},
        "not available for psgld (its preconditioner depends on the chain's history)",
    ),
    "hmc": SamplerEntry(
        HMC,
        "Hamiltonian Monte Carlo: leapfrog trajectories and a Metropolis test",
        {"step_size": "step_size", "n_leapfrog": "hmc_leapfrog"},
        "hmc always ends its transitions in the Metropolis test; leave metropolis off",
    ),
}


def make_sampler(name: str, **hyperparameters) -> Sampler:
    """Build a sampler by name (``langevin``, ``anila``, ``psgld``) from keyword hyperparameters."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; expected one of {sorted(SAMPLERS)}")
    cls = SAMPLERS[name].cls
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter(s) {unknown}; expected some of {accepted}")
    if "step_size" not in hyperparameters:
        raise ValueError(f"{name}: step_size is required; expected some of {accepted}")
    return cls(**hyperparameters)


def applicable(name: str, values: dict) -> dict:
    """The entries of ``values`` that sampler ``name`` takes as hyperparameters: a panel's sliders offer ``b`` to every
    sampler, only AniLA uses it."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; expected one of {sorted(SAMPLERS)}")
    return {k: v for k, v in values.items() if k in SAMPLERS[name].settings}


def sampler_from_config(config) -> Sampler:
    """The sampler a training configuration names (``config.sampler``), with its hyperparameters read from the config's
    fields."""
    if config.sampler not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {config.sampler!r}; expected one of {sorted(SAMPLERS)}")
    entry = SAMPLERS[config.sampler]
    return make_sampler(config.sampler, **{arg: getattr(config, field) for arg, field in entry.settings.items()})
