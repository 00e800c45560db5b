"""Run directories: config, metrics rows, checkpoints, final figures — written atomically, resumable exactly (also under torchrun, where rank 0 writes)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

import torch

from anila_core.device import resolve_device
from anila_core.training import distributed
from anila_core.training.config import TrainConfig, changed_settings, describe_changes
from anila_core.fileio import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl, write_jsonl
from anila_core.training.state import validate_checkpoint
from anila_core.training.trainer import Trainer

__all__ = ["Run", "CHECKPOINT", "load_trainer", "RUN_FILES", "IMAGE_RUN_FILES", "target_summary", "image_summary", "expected_files",
           "remove_stale_temporaries"]

CHECKPOINT = "checkpoint.pt"
RUN_FILES = ("config.json", "metrics.jsonl", "final.json", CHECKPOINT, "true_density.png", "learned_density.png", "samples.png", "training.png")
#: what every image run writes; ``fid.png`` joins when FID was computed, ``step_sizes.png`` for AniLA
IMAGE_RUN_FILES = ("config.json", "metrics.jsonl", "final.json", CHECKPOINT, "samples.png", "training.png")


class Run:
    """A training run that lives in ``out_dir``.

    A new run refuses a folder that already holds files (nothing a user made is
    overwritten); ``resume=True`` continues the run found there from its checkpoint, with
    the same results as if it had never stopped (``data_root`` may point to where the
    dataset lives now, ``device`` to another device). Under torchrun every rank builds the Run; only rank 0 writes.
    """

    def __init__(self, out_dir: str | Path, config: TrainConfig | None = None, resume: bool = False,
                 iters: int | None = None, progress: bool = True, data_root: str | None = None,
                 on_divergence: str | None = None, max_rollbacks: int | None = None, device: str | None = None):
        self.out = Path(out_dir)
        self.is_main = distributed.current().is_main
        if resume:
            self.trainer = load_trainer(self.out, progress=progress, iters=iters, data_root=data_root,
                                        on_divergence=on_divergence, max_rollbacks=max_rollbacks, device=device,
                                        write_config=True)
            if self.is_main:
                # rows after the checkpoint belong to iterations that will be run again
                write_jsonl(self.out / "metrics.jsonl", self.trainer.history)
                remove_stale_temporaries(self.out)
        else:
            if config is None:
                raise ValueError("config: a new run needs a TrainConfig")
            # rank 0 checks the folder; every rank raises the same error if it cannot be used
            error = distributed.broadcast_object(self._folder_problem() if self.is_main else None)
            if error:
                raise ValueError(error)
            if iters is not None:
                config = config.replace(iters=iters)
            # the trainer first: a missing dataset then leaves no empty run folder behind
            self.trainer = Trainer(config, progress=progress)
            if self.is_main:
                try:
                    self.out.mkdir(parents=True, exist_ok=True)
                except OSError as err:
                    raise ValueError(f"out_dir: cannot create {self.out}: {err.strerror}; expected a folder path "
                                     "you can write to") from None
                try:
                    atomic_write_json(self.out / "config.json", self.trainer.config.to_dict())
                    (self.out / "metrics.jsonl").touch()
                except OSError as err:
                    raise ValueError(f"out_dir: cannot write in {self.out}: {err.strerror}; expected a folder you can "
                                     "write to") from None

    def _folder_problem(self) -> str | None:
        """Why ``out`` cannot hold a new run (``None`` when it can)."""
        if self.out.exists() and not self.out.is_dir():
            return f"out_dir: {self.out} exists and is not a folder"
        if self.out.is_dir() and any(self.out.iterdir()):
            return f"out_dir: {self.out} already holds files; pass resume=True to continue that run or choose another folder"
        return None

    @property
    def config(self) -> TrainConfig:
        return self.trainer.config

    def save_checkpoint(self, trainer: Trainer | None = None) -> Path:
        trainer = trainer or self.trainer
        # never replace the last good checkpoint by a broken state
        trainer.check_parameters()
        path = self.out / CHECKPOINT
        state = trainer.state_dict()  # every rank: it gathers the ranks' chain states
        if self.is_main:
            atomic_torch_save(path, state)
        trainer.guard.record_checkpoint(trainer.iteration, path, trainer.model)
        return path

    def train(self, callback: Callable[[Trainer, dict], None] | None = None) -> dict:
        """Train to the config's ``iters``, logging rows and checkpointing; return ``final.json``'s content."""

        def log(trainer, row):
            append_jsonl(self.out / "metrics.jsonl", row)
            if callback is not None:
                callback(trainer, row)

        def rolled_back(trainer, record):
            if self.is_main:  # the rows after the state rolled back to are run again
                write_jsonl(self.out / "metrics.jsonl", trainer.history)

        self.trainer.run(callback=log, on_checkpoint=self.save_checkpoint, on_rollback=rolled_back)
        if not self.is_main:
            return {}  # rank 0 writes final.json and the figures
        return self.finish()

    def finish(self) -> dict:
        """Write ``final.json`` and the figures from the current state."""
        from anila_core.ui.report import save_image_run_figures, save_run_figures

        t = self.trainer
        if t.config.is_image:
            final = image_summary(t)
            save_image_run_figures(t, self.out)
            atomic_write_json(self.out / "final.json", final)
            return final
        final = target_summary(t)
        save_run_figures(t, self.out)
        atomic_write_json(self.out / "final.json", final)
        return final


def target_summary(trainer: Trainer) -> dict:
    """``final.json`` of a 2-D run (also for an in-memory trainer): the last grid TV, grid KL and MMD, the best grid TV and when."""
    t = trainer
    if not t.history:
        raise ValueError("trainer: has no evaluation rows yet; train it (or load a run) first")
    last = t.history[-1]
    best = min(t.history, key=lambda r: r["grid_tv"])
    extra = {k: last[k] for k in ("sampler_grid_tv", "sampler_grid_kl", "clipped_share", "global_accept") if k in last}
    return {
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
        "rollbacks": t.rollbacks,
        **extra,
        "config": t.config.to_dict(),
    }


def image_summary(trainer: Trainer) -> dict:
    """``final.json`` of an image run (also for an in-memory trainer): the last FID/KID, the best FID and when, coverage for digits.

    ``fid`` and ``kid`` are ``None`` when the run could not compute them (Inception
    unavailable); ``fid_features`` names the features the numbers come from.
    """
    from anila_core.images.evaluation import FEATURES

    t = trainer
    if not t.history:
        raise ValueError("trainer: has no evaluation rows yet; train it (or load a run) first")
    last = t.history[-1]
    scored = [r for r in t.history if r.get("fid") is not None]
    best = min(scored, key=lambda r: r["fid"]) if scored else None
    last_scored = next((r for r in reversed(t.history) if "fid" in r), {})
    final = {
        "sampler": t.config.sampler,
        "dataset": t.config.dataset,
        "image_shape": list(t.data_shape),
        "seed": t.config.seed,
        "iters": t.iteration,
        "wall_s": round(t.wall_s, 2),
        "fid": last_scored.get("fid"),
        "kid": last_scored.get("kid"),
        "kid_std": last_scored.get("kid_std"),
        "fid_iter": last_scored.get("iter"),
        "fid_features": FEATURES[t.config.dataset] if last_scored.get("fid") is not None else None,
        "fid_samples": t.config.fid_samples,
        "best_fid": None if best is None else best["fid"],
        "best_fid_iter": None if best is None else best["iter"],
        "energy_gap": last["energy_gap"],
        "rollbacks": t.rollbacks,
        "config": t.config.to_dict(),
    }
    if t.config.dataset == "digits":
        final.update(coverage=last_scored.get("coverage"), class_entropy=last_scored.get("class_entropy"),
                     class_histogram=last_scored.get("class_histogram"))
    if "clipped_share" in last:
        final["clipped_share"] = last["clipped_share"]
    return final


def expected_files(config: TrainConfig) -> tuple[str, ...]:
    """The files a finished run with ``config`` leaves in its folder (FID's figure only when FID could be computed)."""
    if not config.is_image:
        return RUN_FILES
    return IMAGE_RUN_FILES + (("step_sizes.png",) if config.sampler == "anila" else ())


def remove_stale_temporaries(out: str | Path) -> list[Path]:
    """Delete the temporary files a killed writer left in a run directory (``.NAME.XXXXXXXX.tmp`` of a run file); return them.

    :func:`anila_core.fileio.atomic_write` writes each file through such a temporary and
    renames it; a SIGKILL between the two leaves it behind. Only these names are touched.
    """
    known = set(RUN_FILES) | set(IMAGE_RUN_FILES) | {"fid.png", "step_sizes.png"}
    stale = [p for p in Path(out).glob(".*.tmp") if p.is_file() and p.name[1:].rsplit(".", 2)[0] in known]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_trainer(out_dir: str | Path, progress: bool = True, iters: int | None = None, device: str | None = None,
                 data_root: str | None = None, on_divergence: str | None = None, max_rollbacks: int | None = None,
                 write_config: bool = False) -> Trainer:
    """Rebuild the trainer of a run directory from its ``config.json`` and checkpoint (for resuming or sampling).

    ``iters``, ``device``, ``data_root`` and the divergence policy may differ from the run's own
    (a longer run, another machine, the dataset somewhere else, rollback after a divergence).
    With ``write_config`` (what ``--resume`` does) a change is written back to ``config.json``;
    without it, loading a run to sample from it leaves its folder as it was. A checkpoint that does not belong to the
    configuration (other settings, another architecture, another format) is refused with a
    ``ValueError`` that names the file and the difference.
    """
    out = Path(out_dir)
    config_path, ckpt_path = out / "config.json", out / CHECKPOINT
    if not config_path.exists():
        raise ValueError(f"out_dir: {out} has no config.json; expected the folder of a run, which holds its config.json and checkpoint")
    if not ckpt_path.exists():
        raise ValueError(f"out_dir: {out} has no {CHECKPOINT} yet: the run stopped before its first checkpoint, so there "
                         f"is nothing to resume; start it afresh (delete {out} or choose another out_dir)")
    try:
        saved_config = json.loads(config_path.read_text())
        config = TrainConfig.from_dict(saved_config)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{config_path}: not a valid run configuration ({err}); expected the config.json a run wrote") from None
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
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # a torn or foreign file: say which and why
        raise ValueError(f"{ckpt_path}: cannot be read as a checkpoint, it is truncated or not a checkpoint at all "
                         f"({type(err).__name__}: {err}); expected a complete checkpoint.pt written by anila_core") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{ckpt_path}: not an AniLA checkpoint (expected a dict with the model's weights, "
                         f"got {type(state).__name__}{' without a model' if isinstance(state, dict) else ''})")
    other = state.get("config")
    if isinstance(other, dict):
        differ = changed_settings(other, saved_config)
        if differ:
            diffs = describe_changes(differ, other, saved_config, "in the checkpoint", "in config.json")
            raise ValueError(f"{ckpt_path}: belongs to another run than {config_path}: {diffs}; expected the checkpoint "
                             "and config.json of the same run")
    if iters is not None and "iteration" in state and iters < int(state["iteration"]):
        raise ValueError(f"iters: {iters} is below the {int(state['iteration'])} iterations the checkpoint has already "
                         f"trained; expected iters >= {int(state['iteration'])}")
    device = resolve_device(config.device)
    if _fit_generator_states(state, device) and distributed.current().is_main:
        print(f"notice: {ckpt_path} was saved on another kind of device than {device}; its chain generator's state "
              "cannot move there, so the chains continue from a generator seeded from that state: the run goes on, but not "
              "bit-identical to one that never changed device", file=sys.stderr)
    try:
        validate_checkpoint(state, config)  # before the trainer is built: a checkpoint that cannot fit is refused first
    except ValueError as err:
        raise ValueError(f"{ckpt_path}: {str(err).removeprefix('checkpoint: ')}") from None
    trainer = Trainer(config, progress=progress)
    try:
        trainer.load_state_dict(state)
    except (ValueError, KeyError) as err:
        detail = str(err).removeprefix("checkpoint: ") if isinstance(err, ValueError) else f"it lacks {err}"
        raise ValueError(f"{ckpt_path}: {detail}") from None
    trainer.guard.record_checkpoint(trainer.iteration, ckpt_path, trainer.model)
    if write_config and changes and distributed.current().is_main:
        atomic_write_json(config_path, trainer.config.to_dict())
    return trainer


def _fit_generator_states(state: dict, device: torch.device) -> bool:
    """Make the saved chain generators' states loadable by a generator on ``device``, in place; True when one had to change.

    A CPU generator's state (the Mersenne Twister's 5 kB) and a CUDA one's (Philox seed and
    offset) cannot be loaded into each other, so a run resumed on another kind of device
    reseeds its chain stream from a hash of the saved state: deterministic, and still its own
    stream per rank.
    """
    holders = [state] + [r for r in (state.get("ranks") or []) if isinstance(r, dict)]
    changed = False
    for holder in holders:
        saved = holder.get("generator")
        if not isinstance(saved, torch.Tensor):
            continue
        try:
            torch.Generator(device=device).set_state(saved)
        except RuntimeError:  # the wrong size for this device's generator: saved on another kind of device
            seed = int.from_bytes(hashlib.sha256(saved.cpu().numpy().tobytes()).digest()[:8], "little") >> 1
            holder["generator"] = torch.Generator(device=device).manual_seed(seed).get_state()
            changed = True
    return changed
