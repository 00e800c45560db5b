"""Run directories: config, metrics rows, checkpoints, final figures — written atomically by one process at a time,
resumable exactly (also under torchrun, where rank 0 writes)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from anila_core.failures import DiskFull, LockLost, RunFailure, disk_full, is_out_of_memory
from anila_core.device import resolve_device
from anila_core.training import distributed
from anila_core.training.config import TrainConfig, changed_settings, describe_changes
from anila_core.fileio import (
    LOCK_FILE,
    FolderBusy,
    FolderLock,
    append_jsonl,
    atomic_torch_save,
    atomic_write_json,
    busy_error,
    check_regular,
    lock_holder,
    make_folder,
    read_json_file,
    remove_made_folders,
    write_jsonl,
)
from anila_core.training.limits import check_memory, out_of_memory
from anila_core.training.checkpoint_checks import validate_checkpoint
from anila_core.training.checkpoint_file import fit_generator_states, load_checkpoint
from anila_core.training.kinds import CHECKPOINT, KNOWN_RUN_FILES
from anila_core.training.trainer import Trainer
from anila_core.training.user_energy import (
    energy_for_run,
    given_energy_spec,
    module_inside,
    require_module,
    supplied_energy,
    user_code_failure,
)

__all__ = ["Run", "CHECKPOINT", "load_trainer", "remove_stale_temporaries"]


class Run:
    """A training run that lives in ``out_dir``, written by this process alone while it is open.

    A new run refuses a folder that already holds files (nothing a user made is
    overwritten); ``resume=True`` continues the run found there from its checkpoint, with
    the same results as if it had never stopped (``data_root`` may point to where the
    dataset lives now, ``device`` to another device). With ``resume=True, restart=True`` and a
    ``config``, a run that was stopped before its first checkpoint (and has the same settings)
    starts again from the beginning instead of being refused. Under torchrun every rank builds
    the Run; only rank 0 writes.

    The folder is locked (``.lock``, see :class:`anila_core.fileio.FolderLock`) from the
    Run's creation until :meth:`train` returns or raises, or :meth:`close`; another writer,
    in another process or this one, is refused meanwhile. A failure of the machine (disk
    full, out of memory) before the first checkpoint removes the files the run wrote, so
    that the same command can run again.
    """

    def __init__(
        self,
        out_dir: str | Path,
        config: TrainConfig | None = None,
        resume: bool = False,
        iters: int | None = None,
        progress: bool = True,
        data_root: str | None = None,
        on_divergence: str | None = None,
        max_rollbacks: int | None = None,
        device: str | None = None,
        restart: bool = False,
        energy: torch.nn.Module | None = None,
    ):
        self.out = Path(out_dir)
        # a network of your own given in memory (see Trainer), or the spec or class of the one config.json names (a
        # resumed
        # run imports nothing its folder names alone); None for the built-in network
        self._energy = energy
        self.is_main = distributed.current().is_main
        self._lock = FolderLock(self.out)
        self._made: list[Path] = []  # folders this Run created: removed again when its start fails
        self._started = False  # this Run wrote config.json: it started the run in the folder
        unstarted = False
        if resume and restart and config is not None:
            unstarted = distributed.broadcast_object(
                ((self.out / "config.json").is_file() and not (self.out / CHECKPOINT).exists())
                if self.is_main
                else None
            )
        if resume and not unstarted:
            self._resume(
                progress=progress,
                iters=iters,
                data_root=data_root,
                on_divergence=on_divergence,
                max_rollbacks=max_rollbacks,
                device=device,
            )
        else:
            self._start(config, iters, progress, restart=unstarted)

    def _resume(self, **options) -> None:
        error = None
        if self.is_main and self.out.is_dir():  # a missing folder: load_trainer says what is wrong, nothing to lock
            try:
                self._lock.acquire()
            except FolderBusy as err:
                error = str(err)
            except OSError as err:
                error = f"out_dir: cannot write in {self.out}: {err.strerror}; expected a run folder you can write to"
        error = distributed.broadcast_object(error)
        if error:
            raise ValueError(error)
        try:
            self.trainer = load_trainer(self.out, write_config=True, energy=self._energy, **options)
            if self.is_main:
                # rows after the checkpoint belong to iterations that will be run again
                write_jsonl(self.out / "metrics.jsonl", self.trainer.history)
                remove_stale_temporaries(self.out)
        except BaseException:
            self._lock.release()
            raise

    def _start(self, config: TrainConfig | None, iters: int | None, progress: bool, restart: bool) -> None:
        if config is None:
            raise ValueError("config: a new run needs a TrainConfig")
        if iters is not None:
            config = config.replace(iters=iters)
        # rank 0 checks the folder; every rank raises the same error if it cannot be used
        error = distributed.broadcast_object(
            self._folder_problem(config if restart else None) if self.is_main else None
        )
        if error:
            raise ValueError(error)
        # the trainer first: a missing dataset or too little memory then leaves no empty run folder behind
        check_memory(config.validate())
        given = (
            self._energy if isinstance(self._energy, torch.nn.Module) else None
        )  # a spec or class: the config names it
        supplied = contextlib.nullcontext()
        if self._energy is not None and given is None:
            named = energy_for_run(config.energy, self._energy, "the configuration")
            if not isinstance(named, str):
                supplied = supplied_energy(config.energy, named)
        with supplied:
            self.trainer = _build_trainer(config, progress, given)
        if not self.is_main:
            return
        try:
            self._made = make_folder(self.out)
            try:
                self._lock.acquire()
            except OSError as err:
                raise ValueError(
                    f"out_dir: cannot write in {self.out}: {err.strerror}; expected a folder you can write to"
                ) from None
            # again under the lock: another writer may have started between the first look and now
            problem = self._folder_problem(config if restart else None)
            if problem:
                raise ValueError(problem)
            if restart:
                for name in KNOWN_RUN_FILES:  # what the stopped run wrote before its first checkpoint; it starts again
                    (self.out / name).unlink(missing_ok=True)
            remove_stale_temporaries(self.out)
            self._started = True
            try:
                atomic_write_json(self.out / "config.json", self.trainer.config.to_dict())
                (self.out / "metrics.jsonl").touch()
            except OSError as err:
                raise ValueError(
                    f"out_dir: cannot write in {self.out}: {err.strerror}; expected a folder you can write to"
                ) from None
        except BaseException:
            self._undo_start()
            raise

    def _undo_start(self) -> None:
        """Remove what this Run's start (or its run before the first checkpoint) wrote: its files, the lock, the folders
        it made."""
        if self._started:
            for name in ("config.json", "metrics.jsonl"):
                (self.out / name).unlink(missing_ok=True)
            remove_stale_temporaries(self.out)
            self._started = False
        self._lock.release()
        remove_made_folders(self._made)
        self._made = []

    def _folder_problem(self, restart: TrainConfig | None = None) -> str | None:
        """Why ``out`` cannot hold a new run (``None`` when it can); with ``restart``, why that config cannot start
        again there."""
        if self.out.exists() and not self.out.is_dir():
            return f"out_dir: {self.out} exists and is not a folder"
        if not self.out.is_dir():
            return None
        if not self._lock.held:
            holder = lock_holder(self.out)
            if holder:
                return str(busy_error(holder))
        # a lock and the temporaries a killed writer left do not make a folder used
        names = {p.name for p in self.out.iterdir()} - {LOCK_FILE} - {p.name for p in _stale_temporaries(self.out)}
        if restart is None:
            if names:
                return (
                    f"out_dir: {self.out} already holds files; pass resume=True to continue that run or choose "
                    "another folder"
                )
            return None
        if CHECKPOINT in names:
            return f"out_dir: {self.out} has a checkpoint now; resume it with resume=True"
        unknown = sorted(names - KNOWN_RUN_FILES)
        if unknown:
            return (
                f"out_dir: {self.out} holds files no run wrote ({', '.join(unknown[:3])}); expected the folder of a "
                "run "
                "stopped before its first checkpoint, which then starts again; move those files or choose another "
                "folder"
            )
        config_path = self.out / "config.json"
        try:
            saved = TrainConfig.from_dict(read_json_file(config_path, "the config.json a run wrote")).to_dict()
        except ValueError as err:
            return (
                str(err)
                if str(err).startswith(str(config_path))
                else f"{config_path}: not a valid run configuration ({err}); expected the config.json a run wrote"
            )
        except (OSError, TypeError, AttributeError) as err:
            return f"{config_path}: not a valid run configuration ({err}); expected the config.json a run wrote"
        wanted = restart.with_fixed_schedule().to_dict()
        differ = changed_settings(saved, wanted)
        if differ:
            return (
                f"out_dir: {self.out} holds a run made with other settings "
                f"({describe_changes(differ, saved, wanted, 'there', 'now')}); "
                "delete that folder to train again, or choose another out_dir"
            )
        return None

    @property
    def config(self) -> TrainConfig:
        return self.trainer.config

    def _hold(self) -> None:
        """Take the folder's lock again when this Run let go of it (after :meth:`train` or :meth:`close`); when it holds
        it,
        check that the lock is still the folder's (:class:`anila_core.failures.LockLost` otherwise) before a write."""
        if not self.is_main:
            return
        if self._lock.held:
            self._lock.verify()
        else:
            self._lock.acquire()

    def close(self) -> None:
        """Let go of the folder: another process may write it from now on."""
        self._lock.release()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save_checkpoint(self, trainer: Trainer | None = None) -> Path:
        trainer = trainer or self.trainer
        # never replace the last good checkpoint by a broken state
        trainer.check_parameters()
        path = self.out / CHECKPOINT
        state = trainer.state_dict()  # every rank: it gathers the ranks' chain states
        if self.is_main:
            self._hold()
            atomic_torch_save(path, state)
        trainer.guard.record_checkpoint(trainer.iteration, path, trainer.model)
        return path

    def train(self, callback: Callable[[Trainer, dict], None] | None = None) -> dict:
        """Train to the config's ``iters``, logging rows and checkpointing; return ``final.json``'s content.

        The folder's lock is let go when this returns or raises. A full disk or an allocation
        that fails raises :class:`anila_core.failures.RunFailure` with what to do; before the
        first checkpoint the files this run wrote are removed, after it the checkpoint is intact.
        """

        def log(trainer, row):
            if self.is_main:
                self._lock.verify()  # a writer whose lock was deleted or replaced stops before this row
            append_jsonl(self.out / "metrics.jsonl", row)
            if callback is not None:
                callback(trainer, row)

        def rolled_back(trainer, record):
            if self.is_main:  # the rows after the state rolled back to are run again
                self._lock.verify()
                write_jsonl(self.out / "metrics.jsonl", trainer.history)

        self._hold()
        try:
            self.trainer.run(callback=log, on_checkpoint=self.save_checkpoint, on_rollback=rolled_back)
            if not self.is_main:
                return {}  # rank 0 writes final.json and the figures
            return self.finish()
        except LockLost:
            self._lock.forget()  # the file at the folder's path is not ours to remove, nor are the run's files
            raise
        except KeyboardInterrupt as err:
            if self.trainer.guard.last_good_checkpoint is None and self._started and self.is_main:
                self._undo_start()  # nothing to resume: the same command can run again
                err.anila_note = (
                    f"interrupted before the first checkpoint: nothing to resume, so the files of this run were "
                    f"removed from {self.out}; run the same command again (without --resume)"
                )
            elif self.trainer.guard.last_good_checkpoint is not None:
                iteration, path = self.trainer.guard.last_good_checkpoint
                err.anila_note = (
                    f"interrupted: the last checkpoint {path} (iteration {iteration}) is intact; continue with "
                    "the same command plus --resume"
                )
            raise
        except (
            Exception,
            SystemExit,
        ) as err:  # a network of your own that raised or exited: named, not a bare traceback
            theirs = None if is_out_of_memory(err) else user_code_failure(err, self.config.energy)
            if theirs is None and isinstance(err, (RunFailure, MemoryError, RuntimeError, OSError)):
                raise self._failure(err) from None
            if theirs is None:
                raise
            if self.trainer.guard.last_good_checkpoint is not None:
                iteration, path = self.trainer.guard.last_good_checkpoint
                note = f"the last checkpoint {path} (iteration {iteration}) is intact"
            elif self._started and self.is_main:
                self._undo_start()
                note = f"no checkpoint was written yet, so the files of this run were removed from {self.out}"
            else:
                note = "no checkpoint was written yet"
            raise ValueError(f"{theirs}; {note}") from None
        finally:
            self.close()

    def _failure(self, err: BaseException) -> BaseException:
        """What a run that raised ``err`` raises: a failure of the machine with what became of the folder, else ``err``
        itself."""
        if isinstance(err, RunFailure):
            failure = err
        elif isinstance(err, OSError):
            failure = disk_full(err, err.filename or self.out)  # a write outside anila_core.fileio (a library's own)
        elif is_out_of_memory(err):
            failure = out_of_memory(err, self.config, f"while training {self.out}")
        else:
            failure = None
        return err if failure is None else self._after_failure(failure)

    def _after_failure(self, failure: RunFailure) -> RunFailure:
        """``failure`` with what became of the folder: the last checkpoint intact, or (none yet) the run's files
        removed."""
        disk = isinstance(failure, DiskFull)
        freed = (
            "space is free on that disk" if disk else "more memory is free (the sizes of a run cannot change on resume)"
        )
        if self.trainer.guard.last_good_checkpoint is not None:
            iteration, path = self.trainer.guard.last_good_checkpoint
            note = (
                f"the last good checkpoint {path} (iteration {iteration}) is intact: continue with resume=True "
                f"once {freed}"
            )
        elif self._started and self.is_main:
            self._undo_start()
            again = "once space is free there" if disk else "with smaller sizes"
            note = (
                f"no checkpoint was written yet, so the files of this run were removed from {self.out}: run the "
                f"command again {again}"
            )
        else:
            note = "no checkpoint was written yet"
        return type(failure)(f"{failure}; {note}")

    def finish(self) -> dict:
        """Write ``final.json`` and the figures from the current state."""
        self._hold()
        final = self.trainer.summary()
        self.trainer.kind.save_figures(self.trainer, self.out)
        self._write_final(final)
        return final

    def _write_final(self, final: dict) -> None:
        self._hold()  # again: drawing the figures took a while
        atomic_write_json(self.out / "final.json", final)


def _build_trainer(config: TrainConfig, progress: bool, energy: torch.nn.Module | None = None) -> Trainer:
    """``Trainer(config)``, with a failed allocation (a huge replay buffer, say) answered by the sizes to reduce."""
    try:
        return Trainer(config, progress=progress, energy=energy)
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise out_of_memory(err, config, "while building the trainer") from None


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in a run directory (``.NAME.XXXXXXXX.tmp`` of a run file); return
    them.

    :func:`anila_core.fileio.atomic_write` writes each file through such a temporary and
    renames it; a SIGKILL between the two leaves it behind. Only these names are touched.
    """
    stale = _stale_temporaries(out)
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _stale_temporaries(out: str | Path) -> list[Path]:
    return [p for p in Path(out).glob(".*.tmp") if p.is_file() and p.name[1:].rsplit(".", 2)[0] in KNOWN_RUN_FILES]


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
        trainer = _build_trainer(config, progress, energy)
    try:
        trainer.load_state_dict(state)
    except (ValueError, KeyError) as err:
        detail = str(err).removeprefix("checkpoint: ") if isinstance(err, ValueError) else f"it lacks {err}"
        raise ValueError(f"{ckpt_path}: {detail}") from None
    trainer.guard.record_checkpoint(trainer.iteration, ckpt_path, trainer.model)
    if write_config and changes and distributed.current().is_main:
        atomic_write_json(config_path, trainer.config.to_dict())
    return trainer
