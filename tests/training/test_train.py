"""The training loop on the smoke preset: diagnostics, exact resume, the divergence guard, configs and presets."""

import json

import pytest
import torch

from anila_core.training.config import TrainConfig
from anila_core.training.presets import PRESETS, preset
from anila_core.fileio import read_jsonl
from anila_core.training.runs import CHECKPOINT, Run
from anila_core.training.guard import TrainingDiverged
from anila_core.training.trainer import Trainer, build_sampler
from anila_core.sampling.samplers import AniLA, Langevin, PSGLD


def smoke(sampler="anila", **kw):
    return preset("smoke", sampler, device="cpu", **kw)


@pytest.mark.parametrize("sampler", ["langevin", "anila", "psgld"])
def test_smoke_training_logs_finite_diagnostics(sampler):
    trainer = Trainer(smoke(sampler), progress=False)
    rows = []
    trainer.run(callback=lambda t, row: rows.append(row))
    assert [r["iter"] for r in rows] == [10, 20, 30]
    assert rows == trainer.history
    for row in rows:
        for key in (
            "loss",
            "energy_data",
            "energy_samples",
            "energy_gap",
            "grid_tv",
            "grid_kl",
            "mmd",
            "grad_norm",
            "wall_s",
            "lr",
        ):
            assert isinstance(row[key], float) and row[key] == row[key], key
        assert 0 <= row["grid_tv"] <= 1
        assert row["energy_gap"] == pytest.approx(row["energy_data"] - row["energy_samples"])
    assert ("clipped_share" in rows[-1]) == (sampler == "anila")
    assert rows[-1]["wall_s"] > rows[0]["wall_s"] > 0


def test_the_loss_is_the_energy_difference_and_parameters_move():
    trainer = Trainer(smoke("langevin", iters=1), progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    stats = trainer.train_step()
    assert float(stats["loss"]) == pytest.approx(float(stats["energy_data"] - stats["energy_samples"]), abs=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_short_run_chains_start_from_noise_and_buffer_chains_persist():
    short = Trainer(smoke("langevin", chains="short_run"), progress=False)
    assert short.chains.buffer is None
    buffered = Trainer(smoke("langevin", reinit=0.0), progress=False)
    before = buffered.chains.buffer.clone()
    buffered.train_step()
    changed = (buffered.chains.buffer != before).any(1)
    assert 0 < int(changed.sum()) <= buffered.config.batch_size


def test_every_sampler_plugs_in():
    assert isinstance(build_sampler(smoke("langevin")), Langevin)
    anila = build_sampler(smoke("anila", b=2.5, norm="sample", metropolis=True))
    assert isinstance(anila, AniLA) and anila.b == 2.5 and anila.norm == "sample" and anila.metropolis
    assert isinstance(build_sampler(smoke("psgld")), PSGLD)


def test_cosine_schedule_is_fixed_when_the_run_starts():
    cfg = smoke("langevin", lr=1e-3, lr_schedule="cosine", lr_min=0.1, iters=100)
    t = Trainer(cfg, progress=False)
    assert t.config.lr_decay_iters == 100
    assert t.learning_rate(0) == pytest.approx(1e-3)
    assert t.learning_rate(50) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert t.learning_rate(100) == pytest.approx(1e-4) and t.learning_rate(500) == pytest.approx(1e-4)


# --------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize("chains", ["buffer", "short_run"])
def test_resume_continues_exactly(tmp_path, chains):
    """A run of 2N iterations equals a run of N iterations resumed for N more, bit for bit on CPU."""
    n = 20
    cfg = smoke("anila", chains=chains, lr_schedule="cosine", lr_decay_iters=2 * n, checkpoint_every=n, ema=0.9)
    straight = Run(tmp_path / "straight", cfg.replace(iters=2 * n), progress=False)
    straight.train()
    first = Run(tmp_path / "split", cfg.replace(iters=n), progress=False)
    first.train()
    resumed = Run(tmp_path / "split", resume=True, iters=2 * n, progress=False)
    assert resumed.trainer.iteration == n
    resumed.train()
    for a, b in zip(straight.trainer.model.parameters(), resumed.trainer.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.trainer.ema_model.parameters(), resumed.trainer.ema_model.parameters()):
        assert torch.equal(a, b)
    rows_a = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    rows_b = read_jsonl(tmp_path / "split" / "metrics.jsonl")
    assert [r["iter"] for r in rows_b] == [10, 20, 30, 40]  # no duplicated or missing rows
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)


def test_resume_drops_rows_written_after_the_checkpoint(tmp_path):
    run = Run(tmp_path / "r", smoke("langevin", iters=20, checkpoint_every=20), progress=False)
    run.train()
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:  # as if a crash came after a row but before a checkpoint
        f.write(json.dumps({"iter": 30, "grid_tv": 0.5}) + "\n" + '{"iter": 4')
    resumed = Run(tmp_path / "r", resume=True, iters=30, progress=False)
    assert [r["iter"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [10, 20]
    resumed.train()
    assert [r["iter"] for r in read_jsonl(tmp_path / "r" / "metrics.jsonl")] == [10, 20, 30]


# --------------------------------------------------------------------------- divergence guard


def test_a_nan_parameter_stops_the_run_with_iteration_cause_and_checkpoint(tmp_path):
    run = Run(tmp_path / "r", smoke("langevin", iters=30, checkpoint_every=10), progress=False)

    def poison(trainer, row):
        if row["iter"] == 20:
            with torch.no_grad():
                next(trainer.model.parameters())[0, 0] = float("nan")

    with pytest.raises(TrainingDiverged) as err:
        run.train(callback=poison)
    message = str(err.value)
    # caught within one iteration: here before the checkpoint of iteration 20 could be written
    assert "iteration 20" in message and "parameters are not finite" in message
    assert str(tmp_path / "r" / CHECKPOINT) in message and "(iteration 10)" in message
    # the last good checkpoint is intact and resumable
    state = torch.load(tmp_path / "r" / CHECKPOINT, weights_only=False)
    assert state["iteration"] == 10
    assert all(torch.isfinite(p).all() for p in state["model"].values())


def test_an_exploding_energy_gap_stops_the_run():
    trainer = Trainer(smoke("langevin", max_energy_gap=1e-9), progress=False)
    with pytest.raises(
        TrainingDiverged,
        match=r"iteration 1: the energy gap .* exceeds max_energy_gap .* no checkpoint was written yet",
    ):
        trainer.run()


def test_a_huge_learning_rate_is_caught_not_hidden():
    trainer = Trainer(smoke("langevin", lr=1e6, iters=200, max_energy_gap=1e3), progress=False)
    with pytest.raises(TrainingDiverged, match="training diverged at iteration"):
        trainer.run()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(step_size=0.0), "step_size"),
        (dict(b=-1.0), "b"),
        (dict(n_steps=0), "n_steps"),
        (dict(lr=float("nan")), "lr"),
        (dict(reinit=1.5), "reinit"),
        (dict(sampler="ghmc"), "sampler"),
        (dict(chains="forever"), "chains"),
        (dict(batch_size=1000, buffer_size=10), "buffer_size"),
        (dict(iters="many"), "iters"),
        (dict(metropolis=True, sampler="psgld"), "metropolis"),
        (dict(target="moons"), "target"),
    ],
)
def test_bad_config_values_are_named(change, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig().replace(**change).validate()


def test_presets_exist_and_validate():
    assert {"smoke", "cpu", "cpu_long", "paper"} <= set(PRESETS)
    for name in PRESETS:
        for sampler in ("langevin", "anila", "psgld"):
            assert preset(name, sampler).sampler == sampler
    assert preset("paper", "anila").chains == "short_run"
    with pytest.raises(ValueError, match="preset"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown field"):
        preset("smoke", "anila", temperature=2.0)
