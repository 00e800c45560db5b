"""What the sampling panels compute, without widgets: the chains on a known target or a trained energy, and readouts."""

from __future__ import annotations

import math

import torch

from anila_core.sampling.distances import GRID_EXTENT
from anila_core.sampling.kernel import Trace, energy_and_grad, positive_or_inf
from anila_core.sampling.registry import applicable, make_sampler
from anila_core.sampling.samplers import AniLA
from anila_core.sampling.targets import make_target

__all__ = [
    "PANEL_TARGETS",
    "SAMPLER_LABELS",
    "MODEL_SAMPLERS",
    "IMAGE_SAMPLERS",
    "check_count",
    "run_comparison",
    "format_readout",
    "sample_trained",
    "format_model_readout",
    "sample_trained_images",
    "device_of",
    "on_device",
]

#: dropdown label → ``targets.make_target`` name
PANEL_TARGETS = {
    "rings": "rings",
    "8-mode Gaussian mixture": "gmm",
    "ill-conditioned Gaussian [0.1, 10]": "ill_gaussian",
}
#: sampler name → its label in the comparison's figure and readout
SAMPLER_LABELS = {"langevin": "Langevin", "anila": "AniLA"}
#: selector label → sampler name, for ``ModelSamplingPanel``
MODEL_SAMPLERS = {"Langevin": "langevin", "AniLA": "anila", "HMC": "hmc"}
#: selector label → sampler name, for ``ImageSamplingPanel`` (the two samplers the image runs train with)
IMAGE_SAMPLERS = {"Langevin": "langevin", "AniLA": "anila"}


def check_count(name: str, value) -> int:
    """``value`` when it is an integer >= 1; otherwise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def energy_readout(energy_fn, x: torch.Tensor, b: float, trace: Trace) -> dict:
    """Mean energy and share of ``|g| > b`` at the finite final states, acceptance rate, diverged chains."""
    finite = torch.isfinite(x).all(1)
    out = {
        "mean_energy": math.nan,
        "share_grad_above_b": math.nan,
        "acceptance_rate": None,
        "n_diverged": int((~finite).sum()),
    }
    if finite.any():
        energy, grad = energy_and_grad(energy_fn, x[finite])
        out["mean_energy"] = float(energy.mean())
        # the same |g| the AniLA sampler thresholds, so the number explains its step-size map
        size = AniLA(1.0, b).gradient_size(grad)
        out["share_grad_above_b"] = float((size > b).float().mean())
    if trace.acceptance_rate:
        out["acceptance_rate"] = sum(trace.acceptance_rate) / len(trace.acceptance_rate)
    return out


def run_comparison(
    target_name: str = "rings",
    step_size: float = 0.01,
    b: float = 1.0,
    K: int = 100,
    noise_scale: float = 1.0,
    n_chains: int = 500,
    seed: int = 0,
    metropolis: bool = False,
    extent: float = GRID_EXTENT,
) -> dict:
    """Run Langevin and AniLA for ``K`` steps from the same uniform start and noise; return samples and readout numbers.

    Chains start uniformly on ``[-extent, extent]²`` (short-run sampling from noise). Both
    samplers get generators with the same seed, so any difference between the two panels is
    the step-size map, not luck. Returns a dict with ``target``, ``samplers``
    (name → sampler), ``x0``, ``samples`` (name → final states ``(n_chains, 2)``) and
    ``readout`` (name → mean energy at the final states, share of coordinates with
    ``|g| > b`` there, acceptance rate when ``metropolis``, number of diverged chains),
    plus ``reference`` (the mean energy of exact target samples, for scale).
    """
    target = make_target(target_name)
    K, n_chains = check_count("K", K), check_count("n_chains", n_chains)
    settings = dict(step_size=step_size, b=b, noise_scale=noise_scale, metropolis=metropolis)
    samplers = {name: make_sampler(name, **applicable(name, settings)) for name in ("langevin", "anila")}
    gen = torch.Generator().manual_seed(seed)
    x0 = (2 * torch.rand(n_chains, 2, generator=gen) - 1) * extent
    samples, readout = {}, {}
    for name, sampler in samplers.items():
        trace = Trace()
        chain_gen = torch.Generator().manual_seed(seed + 1)
        # allow_nonfinite: the panel counts and shows diverged chains rather than stopping at them
        samples[name] = sampler.sample(target.energy, x0, K, generator=chain_gen, trace=trace, allow_nonfinite=True)
        readout[name] = energy_readout(target.energy, samples[name], b, trace)
    exact = target.sample(n_chains, gen)
    return {
        "target": target,
        "samplers": samplers,
        "x0": x0,
        "samples": samples,
        "readout": readout,
        "reference": {"mean_energy": float(target.energy(exact).mean())},
    }


def _fmt(value, spec: str) -> str:
    if value is None:
        return "–"
    return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def format_readout(result: dict) -> str:
    """An HTML table of ``run_comparison``'s readout: one row per sampler, exact-sample mean energy below."""
    head = "<tr><th></th><th>mean E</th><th>share |g|&gt;b</th><th>acceptance</th><th>diverged</th></tr>"
    rows = []
    for name, r in result["readout"].items():
        rows.append(
            f"<tr><td><b>{SAMPLER_LABELS.get(name, name)}</b></td><td>{_fmt(r['mean_energy'], '.3f')}</td>"
            f"<td>{_fmt(r['share_grad_above_b'], '.1%')}</td><td>{_fmt(r['acceptance_rate'], '.1%')}</td>"
            f"<td>{r['n_diverged']}</td></tr>"
        )
    ref = f"<tr><td>exact samples</td><td>{result['reference']['mean_energy']:.3f}</td><td></td><td></td><td></td></tr>"
    return f"<table>{head}{''.join(rows)}{ref}</table>"


def device_of(energy_fn, device) -> torch.device:
    """``device`` when given, else where ``energy_fn``'s parameters are (the CPU for a plain function)."""
    if device is not None:
        return torch.device(device)
    if isinstance(energy_fn, torch.nn.Module):
        for p in energy_fn.parameters():
            return p.device
    return torch.device("cpu")


def on_device(energy_fn, device: torch.device):
    """``energy_fn`` for inputs on any device: grid helpers build their points on the CPU."""
    if device.type == "cpu":
        return energy_fn
    return lambda x: energy_fn(x.to(device)).to(x.device)


def sample_trained(
    energy_fn,
    sampler_name: str = "anila",
    step_size: float = 0.01,
    b: float = 1.0,
    K: int = 100,
    noise_scale: float = 1.0,
    n: int = 500,
    seed: int = 0,
    metropolis: bool = False,
    extent: float = GRID_EXTENT,
    device=None,
    n_leapfrog: int = 5,
) -> dict:
    """Run ``K`` steps of one sampler on a trained energy from uniform noise on ``[-extent, extent]²``.

    ``energy_fn`` maps ``(N, 2)`` to ``(N,)`` energies (e.g. ``trainer.eval_model()``); chains
    run on ``device`` (default: where the network's parameters are). The start comes from a
    generator seeded ``seed`` and the noise from one seeded ``seed + 1``, so Langevin and AniLA
    with the same seed see the same start and the same noise (and AniLA with ``b = inf`` *is*
    Langevin). For HMC a step is one transition of ``n_leapfrog`` leapfrog steps of size
    ``step_size`` (it always ends in the Metropolis test, and ignores ``noise_scale``). Returns
    ``sampler``, ``x0`` and ``samples`` (on the CPU), ``params`` (the arguments) and
    ``readout``: mean energy and share of coordinates with ``|g| > b`` at the final states
    (finite ones), acceptance rate for Metropolis-adjusted chains (else ``None``) and the number
    of diverged chains.
    """
    if sampler_name not in MODEL_SAMPLERS.values():
        raise ValueError(f"sampler_name: expected one of {list(MODEL_SAMPLERS.values())}, got {sampler_name!r}")
    K, n = check_count("K", K), check_count("n", n)
    b = positive_or_inf("b", b)  # checked for Langevin too: the readout's |g| > b uses it
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    settings = dict(step_size=step_size, b=b, noise_scale=noise_scale, metropolis=metropolis, n_leapfrog=n_leapfrog)
    sampler = make_sampler(sampler_name, **applicable(sampler_name, settings))
    dev = device_of(energy_fn, device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    x0 = (2 * torch.rand(n, 2, generator=gen, device=dev) - 1) * extent
    trace = Trace()
    chain_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    # fast=False: every slider setting would be a compile of its own (seconds), longer than the sampling it saves
    x = sampler.sample(energy_fn, x0, K, generator=chain_gen, trace=trace, fast=False, allow_nonfinite=True)
    return {
        "sampler": sampler,
        "x0": x0.cpu(),
        "samples": x.cpu(),
        "readout": energy_readout(energy_fn, x, b, trace),
        "params": {
            "sampler_name": sampler_name,
            "step_size": step_size,
            "b": b,
            "K": K,
            "noise_scale": noise_scale,
            "n": n,
            "seed": seed,
            "metropolis": metropolis,
            "n_leapfrog": n_leapfrog,
        },
    }


def format_model_readout(result: dict, data_energy: float | None = None) -> str:
    """An HTML table of ``sample_trained``'s readout, with the data's mean energy for scale when given.

    A trained energy is only defined up to an additive constant, so its mean on the samples
    means something only next to its mean on the data.
    """
    r, p = result["readout"], result["params"]
    label = next(k for k, v in MODEL_SAMPLERS.items() if v == p["sampler_name"])
    head = "<tr><th></th><th>mean E</th><th>share |g|&gt;b</th><th>acceptance</th><th>diverged</th></tr>"
    row = (
        f"<tr><td><b>{label}</b> (seed {p['seed']})</td><td>{_fmt(r['mean_energy'], '.3f')}</td>"
        f"<td>{_fmt(r['share_grad_above_b'], '.1%')}</td><td>{_fmt(r['acceptance_rate'], '.1%')}</td>"
        f"<td>{r['n_diverged']} / {p['n']}</td></tr>"
    )
    ref = "" if data_energy is None else f"<tr><td>data</td><td>{data_energy:.3f}</td><td></td><td></td><td></td></tr>"
    return f"<table>{head}{row}{ref}</table>"


def sample_trained_images(
    trainer,
    sampler_name: str = "anila",
    b: float | None = None,
    step_size: float | None = None,
    K: int | None = None,
    noise_scale: float | None = None,
    n: int = 36,
    seed: int = 0,
) -> dict:
    """Short-run chains from uniform noise on a trained image energy, the run's settings where an argument is ``None``.

    The sampler is the run's own configuration with these settings replaced (its norm and
    variant kept, no Metropolis test), so ``sampler_name="anila"`` with the run's ``b`` is the
    very sampler it was trained with. Returns ``images`` (CPU, clamped as in training),
    ``step_map`` (AniLA's ``γ/ε`` per pixel at those images for this ``b`` and ε, whichever
    sampler ran) and ``params`` (the settings used).
    """
    from anila_core.images.evaluation import sample_from_noise, step_size_image
    from anila_core.sampling.registry import sampler_from_config

    c = trainer.config
    if trainer.kind.name != "images":
        raise ValueError("trainer: a 2-D run; sample it with trained_model_panel or model_sampling_panel")
    if sampler_name not in IMAGE_SAMPLERS.values():
        raise ValueError(f"sampler_name: expected one of {list(IMAGE_SAMPLERS.values())}, got {sampler_name!r}")
    params = {
        "sampler_name": sampler_name,
        "b": c.b if b is None else b,
        "step_size": c.step_size if step_size is None else step_size,
        "K": c.n_steps if K is None else K,
        "noise_scale": c.noise_scale if noise_scale is None else noise_scale,
        "n": check_count("n", n),
        "seed": seed,
    }
    check_count("K", params["K"])
    chain = sampler_from_config(
        c.replace(
            sampler=sampler_name,
            step_size=params["step_size"],
            b=params["b"],
            noise_scale=params["noise_scale"],
            metropolis=False,
        ).validate()
    )
    images = sample_from_noise(
        trainer.eval_energy, chain, trainer.data_shape, n, params["K"], seed=seed, clamp=c.clamp, device=trainer.device
    )
    ratio = step_size_image(
        AniLA(params["step_size"], params["b"], norm=c.norm), trainer.eval_energy, images.to(trainer.device)
    )
    return {"images": images, "step_map": ratio, "params": params}
