"""Run directories: config, metrics rows, checkpoints, final figures — written atomically by one process at a time,
resumable exactly (also under torchrun, where rank 0 writes)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch

from anila_core.failures import DiskFull, LockLost, RunFailure, disk_full, is_out_of_memory
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
    lock_holder,
    make_folder,
    read_json_file,
    remove_made_folders,
    write_jsonl,
)
from anila_core.training.guard import TrainingDiverged, divergence_record
from anila_core.training.limits import check_memory, out_of_memory
from anila_core.training.kinds import CHECKPOINT, KNOWN_RUN_FILES
from anila_core.training.run_loading import build_trainer, load_trainer
from anila_core.training.trainer import Trainer
from anila_core.training.user_energy import (
    energy_for_run,
    supplied_energy,
    user_code_failure,
)

__all__ = ["Run", "CHECKPOINT", "remove_stale_temporaries"]


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
        # resumed run imports nothing its folder names alone); None for the built-in network
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
            self.trainer = build_trainer(config, progress, given)
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
        it, check that the lock is still the folder's (:class:`anila_core.failures.LockLost` otherwise) before a
        write."""
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

    def record_divergence(self, err: TrainingDiverged) -> dict:
        """Write ``final.json`` of a run that diverged, as a result (a comparison's): where and why, no trained
        measures (:func:`anila_core.training.guard.divergence_record`)."""
        final = divergence_record(self.trainer, err)
        self._write_final(final)
        return final

    def _write_final(self, final: dict) -> None:
        self._hold()  # again: drawing the figures took a while
        atomic_write_json(self.out / "final.json", final)


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
