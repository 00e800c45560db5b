"""A run folder read back: its trainer rebuilt from config.json and the checkpoint, to resume or sample from it."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import torch

from anila_core.failures import is_out_of_memory
from anila_core.device import resolve_device
from anila_core.training import distributed
from anila_core.training.config import TrainConfig, changed_settings, describe_changes
from anila_core.fileio import (
    atomic_write_json,
    check_regular,
)
from anila_core.training.limits import check_memory, out_of_memory
from anila_core.training.checkpoint_checks import validate_checkpoint
from anila_core.training.checkpoint_file import fit_generator_states, load_checkpoint
from anila_core.training.kinds import CHECKPOINT
from anila_core.training.trainer import Trainer
from anila_core.training.user_energy import (
    energy_for_run,
    given_energy_spec,
    module_inside,
    require_module,
    supplied_energy,
)

__all__ = ["build_trainer", "load_trainer"]


def build_trainer(config: TrainConfig, progress: bool, energy: torch.nn.Module | None = None) -> Trainer:
    """``Trainer(config)``, with a failed allocation (a huge replay buffer, say) answered by the sizes to reduce."""
    try:
        return Trainer(config, progress=progress, energy=energy)
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise out_of_memory(err, config, "while building the trainer") from None


def load_trainer(
    out_dir: str | Path,
    progress: bool = True,
    iters: int | None = None,
    device: str | None = None,
    data_root: str | None = None,
    on_divergence: str | None = None,
    max_rollbacks: int | None = None,
    write_config: bool = False,
    energy: torch.nn.Module | None = None,
) -> Trainer:
    """Rebuild the trainer of a run directory from its ``config.json`` and checkpoint (for resuming or sampling).

    ``iters``, ``device``, ``data_root`` and the divergence policy may differ from the run's own
    (a longer run, another machine, the dataset somewhere else, rollback after a divergence).
    With ``write_config`` (what ``--resume`` does) a change is written back to ``config.json``;
    without it, loading a run to sample from it leaves its folder as it was. A checkpoint that does not belong to the
    configuration (other settings, another architecture, another format) is refused with a
    ``ValueError`` that names the file and the difference. ``energy``: the network of your own
    a run started with in memory (its weights come from the checkpoint), or, for a run whose
    ``config.json`` names one (``module.path:Name``), that spec again or the class itself:
    loading a run imports no module the caller did not name, and a named one whose module would
    be imported from inside the run folder is refused.
    """
    out = Path(out_dir)
    config_path, ckpt_path = out / "config.json", out / CHECKPOINT
    for path in (config_path, ckpt_path):
        if os.path.lexists(path) and not path.exists():
            raise ValueError(
                f"{path}: is a link that leads nowhere (to a missing file, or round in a loop); expected the "
                f"{path.name} a run wrote"
            )
    if not config_path.exists():
        raise ValueError(
            f"out_dir: {out} has no config.json; expected the folder of a run, which holds its config.json and "
            "checkpoint"
        )
    if not ckpt_path.exists():
        raise ValueError(
            f"out_dir: {out} has no {CHECKPOINT} yet: the run stopped before its first checkpoint, so there "
            f"is nothing to resume; start it afresh (delete {out} or choose another out_dir)"
        )
    check_regular(config_path, "the config.json a run wrote")
    try:
        saved_config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        reason = "it nests its JSON too deeply to read" if isinstance(err, RecursionError) else str(err)
        raise ValueError(
            f"{config_path}: not a valid run configuration ({reason}); expected the config.json a run wrote"
        ) from None
    if not isinstance(saved_config, dict):
        raise ValueError(
            f"{config_path}: holds a JSON {type(saved_config).__name__}, not an object of settings; expected the "
            "config.json a run wrote"
        )
    try:
        config = TrainConfig.from_dict(saved_config)
        TrainConfig.from_dict(saved_config).validate()  # a copy: validate() makes the data path absolute
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{config_path}: not a valid run configuration ({err}); expected the config.json a run wrote"
        ) from None
    check_regular(ckpt_path, f"the {CHECKPOINT} a run wrote")
    changes = {}
    if iters is not None:
        changes["iters"] = iters
    if device is not None:
        changes["device"] = device
    if data_root is not None:
        changes["data_root"] = str(data_root)
    if on_divergence is not None:
        changes["on_divergence"] = on_divergence
    if max_rollbacks is not None:
        changes["max_rollbacks"] = max_rollbacks
    config = config.replace(**changes)
    inside = module_inside(config.energy, out)  # found on the path, not imported
    if inside is not None:
        raise ValueError(
            f"{config_path}: names the energy {config.energy}, whose module would be imported from {inside}, inside "
            "the run folder; loading a run never runs code from its folder; expected a module of your own Python "
            "path: move it out of the run folder"
        )
    given = energy_for_run(config.energy, energy, str(config_path))  # before anything is imported
    energy = given if isinstance(given, torch.nn.Module) else None
    if energy is not None:
        config = config.replace(energy=given_energy_spec(config.energy, energy))
    else:
        require_module(config.energy)
    state = load_checkpoint(ckpt_path)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(
            f"{ckpt_path}: not an AniLA checkpoint (expected a dict with the model's weights, "
            f"got {type(state).__name__}{' without a model' if isinstance(state, dict) else ''})"
        )
    other = state.get("config")
    if isinstance(other, dict):
        differ = changed_settings(other, saved_config)
        if differ:
            diffs = describe_changes(differ, other, saved_config, "in the checkpoint", "in config.json")
            raise ValueError(
                f"{ckpt_path}: belongs to another run than {config_path}: {diffs}; expected the checkpoint "
                "and config.json of the same run"
            )
    if iters is not None and "iteration" in state and iters < int(state["iteration"]):
        raise ValueError(
            f"iters: {iters} is below the {int(state['iteration'])} iterations the checkpoint has already "
            f"trained; expected iters >= {int(state['iteration'])}"
        )
    device = resolve_device(config.device)
    if fit_generator_states(state, device) and distributed.current().is_main:
        print(
            f"notice: {ckpt_path} was saved on another kind of device than {device}; its chain generator's state "
            "cannot move there, so the chains continue from a generator seeded from that state: the run goes on, but "
            "not "
            "bit-identical to one that never changed device",
            file=sys.stderr,
        )
    supplied = (
        supplied_energy(config.energy, given) if given is not None and energy is None else contextlib.nullcontext()
    )
    with supplied:  # the class the caller gave builds the network; a spec the caller gave is imported
        try:
            validate_checkpoint(
                state, config, model=energy
            )  # before the trainer is built: a checkpoint that cannot fit is refused first
        except ValueError as err:
            raise ValueError(f"{ckpt_path}: {str(err).removeprefix('checkpoint: ')}") from None
        check_memory(config)
        trainer = build_trainer(config, progress, energy)
    try:
        trainer.load_state_dict(state)
    except (ValueError, KeyError) as err:
        detail = str(err).removeprefix("checkpoint: ") if isinstance(err, ValueError) else f"it lacks {err}"
        raise ValueError(f"{ckpt_path}: {detail}") from None
    trainer.guard.record_checkpoint(trainer.iteration, ckpt_path, trainer.model)
    if write_config and changes and distributed.current().is_main:
        atomic_write_json(config_path, trainer.config.to_dict())
    return trainer
