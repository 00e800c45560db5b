"""How fast a chain forgets its start: distance to a known target against the number of steps, next to the exact-sample
noise floor."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import torch

from anila_core.sampling.distances import GRID_EXTENT, grid_log_probs, histogram_tv, mmd
from anila_core.sampling.kernel import Trace
from anila_core.sampling.samplers import Sampler
from anila_core.sampling.targets import Target, make_target

__all__ = [
    "ConvergenceResult",
    "log_step_grid",
    "noise_floor",
    "convergence_curve",
    "compare_convergence",
    "stationary_variance",
    "METRICS",
]

METRICS = ("tv", "mmd")


@dataclass
class ConvergenceResult:
    """Distances to the target at each recorded step, and the same distance for exact samples (the floor).

    ``tv`` is ``histogram_tv`` and ``mmd`` the unbiased squared MMD against exact
    reference samples; a metric that was not asked for is an empty list with a NaN floor.
    """

    label: str
    target: str
    steps: list[int]
    n_chains: int
    tv: list[float] = field(default_factory=list)
    mmd: list[float] = field(default_factory=list)
    tv_floor: float = math.nan
    mmd_floor: float = math.nan
    acceptance_rate: float | None = None

    def distances(self, metric: str = "tv") -> list[float]:
        """The distance curve for ``metric`` (``"tv"`` or ``"mmd"``)."""
        _check_metric(metric)
        values = getattr(self, metric)
        if not values:
            raise ValueError(f"metric: {metric!r} was not recorded for {self.label!r}; pass metrics=({metric!r},)")
        return values

    def floor(self, metric: str = "tv") -> float:
        """The noise floor for ``metric``: what exact samples of the same size score."""
        _check_metric(metric)
        return getattr(self, f"{metric}_floor")

    def as_dict(self) -> dict:
        return asdict(self)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def _as_target(target) -> Target:
    if isinstance(target, str):
        return make_target(target)
    if not (hasattr(target, "energy") and hasattr(target, "sample")):
        raise ValueError(f"target: expected a Target or a name from targets.TARGETS, got {type(target).__name__}")
    return target


def log_step_grid(max_steps: int, per_decade: int = 3, include_zero: bool = True) -> list[int]:
    """Step counts spread evenly on a log scale up to ``max_steps`` (``1, 2, 5, 10, 20, …`` with 3 per decade).

    ``max_steps`` itself is always the last entry; ``include_zero`` adds the start, step 0.
    """
    max_steps = _positive_int("max_steps", max_steps)
    per_decade = _positive_int("per_decade", per_decade)
    n = math.ceil(per_decade * math.log10(max_steps)) + 1
    grid = {max(1, round(10 ** (i / per_decade))) for i in range(n)}
    grid = sorted(t for t in grid if t < max_steps) + [max_steps]
    return ([0] if include_zero else []) + grid


def _target_bins(target: Target, extent: float, bins: int) -> torch.Tensor:
    # histogram_tv accepts the target's fine-grid log-probabilities; computing them once keeps
    # a curve of many step counts from re-evaluating the target each time
    return grid_log_probs(target.energy, extent, bins * 5)


def noise_floor(
    target,
    n: int,
    metric: str = "tv",
    repeats: int = 5,
    seed: int = 0,
    bins: int = 40,
    extent: float = GRID_EXTENT,
    reference: torch.Tensor | None = None,
) -> float:
    """The distance that ``n`` exact target samples score, averaged over ``repeats`` draws.

    Finite samples never score zero, so no chain can get below this line: for ``"tv"`` it is
    the mean histogram TV of exact samples; for ``"mmd"`` (whose unbiased estimate is zero
    in expectation for exact samples) it is the root-mean-square of the estimate, the size of
    its sampling noise. ``reference`` is the set exact samples are compared with for MMD.
    """
    _check_metric(metric)
    target = _as_target(target)
    n, repeats = _positive_int("n", n), _positive_int("repeats", repeats)
    gen = torch.Generator().manual_seed(seed)
    if metric == "tv":
        grid = _target_bins(target, extent, bins)
        return sum(histogram_tv(target.sample(n, gen), grid, extent, bins) for _ in range(repeats)) / repeats
    if reference is None:
        reference = target.sample(n, gen)
    squares = [mmd(target.sample(n, gen), reference) ** 2 for _ in range(repeats)]
    return math.sqrt(sum(squares) / repeats)


def _start(target: Target, n: int, start, start_sd: float, gen: torch.Generator, device) -> torch.Tensor:
    point = torch.as_tensor(start, dtype=torch.float32).flatten()
    if point.numel() != target.dim or not torch.isfinite(point).all():
        raise ValueError(f"start: expected {target.dim} finite numbers, got {start!r}")
    if not math.isfinite(start_sd) or start_sd < 0:
        raise ValueError(f"start_sd: expected a finite number >= 0, got {start_sd!r}")
    x0 = point.expand(n, -1).clone()
    if start_sd > 0:
        x0 += start_sd * torch.randn(n, target.dim, generator=gen)
    return x0.to(device)


def convergence_curve(
    sampler: Sampler,
    target,
    steps: Sequence[int] | None = None,
    n_chains: int = 1000,
    start: Sequence[float] = (3.5, 3.5),
    start_sd: float = 0.0,
    metrics: Sequence[str] = METRICS,
    bins: int = 40,
    extent: float = GRID_EXTENT,
    seed: int = 0,
    floor_repeats: int = 5,
    device=None,
    label: str | None = None,
) -> ConvergenceResult:
    """Run ``n_chains`` chains from one bad start and measure the distance to the target after each of ``steps``.

    All chains start at the point ``start`` (spread by ``start_sd`` if > 0), so at step 0
    the sample is as far from the target as a sample can be. One run of ``max(steps)``
    transitions records positions at every requested step (``Trace(positions_at=steps)``),
    so the curve costs one chain run, not one per step count. Distances: ``"tv"``
    (histogram TV, 2-D targets) and ``"mmd"`` (squared MMD against ``n_chains`` exact
    samples); each comes with its noise floor.
    """
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler: expected a Sampler, got {type(sampler).__name__}")
    target = _as_target(target)
    n_chains = _positive_int("n_chains", n_chains)
    chosen = tuple(metrics)
    if not chosen:
        raise ValueError(f"metrics: expected a non-empty subset of {METRICS}")
    if any(m not in METRICS for m in chosen):
        raise ValueError(f"metrics: expected a non-empty subset of {METRICS}, got {chosen!r}")
    if "tv" in chosen and target.dim != 2:
        raise ValueError(f"metrics: 'tv' needs a 2-D target, got dimension {target.dim}; use ('mmd',)")
    steps = log_step_grid(1000) if steps is None else sorted({int(t) for t in steps})
    if not steps or steps[0] < 0 or steps[-1] < 1:
        raise ValueError(f"steps: expected step counts >= 0 with at least one >= 1, got {steps!r}")
    device = torch.device("cpu") if device is None else torch.device(device)

    gen = torch.Generator().manual_seed(seed)
    x0 = _start(target, n_chains, start, start_sd, gen, device)
    chain_gen = torch.Generator(device=device).manual_seed(seed + 1)
    trace = Trace(positions_at=steps)
    sampler.sample(target.energy, x0, steps[-1], generator=chain_gen, trace=trace)

    result = ConvergenceResult(
        label=label or repr(sampler),
        target=repr(target),
        steps=steps,
        n_chains=n_chains,
    )
    ref_gen = torch.Generator().manual_seed(seed + 2)
    if "tv" in chosen:
        grid = _target_bins(target, extent, bins)
        result.tv = [histogram_tv(trace.positions[t], grid, extent, bins) for t in steps]
        result.tv_floor = noise_floor(target, n_chains, "tv", floor_repeats, seed + 3, bins, extent)
    if "mmd" in chosen:
        reference = target.sample(n_chains, ref_gen)
        result.mmd = [mmd(trace.positions[t], reference) for t in steps]
        result.mmd_floor = noise_floor(target, n_chains, "mmd", floor_repeats, seed + 3, reference=reference)
    if trace.acceptance_rate:
        result.acceptance_rate = sum(trace.acceptance_rate) / len(trace.acceptance_rate)
    return result


def compare_convergence(samplers: Mapping[str, Sampler], target, **kwargs) -> dict[str, ConvergenceResult]:
    """``convergence_curve`` for each labelled sampler with the same start, seed and sizes; label → result."""
    if not samplers:
        raise ValueError("samplers: expected at least one labelled sampler")
    return {label: convergence_curve(s, target, label=label, **kwargs) for label, s in samplers.items()}


def stationary_variance(sampler: Sampler, target, n_chains: int = 4000, n_steps: int = 300, seed: int = 0) -> dict:
    """Per-coordinate variance after ``n_steps`` from *exact* target samples, to expose a biased stationary law.

    An exact chain leaves the target invariant, so started from exact samples its variance
    stays at the target's up to Monte Carlo error; an unadjusted chain drifts towards its
    own stationary law. Returns ``variance``, ``exact_variance`` (of the target, when it
    exposes ``.variance``, else of the starting samples) and ``std_error`` (the Gaussian
    standard error ``var · sqrt(2/(n−1))`` of a sample variance), all lists per coordinate,
    plus ``acceptance_rate`` (or ``None``).
    """
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler: expected a Sampler, got {type(sampler).__name__}")
    target = _as_target(target)
    n_chains = _positive_int("n_chains", n_chains)
    if n_chains < 2:
        raise ValueError(f"n_chains: expected an integer >= 2 to estimate a variance, got {n_chains}")
    n_steps = _positive_int("n_steps", n_steps)
    gen = torch.Generator().manual_seed(seed)
    x0 = target.sample(n_chains, gen)
    trace = Trace()
    x = sampler.sample(target.energy, x0, n_steps, generator=gen, trace=trace)
    var = x.double().var(0)
    exact = target.variance if hasattr(target, "variance") else x0.double().var(0)
    acc = trace.acceptance_rate
    return {
        "variance": var.tolist(),
        "exact_variance": [float(v) for v in exact],
        "std_error": (var * math.sqrt(2.0 / (n_chains - 1))).tolist(),
        "acceptance_rate": sum(acc) / len(acc) if acc else None,
    }
