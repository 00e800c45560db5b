"""Notebook 05's verdicts on a run: each failure named from the numbers (runaway, a gap that swung, lagging chains,
saturated samples), and a run watched to its guard's stop."""

from types import SimpleNamespace

import torch

from anila_core.course.failing import Watched, diagnose, saturated_share, watch_run
from anila_core.training.config import TrainConfig


def watched(gaps, saturated=0.5, error=None, rollbacks=()):
    rows = [
        {"iter": 5 * (i + 1), "energy_gap": g, "energy_data": -g / 2, "saturated": saturated}
        for i, g in enumerate(gaps)
    ]
    trainer = SimpleNamespace(rollbacks=list(rollbacks), lr_factor=0.5 ** len(rollbacks), iteration=5 * len(gaps))
    return Watched(trainer, rows, {}, error)


def test_each_failure_is_named_from_the_numbers():
    assert "ran away" in diagnose("big step", watched([0.1, -1, -5, -20, -80, -300], saturated=1.0))
    assert "saturated samples" in diagnose("big step", watched([0.1, -1, -5, -20, -80, -300], saturated=1.0))
    swung = diagnose("one step", watched([-1, -12, -11, 2, -1, -1.5]))
    assert "swung far" in swung and "ran away" not in swung
    assert "chains lag" in diagnose("short", watched([-0.2, -0.6, -0.7, -0.8]))
    healthy = diagnose("healthy", watched([-0.5, 0.1, -0.05, 0.02]))
    assert "no sign of failure" in healthy and "**saturated samples**" not in healthy


def test_the_guard_and_its_rollbacks_are_reported():
    text = diagnose(
        "guarded",
        watched([-1, -3, -6], error="training diverged at iteration 17: the gap; more", rollbacks=[{"iter": 16}]),
    )
    assert "rolled back 1 time(s) (at iteration 16; learning rate now ×0.5)" in text
    assert (
        "stopped by the guard" in text and "training diverged at iteration 17: the gap" in text and "more" not in text
    )


def test_saturated_share_counts_pixels_at_the_walls():
    x = torch.tensor([[-1.0, 1.0, 0.995, 0.0]])
    assert saturated_share(x) == 0.75


def test_a_runaway_run_is_stopped_by_the_guard_and_recorded_not_raised():
    config = TrainConfig(
        dataset="digits",
        conv_width=8,
        sampler="langevin",
        step_size=100.0,
        noise_scale=0.1,
        n_steps=5,
        chains="buffer",
        buffer_size=200,
        init="uniform",
        init_scale=1.0,
        clamp=1.0,
        batch_size=16,
        iters=60,
        lr=1e-2,
        eval_every=5,
        fid_every=10**6,
        fid_samples=32,
        checkpoint_every=5,
        max_energy_gap=2.0,
        seed=0,
        device="cpu",
        fast=False,
    )
    w = watch_run(config)
    assert w.stopped and "max_energy_gap" in w.error and w.trainer.iteration < 60
    assert w.rows and all(set(r) >= {"energy_gap", "saturated"} for r in w.rows) and w.snapshots
