"""Your own energy network: a torch.nn.Module class or factory named ``module.path:Name``, imported, built, and checked to give one differentiable energy per sample.

``--energy mypackage.nets:MyEnergy`` imports ``mypackage.nets`` (from the Python path: the
working directory under ``python -m``, or ``$PYTHONPATH``) and calls ``MyEnergy`` with
``data_shape=(D,)`` or ``(C, H, W)`` when it takes a parameter of that name, else with no
argument. The spec is saved in the run's ``config.json``, so a resumed run (and every worker
of ``compare`` and ``sweep``) builds the same network again before its weights are loaded.

A module given in memory (``Trainer(config, energy=my_module)``) has no spec a configuration
could rebuild it from; the run records ``in-memory:<its class>`` instead and says, on
resume, to pass the module again.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import torch
from torch import nn

__all__ = ["IN_MEMORY", "check_energy_spec", "given_energy_spec", "energy_label", "require_module", "load_energy", "check_energy", "module_inside"]

#: the prefix of the spec a run records for a module given in memory
IN_MEMORY = "in-memory:"
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_EXPECTED = "expected 'module.path:Name', a torch.nn.Module class or a function returning one, in a module Python can import"


def check_energy_spec(spec: str) -> None:
    """``ValueError`` unless ``spec`` is ``""``, ``module.path:Name`` or a recorded ``in-memory:...``."""
    if spec == "" or spec.startswith(IN_MEMORY) or _SPEC.match(spec):
        return
    raise ValueError(f"energy: {spec!r} is not a spec of the form module.path:Name; {_EXPECTED} (or '' for the built-in network)")


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
            raise ValueError(f"energy: this run trained a {configured.removeprefix(IN_MEMORY)}, got a {_class_name(module)}; "
                             "expected a module of the run's own class")
        raise ValueError(f"energy: the configuration names {configured!r} and a module was passed as well; pass one: "
                         "energy='' in the configuration with the module, or the spec alone")
    return spec


def _import(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"energy: cannot import {module_name!r}: Python finds no module of that name; expected a module on the "
                             "Python path (run from the folder that holds it, or add that folder to PYTHONPATH)") from None
        raise ValueError(f"energy: importing {module_name!r} failed: it imports {err.name!r}, which is not installed") from None
    except Exception as err:  # the module's own code failed: say where, not a traceback
        raise ValueError(f"energy: importing {module_name!r} raised {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None


def _resolve(spec: str):
    module_name, _, attribute = spec.partition(":")
    target = _import(module_name)
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = sorted(n for n, v in vars(_import(module_name)).items() if not n.startswith("_") and
                           (inspect.isfunction(v) or (inspect.isclass(v) and issubclass(v, nn.Module))))
            known = f" (it defines {', '.join(names[:6])}{' ...' if len(names) > 6 else ''})" if names else ""
            raise ValueError(f"energy: {module_name!r} has no {attribute!r}{known}; {_EXPECTED}")
        target = getattr(target, part)
    return target


def require_module(spec: str) -> None:
    """``ValueError`` saying how to pass the module again, when ``spec`` records one given in memory: no configuration can build it."""
    if spec.startswith(IN_MEMORY):
        raise ValueError(f"energy: this run trained a module given in memory ({spec.removeprefix(IN_MEMORY)}, from the Python API), "
                         "which a configuration cannot build again; pass it again: Trainer(config, energy=module) or "
                         "Run(out, resume=True, energy=module), a module of the same class (its weights come from the "
                         "checkpoint); for runs that resume by themselves, from the command line too, name an importable "
                         "class or factory instead: energy='module.path:Name' (--energy)")


def load_energy(spec: str, data_shape: tuple[int, ...]) -> nn.Module:
    """Import and build the energy ``spec`` names, for data points of shape ``data_shape``; one ``ValueError`` when it cannot."""
    require_module(spec)
    check_energy_spec(spec)
    factory = _resolve(spec)
    if isinstance(factory, nn.Module):
        raise ValueError(f"energy: {spec} is a module instance; expected its class or a function that builds it (a run builds "
                         "its own network, and a resumed run builds it again)")
    if not (inspect.isclass(factory) and issubclass(factory, nn.Module)) and not inspect.isfunction(factory):
        raise ValueError(f"energy: {spec} is a {type(factory).__name__}; {_EXPECTED}")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_shape = "data_shape" in parameters
    needed = [n for n, p in parameters.items() if n != "data_shape" and p.default is p.empty
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        raise ValueError(f"energy: {spec} cannot be built: it needs {', '.join(needed)}; expected a class or function that "
                         "takes no argument, or only data_shape (the shape of one data point: (D,) or (C, H, W))")
    try:
        model = factory(data_shape=tuple(data_shape)) if takes_shape else factory()
    except Exception as err:
        raise ValueError(f"energy: building {spec} raised {type(err).__name__}: {' '.join(str(err).split())[:200]}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"energy: {spec} returned a {type(model).__name__}; expected a torch.nn.Module")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"energy: {spec} has no parameters; expected a network with weights to train")
    return model


def check_energy(model: nn.Module, x: torch.Tensor, label: str) -> None:
    """``ValueError`` unless ``model`` maps the data points ``x`` to one finite energy each, differentiable in ``x`` and in its parameters.

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
            except Exception as err:
                raise ValueError(f"energy: {label} fails on data points of shape {shape} ({type(err).__name__}: "
                                 f"{' '.join(str(err).split())[:200]}); expected a forward that takes a batch (N, *data_shape)") from None
            if not isinstance(energy, torch.Tensor):
                raise ValueError(f"energy: {label} returned a {type(energy).__name__}; expected a tensor of shape ({n},): one energy per sample")
            if tuple(energy.shape) != (n,):
                hint = " (squeeze its last dimension)" if tuple(energy.shape) == (n, 1) else ""
                raise ValueError(f"energy: {label} returned shape {tuple(energy.shape)} for {n} samples; expected ({n},): one energy "
                                 f"per sample{hint}")
            if not energy.is_floating_point():
                raise ValueError(f"energy: {label} returned dtype {energy.dtype}; expected floating-point energies")
            if not bool(torch.isfinite(energy).all()):
                raise ValueError(f"energy: {label} returned NaN or infinite energies at data points; expected finite energies")
            if not energy.requires_grad:
                raise ValueError(f"energy: {label} is not differentiable in its input: its energies carry no gradient (detached, or "
                                 "computed outside torch); expected E(x) computed from x with torch operations")
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(energy.sum(), [x, *params], allow_unused=True)
            if grads[0] is None:
                raise ValueError(f"energy: {label} is not differentiable in its input: no gradient reaches x (its energies do not "
                                 "depend on x); expected E(x) computed from x with torch operations")
            if not bool(torch.isfinite(grads[0]).all()):
                raise ValueError(f"energy: {label} has a NaN or infinite gradient in x at data points; expected a finite gradient")
            if all(g is None for g in grads[1:]):
                raise ValueError(f"energy: {label}'s energies do not depend on its parameters, so training cannot change them; "
                                 "expected an energy computed with its weights")
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
