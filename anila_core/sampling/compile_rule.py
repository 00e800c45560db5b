"""When a chain samples compiled: the one rule (:func:`compiles`) and the one ``fast`` vocabulary, API to ``--fast``.

``Sampler.run``/``sample`` ask :func:`compiles` for each call (its chains × ``n_steps`` as the work, added to
what earlier calls sampled with the same network), the training loop once per run (iters × K × batch, with its own
model as the energy). The compiled step
itself is :mod:`anila_core.sampling.compiled`.
"""

from __future__ import annotations

import dis
import functools
import types
import weakref
from functools import partial

import torch

from anila_core.sampling.compiled import compile_supported
from anila_core.sampling.kernel import ArgumentTypeError, EnergyFn

__all__ = ["compiles", "networks_of", "check_fast", "parse_fast", "FAST_CHOICES", "AUTO_MIN_CHAIN_STEPS", "forget_work"]

#: the values of ``fast``, from ``Sampler.run``/``sample`` to ``TrainConfig.fast`` and ``--fast auto|true|false``:
#: compile when :func:`compiles` finds it pays, always, never
FAST_CHOICES = ("auto", True, False)
#: ``fast="auto"`` compiles a network energy's chains once the work sampled with that network reaches this many
#: chain-steps (chains × transitions): a training run's whole length (iters × K × batch), or a sampling call's
#: ``n_steps`` × chains added to what the calls before it sampled with the same network. Measured on the 2-core
#: CPUs (MLP 2-128-128-128-1, batch 256): a cold compile took 11–25 s and the compiled transition saved ≈ 0.35 ms
#: of 1.2 ms, so it paid for itself after 35k–70k transitions of 256 chains, 9–18 million chain-steps. At this
#: threshold every training preset but the smoke ones compiles (the cpu preset makes 23 million: the demo's
#: cpu-preset runs, notebook 02 at the cpu budget, cpu_long, paper), the CI sizes and the sweep's cells (10
#: million) stay eager, and a notebook's sampling calls stay eager until they have sampled that much with one
#: network (a 100-step call of 1024 chains is 102 400: about 200 of them), so no single small call pays a compile.
#: Since the steps run eight a call (``Sampler.steps``), a call compiles two graphs, of 8 steps and of 1; the one
#: compiled second reuses the first one's C++ kernels and added about a third to the cold compile (at a load of 8 on
#: the 2 cores: 138 s, then 50 s), while a transition at batch 1024 saves another 0.2–0.4 ms (measured side by
#: side): by the same measure it still pays within this threshold.
AUTO_MIN_CHAIN_STEPS = 20_000_000
#: chain-steps sampled so far with each network under ``fast="auto"`` (weak keys: it never keeps a network alive)
_SAMPLED: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()
#: the layers that make a network's transition all convolution: on a CPU, compiling does not speed it up (measured)
_CONVOLUTIONS = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)


# --------------------------------------------------------------------------- when to compile


def check_fast(fast) -> None:
    """``ValueError`` naming ``fast`` unless it is ``"auto"``, ``True`` or ``False`` (``1`` and ``"on"`` are not)."""
    if not (isinstance(fast, bool) or (isinstance(fast, str) and fast == "auto")):
        raise ArgumentTypeError(f"fast: expected one of {list(FAST_CHOICES)}, got {fast!r}")


def parse_fast(text: str) -> str | bool:
    """A ``fast`` value from the command line: ``auto``, ``true`` or ``false`` (any case)."""
    value = {"auto": "auto", "true": True, "false": False}.get(str(text).strip().lower())
    if value is None:
        raise ValueError(f"fast: expected one of auto, true, false, got {text!r}")
    return value


def compiles(
    fast,
    energy_fn: EnergyFn,
    device: torch.device | str,
    chain_steps: int,
    network_compiled: bool = False,
    record: bool = True,
) -> bool:
    """The one rule: whether a sampling call or a training run of ``chain_steps`` (chains × transitions; a training
    run: iters × K × batch) samples compiled.

    ``fast=True`` or ``False`` decides alone. ``"auto"`` compiles when all of these hold: the
    network is not compiled already (``--compile``, the other route); the energy is computed by a
    network (:func:`networks_of`; an analytic energy such as a 2-D target costs microseconds per
    step eagerly); on a CPU, none of its networks holds a convolution (a ConvNet's transition is
    all convolution there, and compiling does not make it faster, measured); the work sampled with
    that network, this call's ``chain_steps`` included, reaches :data:`AUTO_MIN_CHAIN_STEPS`, so
    the compile (seconds, once per sampler setting, energy and shape) pays; and ``torch.compile``
    runs here. Every ``"auto"`` call on a network energy adds its ``chain_steps`` to that network's
    count (:func:`forget_work` clears the counts), except with ``record=False``: a training run
    decides once for the work it plans, which it has not sampled yet.
    """
    check_fast(fast)
    if isinstance(fast, bool):
        return fast
    if network_compiled:
        return False
    networks = networks_of(energy_fn)
    if not networks:
        return False
    convolutions = any(isinstance(m, _CONVOLUTIONS) for net in networks for m in net.modules())
    if torch.device(device).type == "cpu" and convolutions:
        return False
    work = max(_SAMPLED.get(net, 0) for net in networks) + int(chain_steps)
    for net in networks if record else ():
        _SAMPLED[net] = work
    return work >= AUTO_MIN_CHAIN_STEPS and compile_supported()[0]


def forget_work() -> None:
    """Forget the chain-steps sampled with every network: ``fast="auto"`` starts counting anew."""
    _SAMPLED.clear()


#: how many calls deep :func:`networks_of` follows an energy's functions (a lambda calling a helper calling a net: 3)
_SEARCH_DEPTH = 4


def networks_of(energy_fn) -> list[torch.nn.Module]:
    """The networks ``energy_fn`` computes with, as far as they show without calling it (none for an analytic energy).

    Found in exactly these places: the energy itself when it is a module, and the module a
    bound method belongs to; for a plain function, lambda or ``functools.partial``, the modules
    it closes over, is given as arguments or reads as globals, followed through the functions,
    partials and bound methods it refers to (``lambda x: net(x).squeeze(-1)`` in a notebook finds
    ``net``); for a bound method, also the attributes its code reads off its own object
    (``self.net`` in a wrapper's ``energy`` method finds ``net``). No other attribute of any object
    is searched. A 2-D target's ``energy`` or ``lambda x: x.square().sum(1)`` finds none.
    """
    found: dict[int, torch.nn.Module] = {}
    _collect_networks(energy_fn, found, _SEARCH_DEPTH, set())
    return list(found.values())


def _collect_networks(value, found: dict, depth: int, seen: set) -> None:
    if id(value) in seen or depth < 0:
        return
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        found[id(value)] = value
    elif isinstance(value, types.MethodType):
        owner = value.__self__
        if isinstance(owner, torch.nn.Module):
            found[id(owner)] = owner
        # the attributes the method's code names that its object holds itself (``self.net``): read from the
        # instance's own dict, so no property or descriptor runs
        own = getattr(owner, "__dict__", {})
        for name in _names_read(value.__func__.__code__, _ATTRIBUTE_READS) if isinstance(own, dict) else ():
            if name in own:
                _collect_networks(own[name], found, depth - 1, seen)
        _collect_networks(value.__func__, found, depth - 1, seen)
    elif isinstance(value, partial):
        for part in (value.func, *value.args, *value.keywords.values()):
            _collect_networks(part, found, depth - 1, seen)
    elif isinstance(value, types.FunctionType):
        for cell in value.__closure__ or ():
            try:
                _collect_networks(cell.cell_contents, found, depth - 1, seen)
            except ValueError:  # a cell not yet filled (a closure over a name assigned later)
                pass
        for name in _names_read(value.__code__, _GLOBAL_READS):
            if name in value.__globals__:
                _collect_networks(value.__globals__[name], found, depth - 1, seen)


#: the instructions that read a global (``net`` in a notebook's lambda) and those that read an attribute (``self.net``)
_GLOBAL_READS, _ATTRIBUTE_READS = ("LOAD_GLOBAL", "LOAD_NAME"), ("LOAD_ATTR", "LOAD_METHOD")


@functools.lru_cache(maxsize=1024)
def _names_read(code: types.CodeType, reads: tuple[str, ...]) -> tuple[str, ...]:
    """The names ``code`` reads with the instructions ``reads`` (:data:`_GLOBAL_READS` or :data:`_ATTRIBUTE_READS`),
    its nested functions' and comprehensions' included."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in reads}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_names_read(const, reads))
    return tuple(sorted(n for n in names if isinstance(n, str)))
