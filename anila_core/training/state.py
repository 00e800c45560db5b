"""The training state in one place: what changes while a run trains, the checkpoint it becomes, and the copy a rollback
returns to."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from anila_core import __version__
from anila_core.training import distributed
from anila_core.training.chains import Chains, own_chain_state
from anila_core.training.checkpoint_checks import CHECKPOINT_FORMAT
from anila_core.training.config import TrainConfig

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Model, EMA, optimiser, chains, data stream, iteration and history: everything a checkpoint saves and a rollback
    restores.

    The guard, the evaluation and the checkpoint code take this object; only its own methods
    change it. The random streams live in ``chains`` (the chain generator, also the 2-D data's)
    and ``source`` (the data batches' own generator, for points and images).
    """

    model: torch.nn.Module
    # an exponential moving average of the parameters, for evaluation (config.ema > 0)
    ema_model: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    chains: Chains
    source: object  # the data batches: sample(n, device), state_dict(), load_state_dict()
    fast: bool = False  # compiled sampling transitions: decided when the run was created, kept by its checkpoint
    iteration: int = 0
    wall_s: float = 0.0  # seconds spent in training steps (evaluations not counted)
    history: list[dict] = field(default_factory=list)  # one row per evaluation
    lr_factor: float = 1.0  # the learning rate's factor, halved at each rollback
    rollbacks: list[dict] = field(default_factory=list)  # what each rollback found and where it returned to
    samples: torch.Tensor | None = None  # the latest negative samples

    def eval_model(self) -> torch.nn.Module:
        """The model the metrics and samples for evaluation use: the EMA when on, else the trained one."""
        return self.ema_model if self.ema_model is not None else self.model

    def learning_rate(self, config: TrainConfig, iteration: int) -> float:
        """The learning rate of the step after ``iteration`` steps: the configuration's schedule times the rollbacks'
        factor."""
        return config.scheduled_lr(iteration) * self.lr_factor

    # ------------------------------------------------------------------ the loop's records

    def step_taken(self, samples: torch.Tensor) -> None:
        """One more optimiser step, whose negative samples were ``samples``."""
        self.iteration += 1
        self.samples = samples

    def add_time(self, seconds: float) -> None:
        self.wall_s += seconds

    def record(self, row: dict) -> None:
        """Keep an evaluation row."""
        self.history.append(row)

    def set_lr_factor(self, factor: float) -> None:
        """Train on at ``factor`` × the scheduled learning rate (what a rollback does, or a test that imitates one)."""
        self.lr_factor = factor

    def set_samples(self, samples: torch.Tensor | None) -> None:
        """Keep ``samples`` as the latest negatives (what the figures show and the step-size map starts from)."""
        self.samples = samples

    def set_fast(self, on: bool) -> None:
        """Sample through compiled transitions (``True``) or eagerly."""
        self.fast = on

    def rolled_back(self, record: dict) -> None:
        """Keep the record of a rollback and train on at its learning-rate factor."""
        self.lr_factor = record["lr_factor"]
        self.rollbacks.append(record)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, config: TrainConfig, fingerprint: str | None, dist: distributed.DistInfo) -> dict:
        """Everything needed to resume exactly. Under torchrun every rank must call it (it gathers the ranks' chain
        states)."""
        chains = self.chains.state(self.source)
        state = {
            "format": CHECKPOINT_FORMAT,
            "anila_core_version": __version__,
            "config": config.to_dict(),
            "iteration": self.iteration,
            "wall_s": self.wall_s,
            "model": self.model.state_dict(),
            "ema_model": None if self.ema_model is None else self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **chains.to_dict(),  # rank 0's; all ranks' under "ranks"
            "history": self.history,
            "lr_factor": self.lr_factor,
            "rollbacks": self.rollbacks,
            "fast": self.fast,
        }
        if fingerprint is not None:  # data of your own: a resumed run checks they did not change
            state["data_fingerprint"] = fingerprint
        if dist.enabled:
            state["ranks"] = distributed.gather_objects(chains.to_dict())
        return state

    def load_state_dict(self, state: dict, rank: int) -> None:
        """Restore a :meth:`state_dict` that :func:`~anila_core.training.checkpoint_checks.validate_checkpoint`
        accepted."""
        self.model.load_state_dict(state["model"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(state["ema_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        mine = own_chain_state(state, rank)
        if mine is not None:
            self.chains.load_state(mine, self.source)
        self.iteration = int(state["iteration"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])
        self.lr_factor = float(state.get("lr_factor", 1.0))
        self.rollbacks = list(state.get("rollbacks", []))
        if "fast" in state:  # checkpoints written before the decision was saved keep the one made for this run
            self.fast = bool(state["fast"])

    # ------------------------------------------------------------------ rollback

    def snapshot(self) -> dict:
        """A copy of this rank's state that a rollback returns to (nothing is gathered across ranks)."""
        return copy.deepcopy(
            {
                "iteration": self.iteration,
                "history": len(self.history),
                "model": self.model.state_dict(),
                "ema_model": None if self.ema_model is None else self.ema_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "chains": self.chains.state(self.source),
            }
        )

    def restore(self, good: dict) -> None:
        """Return to a :meth:`snapshot`; the snapshot stays intact for a later rollback."""
        good = copy.deepcopy(good)
        self.model.load_state_dict(good["model"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(good["ema_model"])
        self.optimizer.load_state_dict(good["optimizer"])
        self.chains.load_state(good["chains"], self.source)
        self.iteration = good["iteration"]
        del self.history[good["history"] :]
