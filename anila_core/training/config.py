"""The training configuration: one dataclass, its validation, and named presets (rings and points: smoke, cpu, cpu_long,
paper; images: smoke, cpu, gpu, paper)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from anila_core.images.datasets import DATASETS
from anila_core.sampling.compile_rule import AUTO_MIN_CHAIN_STEPS, FAST_CHOICES
from anila_core.sampling.registry import SAMPLERS
from anila_core.nets import ACTIVATIONS
from anila_core.sampling.samplers import ANILA_VARIANTS, NORMS
from anila_core.sampling.targets import TARGETS
from anila_core.training.file_sources import DataSpec, absolute_data_spec, parse_data_spec
from anila_core.training.user_energy import check_energy_spec

__all__ = [
    "TrainConfig",
    "CHAIN_KINDS",
    "LR_SCHEDULES",
    "AMP_MODES",
    "DIVERGENCE_POLICIES",
    "RESUMABLE_FIELDS",
    "changed_settings",
    "describe_changes",
    "MAX_SEED",
    "MAX_EVAL_SAMPLES",
    "COUNT_LIMITS",
    "MAX_FLOAT",
]

CHAIN_KINDS = ("buffer", "short_run")
LR_SCHEDULES = ("constant", "cosine")
INIT_KINDS = ("uniform", "gaussian")
AMP_MODES = ("off", "bf16")
#: settings that may change when a run is resumed; every other setting is the run's own
RESUMABLE_FIELDS = ("iters", "device", "data_root", "on_divergence", "max_rollbacks")
DIVERGENCE_POLICIES = ("stop", "rollback")
#: the largest seed: torch takes seeds up to 2**64 − 1, and the evaluation streams use seed + 1 … seed + 3
MAX_SEED = 2**63 - 1
#: the most samples an evaluation's MMD may use: its kernel matrices grow as the square (10 000: about 2.4 GB)
MAX_EVAL_SAMPLES = 10_000
#: the largest value of a count, and why: beyond it a run cannot finish (time) or cannot fit (memory), so a value
#: typed by mistake (1e39) is refused before anything runs instead of running forever. The sizes whose memory the
#: run can reckon (width, batch_size, buffer_size) are bounded by the memory free, in limits.check_memory
COUNT_LIMITS = {
    "iters": (10**8, "time: 10^8 iterations take more than a day even at 1 ms each"),
    "lr_decay_iters": (10**8, "time: the schedule's length is at most the longest run, 10^8 iterations"),
    "n_steps": (100_000, "time: each transition is one gradient of the network for every chain, every iteration"),
    "hmc_leapfrog": (10_000, "time: each leapfrog step is one gradient, K times per iteration"),
    "global_moves": (100_000, "time: each move evaluates the energy of every chain"),
    "depth": (1_000, "time and memory: each layer is a matrix product per gradient"),
    "conv_width": (4_096, "memory: the ConvNet's weights grow as conv_width²"),
    "eval_every": (10**8, "time: at most the longest run, 10^8 iterations"),
    "checkpoint_every": (10**8, "time: at most the longest run, 10^8 iterations"),
    "fid_every": (10**8, "time: at most the longest run, 10^8 iterations"),
    "fid_samples": (100_000, "memory and time: every sample is drawn, featurised and held for the covariance"),
    "max_rollbacks": (1_000, "time: each rollback retrains from the last checkpoint"),
    "image_size": (4_096, "memory: 4 bytes per pixel and channel of every chain"),
}
#: the largest magnitude of a float setting that enters the float32 tensors (at most 3.4e38) as it is: the code
#: multiplies it by other settings and by gradients, so larger values overflow into infinities or fail to convert at
#: all. The learning rate and the divergence threshold are left out: an overflowing step is caught as a divergence, with
#: rollback
MAX_FLOAT = 1e30
FLOAT32_SETTINGS = (
    "step_size",
    "b",
    "noise_scale",
    "psgld_damping",
    "init_scale",
    "clamp",
    "data_noise",
    "energy_reg",
    "grad_clip",
)


def changed_settings(old: dict, new: dict, ignore: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
    """The settings whose values differ between two config dicts (names only one of them has, and ``ignore``, do not
    count)."""
    return [k for k in new if k in old and k not in ignore and old[k] != new[k]]


def describe_changes(names: list[str], old: dict, new: dict, old_where: str, new_where: str, most: int = 4) -> str:
    """``"lr 0.001 in A, 0.01 in B, ..."`` for the first ``most`` of ``names``, then how many more."""
    text = ", ".join(f"{k} {old[k]!r} {old_where}, {new[k]!r} {new_where}" for k in names[:most])
    return text + (f" (and {len(names) - most} more)" if len(names) > most else "")


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything one training run needs; every field is also a ``--flag`` of ``python -m anila_core train``."""

    # what to learn: a 2-D target, or an image dataset when `dataset` is set
    target: str = _f("rings", "2-D target to learn (used when --dataset is not set)", choices=sorted(TARGETS))
    dataset: str = _f(
        "",
        f"data to learn instead of a 2-D target ('' = learn --target): an image dataset ({', '.join(DATASETS)}), "
        "images:FOLDER (a folder of your images: one subfolder per class, or flat) or points:FILE (an (N, D) "
        "array in .npy, .csv or .txt)",
    )
    data_root: str = _f("", "folder that holds the image datasets ('' = $ANILA_DATA, else ./data)")
    image_size: int = _f(
        0,
        "side of the square training images (0 = the dataset's own: 8 for digits, 32 for CIFAR-10 and "
        "Flowers, the side the images of a folder share)",
    )
    standardize: bool = _f(
        True,
        "points:FILE: shift the points to mean 0 and divide them by one scale (the root of their mean "
        "variance), so the presets' noise and window fit; the model and its samples live in those units",
    )
    # ConvNet energy for images
    conv_width: int = _f(64, "images: channels of the ConvNet's first layer (doubling per halving, at most 8x)")
    conv_activation: str = _f("leaky_relu", "images: activation of the ConvNet energy", choices=sorted(ACTIVATIONS))
    spectral_norm: bool = _f(False, "images: spectral normalisation of every convolution (bounds how sharp E gets)")
    # energy network
    energy: str = _f(
        "",
        "your own energy network instead of the built-in one: 'module.path:Name', a torch.nn.Module class or a "
        "function returning one (called with data_shape= when it takes it), imported from the Python path",
    )
    width: int = _f(128, "hidden units per layer of the MLP energy")
    depth: int = _f(3, "hidden layers of the MLP energy")
    activation: str = _f("silu", "activation of the MLP energy", choices=sorted(ACTIVATIONS))
    # sampler
    sampler: str = _f(
        "langevin",
        "MCMC sampler for the negative samples: " + "; ".join(f"{k}, {e.summary}" for k, e in sorted(SAMPLERS.items())),
        choices=sorted(SAMPLERS),
    )
    step_size: float = _f(0.01, "sampler step size ε (> 0)")
    b: float = _f(1.0, "AniLA threshold b (> 0): steps shrink where |∇E| > b")
    norm: str = _f("coordinate", "AniLA: what |∇E| means", choices=list(NORMS))
    variant: str = _f(
        "full",
        "AniLA: 'noise_only' scales only the noise (a variant; Algorithm 1 scales both)",
        choices=list(ANILA_VARIANTS),
    )
    noise_scale: float = _f(1.0, "noise scale τ (1 = Langevin diffusion, < 1 = cold sampling)")
    metropolis: bool = _f(False, "Metropolis-adjust every transition (MALA)")
    psgld_alpha: float = _f(0.99, "pSGLD: decay of the squared-gradient average")
    psgld_damping: float = _f(1e-5, "pSGLD: damping λ added to sqrt(V)")
    hmc_leapfrog: int = _f(
        5, "HMC: leapfrog steps per transition (each costs one gradient, so an iteration costs K × this)"
    )
    n_steps: int = _f(50, "K: sampler transitions per training iteration")
    # chains
    chains: str = _f(
        "buffer",
        "'short_run' restarts from noise every iteration (as the paper); 'buffer' persists chains",
        choices=list(CHAIN_KINDS),
    )
    buffer_size: int = _f(10_000, "replay buffer: number of persistent chains")
    reinit: float = _f(0.05, "replay buffer: share of chains restarted from noise each iteration")
    init: str = _f("uniform", "noise the chains start from", choices=list(INIT_KINDS))
    init_scale: float = _f(4.6, "half-width of the uniform start (or sd of the Gaussian start)")
    global_moves: int = _f(
        0,
        "independence Metropolis moves per chain and iteration before the K transitions: each proposes a point "
        "of the Gaussian start N(0, init_scale²) and accepts it with the model's Metropolis ratio, so chains "
        "can jump between modes (low-dimensional targets; needs --init gaussian; 0 = off)",
    )
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
    on_divergence: str = _f(
        "stop",
        "what a divergence does: 'stop' with an error naming the last good checkpoint, or 'rollback' to "
        "the last good state with half the learning rate",
        choices=DIVERGENCE_POLICIES,
    )
    max_rollbacks: int = _f(5, "with --on-divergence rollback: rollbacks allowed before the run stops with the error")
    # bookkeeping
    eval_every: int = _f(100, "iterations between evaluations (a row of metrics.jsonl)")
    eval_samples: int = _f(2000, "samples used by the MMD at each evaluation")
    fid_every: int = _f(
        0, "images: iterations between FID/KID evaluations, always also at the end (0 = at every evaluation)"
    )
    fid_samples: int = _f(
        1000, "images: model samples (and at most as many real images) for FID/KID and digit coverage"
    )
    checkpoint_every: int = _f(500, "iterations between checkpoints")
    seed: int = _f(0, "seed of the model, the data stream and the chains")
    device: str = _f("auto", "'auto' (CUDA when present), 'cpu' or 'cuda[:N]'")
    # speed (images)
    amp: str = _f(
        "off",
        "'bf16': bfloat16 autocast of the energy network on CUDA (sampler state and updates stay float32; ignored on "
        "CPU)",
        choices=AMP_MODES,
    )
    channels_last: bool = _f(
        False, "images: channels-last memory layout for the ConvNet (faster convolutions on recent GPUs)"
    )
    compile: bool = _f(
        False, "torch.compile the energy network (minutes of compile time; pays off on long GPU runs only)"
    )
    fast: str | bool = _f(
        "auto",
        "sample through compiled steps (anila_core.sampling.compile_rule): true, false, "
        f"or 'auto' = when iters × n_steps × batch_size >= {AUTO_MIN_CHAIN_STEPS:,} and not a ConvNet on a CPU",
        choices=FAST_CHOICES,
    )

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the first field outside its allowed range."""
        if not isinstance(self.dataset, str) or (
            self.dataset not in ("",) + DATASETS and parse_data_spec(self.dataset) is None
        ):
            raise ValueError(
                f"dataset: expected one of {list(DATASETS)}, 'images:FOLDER', 'points:FILE' or '' (a 2-D target), "
                f"got {self.dataset!r}"
            )
        self.dataset = absolute_data_spec(self.dataset)  # a run finds its files from any working directory
        for f in fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and not any(value == c and type(value) is type(c) for c in choices):  # 1 is not True
                raise ValueError(f"{f.name}: expected one of {list(choices)}, got {value!r}")
            expected = (
                f.type
                if isinstance(f.type, type)
                else {"int": int, "float": float, "str": str, "bool": bool, "str | bool": (str, bool)}[f.type]
            )
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                kind = getattr(expected, "__name__", f.type)  # "str | bool" for fast
                raise ValueError(f"{f.name}: expected a value of type {kind}, got {value!r}")
            if expected is float and math.isnan(value):
                raise ValueError(f"{f.name}: expected a number, got NaN")
        positive = ["step_size", "b", "lr", "init_scale", "psgld_damping", "max_energy_gap"]
        at_least_one = [
            "width",
            "depth",
            "n_steps",
            "hmc_leapfrog",
            "buffer_size",
            "batch_size",
            "iters",
            "eval_every",
            "eval_samples",
            "checkpoint_every",
            "conv_width",
        ]
        non_negative = [
            "noise_scale",
            "energy_reg",
            "data_noise",
            "grad_clip",
            "clamp",
            "lr_decay_iters",
            "seed",
            "image_size",
            "fid_every",
            "max_rollbacks",
            "global_moves",
        ]
        unit = {
            "reinit": (0.0, 1.0),
            "beta1": (0.0, 0.999999),
            "beta2": (0.0, 0.999999),
            "lr_min": (0.0, 1.0),
            "ema": (0.0, 0.999999),
            "psgld_alpha": (0.0, 0.999999),
        }
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
        for name, (most, why) in COUNT_LIMITS.items():
            v = getattr(self, name)
            if v > most:
                raise ValueError(
                    f"{name}: expected at most {most:,}, got {v:.3g}; {why}"
                    if v > 10**15
                    else f"{name}: expected at most {most:,}, got {v:,}; {why}"
                )
        for name in FLOAT32_SETTINGS:
            v = getattr(self, name)
            if isinstance(v, float) and abs(v) > MAX_FLOAT and not (name == "b" and math.isinf(v)):
                raise ValueError(
                    f"{name}: expected a value of magnitude at most {MAX_FLOAT:g}, got {v!r}; the tensors are float32 "
                    "(at most 3.4e38) and a setting is multiplied by others and by gradients, so larger values "
                    "overflow" + ("" if name != "b" else " (b = inf turns clipping off)")
                )
        if self.seed > MAX_SEED:
            raise ValueError(f"seed: expected an integer in [0, 2**63 - 1 = {MAX_SEED}], got {self.seed!r}")
        if self.eval_samples > MAX_EVAL_SAMPLES:
            raise ValueError(
                f"eval_samples: expected at most {MAX_EVAL_SAMPLES} (the MMD's memory grows as its square), "
                f"got {self.eval_samples!r}"
            )
        if self.metropolis and self.noise_scale == 0:
            raise ValueError("metropolis: needs noise_scale > 0")
        if self.metropolis and SAMPLERS[self.sampler].no_metropolis_setting:
            raise ValueError(f"metropolis: {SAMPLERS[self.sampler].no_metropolis_setting}")
        if self.global_moves > 0 and self.init != "gaussian":
            raise ValueError(
                f"global_moves: needs init='gaussian' (its proposal is the Gaussian start), got init={self.init!r}"
            )
        if self.chains == "buffer" and self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size: expected at least batch_size ({self.batch_size}), got {self.buffer_size}")
        if self.fid_samples < 2:
            raise ValueError(
                f"fid_samples: expected an integer >= 2 (FID needs a covariance), got {self.fid_samples!r}"
            )
        # the kinds are built from a configuration: imported here, once the configuration module is loaded
        from anila_core.training.kinds import data_kind

        data_kind(self).check()
        check_energy_spec(self.energy)
        return self

    @property
    def data_spec(self) -> DataSpec | None:
        """The data of your own this run learns (``images:FOLDER`` or ``points:FILE``), ``None`` for a built-in dataset
        or target."""
        return parse_data_spec(self.dataset)

    @property
    def is_image(self) -> bool:
        """True when the run learns images (a built-in dataset or a folder) rather than points."""
        return bool(self.dataset) and not self.is_points

    @property
    def is_points(self) -> bool:
        """True when the run learns points from a file (``points:FILE``): a density without a known truth."""
        return self.dataset.startswith("points:")

    @property
    def data_name(self) -> str:
        """What the run learns, fit for a folder name: the dataset's or the 2-D target's name, ``points-moons`` for
        ``points:moons.csv``."""
        spec = self.data_spec
        return spec.name if spec is not None else (self.dataset or self.target)

    def with_fixed_schedule(self, started: dict | None = None) -> "TrainConfig":
        """This configuration with ``lr_decay_iters = 0`` settled: the value fixed by the run ``started``, else
        ``iters``.

        0 means "the run's iters", fixed once when the run starts and stored in its config.json,
        so that a resumed, longer run keeps the schedule it started with.
        """
        if self.lr_decay_iters:
            return self
        fixed = started.get("lr_decay_iters") if started else None
        return self.replace(lr_decay_iters=fixed if fixed is not None else self.iters)

    def scheduled_lr(self, iteration: int) -> float:
        """The learning rate of the step after ``iteration`` steps: ``lr``, or cosine-decayed to ``lr_min`` × ``lr``."""
        if self.lr_schedule == "constant":
            return self.lr
        progress = min(iteration / self.with_fixed_schedule().lr_decay_iters, 1.0)
        return self.lr * (self.lr_min + (1 - self.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(
                f"config: unknown field(s) {sorted(unknown)}; expected names from {[f.name for f in fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The configuration a ``config.json`` holds; its ``fast`` may be in the old words ``"on"``/``"off"``."""
        old_fast = {"on": True, "off": False}
        if isinstance(values.get("fast"), str) and values["fast"] in old_fast:
            values = {**values, "fast": old_fast[values["fast"]]}
        return cls().replace(**values)
