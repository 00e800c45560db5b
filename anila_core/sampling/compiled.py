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

The compiled graph is the sampler's arithmetic as written: no layer is rewritten and no
weight re-laid in memory. On a CPU it is generated for the vector ISA this process runs
(``ATEN_CPU_CAPABILITY`` picks ``default``, ``avx2`` or ``avx512``), and inductor's disk cache
keeps the code of each ISA apart (:func:`_cpu_codegen_options`).

Compiled transitions are cached per (sampler type and hyperparameters, energy, input shape,
dtype, device), so the compile (seconds to tens of seconds, see :func:`cache_info`) is paid
once per process. When ``torch.compile`` is unavailable or fails, a warning says so once and
sampling goes on with the transition ``fast=False`` runs: the same chain, bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import dis
import functools
import time
import types
import warnings
import weakref
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

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
#: and the compiled transition saved ≈ 0.35 ms of 1.2 ms, so it paid for itself after
#: 35k–70k transitions (measured with CPU rewrites of three layers since removed; without
#: them the compiled transition of the 2-D MLP costs ≈ 15 % more, so it pays a little later).
#: At this threshold every preset but the smoke ones compiles (the cpu preset makes 90k: the
#: demo, notebook 02 at the cpu budget, cpu_long, paper) and the CI
#: sizes (hundreds of transitions) and the sweep's cells (40k) stay eager.
AUTO_MIN_TRANSITIONS = 80_000
#: ``run``/``sample(fast="auto")`` compile a call that moves at least this many chain-steps
#: (chains × steps) of a network energy. At batch 1024 the compiled transition of the 2-D MLP
#: saves ≈ 0.7 ms of 4.1 ms (one thread, CPU time, on a loaded 2-core AVX2 machine), so one
#: call of 100 steps saves ≈ 0.07 s: less than a compile
#: (0.2–3 s warm from inductor's disk cache, 11–25 s cold). The graph is cached for the
#: process, so it pays in a loop that samples the same setting again and again, or in one
#: call of tens of thousands of steps; this threshold makes the compiled path the default
#: where a user's batch is big enough for its speed to show.
AUTO_MIN_CHAIN_STEPS = 100_000


# --------------------------------------------------------------------------- the transitions


#: how many calls deep :func:`_modules_of` follows an energy's functions (a lambda calling a helper calling a network is 3)
_SEARCH_DEPTH = 4


def _modules_of(energy_fn) -> list[torch.nn.Module]:
    """The networks ``energy_fn`` computes with, as far as they show without calling it (none for an analytic energy).

    Found: the energy itself when it is a module; the module a bound method belongs to, or the
    modules among that object's attributes (a trainer's ``energy``); and, for a plain function
    or lambda, the modules it closes over or reads as globals, directly or through the objects,
    functions and ``functools.partial`` it refers to (``lambda x: net(x).squeeze(-1)`` in a
    notebook finds ``net``). A 2-D target's ``energy`` or ``lambda x: x.square().sum(1)`` finds none.
    """
    found: dict[int, torch.nn.Module] = {}
    _collect_modules(energy_fn, found, _SEARCH_DEPTH, set())
    return list(found.values())


def _collect_modules(value, found: dict, depth: int, seen: set) -> None:
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        found[id(value)] = value
    elif isinstance(value, types.MethodType):
        _collect_modules(value.__self__, found, depth, seen)
        _collect_modules(value.__func__, found, depth - 1, seen)
    elif isinstance(value, partial):
        for part in (value.func, *value.args, *value.keywords.values()):
            _collect_modules(part, found, depth - 1, seen)
    elif isinstance(value, types.FunctionType):
        for cell in value.__closure__ or ():
            try:
                _collect_modules(cell.cell_contents, found, depth - 1, seen)
            except ValueError:  # a cell not yet filled (a closure over a name assigned later)
                pass
        for name in _global_names(value.__code__):
            if name in value.__globals__:
                _collect_modules(value.__globals__[name], found, depth - 1, seen)
    elif not isinstance(value, (type, types.ModuleType, types.BuiltinFunctionType, torch.Tensor)) and hasattr(value, "__dict__"):
        # an object holding networks (a trainer, a wrapper): its attributes that are modules, one level down
        for attribute in list(vars(value).values()):
            if isinstance(attribute, torch.nn.Module):
                found[id(attribute)] = attribute


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The global names ``code`` reads, its nested functions' and comprehensions' included (attribute names are not globals: ``x.net`` reads none)."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(n for n in names if isinstance(n, str)))


def _grad_and_energy(energy_fn: EnergyFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∇_x Σ E, E)`` with ``torch.func``: unlike ``autograd.grad`` it compiles without a graph break."""

    def total(z):
        energy = energy_fn(z)
        check_energies(energy, z)  # static shapes: checked once, while tracing
        return energy.sum(), energy

    grad, (_, energy) = torch.func.grad_and_value(total, has_aux=True)(x)
    return grad, energy


def _evaluate(energy_fn, x):
    """``(energy, grad)`` for a compiled transition: the kernel's order, ``torch.func``'s gradient."""
    grad, energy = _grad_and_energy(energy_fn, x)
    return energy, grad


def _make_transition(sampler):
    """The sampler's transition, with the run's watch of non-finite chains, as a plain function of tensors for ``torch.compile``."""

    def anila_transition(energy_fn, x, energy, grad, extra, noise, u, ok, steps_ok):
        return watched(sampler.transition, _evaluate, energy_fn, x, energy, grad, extra, noise, u, ok, steps_ok)

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


def _cpu_codegen_options() -> dict:
    """Inductor's options for a CPU graph: its vector width pinned to the one this process would pick.

    Inductor writes C++ for the vector ISA it picks (``ATEN_CPU_CAPABILITY`` chooses among
    ``default``, ``avx2`` and ``avx512``) but leaves that ISA out of the key of its on-disk graph
    cache, which its options are part of. A graph generated under one ISA was then served under
    another: under ``default`` the AVX2 source failed to build, and under ``avx2`` the AVX-512
    source (loops of 16 floats over 8-float vectors) turned every chain NaN from its first step.
    With the width as an option, each ISA has its own cache entries, and the width alone
    decides which ISA the code is written for.
    """
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return {"cpp.simdlen": pick_vec_isa().bit_width()}  # 0 where it vectorises nothing (``default``)


@dataclass
class FastTransition:
    """One compiled transition for one (sampler hyperparameters, energy, shape, dtype, device), and the eager transition to fall back on.

    ``traced`` is the function ``torch.compile`` compiles (the transition with ``torch.func``'s
    gradient); ``fallback`` is the very transition ``fast=False`` runs (autograd's gradient),
    so a chain whose compile fails is the eager chain, bit for bit. ``compile_s`` is the wall
    time of the first call (tracing and code generation; one transition's own run is a
    negligible part of it), ``None`` before it. ``failed`` holds why compiling failed, after
    which every call runs ``fallback``.
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
                # fullgraph: a graph break would leave a slow half-compiled transition; better to know and run eagerly
                how = {"options": _cpu_codegen_options()} if self.mode == "cpu" else {"mode": self.mode}
                self.compiled = torch.compile(self.traced, fullgraph=True, dynamic=False, **how)
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
        out = self.fallback(*args)
        reason = f"{type(compile_error).__name__}: {str(compile_error).strip().splitlines()[0] if str(compile_error).strip() else ''}"
        self.failed = reason
        if first:
            _warn_once(f"anila_core.sampling.compiled: torch.compile failed ({reason}); sampling continues eagerly "
                       "with the same chain as fast=False")
        else:  # compiled steps ran before: from here on the chain is the eager one's, to float rounding
            _warn_once(f"anila_core.sampling.compiled: a compiled transition failed ({reason}); the rest of the chain "
                       "runs eagerly, the same chain as fast=False to float rounding")
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
    # "cpu": compiled with the options of _cpu_codegen_options; elsewhere, torch.compile's mode
    mode = "cpu" if x.device.type == "cpu" else "reduce-overhead" if cuda_graphs and x.device.type == "cuda" else "default"
    func = getattr(energy_fn, "__func__", None)
    key = (_sampler_key(sampler), func, tuple(x.shape), x.dtype, x.device, mode)
    entries = _entries_for(energy_fn)
    entry = entries.get(key)
    if entry is None:
        # a frozen copy: the entry's graph belongs to the hyperparameters in its key
        frozen = copy.copy(sampler)
        transition = _make_transition(frozen)
        _counter += 1
        name = f"{transition.__name__}_{sampler.name}_{_counter}"
        entry = FastTransition(name=name, traced=_own_code(transition, name), fallback=partial(watched, frozen.transition, energy_and_grad),
                               mode=mode)
        entries[key] = entry
    return entry


def compiled_transition(sampler, energy_fn: EnergyFn, x: torch.Tensor, cuda_graphs: bool = False):
    """``(step, context)`` for ``Sampler.run``: the compiled transition, and the block to run its loop in.

    The context turns off parameter gradients (``torch.func`` computes the input gradient
    regardless). The energy's parameters are read as they are: their values, storage and
    memory layout are never changed. Where ``torch.compile`` cannot run here, ``step`` is the
    transition ``fast=False`` runs, after a warning: the same chain, bit for bit.
    """
    ok, why = compile_supported()
    if not ok:
        _warn_once(f"anila_core.sampling.compiled: {why}; sampling runs eagerly, the same chain as fast=False")
        return partial(watched, sampler.transition, energy_and_grad), contextlib.nullcontext()
    step = transition_for(sampler, energy_fn, x, cuda_graphs=cuda_graphs)
    return step, torch.no_grad()


def auto_compiles(energy_fn: EnergyFn, x: torch.Tensor, n_steps: int) -> bool:
    """``fast="auto"`` for one ``run``/``sample`` call: compile a network's chains when chains × steps ≥ :data:`AUTO_MIN_CHAIN_STEPS`.

    Only energies computed by a ``torch.nn.Module`` compile: the module itself, a method of an
    object holding one, or a function or lambda over one (``lambda x: net(x).squeeze(-1)``;
    :func:`_modules_of`). An analytic energy such as a 2-D target finds no module: it costs
    microseconds per step eagerly, and its compile (seconds, once per sampler setting, energy
    and shape) would not pay within a notebook. Image batches (``x.ndim > 2``) on a CPU never compile: a
    ConvNet's transition is all convolution there, and compiling does not make it faster
    (measured).
    """
    if x.device.type == "cpu" and x.ndim > 2:
        return False
    if x.shape[0] * n_steps < AUTO_MIN_CHAIN_STEPS or not _modules_of(energy_fn):
        return False
    return compile_supported()[0]


def cache_info() -> list[dict]:
    """One row per cached transition: its name, compile mode (``"cpu"`` on a CPU, else ``torch.compile``'s mode), compile time in seconds, calls, and why it fell back (``None`` if it did not)."""
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
