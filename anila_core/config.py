"""The training configuration: one dataclass, its validation, and named presets (smoke, cpu, cpu_long, paper)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .nets import ACTIVATIONS
from .samplers import ANILA_VARIANTS, NORMS, SAMPLERS
from .targets import TARGETS

__all__ = ["TrainConfig", "PRESETS", "DEFAULT_PRESET", "preset", "CHAIN_KINDS", "LR_SCHEDULES"]

CHAIN_KINDS = ("buffer", "short_run")
LR_SCHEDULES = ("constant", "cosine")
INIT_KINDS = ("uniform", "gaussian")


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything one training run needs; every field is also a ``--flag`` of ``python -m anila_core train``."""

    # what to learn
    target: str = _f("rings", "2-D target to learn", choices=sorted(TARGETS))
    # energy network
    width: int = _f(128, "hidden units per layer of the MLP energy")
    depth: int = _f(3, "hidden layers of the MLP energy")
    activation: str = _f("silu", "activation of the MLP energy", choices=sorted(ACTIVATIONS))
    # sampler
    sampler: str = _f("langevin", "MCMC sampler for the negative samples", choices=sorted(SAMPLERS))
    step_size: float = _f(0.01, "sampler step size ε (> 0)")
    b: float = _f(1.0, "AniLA threshold b (> 0): steps shrink where |∇E| > b")
    norm: str = _f("coordinate", "AniLA: what |∇E| means", choices=list(NORMS))
    variant: str = _f("full", "AniLA: 'noise_only' scales only the noise (the authors' image code)", choices=list(ANILA_VARIANTS))
    noise_scale: float = _f(1.0, "noise scale τ (1 = Langevin diffusion, < 1 = cold sampling)")
    metropolis: bool = _f(False, "Metropolis-adjust every transition (MALA)")
    psgld_alpha: float = _f(0.99, "pSGLD: decay of the squared-gradient average")
    psgld_damping: float = _f(1e-5, "pSGLD: damping λ added to sqrt(V)")
    n_steps: int = _f(50, "K: sampler transitions per training iteration")
    # chains
    chains: str = _f("buffer", "'short_run' restarts from noise every iteration (as the paper); 'buffer' persists chains", choices=list(CHAIN_KINDS))
    buffer_size: int = _f(10_000, "replay buffer: number of persistent chains")
    reinit: float = _f(0.05, "replay buffer: share of chains restarted from noise each iteration")
    init: str = _f("uniform", "noise the chains start from", choices=list(INIT_KINDS))
    init_scale: float = _f(4.6, "half-width of the uniform start (or sd of the Gaussian start)")
    # optimisation
    batch_size: int = _f(256, "M: data points and negative samples per iteration")
    iters: int = _f(2000, "training iterations")
    lr: float = _f(1e-3, "Adam learning rate")
    beta1: float = _f(0.9, "Adam β1")
    beta2: float = _f(0.999, "Adam β2")
    lr_schedule: str = _f("constant", "learning-rate schedule", choices=list(LR_SCHEDULES))
    lr_decay_iters: int = _f(0, "cosine schedule length (0: the run's --iters, fixed when the run starts)")
    lr_min: float = _f(0.0, "cosine schedule: final learning rate as a fraction of --lr")
    # stabilisers, each off unless set
    energy_reg: float = _f(0.0, "α of the energy magnitude penalty α·(E(data)² + E(samples)²)")
    data_noise: float = _f(0.0, "sd of Gaussian noise added to data points")
    grad_clip: float = _f(0.0, "clip the parameter-gradient norm to this (0 = off)")
    clamp: float = _f(0.0, "clamp samples to [-clamp, clamp] (0 = off)")
    ema: float = _f(0.0, "decay of an exponential moving average of the parameters used for evaluation (0 = off)")
    # divergence guard
    max_energy_gap: float = _f(1e4, "stop when |mean E(data) − mean E(samples)| exceeds this")
    # bookkeeping
    eval_every: int = _f(100, "iterations between evaluations (a row of metrics.jsonl)")
    eval_samples: int = _f(2000, "samples used by the MMD at each evaluation")
    checkpoint_every: int = _f(500, "iterations between checkpoints")
    seed: int = _f(0, "seed of the model, the data stream and the chains")
    device: str = _f("auto", "'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the first field outside its allowed range."""
        for f in fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name}: expected one of {list(choices)}, got {value!r}")
            expected = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(f"{f.name}: expected a value of type {expected.__name__}, got {value!r}")
            if expected is float and math.isnan(value):
                raise ValueError(f"{f.name}: expected a number, got NaN")
        positive = ["step_size", "b", "lr", "init_scale", "psgld_damping", "max_energy_gap"]
        at_least_one = ["width", "depth", "n_steps", "buffer_size", "batch_size", "iters", "eval_every", "eval_samples", "checkpoint_every"]
        non_negative = ["noise_scale", "energy_reg", "data_noise", "grad_clip", "clamp", "lr_decay_iters", "seed"]
        unit = {"reinit": (0.0, 1.0), "beta1": (0.0, 0.999999), "beta2": (0.0, 0.999999), "lr_min": (0.0, 1.0), "ema": (0.0, 0.999999), "psgld_alpha": (0.0, 0.999999)}
        for name in positive:
            v = getattr(self, name)
            if not v > 0 or (name != "b" and math.isinf(v)):
                raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        for name in non_negative:
            v = getattr(self, name)
            if not (v >= 0) or math.isinf(v):
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        for name, (low, high) in unit.items():
            v = getattr(self, name)
            if not (low <= v <= high):
                raise ValueError(f"{name}: expected a number in [{low}, {high}], got {v!r}")
        if self.metropolis and self.noise_scale == 0:
            raise ValueError("metropolis: needs noise_scale > 0")
        if self.metropolis and self.sampler == "psgld":
            raise ValueError("metropolis: not available for psgld (its preconditioner depends on the chain's history)")
        if self.chains == "buffer" and self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size: expected at least batch_size ({self.batch_size}), got {self.buffer_size}")
        return self

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"config: unknown field(s) {sorted(unknown)}; expected names from {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return cls().replace(**values)


# --------------------------------------------------------------------------- presets
#
# A preset is a base configuration plus per-sampler settings. The per-sampler entries hold
# what each sampler was tuned to with the same search (see README, "How we tuned"): never
# one sampler's defaults on the other's.

_SMOKE = dict(
    width=32, depth=2, n_steps=10, batch_size=64, buffer_size=500, iters=30, eval_every=10,
    eval_samples=200, checkpoint_every=10,
)
_CPU = dict(
    width=128, depth=3, n_steps=30, batch_size=256, buffer_size=10_000, iters=2500, lr=2e-3,
    lr_schedule="cosine", lr_min=0.05, eval_every=250, eval_samples=2000, checkpoint_every=500,
)
_CPU_LONG = dict(_CPU, iters=10_000, eval_every=500, checkpoint_every=1000)
# The paper's rings setting as far as the draft fixes it: short-run chains from uniform
# noise, a small threshold b (the authors' toy configs used b ≈ 0.01–0.05), Adam 1e-4.
_PAPER = dict(
    width=128, depth=3, chains="short_run", n_steps=100, batch_size=256, iters=20_000, lr=1e-4,
    eval_every=1000, checkpoint_every=2000,
)

PRESETS: dict[str, tuple[dict, dict[str, dict]]] = {
    "smoke": (_SMOKE, {"anila": dict(b=1.0)}),
    "cpu": (_CPU, {"langevin": dict(step_size=0.01), "anila": dict(step_size=0.01, b=3.0)}),
    "cpu_long": (_CPU_LONG, {"langevin": dict(step_size=0.01), "anila": dict(step_size=0.01, b=3.0)}),
    "paper": (_PAPER, {"langevin": dict(step_size=0.01), "anila": dict(step_size=0.01, b=0.03)}),
}
DEFAULT_PRESET = "cpu"


def preset(name: str = DEFAULT_PRESET, sampler: str = "langevin", **overrides: Any) -> TrainConfig:
    """The configuration of preset ``name`` for ``sampler``, with ``overrides`` applied on top."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown name {name!r}; expected one of {sorted(PRESETS)}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {sampler!r}; expected one of {sorted(SAMPLERS)}")
    base, per_sampler = PRESETS[name]
    return TrainConfig().replace(**{**base, "sampler": sampler, **per_sampler.get(sampler, {}), **overrides}).validate()
