"""The compiled path: a sampler's own transition (:meth:`Sampler.transition`) compiled with ``torch.compile``, cached per energy and shape, with an eager fallback.

Eager PyTorch pays, per transition, for autograd's bookkeeping and for a dozen small
elementwise kernels around the network's forward and backward. Compiling the *whole*
transition — the step-size map, the move, the energy and its input gradient through
``torch.func.grad_and_value``, the Metropolis test — fuses those and drops the bookkeeping:
on the 2-D MLP it runs below the cost of one eager forward+backward (README, "Speed").
Compiling only the network is slower than eager, so this module never does.

Nothing here re-implements a sampler: :func:`compiled_transition` compiles the sampler's
``transition`` method with a ``torch.func`` gradient in place of autograd's, and
``Sampler.run`` calls it in its one loop. The noise is drawn *outside* the compiled region,
in the same order as eagerly, so a compiled chain equals the eager chain of the same
generator seed up to floating-point rounding.

Compiled transitions are cached per (sampler type and hyperparameters, energy, input shape,
dtype, device), so the compile (seconds to tens of seconds, see :func:`cache_info`) is paid
once per process. When ``torch.compile`` is unavailable or fails, a warning says so once and
sampling goes on eagerly with the same result.
"""

from __future__ import annotations

import contextlib
import copy
import time
import types
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from anila_core.sampling.kernel import check_energies, energy_and_grad, watched

__all__ = [
    "compiled_transition",
    "auto_compiles",
    "transition_for",
    "FastTransition",
    "cache_info",
    "clear_cache",
    "compile_supported",
    "use_fast_path",
    "FAST_MODES",
    "AUTO_MIN_TRANSITIONS",
    "AUTO_MIN_CHAIN_STEPS",
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
#: ``run``/``sample(fast="auto")`` compile a call that moves at least this many chain-steps
#: (chains × steps) of a network energy. At batch 1024 the compiled transition of the 2-D MLP
#: saves ≈ 0.9 ms of 3.4 ms, so one call of 100 steps saves ≈ 0.1 s: less than a compile
#: (0.2–3 s warm from inductor's disk cache, 11–25 s cold). The graph is cached for the
#: process, so it pays in a loop that samples the same setting again and again, or in one
#: call of tens of thousands of steps; this threshold makes the compiled path the default
#: where a user's batch is big enough for its speed to show.
AUTO_MIN_CHAIN_STEPS = 100_000


# --------------------------------------------------------------------------- the transitions


class _CheaperCpuGradient(TorchFunctionMode):
    """Inside a CPU transition, three kinds of layer are written so that their input gradient costs less; the values agree to rounding.

    * ``F.silu(h)`` as ``h · σ(h)``. Autograd's formula for SiLU recomputes ``σ(h)`` in the
      backward pass, a second exponential per hidden unit, which on a CPU costs about half as
      much as the layer's matmul; as a product, autograd keeps ``σ(h)`` from the forward pass.
    * A linear layer to one output (an energy head) as a dot product. As a matmul its backward
      is an outer product the compiler hands to a GEMM call and writes out; as a dot product it
      is a broadcast fused into the next kernel.
    * A thin linear layer (at most ``_THIN_INPUTS`` inputs, more outputs: the first layer of a
      2-D MLP) as a sum of ``in`` broadcast products. Its forward then fuses into the kernel
      that makes the move and its input gradient into the last kernel, instead of two GEMM
      calls with a K or N of 2 and the copy of the bias that ``addmm`` makes (2–4 % of a
      transition of the 2-D MLP, measured side by side).

    The first two together save ≈ 10 % of a transition of the 2-D MLP (measured). On CUDA,
    where elementwise work is memory-bound and recomputing is the cheaper choice, this mode is
    not used.
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
            if h.ndim == 2 and weight.ndim == 2 and weight.shape[1] <= _THIN_INPUTS < weight.shape[0]:
                out = h[:, :1] * weight[:, 0]  # each weight column is contiguous here (_thin_weights_column_major)
                for k in range(1, weight.shape[1]):
                    out = out + h[:, k:k + 1] * weight[:, k]
                return out if bias is None else out + bias
        return func(*args, **kwargs)


#: a linear layer with at most this many inputs counts as thin (the 2-D MLP's first layer)
_THIN_INPUTS = 8


def _modules_of(energy_fn) -> list[torch.nn.Module]:
    """The network(s) ``energy_fn`` computes with: itself when it is a module, else the module a bound method belongs to, or the modules among that object's attributes (a trainer's ``energy``)."""
    owner = getattr(energy_fn, "__self__", energy_fn)
    if isinstance(owner, torch.nn.Module):
        return [owner]
    return [v for v in vars(owner).values() if isinstance(v, torch.nn.Module)] if hasattr(owner, "__dict__") else []


def _thin_linear_weights(energy_fn) -> list[torch.nn.Parameter]:
    """The weights of the thin ``nn.Linear`` layers (few inputs, more outputs) in the modules ``energy_fn`` belongs to (none for a plain function)."""
    weights: dict[int, torch.nn.Parameter] = {}
    for root in _modules_of(energy_fn):
        for module in root.modules():
            if isinstance(module, torch.nn.Linear) and module.in_features <= _THIN_INPUTS < module.out_features:
                weights[id(module.weight)] = module.weight
    return list(weights.values())


@contextmanager
def _thin_weights_column_major(weights: list[torch.nn.Parameter]):
    """Hold the given ``(out, in)`` weights in column-major memory while a CPU chain runs; the values are untouched.

    A thin layer runs as broadcast products with its weight's columns (:class:`_CheaperCpuGradient`),
    which the compiled kernels read with vector loads only when each column is contiguous: with
    the row-major weight the transition of the 2-D MLP took 1.3× as long (measured side by side).
    The compiler keeps a graph input's layout, so the weights are re-laid before the compiled
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


def _evaluator(cpu_rewrites: bool):
    """``evaluate(energy_fn, x) -> (energy, grad)`` for a compiled transition: the kernel's order, ``torch.func``'s gradient."""

    def evaluate(energy_fn, x):
        grad, energy = _grad_and_energy(energy_fn, x, cpu_rewrites)
        return energy, grad

    return evaluate


def _make_transition(sampler, cpu_rewrites: bool):
    """The sampler's transition, with the run's watch of non-finite chains, as a plain function of tensors for ``torch.compile``."""
    evaluate = _evaluator(cpu_rewrites)

    def anila_transition(energy_fn, x, energy, grad, extra, noise, u, ok, steps_ok):
        return watched(sampler.transition, evaluate, energy_fn, x, energy, grad, extra, noise, u, ok, steps_ok)

    return anila_transition


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
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
                out = _cloned(self.compiled(*args))  # a CUDA graph's outputs are overwritten by its next replay
            else:
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


def _cloned(value):
    """``value`` with every tensor in it (nested in tuples, lists and dicts) cloned."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_cloned(v) for v in value)
    return value


# energy owner (a module, a function, or a bound method's object) -> {key: FastTransition}.
# Weak keys: a cache entry never keeps a model alive, and the compiled functions take the
# energy as an argument rather than holding it.
_CACHE: "weakref.WeakKeyDictionary[object, dict[tuple, FastTransition]]" = weakref.WeakKeyDictionary()
_UNWEAKABLE: dict[int, tuple[object, dict[tuple, FastTransition]]] = {}  # owners without weakref support, kept alive
_counter = 0


def _sampler_key(sampler) -> tuple:
    return (type(sampler).__qualname__, tuple(sorted(sampler.settings().items())))


def _entries_for(energy_fn) -> dict[tuple, FastTransition]:
    owner = getattr(energy_fn, "__self__", energy_fn)
    try:
        return _CACHE.setdefault(owner, {})
    except TypeError:  # not weak-referenceable (a builtin): keep it, the leak is one small dict
        return _UNWEAKABLE.setdefault(id(owner), (owner, {}))[1]


def transition_for(sampler, energy_fn: EnergyFn, x: torch.Tensor, cuda_graphs: bool = False) -> FastTransition:
    """The cached :class:`FastTransition` of ``sampler.transition`` for this sampler's hyperparameters, energy and ``x``.

    ``cuda_graphs``: on CUDA, compile with ``mode="reduce-overhead"`` (the transition replays
    as one CUDA graph); ignored elsewhere.
    """
    global _counter
    mode = "reduce-overhead" if cuda_graphs and x.device.type == "cuda" else "default"
    func = getattr(energy_fn, "__func__", None)
    key = (_sampler_key(sampler), func, tuple(x.shape), x.dtype, x.device, mode)
    entries = _entries_for(energy_fn)
    entry = entries.get(key)
    if entry is None:
        # a frozen copy: the entry's graph belongs to the hyperparameters in its key
        transition = _make_transition(copy.copy(sampler), cpu_rewrites=x.device.type == "cpu")
        _counter += 1
        name = f"{transition.__name__}_{sampler.name}_{_counter}"
        entry = FastTransition(name=name, eager=_own_code(transition, name), mode=mode)
        entries[key] = entry
    return entry


def compiled_transition(sampler, energy_fn: EnergyFn, x: torch.Tensor, cuda_graphs: bool = False):
    """``(step, context)`` for ``Sampler.run``: the compiled transition, and the block to run its loop in.

    The context turns off parameter gradients (``torch.func`` computes the input gradient
    regardless) and, on a CPU, holds thin first-layer weights column-major
    (:func:`_thin_weights_column_major`). Where ``torch.compile`` cannot run here, ``step``
    is the same transition run eagerly, after a warning.
    """
    ok, why = compile_supported()
    if not ok:
        _warn_once(f"anila_core.sampling.compiled: {why}; sampling runs eagerly")
        return partial(watched, sampler.transition, energy_and_grad), contextlib.nullcontext()
    step = transition_for(sampler, energy_fn, x, cuda_graphs=cuda_graphs)
    return step, _compiled_block(energy_fn, x)


@contextmanager
def _compiled_block(energy_fn, x: torch.Tensor):
    weights = _thin_linear_weights(energy_fn) if x.device.type == "cpu" else []
    with torch.no_grad(), _thin_weights_column_major(weights):
        yield


def auto_compiles(energy_fn: EnergyFn, x: torch.Tensor, n_steps: int) -> bool:
    """``fast="auto"`` for one ``run``/``sample`` call: compile a network's chains when chains × steps ≥ :data:`AUTO_MIN_CHAIN_STEPS`.

    Only energies computed by a ``torch.nn.Module`` (the module itself, or a method of an
    object holding one) compile: an analytic energy such as a 2-D target costs microseconds
    per step eagerly, and its compile (seconds, once per sampler setting, energy and shape)
    would not pay within a notebook. Image batches (``x.ndim > 2``) on a CPU never compile: a
    ConvNet's transition is all convolution there, and compiling does not make it faster
    (measured).
    """
    if x.device.type == "cpu" and x.ndim > 2:
        return False
    if x.shape[0] * n_steps < AUTO_MIN_CHAIN_STEPS or not _modules_of(energy_fn):
        return False
    return compile_supported()[0]


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
