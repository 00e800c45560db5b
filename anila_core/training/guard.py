"""Divergence handling: the checks after each training step, the last good checkpoint, and rollback to the last finite
state."""

from __future__ import annotations

from pathlib import Path

import torch

from anila_core.notices import notice
from anila_core.training.config import TrainConfig
from anila_core.training.state import TrainState

__all__ = [
    "TrainingDiverged",
    "Guard",
    "step_problem",
    "parameters_finite",
    "optimizer_overflow",
    "divergence_record",
]


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite or exploding quantity; the message says when, what and where to resume from.

    ``iteration`` and ``cause`` hold the when and the what on their own (``None`` when unknown);
    ``checkpoint`` the last good checkpoint's path (``None``: none written yet), and ``gave_up``
    whether rollbacks were tried and spent, so that a caller decides what to suggest from these
    fields, never from the message's text.
    """

    def __init__(
        self,
        message: str,
        iteration: int | None = None,
        cause: str | None = None,
        checkpoint: str | None = None,
        gave_up: bool = False,
    ):
        super().__init__(message)
        self.iteration, self.cause, self.checkpoint, self.gave_up = iteration, cause, checkpoint, gave_up


def divergence_record(trainer, err: TrainingDiverged) -> dict:
    """What a run that diverged leaves as its result (its ``final.json`` in a comparison): where and why it stopped.

    ``diverged_at`` is the iteration the trainer reached, as the sampler study records a diverged
    cell (``anila_core.study.cell.run_cell``), so that the two can be compared.
    """
    c = trainer.config
    return {
        "sampler": c.sampler,
        "seed": c.seed,
        "config": c.to_dict(),
        "iters": trainer.iteration,
        "diverged": True,
        "diverged_at": trainer.iteration,
        "cause": err.cause or str(err),
        "wall_s": trainer.wall_s,
    }


def parameters_finite(*models: torch.nn.Module | None) -> bool:
    """Whether every parameter of the given models (``None`` skipped) is finite."""
    return all(bool(torch.isfinite(p).all()) for m in models if m is not None for p in m.parameters())


def optimizer_overflow(err: RuntimeError, lr: float) -> str | None:
    """The divergence cause when ``optimizer.step()`` raised because its update overflowed (``None`` for any other
    error).

    Adam turns its step size into the parameters' float type; past float32's range (about
    3.4e38, e.g. ``lr = 1e39``) torch raises instead of writing inf, so the guard would never see it.
    """
    if "overflow" not in str(err):
        return None
    return f"the optimizer step overflowed: its update at learning rate {lr:.3g} is not a finite float ({err})"


def step_problem(
    stats: dict, samples_finite: torch.Tensor, params_finite: torch.Tensor, max_energy_gap: float, lr: float
) -> str | None:
    """What is wrong after a training step, the first of the guarded quantities in order (``None`` when all are well).

    The loss and energies were computed before the optimiser step, so parameters that are
    non-finite while those are finite were made so by the step itself: the cause names it.
    """
    gap = stats["energy_data"] - stats["energy_samples"]
    checks = [
        (torch.isfinite(stats["loss"]), "the loss is not finite"),
        (torch.isfinite(stats["energy_data"]), "the energy of the data is not finite"),
        (torch.isfinite(stats["energy_samples"]), "the energy of the samples is not finite"),
        (samples_finite, "the negative samples are not finite"),
        (params_finite, f"the parameters are not finite after the optimizer step (learning rate {lr:.3g})"),
        (
            gap.abs() <= max_energy_gap,
            f"the energy gap |E(data) − E(samples)| = {float(gap.abs()):.3g} exceeds max_energy_gap = "
            f"{max_energy_gap:g}",
        ),
    ]
    return next((what for ok, what in checks if not bool(ok)), None)


class Guard:
    """What a run knows about divergence: the last checkpoint with finite parameters, and a finite state to roll back
    to.

    ``good_state`` is an in-memory copy (:meth:`TrainState.snapshot`) taken at the start of
    ``Trainer.run`` and at each checkpoint, only while the parameters are finite; so a
    rollback never returns to a broken state, and the error never names one.
    """

    def __init__(self):
        self.last_good_checkpoint: tuple[int, Path] | None = None
        self.good_state: dict | None = None

    def record_checkpoint(self, iteration: int, path: Path, *models: torch.nn.Module | None) -> None:
        """Remember ``path`` (written or loaded at ``iteration``) as the place to resume from, if its parameters are
        finite."""
        if parameters_finite(*models):
            self.last_good_checkpoint = (iteration, Path(path))

    def keep(self, state: TrainState) -> None:
        """Copy ``state`` as the one a rollback returns to, if its parameters (the EMA's too) are finite."""
        if parameters_finite(state.model, state.ema_model):
            self.good_state = state.snapshot()

    def error(self, iteration: int, what: str) -> TrainingDiverged:
        """The exception for a divergence at ``iteration``: what went wrong and the last good checkpoint, if any."""
        checkpoint = None
        if self.last_good_checkpoint is None:
            where = "no checkpoint was written yet"
        else:
            at, checkpoint = self.last_good_checkpoint
            where = f"the last good checkpoint is {checkpoint} (iteration {at})"
        return TrainingDiverged(
            f"training diverged at iteration {iteration}: {what}; {where}",
            iteration,
            what,
            None if checkpoint is None else str(checkpoint),
        )

    def check_parameters(self, state: TrainState) -> None:
        """Raise :class:`TrainingDiverged` if any parameter is NaN or infinite."""
        if not parameters_finite(state.model):
            raise self.error(state.iteration, "the parameters are not finite")

    def check_step(self, state: TrainState, config: TrainConfig, stats: dict, samples_finite: torch.Tensor) -> None:
        """Stop at the first non-finite or exploding quantity of the step just taken; never continue silently."""
        params_finite = torch.stack([torch.isfinite(p).all() for p in state.model.parameters()]).all()
        lr = state.learning_rate(config, state.iteration - 1)
        what = step_problem(stats, samples_finite, params_finite, config.max_energy_gap, lr)
        if what is not None:
            raise self.error(state.iteration, what)

    def roll_back(self, state: TrainState, config: TrainConfig, err: TrainingDiverged, say: bool) -> dict:
        """Return ``state`` to the last finite state at half the learning rate, (``say``) say so, and return the record.

        Raises ``err``, extended with the reason, when there is no finite state to return to or
        ``max_rollbacks`` rollbacks were already spent.
        """
        if self.good_state is None:
            raise TrainingDiverged(
                f"{err}; there is no state with finite parameters to roll back to",
                err.iteration,
                err.cause,
                err.checkpoint,
            ) from None
        if len(state.rollbacks) >= config.max_rollbacks:
            raise TrainingDiverged(
                f"{err}; gave up after {len(state.rollbacks)} rollback(s) (max_rollbacks = "
                f"{config.max_rollbacks}; the learning rate was {state.lr_factor:g} × lr)",
                err.iteration,
                err.cause,
                err.checkpoint,
                gave_up=True,
            ) from None
        state.restore(self.good_state)
        # halving is exact in floating point: the recorded lr is the one the next step takes
        record = {
            "iter": err.iteration,
            "cause": err.cause or str(err),
            "restored_iter": state.iteration,
            "lr_factor": state.lr_factor * 0.5,
            "lr": state.learning_rate(config, state.iteration) * 0.5,
        }
        state.rolled_back(record)
        if say:
            notice(
                f"warning: rollback at iteration {record['iter']}: {record['cause']}; back to the state of "
                f"iteration {state.iteration}, learning rate now {record['lr']:.3g} "
                f"(rollback {len(state.rollbacks)} of at most {config.max_rollbacks})"
            )
        return record
