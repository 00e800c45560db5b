"""Run directories: config, metrics rows, checkpoints, final figures — written atomically, resumable exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from .config import TrainConfig
from .fileio import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl, write_jsonl
from .train import Trainer

__all__ = ["Run", "CHECKPOINT", "load_trainer", "RUN_FILES"]

CHECKPOINT = "checkpoint.pt"
RUN_FILES = ("config.json", "metrics.jsonl", "final.json", CHECKPOINT, "true_density.png", "learned_density.png", "samples.png", "training.png")


class Run:
    """A training run that lives in ``out_dir``.

    A new run refuses a folder that already holds files (nothing a user made is
    overwritten); ``resume=True`` continues the run found there from its checkpoint, with
    the same results as if it had never stopped.
    """

    def __init__(self, out_dir: str | Path, config: TrainConfig | None = None, resume: bool = False,
                 iters: int | None = None, progress: bool = True):
        self.out = Path(out_dir)
        if resume:
            self.trainer = load_trainer(self.out, progress=progress, iters=iters)
            # rows after the checkpoint belong to iterations that will be run again
            write_jsonl(self.out / "metrics.jsonl", self.trainer.history)
        else:
            if config is None:
                raise ValueError("config: a new run needs a TrainConfig")
            if self.out.exists() and not self.out.is_dir():
                raise ValueError(f"--out: {self.out} exists and is not a folder")
            if self.out.is_dir() and any(self.out.iterdir()):
                raise ValueError(f"--out: {self.out} already holds files; pass --resume to continue that run or choose another folder")
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(f"--out: cannot create {self.out}: {err.strerror}") from None
            if iters is not None:
                config = config.replace(iters=iters)
            self.trainer = Trainer(config, progress=progress)
            atomic_write_json(self.out / "config.json", self.trainer.config.to_dict())
            (self.out / "metrics.jsonl").touch()

    @property
    def config(self) -> TrainConfig:
        return self.trainer.config

    def save_checkpoint(self, trainer: Trainer | None = None) -> Path:
        trainer = trainer or self.trainer
        # never replace the last good checkpoint by a broken state
        trainer.check_parameters()
        path = self.out / CHECKPOINT
        atomic_torch_save(path, trainer.state_dict())
        trainer.last_checkpoint = (trainer.iteration, path)
        return path

    def train(self, callback: Callable[[Trainer, dict], None] | None = None) -> dict:
        """Train to the config's ``iters``, logging rows and checkpointing; return ``final.json``'s content."""

        def log(trainer, row):
            append_jsonl(self.out / "metrics.jsonl", row)
            if callback is not None:
                callback(trainer, row)

        self.trainer.run(callback=log, on_checkpoint=self.save_checkpoint)
        return self.finish()

    def finish(self) -> dict:
        """Write ``final.json`` and the figures from the current state."""
        from .report import save_run_figures

        t = self.trainer
        last = t.history[-1]
        best = min(t.history, key=lambda r: r["grid_tv"])
        final = {
            "sampler": t.config.sampler,
            "target": t.config.target,
            "seed": t.config.seed,
            "iters": t.iteration,
            "wall_s": round(t.wall_s, 2),
            "grid_tv": last["grid_tv"],
            "grid_kl": last["grid_kl"],
            "mmd": last["mmd"],
            "best_grid_tv": best["grid_tv"],
            "best_iter": best["iter"],
            "config": t.config.to_dict(),
        }
        save_run_figures(t, self.out)
        atomic_write_json(self.out / "final.json", final)
        return final


def load_trainer(out_dir: str | Path, progress: bool = True, iters: int | None = None, device: str | None = None) -> Trainer:
    """Rebuild the trainer of a run directory from its ``config.json`` and checkpoint (for resuming or sampling)."""
    out = Path(out_dir)
    config_path, ckpt_path = out / "config.json", out / CHECKPOINT
    if not config_path.exists():
        raise ValueError(f"--resume: {out} has no config.json; is it a run directory?")
    if not ckpt_path.exists():
        raise ValueError(f"--resume: {out} has no {CHECKPOINT} yet; nothing to resume (start a new run instead)")
    try:
        config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: not a valid run configuration ({err})") from None
    changes = {}
    if iters is not None:
        changes["iters"] = iters
    if device is not None:
        changes["device"] = device
    config = config.replace(**changes)
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn or foreign file: say which and why
        raise ValueError(f"{ckpt_path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{ckpt_path}: not an AniLA checkpoint")
    trainer = Trainer(config, progress=progress)
    trainer.load_state_dict(state)
    trainer.last_checkpoint = (trainer.iteration, ckpt_path)
    if changes:
        atomic_write_json(config_path, trainer.config.to_dict())
    return trainer
