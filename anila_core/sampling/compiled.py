"""The compiled path: a sampler's own ``steps`` compiled with ``torch.compile``, cached, with an eager fallback.

Eager PyTorch pays, per transition, for autograd's bookkeeping and for a dozen small
elementwise kernels around the network's forward and backward. Compiling the *whole* step —
the step-size map, the move, the energy and its input gradient, the Metropolis test — fuses
those and drops the bookkeeping: on the 2-D MLP it runs below the cost of one eager
forward+backward (README, "Speed"). Compiling only the network is slower than eager, so this
module never does.

Nothing here re-implements a sampler: :func:`compiled_steps` compiles the very
``Sampler.steps`` that ``fast=False`` runs — ``steps_per_call`` calls of ``Sampler.step``, each
followed by the non-finite watch — autograd's input gradient included
(``torch._dynamo.config.trace_autograd_ops`` lets ``torch.compile`` trace
``torch.autograd.grad``), and ``Sampler.run`` calls it in its one loop. Several steps per
call pay Python, dynamo's guards, the graph's wrapper and the watch's small operations once
per call instead of once per step: on the CPU MLP (2-128-128-128-1, batch 1024, one thread)
that took ≈ 0.4 ms off a 4 ms transition, measured side by side. What is left beyond the
GEMMs is the graph's own kernels (the activations and their derivatives), not the calls. The
noise is drawn *outside* the compiled region, step by step in the same order as eagerly, so a
compiled chain equals the eager chain of the same generator seed up to floating-point rounding,
and the length of a call (8, or the few left at the end of a run) changes nothing in it.

On a CPU the compiled graph is the sampler's arithmetic with three exact rewrites of
:mod:`~anila_core.sampling.graph_rewrites` (the sigmoid computed once, thin products and
biases fused into the elementwise kernels), which change float rounding only, and its float32
exponentials are ATen's ``exp_u20`` (:mod:`~anila_core.sampling.vector_exp`: at most 20 ulp
instead of Sleef's 1); no weight is re-laid in memory and the user's module is not touched.
Its code is generated for the vector ISA this process runs (``ATEN_CPU_CAPABILITY`` picks
``default``, ``avx2`` or ``avx512``), and inductor's disk cache keeps the code of each ISA apart
(:func:`cpu_codegen_options`).

Compiled calls are cached per (sampler type and hyperparameters, energy, input shape, dtype,
device, steps per call), so the compile (seconds to tens of seconds for each of a run's two
call lengths, see :func:`cache_info`) is paid once per process. When ``torch.compile`` is
unavailable or fails, a warning says so once and sampling goes on with the ``steps``
``fast=False`` runs: the same chain, bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
import types
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from anila_core.sampling import graph_rewrites, vector_exp
from anila_core.sampling.kernel import EnergyFn

__all__ = [
    "compiled_steps",
    "step_for",
    "FastStep",
    "cache_info",
    "clear_cache",
    "compile_supported",
    "tracing_autograd",
    "cpu_codegen_options",
]


def _make_steps(sampler):
    """``sampler.steps`` as a plain function of the energy, state, watch and draws, for ``torch.compile`` to trace."""

    def anila_steps(energy_fn, state, watch, noises, us):
        return sampler.steps(energy_fn, state, watch, noises, us)

    return anila_steps


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
    if not hasattr(dynamo.config, "trace_autograd_ops"):
        return False, (
            f"torch {torch.__version__} cannot compile torch.autograd.grad (a newer torch has "
            "torch._dynamo.config.trace_autograd_ops)"
        )
    return True, ""


def tracing_autograd():
    """The block to compile and call compiled steps in: ``torch.compile`` traces ``torch.autograd.grad`` there.

    Set for the loop only, not for the process: the rest of a user's program compiles as it would.
    """
    import torch._dynamo as dynamo

    return dynamo.config.patch(trace_autograd_ops=True)


def cpu_codegen_options() -> dict:
    """Inductor's options for a CPU graph: its vector width pinned to the one this process would pick.

    Inductor writes C++ for the vector ISA it picks (``ATEN_CPU_CAPABILITY`` chooses among
    ``default``, ``avx2`` and ``avx512``) but leaves that ISA out of the key of its on-disk graph
    cache, which its options are part of. A graph generated under one ISA was then served under
    another: under ``default`` the AVX2 source failed to build, and under ``avx2`` the AVX-512
    source (loops of 16 floats over 8-float vectors) turned every chain NaN from its first step.
    With the width as an option, each ISA has its own cache entries, and the width alone
    decides which ISA the code is written for. Every ``torch.compile`` of the package on a CPU
    (the sampler's step, ``--compile``'s network) passes these options.
    """
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return {"cpp.simdlen": pick_vec_isa().bit_width()}  # 0 where it vectorises nothing (``default``)


@dataclass
class FastStep:
    """One compiled call of ``n`` steps for one (sampler settings, energy, shape, dtype, device, ``n``), and its eager
    twin to fall back on.

    ``traced`` is the function ``torch.compile`` compiles (``sampler.steps``, see :func:`_make_steps`);
    ``fallback`` is that very ``steps``, run eagerly as ``fast=False`` runs it, so a chain whose
    compile fails is the eager chain, bit for bit. ``compile_s`` is the wall time of the first
    call (tracing and code generation; the steps' own run is a negligible part of it), ``None``
    before it. ``calls`` counts calls (of ``n`` steps each). ``failed`` holds why compiling
    failed, after which every call runs ``fallback``.
    """

    name: str
    traced: Callable
    fallback: Callable
    mode: str
    compiled: Callable | None = None
    compile_s: float | None = None
    calls: int = 0
    failed: str | None = None

    def __call__(self, *args):
        self.calls += 1
        if self.failed is not None:
            return self.fallback(*args)
        first = self.compile_s is None
        start = time.perf_counter()
        try:
            if self.compiled is None:
                # fullgraph: a graph break would leave a slow half-compiled step; better to know and run eagerly
                how = (
                    {"options": {**cpu_codegen_options(), **graph_rewrites.inductor_options()}}
                    if self.mode == "cpu"
                    else {"mode": self.mode}
                )
                self.compiled = torch.compile(self.traced, fullgraph=True, dynamic=False, **how)
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
                out = _cloned(self.compiled(*args))  # a CUDA graph's outputs are overwritten by its next replay
            elif self.mode == "cpu":  # inductor writes the code inside the call, on its first and on a recompile
                with vector_exp.cheaper_exponential():
                    out = self.compiled(*args)
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
        out = self.fallback(*args)
        reason = (
            f"{type(compile_error).__name__}: "
            f"{str(compile_error).strip().splitlines()[0] if str(compile_error).strip() else ''}"
        )
        self.failed = reason
        if first:
            _warn_once(
                f"anila_core.sampling.compiled: torch.compile failed ({reason}); sampling continues eagerly "
                "with the same chain as fast=False"
            )
        else:  # compiled steps ran before: from here on the chain is the eager one's, to float rounding
            _warn_once(
                f"anila_core.sampling.compiled: a compiled step failed ({reason}); the rest of the chain "
                "runs eagerly, the same chain as fast=False to float rounding"
            )
        return out


def _cloned(value):
    """``value`` with every tensor in it (nested in tuples, named tuples, lists, dicts and dataclasses) cloned."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _cloned(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple (a step's info)
        return type(value)(*(_cloned(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cloned(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a sampler's state
        return type(value)(**{f.name: _cloned(getattr(value, f.name)) for f in dataclasses.fields(value)})
    return value


# energy owner (a module, a function, or a bound method's object) -> {key: FastStep}.
# Weak keys: a cache entry never keeps a model alive, and the compiled functions take the
# energy as an argument rather than holding it.
_CACHE: "weakref.WeakKeyDictionary[object, dict[tuple, FastStep]]" = weakref.WeakKeyDictionary()
_UNWEAKABLE: dict[int, tuple[object, dict[tuple, FastStep]]] = {}  # owners without weakref support, kept alive
_counter = 0


def _sampler_key(sampler) -> tuple:
    return (type(sampler).__qualname__, tuple(sorted(sampler.settings().items())))


def _entries_for(energy_fn) -> dict[tuple, FastStep]:
    owner = getattr(energy_fn, "__self__", energy_fn)
    try:
        return _CACHE.setdefault(owner, {})
    except TypeError:  # not weak-referenceable (a builtin): keep it, the leak is one small dict
        return _UNWEAKABLE.setdefault(id(owner), (owner, {}))[1]


def step_for(sampler, energy_fn: EnergyFn, x: torch.Tensor, n_steps: int = 1) -> FastStep:
    """The cached :class:`FastStep` of ``sampler.steps`` over ``n_steps`` steps, for this sampler's hyperparameters,
    energy and ``x``.

    On CUDA with ``sampler.fast_cuda_graphs``, it compiles with ``mode="reduce-overhead"`` (the
    step replays as one CUDA graph).
    """
    global _counter
    # "cpu": compiled with the options of cpu_codegen_options; elsewhere, torch.compile's mode
    cuda_graphs = sampler.fast_cuda_graphs and x.device.type == "cuda"
    mode = "cpu" if x.device.type == "cpu" else "reduce-overhead" if cuda_graphs else "default"
    func = getattr(energy_fn, "__func__", None)
    key = (_sampler_key(sampler), func, tuple(x.shape), x.dtype, x.device, mode, n_steps)
    entries = _entries_for(energy_fn)
    entry = entries.get(key)
    if entry is None:
        frozen = copy.copy(sampler)  # a frozen copy: the entry's graph belongs to the hyperparameters in its key
        steps = _make_steps(frozen)
        _counter += 1
        name = f"{steps.__name__}_{n_steps}_{sampler.name}_{_counter}"
        entry = FastStep(name=name, traced=_own_code(steps, name), fallback=frozen.steps, mode=mode)
        entries[key] = entry
    return entry


def compiled_steps(sampler, energy_fn: EnergyFn, x: torch.Tensor):
    """``(steps, context)`` for ``Sampler.run``: the compiled ``sampler.steps`` and the block to loop in.

    ``steps`` takes ``sampler.steps``'s arguments and runs the compiled call of as many steps as
    it is given draws (one graph per length). The block is :func:`tracing_autograd`. The energy's
    parameters are read as they are: their values, storage and memory layout are never changed.
    Where ``torch.compile`` cannot run here, ``steps`` is ``sampler.steps`` itself, after a
    warning: the same chain as ``fast=False``, bit for bit.
    """
    ok, why = compile_supported()
    if not ok:
        _warn_once(f"anila_core.sampling.compiled: {why}; sampling runs eagerly, the same chain as fast=False")
        return sampler.steps, contextlib.nullcontext()
    by_length: dict[int, FastStep] = {}  # looked up once per run, not per call: the cache key costs microseconds

    def steps(energy_fn, state, watch, noises, us):
        entry = by_length.get(len(noises))
        if entry is None:
            entry = by_length[len(noises)] = step_for(sampler, energy_fn, x, len(noises))
        return entry(energy_fn, state, watch, noises, us)

    return steps, tracing_autograd()


def cache_info() -> list[dict]:
    """One row per cached step: name, compile mode (``"cpu"`` on a CPU, else ``torch.compile``'s mode), compile time in
    seconds, calls, and why it fell back (``None`` if it did not)."""
    rows = []
    for entries in list(_CACHE.values()) + [e for _, e in _UNWEAKABLE.values()]:
        for entry in entries.values():
            rows.append(
                {
                    "name": entry.name,
                    "mode": entry.mode,
                    "compile_s": entry.compile_s,
                    "calls": entry.calls,
                    "failed": entry.failed,
                }
            )
    return rows


def clear_cache() -> None:
    """Forget every compiled step (the next fast call compiles again) and the warnings already given."""
    _CACHE.clear()
    _UNWEAKABLE.clear()
    _warned.clear()
