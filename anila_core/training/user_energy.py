"""Your own energy network: a torch.nn.Module class or factory named ``module.path:Name``, imported, built, and checked
to give one differentiable energy per sample.

``--energy mypackage.nets:MyEnergy`` imports ``mypackage.nets`` (from the Python path: the
working directory under ``python -m``, or ``$PYTHONPATH``) and calls ``MyEnergy`` with
``data_shape=(D,)`` or ``(C, H, W)`` when it takes a parameter of that name, else with no
argument. The spec is saved in the run's ``config.json``, so a resumed run (and every worker
of ``compare`` and ``sweep``) builds the same network again before its weights are loaded.

A module given in memory (``Trainer(config, energy=my_module)``) has no spec a configuration
could rebuild it from; the run records ``in-memory:<its class>`` instead and says, on
resume, to pass the module again.

Loading or resuming a run imports no module that the caller did not name in that call: a run
folder (its ``config.json``, its checkpoint) from elsewhere must not run code. A run trained
with ``--energy M:N`` resumes with ``--energy M:N`` given again, and a loader takes the energy
(its spec or its class) as an argument (:func:`energy_for_run`).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

__all__ = [
    "IN_MEMORY",
    "check_energy_spec",
    "energy_for_run",
    "supplied_energy",
    "user_code_failure",
    "given_energy_spec",
    "energy_label",
    "require_module",
    "load_energy",
    "check_energy",
    "module_inside",
]

#: the prefix of the spec a run records for a module given in memory
IN_MEMORY = "in-memory:"
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_EXPECTED = (
    "expected 'module.path:Name', a torch.nn.Module class or a function returning one, in a module Python can import"
)


def check_energy_spec(spec: str) -> None:
    """``ValueError`` unless ``spec`` is ``""``, ``module.path:Name`` or a recorded ``in-memory:...``."""
    if spec == "" or spec.startswith(IN_MEMORY) or _SPEC.match(spec):
        return
    raise ValueError(
        f"energy: {spec!r} is not a spec of the form module.path:Name; {_EXPECTED} (or '' for the built-in network)"
    )


def energy_label(spec: str) -> str:
    """How messages name a network of your own: its spec, or its class for one given in memory."""
    return spec.removeprefix(IN_MEMORY) + (" (given in memory)" if spec.startswith(IN_MEMORY) else "")


def _class_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def given_energy_spec(configured: str, module) -> str:
    """The spec a run records for ``module`` passed in memory; refused when the configuration names another energy."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"energy: expected a torch.nn.Module (the network to train), got {type(module).__name__}")
    spec = IN_MEMORY + _class_name(module)
    if configured and configured != spec:
        if configured.startswith(IN_MEMORY):
            raise ValueError(
                f"energy: this run trained a {configured.removeprefix(IN_MEMORY)}, got a {_class_name(module)}; "
                "expected a module of the run's own class"
            )
        raise ValueError(
            f"energy: the configuration names {configured!r} and a module was passed as well; pass one: "
            "energy='' in the configuration with the module, or the spec alone"
        )
    return spec


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(
                f"energy: cannot import {module_name!r}: Python finds no module of that name; expected a module on the "
                "Python path (run from the folder that holds it, or add that folder to PYTHONPATH)"
            ) from None
        raise ValueError(
            f"energy: importing {module_name!r} failed: it imports {err.name!r}, which is not installed"
        ) from None
    except SystemExit as err:  # sys.exit() at import would end the run silently (exit 0, no result)
        raise ValueError(
            f"energy: importing {module_name!r} called sys.exit({err.code!r}); expected a module that defines "
            "the network without ending the program"
        ) from None
    except Exception as err:  # the module's own code failed: say where, not a traceback
        raise ValueError(
            f"energy: importing {module_name!r} raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        ) from None


#: the energies a loader was given in this call, spec → class or factory: built without importing anything
_SUPPLIED: contextvars.ContextVar[dict] = contextvars.ContextVar("anila_supplied_energies", default={})


@contextlib.contextmanager
def supplied_energy(spec: str, factory) -> Iterator[None]:
    """Inside the block, :func:`load_energy` builds ``spec`` with ``factory`` (the class the caller gave) instead of
    importing it."""
    token = _SUPPLIED.set({**_SUPPLIED.get(), spec: factory})
    try:
        yield
    finally:
        _SUPPLIED.reset(token)


def energy_for_run(saved: str, given, where: str) -> object | None:
    """What a loader of the run whose configuration names ``saved`` may build it with, from the ``given`` energy
    argument.

    ``given`` is the caller's: ``None``, the spec itself (``"module.path:Name"``, what
    ``--energy`` gives), the class or factory, or a module instance (a run trained in memory).
    Returns ``given`` when it names the saved spec (or is a module for an in-memory run);
    ``ValueError`` naming ``where`` (the config.json) when the run's network is not named, or
    named otherwise: a run folder never decides which code is imported.
    """
    if given is None or given == "":
        if saved and not saved.startswith(IN_MEMORY):
            raise ValueError(
                f"energy: {where} names the network {saved!r}, and loading a run imports no module that the caller "
                f"did not name; expected it named again: --energy {saved} on the command line (the same "
                f"command plus --resume), or energy={saved!r} (or the class itself) for load_trainer, load_runs and Run"
            )
        return None
    if isinstance(given, nn.Module):
        return given  # a run trained in memory: given_energy_spec checks its class
    if isinstance(given, str):
        check_energy_spec(given)
        if given != saved:
            raise ValueError(
                f"energy: {given!r} is not the network {where} names ({saved or 'the built-in one'!r}); expected "
                "the run's own energy (a resumed run cannot change its network)"
            )
        return given
    if callable(given):
        attribute = saved.partition(":")[2]
        name = getattr(given, "__qualname__", getattr(given, "__name__", ""))
        if not saved or saved.startswith(IN_MEMORY) or name != attribute:
            raise ValueError(
                f"energy: {name or type(given).__name__} is not the network {where} names "
                f"({saved or 'the built-in one'!r}); expected the class or factory {attribute or '(none)'} of that spec"
            )
        return given
    raise TypeError(
        f"energy: expected the run's energy spec 'module.path:Name', its class or factory, or a torch.nn.Module, "
        f"got {type(given).__name__}"
    )


def _resolve(spec: str):
    module_name, _, attribute = spec.partition(":")
    target = _import(module_name)
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = sorted(
                n
                for n, v in vars(_import(module_name)).items()
                if not n.startswith("_")
                and (inspect.isfunction(v) or (inspect.isclass(v) and issubclass(v, nn.Module)))
            )
            known = f" (it defines {', '.join(names[:6])}{' ...' if len(names) > 6 else ''})" if names else ""
            raise ValueError(f"energy: {module_name!r} has no {attribute!r}{known}; {_EXPECTED}")
        target = getattr(target, part)
    return target


def require_module(spec: str) -> None:
    """``ValueError`` saying how to pass the module again, when ``spec`` records one given in memory: no configuration
    can build it."""
    if spec.startswith(IN_MEMORY):
        raise ValueError(
            f"energy: this run trained a module given in memory ({spec.removeprefix(IN_MEMORY)}, from the Python API), "
            "which a configuration cannot build again; pass it again: Trainer(config, energy=module) or "
            "Run(out, resume=True, energy=module), a module of the same class (its weights come from the "
            "checkpoint); for runs that resume by themselves, from the command line too, name an importable "
            "class or factory instead: energy='module.path:Name' (--energy)"
        )


def load_energy(spec: str, data_shape: tuple[int, ...]) -> nn.Module:
    """Import and build the energy ``spec`` names, for data points of shape ``data_shape``; one ``ValueError`` when it
    cannot."""
    require_module(spec)
    check_energy_spec(spec)
    factory = _SUPPLIED.get().get(spec)
    if factory is None or isinstance(factory, str):
        factory = _resolve(spec)
    if isinstance(factory, nn.Module):
        raise ValueError(
            f"energy: {spec} is a module instance; expected its class or a function that builds it (a run builds "
            "its own network, and a resumed run builds it again)"
        )
    if not (inspect.isclass(factory) and issubclass(factory, nn.Module)) and not inspect.isfunction(factory):
        raise ValueError(f"energy: {spec} is a {type(factory).__name__}; {_EXPECTED}")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_shape = "data_shape" in parameters
    needed = [
        n
        for n, p in parameters.items()
        if n != "data_shape" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if needed:
        raise ValueError(
            f"energy: {spec} cannot be built: it needs {', '.join(needed)}; expected a class or function that "
            "takes no argument, or only data_shape (the shape of one data point: (D,) or (C, H, W))"
        )
    try:
        model = factory(data_shape=tuple(data_shape)) if takes_shape else factory()
    except SystemExit as err:
        raise ValueError(
            f"energy: building {spec} called sys.exit({err.code!r}); expected a network, not the end of the program"
        ) from None
    except Exception as err:
        raise ValueError(
            f"energy: building {spec} raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"energy: {spec} returned a {type(model).__name__}; expected a torch.nn.Module")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"energy: {spec} has no parameters; expected a network with weights to train")
    return model


def check_energy(model: nn.Module, x: torch.Tensor, label: str) -> None:
    """``ValueError`` unless ``model`` maps the data points ``x`` to one finite energy each, differentiable in ``x`` and
    in its parameters.

    Run once when a trainer is built, in eval mode and with the random state untouched, so
    that the check changes nothing a run computes afterwards.
    """
    was_training = model.training
    model.eval()
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    try:
        with torch.enable_grad(), torch.random.fork_rng(devices=devices):
            x = x.detach().clone().requires_grad_(True)
            n, shape = len(x), tuple(x.shape)
            try:
                energy = model(x)
            except SystemExit as err:
                raise ValueError(
                    f"energy: {label} called sys.exit({err.code!r}) in its forward pass; expected energies, not "
                    "the end of the program"
                ) from None
            except Exception as err:
                raise ValueError(
                    f"energy: {label} fails on data points of shape {shape} ({type(err).__name__}: "
                    f"{' '.join(str(err).split())[:200]}); expected a forward that takes a batch (N, *data_shape)"
                ) from None
            if not isinstance(energy, torch.Tensor):
                raise ValueError(
                    f"energy: {label} returned a {type(energy).__name__}; expected a tensor of shape ({n},): one "
                    "energy per sample"
                )
            if tuple(energy.shape) != (n,):
                hint = " (squeeze its last dimension)" if tuple(energy.shape) == (n, 1) else ""
                raise ValueError(
                    f"energy: {label} returned shape {tuple(energy.shape)} for {n} samples; expected ({n},): one "
                    "energy "
                    f"per sample{hint}"
                )
            if not energy.is_floating_point():
                raise ValueError(f"energy: {label} returned dtype {energy.dtype}; expected floating-point energies")
            if not bool(torch.isfinite(energy).all()):
                raise ValueError(
                    f"energy: {label} returned NaN or infinite energies at data points; expected finite energies"
                )
            if not energy.requires_grad:
                raise ValueError(
                    f"energy: {label} is not differentiable in its input: its energies carry no gradient (detached, or "
                    "computed outside torch); expected E(x) computed from x with torch operations"
                )
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(energy.sum(), [x, *params], allow_unused=True)
            if grads[0] is None:
                raise ValueError(
                    f"energy: {label} is not differentiable in its input: no gradient reaches x (its energies do not "
                    "depend on x); expected E(x) computed from x with torch operations"
                )
            if not bool(torch.isfinite(grads[0]).all()):
                raise ValueError(
                    f"energy: {label} has a NaN or infinite gradient in x at data points; expected a finite gradient"
                )
            if all(g is None for g in grads[1:]):
                raise ValueError(
                    f"energy: {label}'s energies do not depend on its parameters, so training cannot change them; "
                    "expected an energy computed with its weights"
                )
    finally:
        model.train(was_training)


def module_inside(spec: str, folder: str | Path) -> Path | None:
    """Where ``spec``'s top-level module would be imported from, when that is inside ``folder``; else ``None``.

    A resumed run imports the module its ``config.json`` names; one that sits in the run
    folder itself would be code from the folder, which loading a run never runs.
    """
    if not spec or spec.startswith(IN_MEMORY):
        return None
    top = spec.partition(":")[0].split(".")[0]
    try:
        found = importlib.util.find_spec(top)  # a top-level name: found, not imported
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    places = [found.origin] if found.origin and found.origin not in ("built-in", "frozen") else []
    places += list(found.submodule_search_locations or [])
    root = Path(folder).resolve()
    for place in places:
        path = Path(place).resolve()
        if path == root or root in path.parents:
            return path
    return None


def _outside_the_package(filename: str) -> bool:
    """Whether ``filename`` is a user's own code: neither anila_core nor Python's or an installed package's."""
    import sys

    path = Path(filename).resolve()
    package = Path(__file__).resolve().parents[1]
    if filename.startswith("<") or package in path.parents:
        return False
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return not any(p in path.parents for p in prefixes) and "site-packages" not in path.parts


def user_code_failure(err: BaseException, spec: str) -> ValueError | None:
    """A ``ValueError`` naming the module of your own (``spec``'s) that raised ``err`` or called ``sys.exit`` during a
    run; else ``None``.

    A network of your own runs inside the training loop: its ``sys.exit(0)`` would end the run
    with exit 0 and no result, and its exception with a traceback through anila_core. Only an
    error raised in code outside anila_core, Python and the installed packages counts.
    """
    if not spec or isinstance(err, KeyboardInterrupt) or not isinstance(err, (Exception, SystemExit)):
        return None
    import traceback

    frames = [f for f in traceback.extract_tb(err.__traceback__) if _outside_the_package(f.filename)]
    if not frames:
        return None
    last = frames[-1]
    what = (
        f"called sys.exit({err.code!r})"
        if isinstance(err, SystemExit)
        else f"raised {type(err).__name__}: {' '.join(str(err).split())[:200]}"
    )
    return ValueError(
        f"energy: your network {energy_label(spec)} {what} at {last.filename}:{last.lineno} (in {last.name}) "
        "during the run, which stopped there; expected a network that returns energies"
    )
