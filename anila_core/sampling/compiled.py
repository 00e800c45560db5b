"""The fast path: one compiled Langevin-type transition (energy, input gradient, step-size map, update), cached per energy and shape, with an eager fallback.

Eager PyTorch pays, per transition, for autograd's bookkeeping and for a dozen small
elementwise kernels around the network's forward and backward. Compiling the *whole*
transition with ``torch.compile`` — the energy, its input gradient through
``torch.func.grad_and_value``, the sampler's step-size map and the update — fuses those and
drops the bookkeeping: on the 2-D MLP it runs below the cost of one eager forward+backward
(measured: README, "Speed"). Compiling only the network is slower than eager, so this module never does.

The noise is drawn *outside* the compiled region, with ``torch.randn(..., generator=...)`` in
the same order as :meth:`Sampler.sample`, so a compiled chain equals the eager chain of the
same generator seed up to floating-point rounding.

Use it through ``sampler.sample(energy_fn, x0, K, generator=g, fast=True)`` (or
``sampler.fast = True``); the training loop turns it on with ``TrainConfig.fast``. Compiled
transitions are cached per (sampler type and hyperparameters, energy, input shape, dtype,
device), so the compile (seconds to tens of seconds, see :func:`cache_info`) is paid once.
When ``torch.compile`` is unavailable or fails, a warning says so once and sampling goes on
eagerly with the same result.
"""

from __future__ import annotations

import copy
import time
import types
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from anila_core.sampling.samplers import Sampler, Trace, _check_generator, _check_n_steps, _check_x0, check_energies, energy_and_grad

__all__ = [
    "sample_fast",
    "transition_for",
    "FastTransition",
    "cache_info",
    "clear_cache",
    "compile_supported",
    "use_fast_path",
    "FAST_MODES",
    "AUTO_MIN_TRANSITIONS",
]

EnergyFn = Callable[[torch.Tensor], torch.Tensor]

#: values of ``TrainConfig.fast``: compile when it pays off, always, never
FAST_MODES = ("auto", "on", "off")
#: ``fast="auto"`` compiles when a run makes at least this many transitions (iters × K).
#: Measured on the 2-core CPUs (MLP 2-128-128-128-1, batch 256): a cold compile took 11–25 s
#: and the compiled transition saved ≈ 0.35 ms of 1.2 ms, so it pays for itself after
#: 35k–70k transitions. At this threshold every preset but the smoke ones compiles (the cpu
#: preset makes 90k: the demo, notebook 02 at the cpu budget, cpu_long, paper) and the CI
#: sizes (hundreds of transitions) and the sweep's cells (40k) stay eager.
AUTO_MIN_TRANSITIONS = 80_000


# --------------------------------------------------------------------------- the transitions


class _CheaperCpuGradient(TorchFunctionMode):
    """Inside a CPU transition, two layers are written so that their input gradient costs less; the values agree to rounding.

    * ``F.silu(h)`` as ``h · σ(h)``. Autograd's formula for SiLU recomputes ``σ(h)`` in the
      backward pass, a second exponential per hidden unit, which on a CPU costs about half as
      much as the layer's matmul; as a product, autograd keeps ``σ(h)`` from the forward pass.
    * A linear layer to one output (an energy head) as a dot product. As a matmul its backward
      is an outer product the compiler hands to a GEMM call and writes out; as a dot product it
      is a broadcast fused into the next kernel.

    Together ≈ 10 % of a transition of the 2-D MLP (measured). On CUDA, where elementwise work
    is memory-bound and recomputing is the cheaper choice, this mode is not used.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.silu and not kwargs.get("inplace", False) and not (len(args) > 1 and args[1]):
            h = args[0]
            return h * torch.sigmoid(h)
        if func is F.linear:
            h = args[0] if args else kwargs["input"]
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if weight.ndim == 2 and weight.shape[0] == 1:
                out = (h * weight[0]).sum(-1, keepdim=True)
                return out if bias is None else out + bias
        return func(*args, **kwargs)


#: a linear layer with at most this many inputs counts as thin (the 2-D MLP's first layer)
_THIN_INPUTS = 8


def _thin_linear_weights(energy_fn) -> list[torch.nn.Parameter]:
    """The weights of the thin ``nn.Linear`` layers (few inputs, more outputs) in the modules ``energy_fn`` belongs to.

    Looks at ``energy_fn`` itself when it is a module, else at the object a bound method
    belongs to: that object when it is a module, or the modules among its attributes (a
    trainer's ``energy``). A plain function finds none, and then nothing changes.
    """
    owner = getattr(energy_fn, "__self__", energy_fn)
    if isinstance(owner, torch.nn.Module):
        roots = [owner]
    else:
        roots = [v for v in vars(owner).values() if isinstance(v, torch.nn.Module)] if hasattr(owner, "__dict__") else []
    weights: dict[int, torch.nn.Parameter] = {}
    for root in roots:
        for module in root.modules():
            if isinstance(module, torch.nn.Linear) and module.in_features <= _THIN_INPUTS < module.out_features:
                weights[id(module.weight)] = module.weight
    return list(weights.values())


@contextmanager
def _thin_weights_column_major(weights: list[torch.nn.Parameter]):
    """Hold the given ``(out, in)`` weights in column-major memory while a CPU chain runs; the values are untouched.

    The input gradient of a thin layer is a (N × width) @ (width × in) product. CPU BLAS runs
    that shape ≈ 4× faster when the small matrix is column-major (measured at N = 1024,
    width 128, in = 2: 40 µs against 166 µs, ≈ 5 % of a transition of the 2-D MLP). The
    compiler keeps a graph input's layout, so the weights are re-laid before the compiled
    transitions run and put back after. The compiled graphs are specialised on this layout.
    """
    originals = []
    try:
        for weight in weights:
            if weight.ndim == 2 and weight.is_contiguous():
                originals.append((weight, weight.data))
                weight.data = weight.data.t().contiguous().t()
        yield
    finally:
        for weight, data in originals:
            weight.data = data


def _grad_and_energy(energy_fn: EnergyFn, x: torch.Tensor, cpu_rewrites: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∇_x Σ E, E)`` with ``torch.func``: unlike ``autograd.grad`` it compiles without a graph break."""

    def total(z):
        if cpu_rewrites:
            with _CheaperCpuGradient():
                energy = energy_fn(z)
        else:
            energy = energy_fn(z)
        check_energies(energy, z)  # static shapes: checked once, while tracing
        return energy.sum(), energy

    grad, (_, energy) = torch.func.grad_and_value(total, has_aux=True)(x)
    return grad, energy


def _make_unadjusted(sampler: Sampler, cpu_rewrites: bool):
    """One unadjusted transition from ``x``: gradient at ``x``, step sizes, move. Returns the new state and ``x``'s energy and gradient.

    Taking the gradient at the start of the transition (not carrying it from the previous
    one) keeps it to one gradient per transition, like the eager loop, which skips the
    gradient at the final state.
    """

    def anila_unadjusted_transition(energy_fn, x, noise, state):
        grad, energy = _grad_and_energy(energy_fn, x, cpu_rewrites)
        drift_gamma, noise_gamma, state = sampler._step_sizes_with_state(grad, state)
        return sampler._move(x, grad, drift_gamma, noise_gamma, noise), energy, grad, state

    return anila_unadjusted_transition


def _make_adjusted(sampler: Sampler, cpu_rewrites: bool):
    """One Metropolis-adjusted transition; the same test as ``Sampler._metropolis`` with the uniform ``u`` passed in (tests check they agree)."""

    def anila_adjusted_transition(energy_fn, x, energy, grad, noise, u):
        drift_gamma, noise_gamma, _ = sampler._step_sizes_with_state(grad, None)
        proposal = sampler._move(x, grad, drift_gamma, noise_gamma, noise)
        prop_grad, prop_energy = _grad_and_energy(energy_fn, proposal, cpu_rewrites)
        prop_drift, prop_noise, _ = sampler._step_sizes_with_state(prop_grad, None)
        log_alpha = (
            energy
            - prop_energy
            + sampler._log_proposal(x, proposal, prop_grad, prop_drift, prop_noise)
            - sampler._log_proposal(proposal, x, grad, drift_gamma, noise_gamma)
        )
        accepted = u.log() < log_alpha  # NaN compares False: a broken proposal is rejected
        mask = accepted.view(-1, *([1] * (x.ndim - 1)))
        return (
            torch.where(mask, proposal, x),
            torch.where(accepted, prop_energy, energy),
            torch.where(mask, prop_grad, grad),
            accepted,
        )

    return anila_adjusted_transition


def _own_code(fn, name: str):
    """A copy of ``fn`` with a code object of its own.

    Dynamo keeps its compiled graphs, and its limit of 8 recompilations, per code object.
    Every cache entry here is a closure of the same few functions, so without their own code
    objects the ninth (sampler, energy, shape) would silently run uncompiled.
    """
    changes = {"co_name": name}
    if hasattr(fn.__code__, "co_qualname"):  # Python >= 3.11
        changes["co_qualname"] = name
    return types.FunctionType(fn.__code__.replace(**changes), fn.__globals__, name, fn.__defaults__, fn.__closure__)


# --------------------------------------------------------------------------- the cache


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def compile_supported() -> tuple[bool, str]:
    """``(True, "")`` when ``torch.compile`` can run here, else ``(False, why)``."""
    if not hasattr(torch, "compile"):
        return False, f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return False, "torch.compile does not support this Python version"
    except Exception as err:  # an import failure here means no compiler, not a bug of ours
        return False, f"torch._dynamo is unavailable ({type(err).__name__}: {err})"
    return True, ""


@dataclass
class FastTransition:
    """One compiled transition for one (sampler hyperparameters, energy, shape, dtype, device), with its eager twin.

    ``compile_s`` is the wall time of the first call (tracing and code generation; one
    transition's own run is a negligible part of it), ``None`` before it. ``failed`` holds
    why compiling failed, after which every call runs the eager twin.
    """

    name: str
    eager: Callable
    mode: str
    compiled: Callable | None = None
    compile_s: float | None = None
    calls: int = 0
    failed: str | None = None

    def __call__(self, *args):
        self.calls += 1
        if self.failed is not None:
            return self.eager(*args)
        first = self.compile_s is None
        start = time.perf_counter()
        try:
            if self.compiled is None:
                # fullgraph: a graph break would leave a slow half-compiled transition; better to know and run eagerly
                self.compiled = torch.compile(self.eager, fullgraph=True, dynamic=False, mode=self.mode)
            out = self.compiled(*args)
        except Exception as err:  # noqa: BLE001 - any compiler failure means: run eagerly
            compile_error = err
        else:
            if first:
                self.compile_s = time.perf_counter() - start
            return out
        # Outside the except block, so that an error the eager code raises too (a wrong
        # energy shape, a device mismatch) reaches the caller as itself, not as a compile failure.
        out = self.eager(*args)
        reason = f"{type(compile_error).__name__}: {str(compile_error).strip().splitlines()[0] if str(compile_error).strip() else ''}"
        self.failed = reason
        _warn_once(f"anila_core.sampling.compiled: torch.compile failed ({reason}); sampling continues eagerly with the same chain")
        return out


# energy owner (a module, a function, or a bound method's object) -> {key: FastTransition}.
# Weak keys: a cache entry never keeps a model alive, and the compiled functions take the
# energy as an argument rather than holding it.
_CACHE: "weakref.WeakKeyDictionary[object, dict[tuple, FastTransition]]" = weakref.WeakKeyDictionary()
_UNWEAKABLE: dict[int, tuple[object, dict[tuple, FastTransition]]] = {}  # owners without weakref support, kept alive
_counter = 0


def _sampler_key(sampler: Sampler) -> tuple:
    return (type(sampler).__qualname__, tuple(sorted(sampler._describe().items())))


def _entries_for(energy_fn) -> dict[tuple, FastTransition]:
    owner = getattr(energy_fn, "__self__", energy_fn)
    try:
        return _CACHE.setdefault(owner, {})
    except TypeError:  # not weak-referenceable (a builtin): keep it, the leak is one small dict
        return _UNWEAKABLE.setdefault(id(owner), (owner, {}))[1]


def transition_for(sampler: Sampler, energy_fn: EnergyFn, x: torch.Tensor, kind: str = "unadjusted",
                   stateful: bool = False, cuda_graphs: bool = False) -> FastTransition:
    """The cached :class:`FastTransition` of ``kind`` (``"unadjusted"`` or ``"adjusted"``) for this sampler, energy and ``x``.

    ``stateful``: the transition receives the sampler's running state (pSGLD's ``V``), not
    ``None``; the first and later pSGLD transitions are two graphs. ``cuda_graphs``: on CUDA,
    compile with ``mode="reduce-overhead"`` (the transition replays as one CUDA graph);
    ignored elsewhere.
    """
    global _counter
    mode = "reduce-overhead" if cuda_graphs and x.device.type == "cuda" else "default"
    func = getattr(energy_fn, "__func__", None)
    key = (kind, stateful, _sampler_key(sampler), func, tuple(x.shape), x.dtype, x.device, mode)
    entries = _entries_for(energy_fn)
    entry = entries.get(key)
    if entry is None:
        # a frozen copy: the entry's graph belongs to the hyperparameters in its key
        frozen = copy.copy(sampler)
        make = _make_adjusted if kind == "adjusted" else _make_unadjusted
        transition = make(frozen, cpu_rewrites=x.device.type == "cpu")
        _counter += 1
        name = f"{transition.__name__}_{sampler.name}_{_counter}"
        entry = FastTransition(name=name, eager=_own_code(transition, name), mode=mode)
        entries[key] = entry
    return entry


def cache_info() -> list[dict]:
    """One row per cached transition: its name, compile mode, compile time in seconds, calls, and why it fell back (``None`` if it did not)."""
    rows = []
    for entries in list(_CACHE.values()) + [e for _, e in _UNWEAKABLE.values()]:
        for entry in entries.values():
            rows.append({"name": entry.name, "mode": entry.mode, "compile_s": entry.compile_s, "calls": entry.calls, "failed": entry.failed})
    return rows


def clear_cache() -> None:
    """Forget every compiled transition (the next fast call compiles again) and the warnings already given."""
    _CACHE.clear()
    _UNWEAKABLE.clear()
    _warned.clear()


# --------------------------------------------------------------------------- sampling


def sample_fast(
    sampler: Sampler,
    energy_fn: EnergyFn,
    x0: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    trace: Trace | None = None,
    *,
    cuda_graphs: bool = False,
) -> torch.Tensor:
    """:meth:`Sampler.sample` with each transition compiled: the same chain for the same ``generator``, up to rounding.

    ``trace`` and ``metropolis=True`` are supported (the trace's bookkeeping runs eagerly
    between compiled transitions). ``cuda_graphs=True`` replays each transition as a CUDA
    graph on CUDA (``torch.compile(mode="reduce-overhead")``), which removes the per-kernel
    launch cost that dominates small energies there; it is ignored on other devices.
    """
    n_steps = _check_n_steps(n_steps)
    x = _check_x0(x0)
    _check_generator(generator, x)
    ok, why = compile_supported()
    if not ok:
        _warn_once(f"anila_core.sampling.compiled: {why}; sampling runs eagerly")
        return sampler.sample(energy_fn, x, n_steps, generator=generator, trace=trace, fast=False)
    graphs = cuda_graphs and x.device.type == "cuda"
    if sampler.metropolis:
        step = transition_for(sampler, energy_fn, x, "adjusted", cuda_graphs=graphs)
        if step.failed is not None:
            return sampler.sample(energy_fn, x, n_steps, generator=generator, trace=trace, fast=False)
        with _layout_for(energy_fn, x):
            return _run_adjusted(sampler, step, energy_fn, x, n_steps, generator, trace, graphs)
    first = transition_for(sampler, energy_fn, x, "unadjusted", cuda_graphs=graphs)
    if first.failed is not None:
        return sampler.sample(energy_fn, x, n_steps, generator=generator, trace=trace, fast=False)
    with _layout_for(energy_fn, x):
        return _run_unadjusted(sampler, first, x, energy_fn, n_steps, generator, trace, graphs)


def _layout_for(energy_fn, x: torch.Tensor):
    """The weight layout the compiled CPU transitions are built for (see :func:`_thin_weights_column_major`)."""
    weights = _thin_linear_weights(energy_fn) if x.device.type == "cpu" else []
    return _thin_weights_column_major(weights)


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # exactly the eager loop's draw, so that both consume the generator identically
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _clipped(sampler: Sampler, grad: torch.Tensor) -> torch.Tensor:
    """AniLA's share of coordinates stepped below ε at ``grad``, as the eager trace records it."""
    return (sampler._step_sizes_with_state(grad, None)[1] < sampler.step_size).float().mean()


def _run_unadjusted(sampler, first, x, energy_fn, n_steps, generator, trace, graphs):
    state = sampler._init_state(x)
    later = first  # samplers with a running state (pSGLD) switch to their stateful graph after the first transition
    traced_clip = trace is not None and hasattr(sampler, "b")
    with torch.no_grad():  # torch.func computes the input gradient regardless; this keeps parameters out of it
        for t in range(1, n_steps + 1):
            noise = _noise(x, generator)
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            if state is not None and later is first:
                later = transition_for(sampler, energy_fn, x, "unadjusted", stateful=True, cuda_graphs=graphs)
            step = first if state is None else later
            x_new, energy, grad, state = step(energy_fn, x, noise, state)
            if graphs:  # a CUDA graph's outputs are overwritten by its next replay
                x_new, energy, grad = x_new.clone(), energy.clone(), grad.clone()
                state = None if state is None else state.clone()
            if trace is not None:
                trace._record_state(t - 1, x, energy, grad)
                if traced_clip:
                    trace._clipped.append(_clipped(sampler, grad))
            x = x_new
    if trace is not None:
        energy, grad = energy_and_grad(energy_fn, x)
        trace._record_state(n_steps, x, energy, grad)
    return x


def _run_adjusted(sampler, step, energy_fn, x, n_steps, generator, trace, graphs):
    energy, grad = energy_and_grad(energy_fn, x)
    if trace is not None:
        trace._record_state(0, x, energy, grad)
    traced_clip = trace is not None and hasattr(sampler, "b")
    with torch.no_grad():
        for t in range(1, n_steps + 1):
            noise = _noise(x, generator)  # the eager order: the proposal's noise, then the uniform
            u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            if traced_clip:
                trace._clipped.append(_clipped(sampler, grad))
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            x, energy, grad, accepted = step(energy_fn, x, energy, grad, noise, u)
            if graphs:
                x, energy, grad, accepted = x.clone(), energy.clone(), grad.clone(), accepted.clone()
            if trace is not None:
                trace._accept.append(accepted.float().mean())
                trace._record_state(t, x, energy, grad)
    return x


# --------------------------------------------------------------------------- when it pays off


def use_fast_path(mode: str, transitions: int, device: torch.device | str, is_image: bool = False,
                  network_compiled: bool = False) -> bool:
    """Whether a training run should sample through the compiled transition.

    ``mode``: ``"on"``, ``"off"`` or ``"auto"``. ``"auto"`` compiles only when the run is long
    enough to amortise the compile (``transitions`` = iters × K ≥ :data:`AUTO_MIN_TRANSITIONS`),
    and not for ConvNet energies on a CPU (their transition is all convolution: compiling
    does not speed it up, measured), nor when the network is already compiled
    (``--compile``, the other route).
    """
    if mode not in FAST_MODES:
        raise ValueError(f"fast: expected one of {list(FAST_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    device = torch.device(device)
    if network_compiled or (is_image and device.type == "cpu"):
        return False
    return transitions >= AUTO_MIN_TRANSITIONS
