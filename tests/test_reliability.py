"""Reliability: nothing lost on a crash, divergence caught and recovered, every bad input answered clearly.

Four parts, each also a section of docs/RELIABILITY.md, which the last test checks against
this file (the tests only check it; ``make reliability`` rewrites it from the outcomes of a full
run of this file and tests/test_hostile.py, whose cases form a fifth section):

* crashes: training processes forked from this one are killed with SIGKILL, at moments drawn
  from a seeded RNG or midway through writing a checkpoint or a metrics row, and resumed; the
  result must equal, bit for bit, a run that was never interrupted;
* divergence: runs forced to diverge stop at the first bad iteration with the clear error, or
  with ``on_divergence="rollback"`` return to the last good state at half the learning rate;
* run folders: a checkpoint carrying code, two writers of one folder, a compare killed before
  its first checkpoint or killed with its workers busy, a full disk, a failed allocation, and
  the same command line requeued with ``--resume``;
* bad input: a table of wrong inputs tried through the Python API and the command line, each
  answered by an error naming what was wrong and what was expected, without a traceback, and
  with every file that existed before left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import anila_core.study.compare as compare
import anila_core.ui.report as report
import anila_core.training.runs as runs
from anila_core import fileio
from anila_core.cli import main
from anila_core.training.config import TrainConfig
from anila_core.training.presets import preset
from anila_core.images.datasets import DatasetNotFoundError, ImageDataset, load_dataset
from anila_core.nets import MLPEnergy
from anila_core.training.runs import CHECKPOINT, Run
from anila_core.training.run_loading import load_trainer
from anila_core.sampling.registry import make_sampler
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin
from anila_core.sampling.targets import make_target
from anila_core.training.trainer import Trainer, TrainingDiverged
from reliability_record import HOSTILE
from cli_commands import smoke_argv

DOC = Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md"
#: what the tests of this file observed, for docs/RELIABILITY.md
RESULTS: dict[str, dict] = {"crash": {}, "divergence": {}, "bad_input": {}, "run_folders": {}}


def _no_figures(monkeypatch) -> None:
    """Figures are not what these tests are about, and drawing them costs most of a smoke run's time."""
    monkeypatch.setattr(report, "save_run_figures", lambda trainer, out: None)


@pytest.fixture
def no_figures(monkeypatch):
    _no_figures(monkeypatch)


def _strip(rows: list[dict]) -> list[dict]:
    """Rows without their wall-clock times, the only fields that differ between identical runs."""
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def _strict_rows(path: Path) -> list[dict]:
    """Every line of a metrics.jsonl, parsed without forgiving a torn one."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fork() -> int:
    """``os.fork()`` made safe for torch: one thread on both sides.

    A child forked from a process whose OpenMP pool has run with several threads (an earlier
    test may have raised torch's thread count) hangs at its first parallel region; with one
    thread none is entered.
    """
    torch.set_num_threads(1)
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)
    return pid


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not finish within {timeout} s")
        time.sleep(0.002)


# =========================================================================== crashes

CRASH_SEED = 20250611
N_RANDOM, N_IN_CHECKPOINT, N_IN_METRICS = 16, 6, 3
#: a smoke run that checkpoints every other iteration and logs every third: kills land between
#: and inside checkpoints, before and after rows, and resuming drops rows written after the checkpoint
CRASH_SETTINGS = dict(iters=16, eval_every=3, checkpoint_every=2, lr_schedule="cosine", ema=0.9)
N_CHECKPOINTS = CRASH_SETTINGS["iters"] // CRASH_SETTINGS["checkpoint_every"]
N_ROWS = len(
    {
        *range(CRASH_SETTINGS["eval_every"], CRASH_SETTINGS["iters"] + 1, CRASH_SETTINGS["eval_every"]),
        CRASH_SETTINGS["iters"],
    }
)


def crash_config() -> TrainConfig:
    return preset("smoke", "anila", device="cpu", **CRASH_SETTINGS)


def crash_plan() -> list[dict]:
    """Where each trial's SIGKILL lands, drawn from ``CRASH_SEED`` (the first forced trial dies in the first checkpoint
    write)."""
    rng = random.Random(CRASH_SEED)
    plan = [{"how": "random", "at": round(rng.random(), 3)} for _ in range(N_RANDOM)]
    plan += [
        {
            "how": "checkpoint",
            "write": 1 if i == 0 else rng.randint(2, N_CHECKPOINTS),
            "fraction": round(rng.uniform(0.05, 0.95), 2),
        }
        for i in range(N_IN_CHECKPOINT)
    ]
    plan += [
        {"how": "metrics", "row": rng.randint(1, N_ROWS), "fraction": round(rng.uniform(0.1, 0.9), 2)}
        for _ in range(N_IN_METRICS)
    ]
    return plan


PLAN = crash_plan()


def describe_kill(how: dict) -> str:
    if how["how"] == "random":
        return f"SIGKILL from outside after {how['at']:.1%} of an uninterrupted run's time"
    if how["how"] == "checkpoint":
        return (
            f"SIGKILL inside checkpoint write {how['write']} of {N_CHECKPOINTS}, after {how['fraction']:.0%} of "
            "its bytes"
        )
    return f"SIGKILL inside metrics row {how['row']} of {N_ROWS}, after {how['fraction']:.0%} of its bytes"


def _dies_inside_checkpoint_write(save: Callable, nth: int, fraction: float) -> Callable:
    count = [0]

    def torn_save(path, obj):
        count[0] += 1
        if count[0] < nth:
            return save(path, obj)
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()

        def write_part_and_die(f):
            f.write(data[: int(len(data) * fraction)])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)

        fileio.atomic_write(path, write_part_and_die)

    return torn_save


def _dies_inside_metrics_row(nth: int, fraction: float) -> Callable:
    count = [0]

    def torn_append(path, row):
        count[0] += 1
        if count[0] < nth:
            return fileio.append_jsonl(path, row)
        line = json.dumps(row, sort_keys=True) + "\n"
        with open(path, "a") as f:
            f.write(line[: max(1, int(len(line) * fraction))])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)

    return torn_append


def _train_in_child(out: Path, how: dict) -> None:
    """In the forked child: train the crash configuration into ``out``, dying where ``how`` says. Never returns."""
    code = 70
    try:
        report.save_run_figures = lambda trainer, folder: None
        if how["how"] == "checkpoint":
            runs.atomic_torch_save = _dies_inside_checkpoint_write(
                runs.atomic_torch_save, how["write"], how["fraction"]
            )
        elif how["how"] == "metrics":
            runs.append_jsonl = _dies_inside_metrics_row(how["row"], how["fraction"])
        Run(out, crash_config(), progress=False).train()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


@pytest.fixture(scope="module")
def crash_reference(tmp_path_factory):
    """The uninterrupted run every trial must end equal to, and how long it takes (the scale of the random kill
    times)."""
    base = tmp_path_factory.mktemp("crash")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trials (see _fork): the same reduction order, so the same bits
    with pytest.MonkeyPatch.context() as mp:
        _no_figures(mp)
        Run(base / "warm-up", crash_config().replace(iters=2), progress=False).train()  # first-call costs off the clock
        start = time.perf_counter()
        run = Run(base / "reference", crash_config(), progress=False)
        final = run.train()
        seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    t = run.trainer
    return {
        "params": [p.detach().clone() for p in t.model.parameters()],
        "ema": [p.detach().clone() for p in t.ema_model.parameters()],
        "rows": _strip(_strict_rows(base / "reference" / "metrics.jsonl")),
        "final": {k: v for k, v in final.items() if k != "wall_s"},
        "seconds": seconds,
    }


@pytest.mark.parametrize("trial", range(len(PLAN)), ids=[f"{i + 1}-{p['how']}" for i, p in enumerate(PLAN)])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(trial, crash_reference, tmp_path, no_figures):
    how = PLAN[trial]
    out = tmp_path / "run"
    pid = _fork()
    if pid == 0:
        _train_in_child(out, how)
    if how["how"] == "random":
        time.sleep(how["at"] * crash_reference["seconds"])
        os.kill(pid, signal.SIGKILL)
    status = _wait(pid, timeout=120)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if how["how"] != "random":
        assert killed, f"the child was to die inside a write, but exited with status {status}"
    else:
        assert killed or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0), f"the child failed: status {status}"

    # what the kill left behind
    temporaries = sorted(p.name for p in out.glob(".*.tmp")) if out.is_dir() else []
    metrics = out / "metrics.jsonl"
    torn_row = False
    if metrics.exists() and metrics.read_text():
        try:
            _strict_rows(metrics)
        except json.JSONDecodeError:
            torn_row = True
    checkpoint = out / CHECKPOINT
    if checkpoint.exists():
        state = torch.load(
            checkpoint, map_location="cpu", weights_only=True
        )  # the checkpoint always loads, as tensors and plain data
        at = int(state["iteration"])
        landed = "after the run had finished" if not killed else f"resumed from the checkpoint of iteration {at}"
        run = Run(out, resume=True, progress=False)
        assert run.trainer.iteration == at
        assert not list(out.glob(".*.tmp")), "resuming removes the temporary files a killed write left"
        final = run.train()
    else:
        before = "config.json" if not (out / "config.json").exists() else "the first checkpoint"
        with pytest.raises(ValueError, match="has no config.json|has no checkpoint.pt yet") as err:
            Run(out, resume=True, progress=False)
        assert str(out) in str(err.value)
        said = "has no config.json" if before == "config.json" else "has no checkpoint.pt yet"
        assert said in str(err.value)
        landed = f"before {before}: --resume refused (\"{said}\"), fresh start"
        shutil.rmtree(out, ignore_errors=True)  # as the message says: delete it and start afresh
        run = Run(out, crash_config(), progress=False)
        final = run.train()

    t = run.trainer
    assert all(torch.equal(a, b) for a, b in zip(crash_reference["params"], t.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(crash_reference["ema"], t.ema_model.parameters()))
    rows = _strict_rows(out / "metrics.jsonl")  # every line parses: no torn row
    iters = [r["iter"] for r in rows]
    assert iters == sorted(set(iters)), "iterations strictly increasing: no duplicated row"
    assert _strip(rows) == crash_reference["rows"]
    assert {k: v for k, v in final.items() if k != "wall_s"} == crash_reference["final"]
    assert not list(out.glob(".*.tmp"))
    leftovers = []
    if temporaries:
        leftovers.append(
            f"{len(temporaries)} temporary file(s) removed "
            f"({', '.join(sorted({n.split('.')[1] for n in temporaries}))})"
        )
    if torn_row:
        leftovers.append("a torn last row dropped")
    RESULTS["crash"][trial] = {"landed": landed, "leftovers": "; ".join(leftovers) or "none", "killed": killed}


# =========================================================================== divergence


def _first_bad_iteration(config: TrainConfig, limit: int) -> int | None:
    """Train with the guard switched off and return the first iteration where a guarded quantity goes bad (an
    independent check)."""
    probe = Trainer(config, progress=False)
    probe.guard.check_step = lambda state, config, stats, samples_finite: None
    for _ in range(limit):
        stats = probe.train_step()
        gap = float(stats["energy_data"] - stats["energy_samples"])
        finite = all(math.isfinite(float(stats[k])) for k in ("loss", "energy_data", "energy_samples"))
        finite = (
            finite
            and bool(torch.isfinite(probe.samples).all())
            and all(bool(torch.isfinite(p).all()) for p in probe.model.parameters())
        )
        if not finite or abs(gap) > config.max_energy_gap:
            return probe.iteration
    return None


def test_a_huge_learning_rate_stops_at_the_first_bad_iteration():
    config = preset("smoke", "langevin", device="cpu", lr=1e6, max_energy_gap=100.0)
    with pytest.raises(TrainingDiverged) as err:
        Trainer(config, progress=False).run()
    first_bad = _first_bad_iteration(config, limit=config.iters)
    assert first_bad is not None and err.value.iteration == first_bad
    assert str(err.value).startswith(
        f"training diverged at iteration {first_bad}: {err.value.cause}; no checkpoint was written yet"
    )
    RESULTS["divergence"]["huge-lr-stop"] = {
        "forced": "lr = 1e6 (Python API, in memory)",
        "policy": "stop (default)",
        "outcome": f"TrainingDiverged at iteration {first_bad}, the first iteration whose quantities are bad "
        f"(checked with the guard off): \"{err.value.cause}\"",
    }


def test_a_nan_parameter_is_caught_within_one_iteration_without_a_run_folder():
    trainer = Trainer(preset("smoke", "langevin", device="cpu"), progress=False)

    def poison(t, row):
        if row["iter"] == 20:
            with torch.no_grad():
                next(t.model.parameters())[0, 0] = float("nan")

    with pytest.raises(TrainingDiverged) as err:
        trainer.run(callback=poison)
    assert err.value.iteration == 21 and "not finite" in err.value.cause
    RESULTS["divergence"]["nan-stop-in-memory"] = {
        "forced": "a parameter set to NaN after iteration 20 (Python API, in memory)",
        "policy": "stop (default)",
        "outcome": f"TrainingDiverged at iteration {err.value.iteration}, the next one: \"{err.value.cause}\"",
    }


def test_the_resume_hint_follows_the_exceptions_fields_not_its_text(monkeypatch, capsys):
    """The hint names --resume with rollback when a checkpoint exists and rollbacks were not spent, whatever the
    words."""
    import anila_core.cli as cli
    from anila_core.training.guard import TrainingDiverged

    cases = [
        (TrainingDiverged("diverged", 5, "loss", checkpoint="run/checkpoint.pt"), True),
        (TrainingDiverged("the last good checkpoint is x", 5, "loss", checkpoint="x", gave_up=True), False),
        (TrainingDiverged("the last good checkpoint is x", 5, "loss"), False),
    ]
    for err, hinted in cases:
        monkeypatch.setattr(cli, "cmd_train", lambda args, err=err: (_ for _ in ()).throw(err))
        assert cli.main(smoke_argv("train", "--no-progress")) == 3
        assert ("hint: continue from that checkpoint" in capsys.readouterr().err) == hinted


def test_the_cli_stops_with_the_message_and_resume_with_rollback_completes(tmp_path, capsys, monkeypatch, no_figures):
    """A divergence that happens at the full learning rate only: a parameter turns NaN on the way to iteration 15."""
    step = Trainer.train_step

    def train_step(self, trace=None):
        if self.iteration == 14 and self.lr_factor == 1.0:
            with torch.no_grad():
                next(self.model.parameters())[0, 0] = float("nan")
        return step(self, trace)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    out = tmp_path / "run"
    assert main(smoke_argv("train", out=out)) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first = next(line for line in err.splitlines() if line.startswith("error: "))
    assert (
        first == "error: training diverged at iteration 15: the loss is not finite; the last good checkpoint is "
        f"{out / CHECKPOINT} (iteration 10)"
    )
    assert "hint: continue from that checkpoint with --resume --on-divergence rollback" in err
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["iteration"] == 10 and all(torch.isfinite(p).all() for p in state["model"].values())
    assert [r["iter"] for r in _strict_rows(out / "metrics.jsonl")] == [10]

    assert main(["train", "--resume", "--out", str(out), "--on-divergence", "rollback", "--no-progress"]) == 0
    err = capsys.readouterr().err
    final = json.loads((out / "final.json").read_text())
    assert final["rollbacks"] == [
        {"iter": 15, "cause": "the loss is not finite", "restored_iter": 10, "lr_factor": 0.5, "lr": 5e-4}
    ]
    assert (
        err.count("warning: rollback at iteration 15: the loss is not finite; back to the state of iteration 10") == 1
    )
    assert json.loads((out / "config.json").read_text())["on_divergence"] == "rollback"
    assert [r["iter"] for r in _strict_rows(out / "metrics.jsonl")] == [10, 20, 30]
    assert final["iters"] == 30 and math.isfinite(final["grid_tv"])
    RESULTS["divergence"]["nan-cli-stop-then-resume"] = {
        "forced": "a parameter set to NaN before iteration 15 while the learning rate is the full one (`train`), then "
        "`train --resume --on-divergence rollback`",
        "policy": "stop, then rollback",
        "outcome": f"exit 3 with \"{first.removeprefix('error: ').replace(str(tmp_path), '<tmp>')}\" and a hint to "
        "resume with "
        "rollback; the resumed run rolled back once (to iteration 10, lr 5e-4) and completed, exit 0",
    }


def test_rollback_restores_the_last_good_state_halves_the_lr_and_completes(tmp_path, capsys, no_figures):
    out = tmp_path / "run"
    run = Run(out, preset("smoke", "langevin", device="cpu", on_divergence="rollback"), progress=False)
    poisoned = []

    def poison_once(t, row):
        if row["iter"] == 20 and not poisoned:
            poisoned.append(row["iter"])
            with torch.no_grad():
                next(t.model.parameters())[0, 0] = float("nan")

    final = run.train(callback=poison_once)
    err = capsys.readouterr().err
    assert final["rollbacks"] == [
        {"iter": 20, "cause": "the parameters are not finite", "restored_iter": 10, "lr_factor": 0.5, "lr": 5e-4}
    ]
    line = (
        "warning: rollback at iteration 20: the parameters are not finite; back to the state of iteration 10, "
        "learning rate now 0.0005"
    )
    assert line in err
    rows = _strict_rows(out / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [10, 20, 30]  # the rows of the rolled-back iterations were written again, once
    assert rows[0]["lr"] == 1e-3 and rows[1]["lr"] == rows[2]["lr"] == 5e-4
    assert all(torch.isfinite(p).all() for p in run.trainer.model.parameters())
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["lr_factor"] == 0.5 and state["rollbacks"] == final["rollbacks"]
    RESULTS["divergence"]["nan-rollback"] = {
        "forced": "a parameter set to NaN after iteration 20 (Python API, run folder)",
        "policy": "rollback",
        "outcome": "caught at iteration 20; back to the checkpoint state of iteration 10 at lr 5e-4, logged "
        "(stderr, final.json, checkpoint); completed 30 iterations, metrics.jsonl rows 10, 20, 30 once each",
    }


def _train_at_a_huge_lr(out, max_rollbacks: int) -> int:
    """``train --lr 1e6`` on the command line, rolling back at most ``max_rollbacks`` times: its exit code."""
    flags = "--lr 1e6 --max-energy-gap 100 --on-divergence rollback --max-rollbacks".split()
    return main(smoke_argv("train", *flags, max_rollbacks, out=out))


def test_rollback_from_a_huge_learning_rate_completes_on_the_cli(tmp_path, capsys, no_figures):
    out = tmp_path / "run"
    code = _train_at_a_huge_lr(out, max_rollbacks=25)
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err
    final = json.loads((out / "final.json").read_text())
    n = len(final["rollbacks"])
    assert n >= 2 and [r["lr_factor"] for r in final["rollbacks"]] == [0.5 ** (i + 1) for i in range(n)]
    assert [r["iter"] for r in _strict_rows(out / "metrics.jsonl")] == [10, 20, 30] and math.isfinite(final["grid_tv"])
    RESULTS["divergence"]["huge-lr-cli-rollback"] = {
        "forced": "`train --lr 1e6 --on-divergence rollback --max-rollbacks 25`",
        "policy": "rollback",
        "outcome": f"{n} rollbacks, each logged and halving the learning rate (1e6 → {1e6 * 0.5**n:.3g}); completed, "
        "exit 0",
    }


def test_a_hopeless_run_stops_after_max_rollbacks(tmp_path, capsys, no_figures):
    out = tmp_path / "run"
    code = _train_at_a_huge_lr(out, max_rollbacks=3)
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err and err.count("warning: rollback") == 3
    message = next(line for line in err.splitlines() if line.startswith("error: "))
    assert "training diverged at iteration" in message and "gave up after 3 rollback(s) (max_rollbacks = 3" in message
    assert not (out / "final.json").exists()
    RESULTS["divergence"]["huge-lr-gives-up"] = {
        "forced": "`train --lr 1e6 --on-divergence rollback --max-rollbacks 3`",
        "policy": "rollback",
        "outcome": f"3 rollbacks, then exit 3 with \"{message.removeprefix('error: ')}\"",
    }


def test_a_run_resumed_after_rollbacks_equals_the_uninterrupted_one(tmp_path, no_figures):
    config = preset(
        "smoke",
        "langevin",
        device="cpu",
        lr=1e6,
        max_energy_gap=100.0,
        on_divergence="rollback",
        max_rollbacks=25,
        iters=20,
        eval_every=5,
        checkpoint_every=5,
    )
    straight = Run(tmp_path / "straight", config, progress=False)
    straight.train()
    Run(tmp_path / "split", config.replace(iters=10), progress=False).train()
    resumed = Run(tmp_path / "split", resume=True, iters=20, progress=False)
    assert resumed.trainer.lr_factor == straight.trainer.lr_factor < 1  # the halved learning rate is in the checkpoint
    resumed.train()
    assert all(
        torch.equal(a, b) for a, b in zip(straight.trainer.model.parameters(), resumed.trainer.model.parameters())
    )
    assert resumed.trainer.rollbacks == straight.trainer.rollbacks
    assert _strip(_strict_rows(tmp_path / "split" / "metrics.jsonl")) == _strip(
        _strict_rows(tmp_path / "straight" / "metrics.jsonl")
    )
    RESULTS["divergence"]["rollback-resume-exact"] = {
        "forced": "lr = 1e6, rollback; stopped at iteration 10 and resumed to 20",
        "policy": "rollback",
        "outcome": f"{len(straight.trainer.rollbacks)} rollbacks; the learning-rate factor is kept in the checkpoint, "
        "so the "
        "resumed run ends bit for bit equal to the uninterrupted one",
    }


@pytest.mark.parametrize("data", ["rings", "digits"])
def test_a_rollback_equals_training_on_from_the_last_good_state_at_half_the_learning_rate(data):
    """Everything is restored: model, EMA, optimiser, chains, data stream, RNG, spectral norm's vectors (digits)."""
    extra = (
        dict(dataset="digits", spectral_norm=True, iters=6, checkpoint_every=2)
        if data == "digits"
        else dict(iters=12, checkpoint_every=4)
    )
    config = preset("smoke", "anila", device="cpu", on_divergence="rollback", ema=0.5, eval_every=1000, **extra)
    poison_at = (
        config.checkpoint_every + 1
    )  # a parameter turns NaN on the way to the iteration after the first checkpoint

    def quiet(trainer):  # no evaluation rows: FID is not what this is about
        trainer._is_eval_point = lambda iteration, end: False
        return trainer

    trainer = quiet(Trainer(config, progress=False))
    step = trainer.train_step

    def train_step(trace=None):
        if trainer.iteration == poison_at - 1 and not trainer.rollbacks:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))
        return step(trace)

    trainer.train_step = train_step
    trainer.run()
    assert [(r["iter"], r["restored_iter"], r["lr_factor"]) for r in trainer.rollbacks] == [
        (poison_at, config.checkpoint_every, 0.5)
    ]
    reference = quiet(Trainer(config, progress=False))
    reference.run(iters=config.checkpoint_every)
    reference.lr_factor = 0.5
    reference.run()
    for a, b in ((trainer.model, reference.model), (trainer.ema_model, reference.ema_model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    RESULTS["divergence"][f"rollback-exact-{data}"] = {
        "forced": f"a parameter set to NaN before iteration {poison_at} "
        f"({'digits ConvNet, spectral norm' if data == 'digits' else 'rings MLP, replay buffer'}, EMA)",
        "policy": "rollback",
        "outcome": f"rolled back to iteration {config.checkpoint_every}; the final weights (EMA too) equal, bit for "
        "bit, those of "
        f"a run trained to iteration {config.checkpoint_every} and continued at half the learning rate",
    }


# =========================================================================== bad input


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its bytes: equal before and after means nothing was
    touched."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A run folder stopped at its checkpoint of iteration 10 (config.json, metrics.jsonl, checkpoint.pt)."""
    out = tmp_path_factory.mktemp("base") / "run"
    run = Run(out, preset("smoke", "langevin", device="cpu", iters=10), progress=False)
    run.trainer.run(
        callback=lambda t, row: fileio.append_jsonl(out / "metrics.jsonl", row), on_checkpoint=run.save_checkpoint
    )
    run.close()
    return out


def _copy_run(work: Path, base: Path) -> Path:
    shutil.copytree(base, work / "run")
    return work / "run"


def _edit_checkpoint(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def setup(work, base):
        path = _copy_run(work, base) / CHECKPOINT
        state = torch.load(path, weights_only=True)
        edit(state)
        torch.save(state, path)

    return setup


def _truncate_checkpoint(work, base):
    path = _copy_run(work, base) / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _config_json_width_64(work, base):
    path = _copy_run(work, base) / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "width": 64}))


def _weights_of_another_network(state):
    state["model"] = MLPEnergy(2, 64, 2).state_dict()
    state.pop("config")


class _PlantedCode:
    """An object whose unpickling calls ``os.mkdir(marker)``: what a booby-trapped checkpoint could run instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _plant_code(run: Path, marker: Path) -> None:
    """Give the run's checkpoint a planted object; loading it with pickle would create ``marker`` (the tree check sees
    it)."""
    path = run / CHECKPOINT
    state = torch.load(path, weights_only=True)
    state["history"].append({"note": _PlantedCode(marker)})
    torch.save(state, path)


def _drop_checkpoint(work, base):
    (_copy_run(work, base) / CHECKPOINT).unlink()


def _broken_config_json(work, base):
    (_copy_run(work, base) / "config.json").write_text('{"sampler": "langevin", "width"')


def _used_folder(work, base):
    (work / "used").mkdir()
    (work / "used" / "notes.txt").write_text("keep me")


def _plain_file(work, base):
    (work / "notes.txt").write_text("a file, not a folder")


def _empty_folder(work, base):
    (work / "empty").mkdir()


def _empty_cifar_folder(work, base):
    (work / "data" / "cifar-10-batches-py").mkdir(parents=True)


def _locked_folder(work, base):
    (work / "locked").mkdir()
    (work / "locked").chmod(0o555)


def _energy_call(energy, x0=None, n_steps=5):
    x0 = torch.zeros(4, 2) if x0 is None else x0
    return lambda work: Langevin(0.1).sample(energy, x0, n_steps)


QUADRATIC = lambda x: 0.5 * x.square().sum(1)  # noqa: E731
SMOKE = smoke_argv("train", "--no-progress")


def _resume_run(*flags: str) -> Callable[[Path], list[str]]:
    """A case's argv: ``train --resume`` on the run folder its setup prepared, plus ``flags``."""
    return lambda w: ["train", "--resume", "--out", str(w / "run"), *flags]


@dataclass(frozen=True)
class Case:
    """One bad input: how it is tried, and the two things its message must say (what was wrong, what was expected)."""

    id: str
    interface: str  # "API" or "CLI"
    given: str  # what was tried, as docs/RELIABILITY.md shows it
    what: str  # the message names what was wrong ...
    expected: str  # ... and what was expected
    call: Callable[[Path], object] | None = None  # API: must raise `error`
    argv: Callable[[Path], list[str]] | None = None  # CLI: must exit 2 with one clear line
    setup: Callable[[Path, Path], None] | None = None  # (work folder, a finished-to-checkpoint run folder)
    error: type = ValueError
    as_nobody: bool = False  # root ignores file permissions: the CLI then runs as uid 65534 in a forked child


def _nan_images():
    data = torch.zeros(5, 1, 8, 8)
    data[2, 0, 3, 3] = float("nan")
    return data


CASES = [
    # ---- samplers: hyperparameters, x0, the energy function (Python API)
    Case(
        "sampler-step-size",
        "API",
        "Langevin(step_size=-0.1)",
        "step_size",
        "expected a finite number > 0",
        call=lambda w: Langevin(step_size=-0.1),
    ),
    Case(
        "sampler-threshold",
        "API",
        "AniLA(0.1, b=0.0)",
        "b: ",
        "expected a number > 0",
        call=lambda w: AniLA(0.1, b=0.0),
    ),
    Case(
        "sampler-psgld-alpha",
        "API",
        "PSGLD(0.1, alpha=1.0)",
        "alpha",
        "expected a number in [0, 1)",
        call=lambda w: PSGLD(0.1, alpha=1.0),
    ),
    Case(
        "sampler-n-steps",
        "API",
        "sampler.sample(E, x0, n_steps=0)",
        "n_steps",
        "expected an integer >= 1",
        call=_energy_call(QUADRATIC, n_steps=0),
    ),
    Case(
        "x0-not-a-tensor",
        "API",
        "x0 = [[0.0, 0.0]] (a list)",
        "got list",
        "expected a torch.Tensor",
        call=_energy_call(QUADRATIC, [[0.0, 0.0]]),
    ),
    Case(
        "x0-integer-dtype",
        "API",
        "x0 = torch.zeros(4, 2, dtype=torch.int64)",
        "got dtype torch.int64",
        "expected a floating-point tensor",
        call=_energy_call(QUADRATIC, torch.zeros(4, 2, dtype=torch.int64)),
    ),
    Case(
        "x0-one-dimensional",
        "API",
        "x0 = torch.zeros(8)",
        "got (8,)",
        "expected shape (N, ...)",
        call=_energy_call(QUADRATIC, torch.zeros(8)),
    ),
    Case(
        "x0-nan",
        "API",
        "x0 with a NaN",
        "got NaN or inf",
        "x0: expected finite values",
        call=_energy_call(QUADRATIC, torch.tensor([[0.0, float("nan")], [1.0, 1.0]])),
    ),
    Case(
        "x0-wrong-width",
        "API",
        "x0 of shape (4, 3) for a 2-D MLPEnergy",
        "got (4, 3)",
        "expected points of shape (N, 2)",
        call=_energy_call(MLPEnergy(2, 8, 1), torch.zeros(4, 3)),
    ),
    Case(
        "energy-shape-n1",
        "API",
        "energy returning shape (N, 1)",
        "got (4, 1)",
        "expected energies of shape (4,), one per sample",
        call=_energy_call(lambda x: x.square().sum(1, keepdim=True)),
    ),
    Case(
        "energy-scalar",
        "API",
        "energy returning a scalar (the batch's sum)",
        "got ()",
        "expected energies of shape (4,)",
        call=_energy_call(lambda x: x.square().sum()),
    ),
    Case(
        "energy-not-differentiable",
        "API",
        "energy ignoring x (torch.ones(N))",
        "do not depend on x",
        "expected a differentiable function of x",
        call=_energy_call(lambda x: torch.ones(len(x))),
    ),
    Case(
        "sampler-unknown-name",
        "API",
        "make_sampler('ghmc', step_size=0.1)",
        "unknown name 'ghmc'",
        "expected one of ['anila', 'hmc', 'langevin', 'psgld']",
        call=lambda w: make_sampler("ghmc", step_size=0.1),
    ),
    Case(
        "sampler-unknown-hyperparameter",
        "API",
        "make_sampler('langevin', stepsize=0.1)",
        "unknown hyperparameter(s) ['stepsize']",
        "expected some of ['step_size'",
        call=lambda w: make_sampler("langevin", stepsize=0.1),
    ),
    # ---- configuration (Python API)
    Case(
        "preset-unknown",
        "API",
        "preset('huge')",
        "unknown name 'huge'",
        "expected one of",
        call=lambda w: preset("huge"),
    ),
    Case(
        "target-unknown",
        "API",
        "make_target('moons')",
        "unknown name 'moons'",
        "expected one of",
        call=lambda w: make_target("moons"),
    ),
    Case(
        "config-nan",
        "API",
        "TrainConfig(lr=nan).validate()",
        "lr: ",
        "expected a number, got NaN",
        call=lambda w: TrainConfig(lr=float("nan")).validate(),
    ),
    Case(
        "config-type",
        "API",
        "TrainConfig(iters='many').validate()",
        "iters",
        "expected a value of type int",
        call=lambda w: TrainConfig(iters="many").validate(),
    ),
    Case(
        "config-buffer-below-batch",
        "API",
        "preset('smoke', batch_size=64, buffer_size=10)",
        "buffer_size",
        "expected at least batch_size (64)",
        call=lambda w: preset("smoke", batch_size=64, buffer_size=10),
    ),
    Case(
        "config-unknown-field",
        "API",
        "preset('smoke', temperature=2.0)",
        "unknown field(s) ['temperature']",
        "expected names from",
        call=lambda w: preset("smoke", temperature=2.0),
    ),
    # ---- data (Python API)
    Case(
        "data-nan",
        "API",
        "ImageDataset with a NaN pixel",
        "1 NaN or infinite value(s)",
        "data: expected finite values",
        call=lambda w: ImageDataset("mine", _nan_images(), torch.zeros(5, dtype=torch.long), 1.0),
    ),
    Case(
        "data-shape",
        "API",
        "ImageDataset of shape (5, 8, 8)",
        "got (5, 8, 8)",
        "expected shape (N, C, H, W)",
        call=lambda w: ImageDataset("mine", torch.zeros(5, 8, 8), torch.zeros(5, dtype=torch.long), 1.0),
    ),
    Case(
        "data-dtype",
        "API",
        "ImageDataset of complex64 images",
        "got torch.complex64",
        "expected a real-valued torch.Tensor",
        call=lambda w: ImageDataset(
            "mine", torch.zeros(5, 1, 8, 8, dtype=torch.complex64), torch.zeros(5, dtype=torch.long), 1.0
        ),
    ),
    Case(
        "data-labels",
        "API",
        "ImageDataset with 3 labels for 5 images",
        "labels",
        "expected shape (5,)",
        call=lambda w: ImageDataset("mine", torch.zeros(5, 1, 8, 8), torch.zeros(3, dtype=torch.long), 1.0),
    ),
    Case(
        "dataset-unknown",
        "API",
        "load_dataset('mnist')",
        "unknown dataset 'mnist'",
        "expected one of",
        call=lambda w: load_dataset("mnist"),
    ),
    Case(
        "dataset-missing-folder",
        "API",
        "load_dataset('cifar10', data_root=<missing folder>)",
        "does not exist",
        "To put CIFAR-10 there",
        call=lambda w: load_dataset("cifar10", w / "nowhere"),
        error=DatasetNotFoundError,
    ),
    # ---- run folders and checkpoints (Python API)
    Case(
        "run-used-folder",
        "API",
        "Run(<folder with a file>, config)",
        "already holds files",
        "choose another folder",
        call=lambda w: Run(w / "used", preset("smoke"), progress=False),
        setup=_used_folder,
    ),
    Case(
        "checkpoint-truncated",
        "API",
        "load_trainer(<run whose checkpoint.pt lost its second half>)",
        "checkpoint.pt: cannot be read",
        "expected a complete checkpoint.pt",
        call=lambda w: load_trainer(w / "run", progress=False),
        setup=_truncate_checkpoint,
    ),
    Case(
        "checkpoint-other-network",
        "API",
        "load_trainer(<run whose checkpoint holds width-64 weights, no config>)",
        "net.0.weight has shape (64, 2) in the checkpoint, (32, 2) in this configuration",
        "expected a checkpoint written with the same network settings",
        call=lambda w: load_trainer(w / "run", progress=False),
        setup=_edit_checkpoint(_weights_of_another_network),
    ),
    Case(
        "checkpoint-no-format",
        "API",
        "load_trainer(<checkpoint without a format number>)",
        "has no format number",
        "expected an anila_core checkpoint of format 1",
        call=lambda w: load_trainer(w / "run", progress=False),
        setup=_edit_checkpoint(lambda s: s.pop("format")),
    ),
    Case(
        "checkpoint-planted-code",
        "API",
        "load_trainer(<run whose checkpoint.pt carries a __reduce__>), as notebooks and the app do",
        "refused: it may not be a checkpoint of anila_core",
        "expected a checkpoint.pt written by anila_core",
        call=lambda w: load_trainer(w / "run", progress=False),
        setup=lambda w, b: _plant_code(_copy_run(w, b), w / "PWNED"),
    ),
    Case(
        "resume-iters-below",
        "API",
        "Run(<run at iteration 10>, resume=True, iters=5)",
        "iters: 5 is below the 10 iterations",
        "expected iters >= 10",
        call=lambda w: Run(w / "run", resume=True, iters=5, progress=False),
        setup=_copy_run,
    ),
    # ---- the command line: hyperparameters and names
    Case(
        "cli-lr-negative",
        "CLI",
        "train --lr -1",
        "lr: ",
        "expected a finite number > 0, got -1.0",
        argv=lambda w: SMOKE + ["--lr", "-1"],
    ),
    Case(
        "cli-reinit",
        "CLI",
        "train --reinit 1.5",
        "reinit",
        "expected a number in [0.0, 1.0], got 1.5",
        argv=lambda w: SMOKE + ["--reinit", "1.5"],
    ),
    Case(
        "cli-batch-size",
        "CLI",
        "train --batch-size 0",
        "batch_size",
        "expected an integer >= 1, got 0",
        argv=lambda w: SMOKE + ["--batch-size", "0"],
    ),
    Case(
        "cli-beta2",
        "CLI",
        "train --beta2 1",
        "beta2",
        "expected a number in [0.0, 0.999999]",
        argv=lambda w: SMOKE + ["--beta2", "1"],
    ),
    Case(
        "cli-step-size-nan",
        "CLI",
        "train --step-size nan",
        "step_size",
        "expected a number, got NaN",
        argv=lambda w: SMOKE + ["--step-size", "nan"],
    ),
    Case(
        "cli-max-rollbacks",
        "CLI",
        "train --max-rollbacks -1",
        "max_rollbacks",
        "expected a finite number >= 0",
        argv=lambda w: SMOKE + ["--max-rollbacks", "-1"],
    ),
    Case(
        "cli-iters-not-an-integer",
        "CLI",
        "train --iters 1.5",
        "argument --iters",
        "expected an integer (such as 2000 or 2e3), got '1.5'",
        argv=lambda w: SMOKE + ["--iters", "1.5"],
    ),
    Case(
        "cli-seed-too-large",
        "CLI",
        "train --seed 1e20",
        "seed: ",
        "expected an integer in [0, 2**63 - 1 = 9223372036854775807], got 100000000000000000000",
        argv=lambda w: SMOKE + ["--seed", "1e20"],
    ),
    Case(
        "cli-eval-samples-huge",
        "CLI",
        "train --eval-samples 1e9",
        "eval_samples: ",
        "expected at most 10000",
        argv=lambda w: SMOKE + ["--eval-samples", "1e9"],
    ),
    Case(
        "cli-eval-samples-above-buffer",
        "CLI",
        "train --preset smoke --eval-samples 1000 (buffer of 500 chains)",
        "eval_samples: ",
        "expected at most buffer_size (500)",
        argv=lambda w: SMOKE + ["--eval-samples", "1000"],
    ),
    Case(
        "cli-buffer-too-large",
        "CLI",
        "train --buffer-size 1e12",
        "buffer_size: the run needs at least",
        "expected a smaller --buffer-size",
        argv=lambda w: SMOKE + ["--buffer-size", "1e12"],
    ),
    Case(
        "cli-width-too-large",
        "CLI",
        "train --width 1e6",
        "width: the run needs at least",
        "expected a smaller --width",
        argv=lambda w: SMOKE + ["--width", "1e6"],
    ),
    Case(
        "cli-sampler-unknown",
        "CLI",
        "train --sampler ghmc",
        "invalid choice: 'ghmc'",
        "choose from",
        argv=lambda w: SMOKE + ["--sampler", "ghmc"],
    ),
    Case(
        "cli-target-unknown",
        "CLI",
        "train --target moons",
        "invalid choice: 'moons'",
        "choose from",
        argv=lambda w: SMOKE + ["--target", "moons"],
    ),
    Case(
        "cli-policy-unknown",
        "CLI",
        "train --on-divergence retry",
        "invalid choice: 'retry'",
        "choose from",
        argv=lambda w: SMOKE + ["--on-divergence", "retry"],
    ),
    Case(
        "cli-preset-unknown",
        "CLI",
        "train --preset huge",
        "unknown name 'huge'",
        "expected one of",
        argv=lambda w: ["train", "--preset", "huge"],
    ),
    Case(
        "cli-preset-empty",
        "CLI",
        "train --preset ''",
        "preset: unknown name ''",
        "expected one of ['cpu', 'cpu_long', 'paper', 'smoke', 'sweep']",
        argv=lambda w: ["train", "--preset", "", "--no-progress"],
    ),
    Case(
        "cli-target-and-dataset",
        "CLI",
        "train --target rings --dataset digits",
        "--target and --dataset",
        "choose one",
        argv=lambda w: SMOKE + ["--target", "rings", "--dataset", "digits"],
    ),
    Case(
        "cli-image-size",
        "CLI",
        "train --dataset digits --image-size 12",
        "image_size",
        "expected 0 (the dataset's own) or one of (8, 16)",
        argv=lambda w: SMOKE + ["--dataset", "digits", "--image-size", "12"],
    ),
    Case(
        "cli-device-unknown",
        "CLI",
        "train --device tpu",
        "got 'tpu'",
        "expected 'auto', 'cpu', 'cuda' or 'cuda:N'",
        argv=lambda w: SMOKE + ["--device", "tpu"],
    ),
    Case(
        "cli-device-missing",
        "CLI",
        "train --device cuda:7",
        "device: 'cuda:7'",
        "'cpu' or 'auto'",
        argv=lambda w: SMOKE + ["--device", "cuda:7"],
    ),
    Case(
        "cli-compare-jobs",
        "CLI",
        "compare --jobs 0",
        "--jobs",
        "expected an integer >= 1, got 0",
        argv=lambda w: smoke_argv("compare", "--jobs", "0", "--no-progress"),
    ),
    # ---- the command line: data folders
    Case(
        "cli-data-missing",
        "CLI",
        "train --dataset cifar10 --data-root <missing folder>",
        "cifar-10-batches-py does not exist",
        "To put CIFAR-10 there",
        argv=lambda w: SMOKE + ["--dataset", "cifar10", "--data-root", str(w / "nowhere")],
    ),
    Case(
        "cli-data-empty",
        "CLI",
        "train --dataset cifar10 --data-root <folder with an empty cifar-10-batches-py>",
        "holds none of the dataset files",
        "To put CIFAR-10 there",
        setup=_empty_cifar_folder,
        argv=lambda w: SMOKE + ["--dataset", "cifar10", "--data-root", str(w / "data")],
    ),
    # ---- the command line: output folders
    Case(
        "cli-out-used",
        "CLI",
        "train --out <folder with a file>",
        "already holds files",
        "choose another folder",
        setup=_used_folder,
        argv=lambda w: SMOKE + ["--out", str(w / "used")],
    ),
    Case(
        "cli-out-under-a-file",
        "CLI",
        "train --out notes.txt/run (a file where a folder should be)",
        "cannot create",
        "expected a folder path you can write to",
        setup=_plain_file,
        argv=lambda w: SMOKE + ["--out", str(w / "notes.txt" / "run")],
    ),
    Case(
        "cli-out-unwritable",
        "CLI",
        "train --out locked/run (locked: mode 0555, as a user without write access)",
        "Permission denied",
        "expected a folder path you can write to",
        setup=_locked_folder,
        as_nobody=True,
        argv=lambda w: SMOKE + ["--out", str(w / "locked" / "run")],
    ),
    # ---- the command line: resuming
    Case(
        "cli-resume-without-out",
        "CLI",
        "train --resume",
        "--resume: needs --out",
        "the run directory to continue",
        argv=lambda w: ["train", "--resume"],
    ),
    Case(
        "cli-resume-empty-folder",
        "CLI",
        "train --resume --out <empty folder>",
        "has no config.json",
        "expected the folder of a run",
        setup=_empty_folder,
        argv=lambda w: ["train", "--resume", "--out", str(w / "empty")],
    ),
    Case(
        "cli-resume-no-checkpoint",
        "CLI",
        "train --resume --out <run without checkpoint.pt>",
        "has no checkpoint.pt yet",
        "start it afresh",
        setup=_drop_checkpoint,
        argv=_resume_run(),
    ),
    Case(
        "cli-resume-truncated",
        "CLI",
        "train --resume --out <run whose checkpoint.pt is cut in half>",
        "checkpoint.pt: cannot be read",
        "expected a complete checkpoint.pt",
        setup=_truncate_checkpoint,
        argv=_resume_run(),
    ),
    Case(
        "cli-resume-other-architecture",
        "CLI",
        "train --resume --out <run whose config.json says width 64>",
        "width 32 in the checkpoint, 64 in config.json",
        "expected the checkpoint and config.json of the same run",
        setup=_config_json_width_64,
        argv=_resume_run(),
    ),
    Case(
        "cli-resume-other-version",
        "CLI",
        "train --resume --out <run whose checkpoint has format 2, from anila_core 9.0.0>",
        "format 2 (written by anila_core 9.0.0)",
        "which reads format 1",
        setup=_edit_checkpoint(lambda s: s.update(format=2, anila_core_version="9.0.0")),
        argv=_resume_run(),
    ),
    Case(
        "cli-resume-broken-config",
        "CLI",
        "train --resume --out <run with a truncated config.json>",
        "config.json: not a valid run configuration",
        "expected the config.json a run wrote",
        setup=_broken_config_json,
        argv=_resume_run(),
    ),
    Case(
        "cli-resume-changed-setting",
        "CLI",
        "train --resume --out <run> --lr 0.1",
        "--lr cannot change on resume (--lr: 0.001 in the run's config.json, 0.1 given)",
        "only --iters, --device",
        setup=_copy_run,
        argv=_resume_run("--lr", "0.1"),
    ),
    Case(
        "cli-resume-other-preset",
        "CLI",
        "train --resume --out <smoke run> --preset cpu",
        "--n-steps: 10 in the run's config.json, 30 from --preset cpu",
        "drop the flag or give the run's value",
        setup=_copy_run,
        argv=_resume_run("--preset", "cpu"),
    ),
    Case(
        "cli-resume-planted-code",
        "CLI",
        "train --resume --out <run whose checkpoint.pt carries a __reduce__ that would make a folder>",
        "checkpoint.pt: refused: it may not be a checkpoint of anila_core",
        "expected a checkpoint.pt written by anila_core",
        setup=lambda w, b: _plant_code(_copy_run(w, b), w / "PWNED"),
        argv=_resume_run(),
    ),
    Case(
        "cli-resume-iters-below",
        "CLI",
        "train --resume --out <run at iteration 10> --iters 5",
        "--iters: 5 is below",
        "expected --iters >= 10",
        setup=_copy_run,
        argv=_resume_run("--iters", "5"),
    ),
]


def _cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with its exit code (argparse's SystemExit included) and everything it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, buffer.getvalue()


def _cli_as_nobody(argv: list[str]) -> tuple[int, str]:
    """:func:`_cli` in a forked child running as uid/gid 65534, so that file permissions apply even when the tests run
    as root."""
    read, write = os.pipe()
    pid = _fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = _cli(argv)
        except BaseException:
            result = (99, traceback.format_exc())
        with os.fdopen(write, "wb") as f:
            f.write(pickle.dumps(result))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _wait(pid, timeout=120)
    return pickle.loads(data)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_answered_by_a_clear_error(case, base_run, tmp_path, monkeypatch):
    if case.as_nobody:
        work = Path(
            tempfile.mkdtemp(prefix="anila-bad-input-")
        )  # outside pytest's 0700 folder, so uid 65534 can reach it
        work.chmod(0o755)
    else:
        work = tmp_path / "work"
        work.mkdir()
    try:
        if case.setup is not None:
            case.setup(work, base_run)
        monkeypatch.chdir(work)  # a default --out would land here
        before = _tree(work)
        if case.interface == "API":
            with pytest.raises(case.error) as err:
                case.call(work)
            message, outcome = str(err.value), type(err.value).__name__
        else:
            code, printed = (
                _cli_as_nobody(case.argv(work)) if case.as_nobody and os.geteuid() == 0 else _cli(case.argv(work))
            )
            assert "Traceback" not in printed, printed
            assert code == 2, printed
            message = next((line for line in printed.splitlines() if "error: " in line), printed)
            assert message.startswith("error: ") or ": error: " in message, (
                printed
            )  # ours, or argparse's "prog: error: ..."
            message = message.split("error: ", 1)[1]
            outcome = f"exit {code}"
        assert _tree(work) == before, "nothing that existed before was changed or removed, and nothing was added"
    finally:
        if case.as_nobody:
            for folder in work.rglob("*"):
                if folder.is_dir():
                    folder.chmod(0o755)
            shutil.rmtree(work, ignore_errors=True)
    assert case.what in message, message
    assert case.expected in message, message
    RESULTS["bad_input"][case.id] = {"outcome": outcome, "message": message.replace(str(work), "<tmp>")}


# =========================================================================== run folders
#
# What a run folder may contain and who may write it: a checkpoint that carries code, two
# writers, a compare killed early or killed as a whole, a full disk, too little memory, and the
# requeue of the same command line with --resume.


def _one_error_line(printed: str) -> str:
    """The one ``error:`` line a failing command printed (and no traceback), without its prefix."""
    assert "Traceback" not in printed, printed
    lines = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, printed
    return lines[0].removeprefix("error: ")


def _quote(text: str, tmp: Path) -> str:
    """A message as the doc shows it: without the test's folder, and without what varies from run to run in a lock
    holder's description."""
    text = text.replace(str(tmp), "<tmp>").replace(f" on host {socket.gethostname()}", " on host <host>")
    text = re.sub(r" since [0-9: -]+ UTC", " since <time>", text)
    return re.sub(r", running `[^`]*`", ", running `<command>`", text)


def _record(name: str, case: str, outcome: str) -> None:
    RESULTS["run_folders"][name] = {"case": case, "outcome": outcome}


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended, all its threads included (a zombie that nobody reaped yet has ended too).

    A killed process's main thread can turn zombie while its other threads are still exiting;
    they share its open files, so its locks are let go only when the last of them is gone.
    """
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z" and threads == [str(pid)]


def _processes_with_open(path: Path) -> list[str]:
    """The processes that have ``path`` open (pid, state and command line), read from ``/proc``: who holds a lock that
    should be free."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd")):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(
                    f"pid {pid} (parent {_parent_of(int(pid))}, {'gone' if _gone(int(pid)) else 'running'}): "
                    f"{command[:120]}"
                )
        except OSError:  # a process that ended while we looked, or one we may not inspect
            pass
    return found


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _until(condition: Callable[[], object], timeout: float, what: str):
    """Wait for ``condition()`` to be true (a safety limit, not a measurement: a slow machine only waits longer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _lock_pid(folder: Path) -> int | None:
    try:
        return json.loads((folder / fileio.LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


SUBPROCESS_ENV = {
    **os.environ,
    "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    "OMP_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


@pytest.mark.parametrize("via", ["train --resume", "compare --resume", "load_trainer"])
def test_a_checkpoint_with_planted_code_is_refused_without_running_it(via, base_run, tmp_path):
    # the control: pickle's own loading (what weights_only=False did) runs the planted call
    control = tmp_path / "control"
    shutil.copytree(base_run, control)
    _plant_code(control, tmp_path / "CONTROL")
    torch.load(control / CHECKPOINT, weights_only=False)
    assert (tmp_path / "CONTROL").is_dir()

    work = tmp_path / "work"
    run = work / ("cmp/langevin" if via == "compare --resume" else "run")
    shutil.copytree(base_run, run)
    marker = tmp_path / "PWNED"
    _plant_code(run, marker)
    before = _tree(work)
    if via == "load_trainer":  # what the notebooks and the Voila app call
        with pytest.raises(ValueError) as err:
            load_trainer(run, progress=False)
        message = str(err.value)
    else:
        argv = (
            ["train", "--resume", "--out", str(run), "--no-progress"]
            if via == "train --resume"
            else smoke_argv("compare", *"--iters 10 --samplers langevin --jobs 1 --resume".split(), out=run.parent)
        )
        code, printed = _cli(argv)
        assert code == 2, printed
        message = _one_error_line(printed)
    assert not marker.exists(), "the planted call ran"
    assert message.startswith(f"{run / CHECKPOINT}: refused: it may not be a checkpoint of anila_core"), message
    assert "posix.mkdir" in message
    assert _tree(work) == before, "nothing in the folder changed"
    _record(
        f"planted-code-{via.split()[0]}",
        f"`{via}` on a run whose checkpoint.pt carries an object whose `__reduce__` calls "
        "`os.mkdir` (pickle's own loading of the same file does create the folder)",
        f"{'exit 2, ' if via != 'load_trainer' else 'ValueError, '}nothing ran, the folder byte for byte as before: "
        f"\"{_quote(message, tmp_path)}\"",
    )


def test_a_second_writer_of_a_run_folder_is_refused_and_the_first_completes(tmp_path, no_figures):
    out = tmp_path / "run"
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = _fork()
    if pid == 0:
        code = 70
        try:
            os.close(from_parent)
            os.close(to_parent)
            append = runs.append_jsonl

            def append_then_wait(path, row):  # mid-run: the parent tries its writers now
                append(path, row)
                if row["iter"] == 10:
                    os.write(from_child, b"1")
                    os.read(to_child, 1)

            runs.append_jsonl = append_then_wait
            code = main(SMOKE + ["--out", str(out)])
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(to_child)
    os.close(from_child)
    attempts = {}
    try:
        assert os.read(to_parent, 1) == b"1", "the first writer did not reach its first row"
        before = _tree(out)
        for label, argv in (
            ("train", SMOKE + ["--out", str(out)]),
            ("train --resume", ["train", "--resume", "--out", str(out), "--no-progress"]),
        ):
            code, printed = _cli(argv)
            assert code == 2, printed
            attempts[label] = _one_error_line(printed)
        with pytest.raises(ValueError) as err:
            Run(out, resume=True, progress=False)
        attempts["Run(resume=True)"] = str(err.value)
        after = _tree(out)
    finally:
        os.write(from_parent, b"1")
    status = _wait(pid, timeout=120)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"the first writer failed: status {status}"
    for label, message in attempts.items():
        assert f"is being written by pid {pid} on host {socket.gethostname()}" in message, (label, message)
    assert after == before, "the refused writers changed nothing"
    rows = _strict_rows(out / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [10, 20, 30]
    assert json.loads((out / "final.json").read_text())["iters"] == 30
    assert torch.load(out / CHECKPOINT, weights_only=True)["iteration"] == 30
    assert not (out / fileio.LOCK_FILE).exists(), "the lock is gone with its writer"
    _record(
        "second-writer",
        "`train` mid-run in a forked process; meanwhile `train`, `train --resume` and `Run(out, resume=True)` "
        "on the same folder",
        "each refused at once, exit 2: \""
        + _quote(attempts["train --resume"], tmp_path).replace(str(pid), "<pid>")
        + "\"; the folder unchanged by them; the first run completed (rows 10, 20, 30, final.json, checkpoint of "
        "iteration 30)",
    )


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
def test_a_folder_held_by_another_writer_is_refused_by_every_command(command, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    argv = {
        "train": SMOKE + ["--out", str(out)],
        "compare": smoke_argv("compare", "--jobs", "1", "--resume", out=out),
        "sweep": smoke_argv("sweep", "--samplers", "langevin", "--jobs", "1", out=out),
    }[command]
    with fileio.FolderLock(out):  # held here: a notebook's open Run, say
        before = _tree(out)
        code, printed = _cli(argv)
        after = _tree(out)
    assert code == 2, printed
    message = _one_error_line(printed)
    assert (
        f"is being written by pid {os.getpid()} on host {socket.gethostname()}" in message
        and "this very process" in message
    )
    assert after == before
    _record(
        f"busy-folder-{command}",
        f"`{command}` on a folder whose lock another writer holds",
        f"exit 2: \"{_quote(message, tmp_path).replace(str(os.getpid()), '<pid>')}\"",
    )


def test_a_run_holds_its_folder_while_open_and_lets_go_when_training_ends(tmp_path, no_figures):
    """The Python API (a notebook): a second Run of the folder is refused while the first is open; train() and close()
    let go."""
    out = tmp_path / "run"
    first = Run(out, preset("smoke", "langevin", device="cpu", iters=10), progress=False)
    with pytest.raises(ValueError, match="this very process"):
        Run(out, resume=True, progress=False)
    first.train()
    assert not (out / fileio.LOCK_FILE).exists()
    second = Run(out, resume=True, iters=20, progress=False)
    with pytest.raises(ValueError, match=f"is being written by pid {os.getpid()}"):
        Run(out, resume=True, progress=False)
    second.close()
    with Run(out, resume=True, iters=20, progress=False) as third:
        assert third.train()["iters"] == 20
    assert fileio.lock_holder(out) is None


def test_a_compare_killed_before_its_first_checkpoint_finishes_with_resume(tmp_path, no_figures):
    out = tmp_path / "cmp"
    args = smoke_argv("compare", "--iters", "10", "--jobs", "1", out=out)
    pid = _fork()
    if pid == 0:
        code = 70
        try:  # SIGKILL halfway through the first checkpoint: config.json and a row exist, no checkpoint
            runs.atomic_torch_save = _dies_inside_checkpoint_write(runs.atomic_torch_save, 1, 0.5)
            compare.torch_threads = lambda n: contextlib.nullcontext()  # one thread in a forked child (see _fork)
            code = main(args)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    status = _wait(pid, timeout=120)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    left = sorted(p.name for p in (out / "langevin").iterdir())
    assert "config.json" in left and CHECKPOINT not in left and fileio.LOCK_FILE in left, left
    code, printed = _cli(args + ["--resume"])
    assert code == 0, printed
    assert f"{out / 'langevin'}: stopped before its first checkpoint, started again" in printed
    from anila_core.processes import torch_threads

    with torch_threads(os.cpu_count() or 1):  # the threads compare --jobs 1 gives its run: the same reduction order
        reference = Run(tmp_path / "reference", preset("smoke", "langevin", iters=10), progress=False).train()
    for sampler in ("langevin", "anila"):
        final = json.loads((out / sampler / "final.json").read_text())
        assert final["iters"] == 10 and [r["iter"] for r in _strict_rows(out / sampler / "metrics.jsonl")] == [10]
    drop = ("wall_s",)
    langevin = json.loads((out / "langevin" / "final.json").read_text())
    assert {k: v for k, v in langevin.items() if k not in drop} == {k: v for k, v in reference.items() if k not in drop}
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(fileio.LOCK_FILE))
    _record(
        "compare-killed-before-checkpoint",
        "`compare` (langevin, anila) SIGKILLed halfway through langevin's first checkpoint "
        "write (left: its config.json, a metrics row, a temporary file, stale locks), then the same command with "
        "`--resume`",
        "exit 0: langevin started again (\"stopped before its first checkpoint, started again\") and ended equal to an "
        "uninterrupted run, anila trained, comparison.md and comparison.png written; the stale locks did not block",
    )


def test_the_workers_of_a_killed_compare_end_with_it(tmp_path):
    out = tmp_path / "cmp"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anila_core",
            *smoke_argv(
                "compare", *"--iters 1000000 --eval-every 1000000 --checkpoint-every 1000000 --jobs 2".split(), out=out
            ),
        ],
        env=SUBPROCESS_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    workers: list[int] = []
    try:
        # each worker holds its sampler folder's lock while it trains: then it is busy, not waiting for work
        def both_training():
            if parent.poll() is not None:
                pytest.fail(f"compare ended early with exit {parent.returncode}: {parent.stderr.read()}")
            pids = [_lock_pid(out / s) for s in ("langevin", "anila")]
            return pids if all(pids) else None

        workers = _until(both_training, timeout=300, what="both workers training")
        assert all(_parent_of(w) == parent.pid for w in workers)
        parent.kill()
        parent.wait()
        _until(lambda: all(_gone(w) for w in workers), timeout=60, what="the workers ending after their parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for w in workers:  # a failed check must not leave them training
            if not _gone(w):
                os.kill(w, signal.SIGKILL)
    held = {
        s: _processes_with_open(out / s / fileio.LOCK_FILE)
        for s in ("langevin", "anila")
        if fileio.lock_holder(out / s)
    }
    assert not held, f"their locks were let go; still held, with the lock file open in: {held}"
    _record(
        "compare-workers-die-with-parent",
        "`compare --jobs 2` SIGKILLed while both worker processes train",
        "both workers ended with it (Linux: PR_SET_PDEATHSIG; elsewhere a watchdog thread that sees the parent pid "
        "change), "
        "and their folder locks were free again",
    )


POOL_SCRIPT = '''
import os, sys, time
from anila_core.processes import process_pool

def busy(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(3600)  # a job in progress: the worker does not read its task pipe meanwhile

if __name__ == "__main__":
    with process_pool(1) as pool:
        pool.map(busy, [sys.argv[1]])
'''


def test_a_pool_worker_ends_when_its_parent_is_killed(tmp_path):
    """The pool of compare and of sweep's cells: a worker busy with a job ends when the parent dies."""
    script = tmp_path / "pool_parent.py"
    script.write_text(POOL_SCRIPT)
    started = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, str(script), str(started)], env=SUBPROCESS_ENV)
    worker = None
    try:
        worker = int(
            _until(lambda: started.exists() and started.read_text(), timeout=120, what="the worker's job starting")
        )
        assert _parent_of(worker) == parent.pid
        parent.kill()
        parent.wait()
        _until(lambda: _gone(worker), timeout=60, what="the worker ending after its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if worker is not None and not _gone(worker):
            os.kill(worker, signal.SIGKILL)
    _record(
        "pool-workers-die-with-parent",
        "a `process_pool` worker (compare's runs, sweep's cells) in the middle of a job; its parent SIGKILLed",
        "the worker ended with it",
    )


def _mount_tmpfs(path: Path, size: int) -> bool:
    """Mount a tmpfs of ``size`` bytes on ``path``; ``False`` where mounting is not allowed (not root, no
    CAP_SYS_ADMIN)."""
    try:
        return (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
            ).returncode
            == 0
        )
    except OSError:
        return False


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_resume_completes(
    tmp_path, monkeypatch, base_run, no_figures
):
    disk = tmp_path / "disk"
    disk.mkdir()
    page = 4096
    checkpoint_pages = -(-(base_run / CHECKPOINT).stat().st_size // page)
    # room for config.json, metrics.jsonl, .lock and one checkpoint and a half: the second checkpoint's temporary file
    # does not fit
    mounted = _mount_tmpfs(disk, page * (3 + checkpoint_pages + checkpoint_pages // 2))
    try:
        if not mounted:  # the same error torch raises on a full disk, from the second checkpoint's write
            save, calls = torch.save, []

            def full_disk_save(obj, f, *args, **kwargs):
                calls.append(1)
                if len(calls) < 2:
                    return save(obj, f, *args, **kwargs)
                f.write(b"PK\x03\x04 a few bytes")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

            monkeypatch.setattr(torch, "save", full_disk_save)
        out = disk / "run"
        code, printed = _cli(SMOKE + ["--out", str(out)])
        assert code == 3, printed
        message = _one_error_line(printed)
        assert message.startswith(f"disk full / no space left while writing {out / CHECKPOINT}"), message
        assert (
            f"the last good checkpoint {out / CHECKPOINT} (iteration 10) is intact: continue with --resume" in message
        )
        assert torch.load(out / CHECKPOINT, weights_only=True)["iteration"] == 10, "the previous checkpoint is intact"
        assert not list(out.glob(".*.tmp")) and not (out / fileio.LOCK_FILE).exists()
        # space again: the same folder resumes to the end
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        else:
            monkeypatch.setattr(torch, "save", save)
        code, printed = _cli(["train", "--resume", "--out", str(out), "--no-progress"])
        assert code == 0, printed
        assert "resuming" in printed and [r["iter"] for r in _strict_rows(out / "metrics.jsonl")] == [10, 20, 30]
        assert json.loads((out / "final.json").read_text())["iters"] == 30
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)
    how = (
        f"a tmpfs of {3 + checkpoint_pages + checkpoint_pages // 2} pages mounted for the test"
        if mounted
        else "mounting refused here: `torch.save` replaced by one that raises torch's full-disk RuntimeError"
    )
    _record(
        "disk-full-checkpoint",
        f"`train` whose second checkpoint does not fit on the disk ({how}); then space again and `train --resume`",
        f"exit 3: \"{_quote(message, tmp_path)}\"; checkpoint of iteration 10 intact, no temporary file; "
        "the resume completed (rows 10, 20, 30)",
    )


OUT_OF_MEMORY = {
    "cpu-allocator": lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 8000000000000 bytes. Error code 12 (Cannot allocate memory)"
    ),
    "memory-error": lambda: MemoryError(),
    "cuda": lambda: torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 7.28 TiB. GPU 0 has a total capacity of 139.8 GiB"
    ),
}


@pytest.mark.parametrize(
    "kind, at",
    [("cpu-allocator", 3), ("memory-error", 3), ("cuda", 3), ("cpu-allocator", 15)],
    ids=[
        "cpu-allocator-before-checkpoint",
        "memory-error-before-checkpoint",
        "cuda-before-checkpoint",
        "cpu-allocator-after-checkpoint",
    ],
)
def test_out_of_memory_names_the_sizes_and_leaves_a_folder_to_rerun_or_resume(
    kind, at, tmp_path, monkeypatch, no_figures
):
    step, failed = Trainer.train_step, []

    def fails_once(self, trace=None):
        if self.iteration == at - 1 and not failed:
            failed.append(at)
            raise OUT_OF_MEMORY[kind]()
        return step(self, trace)

    monkeypatch.setattr(Trainer, "train_step", fails_once)
    out = tmp_path / "run"
    code, printed = _cli(SMOKE + ["--out", str(out)])
    assert code == 3, printed
    message = _one_error_line(printed)
    assert message.startswith(f"out of {'GPU ' if kind == 'cuda' else ''}memory while training {out}"), message
    for size in ("--buffer-size (now 500)", "--batch-size (now 64)", "--width (now 32)", "--eval-samples (now 200)"):
        assert size in message
    if at < 10:
        assert (
            f"no checkpoint was written yet, so the files of this run were removed from {out}: run the command again"
            in message
        )
        assert not out.exists(), "the folder this run made is gone: the same command can run again"
        code, printed = _cli(SMOKE + ["--out", str(out)])
    else:
        assert (
            f"the last good checkpoint {out / CHECKPOINT} (iteration 10) is intact: continue with --resume" in message
        )
        code, printed = _cli(["train", "--resume", "--out", str(out), "--no-progress"])
    assert code == 0, printed
    assert json.loads((out / "final.json").read_text())["iters"] == 30
    when = "before" if at < 10 else "after"
    _record(
        f"oom-{kind}-{when}-checkpoint",
        f"`train` whose iteration {at} raises {type(OUT_OF_MEMORY[kind]()).__name__} "
        f"({'the CPU allocator' if kind == 'cpu-allocator' else 'Python' if kind == 'memory-error' else 'CUDA'}), "
        f"{when} the first checkpoint; then the command again" + ("" if at < 10 else " with `--resume`"),
        f"exit 3: \"{_quote(message, tmp_path)}\"; the " + ("rerun" if at < 10 else "resume") + " completed",
    )


def test_the_same_command_plus_resume_continues_and_a_changed_value_is_refused(tmp_path, monkeypatch, no_figures):
    out = tmp_path / "run"
    command = smoke_argv("train", "--sampler", "anila", "--seed", "3", "--iters", "20", out=out)
    step = Trainer.train_step

    def stopped_after_the_checkpoint(
        self, trace=None
    ):  # a cluster's time limit, right after the checkpoint of iteration 10
        if self.iteration == 10:
            raise KeyboardInterrupt
        return step(self, trace)

    monkeypatch.setattr(Trainer, "train_step", stopped_after_the_checkpoint)
    assert _cli(command)[0] == 130
    monkeypatch.setattr(Trainer, "train_step", step)
    before = _tree(out)
    changed = [("4" if a == "3" else a) for a in command] + ["--resume"]
    code, printed = _cli(changed)
    assert code == 2, printed
    refused = _one_error_line(printed)
    assert refused.startswith(
        "--resume: --seed cannot change on resume (--seed: 3 in the run's config.json, 4 given)"
    ), refused
    assert _tree(out) == before
    code, printed = _cli(command + ["--resume"])
    assert code == 0, printed
    assert f"resuming {out} at iteration 10 of 20" in printed
    straight = tmp_path / "straight"
    assert _cli([a if a != str(out) else str(straight) for a in command])[0] == 0
    assert _strip(_strict_rows(out / "metrics.jsonl")) == _strip(_strict_rows(straight / "metrics.jsonl"))
    _record(
        "resume-same-command",
        "`train --preset smoke --sampler anila --seed 3 --iters 20` stopped after its checkpoint of "
        "iteration 10; the same command plus `--resume`, and with `--seed 4` plus `--resume`",
        "the same command: accepted, printed \"resuming <tmp>/run at iteration 10 of 20\", and ended with the rows of "
        "an "
        f"uninterrupted run; `--seed 4`: exit 2, \"{_quote(refused, tmp_path)}\", the folder unchanged",
    )


# =========================================================================== docs/RELIABILITY.md


def _cell(text: str, limit: int | None = None) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def render_note() -> str:
    """docs/RELIABILITY.md from the plans and case list above and the outcomes this session recorded."""
    crash, divergence, bad, folders = (
        RESULTS["crash"],
        RESULTS["divergence"],
        RESULTS["bad_input"],
        RESULTS["run_folders"],
    )
    landed = [crash[i]["landed"] for i in range(len(PLAN))]
    resumed = sum(s.startswith("resumed from") for s in landed)
    fresh = sum("fresh start" in s for s in landed)
    finished = sum(s.startswith("after the run had finished") for s in landed)
    with_tmp = sum("temporary" in crash[i]["leftovers"] for i in range(len(PLAN)))
    torn = sum("torn" in crash[i]["leftovers"] for i in range(len(PLAN)))
    n_api = sum(c.interface == "API" for c in CASES)
    lines = [
        "# Reliability: what was tried and what happened",
        "",
        "Rendered from the outcomes of `tests/test_reliability.py` and `tests/test_hostile.py` by `make reliability`;",
        "the tests, which run in every `make test`, only check this file against their plans and cases.",
        "",
        "## In numbers",
        "",
        f"- **Crashes**: {len(PLAN)} trials of SIGKILL to a training process, then resume: {N_RANDOM} at random "
        "moments, "
        f"{N_IN_CHECKPOINT} inside a checkpoint write, {N_IN_METRICS} inside a metrics row (RNG seed {CRASH_SEED}). "
        f"{len(PLAN)} of {len(PLAN)} ended with parameters (and EMA parameters), `metrics.jsonl` and `final.json` "
        "identical, "
        f"bit for bit, to a run that was never interrupted; every checkpoint left behind loaded.",
        f"  Where the kills landed (this varies with the machine's speed): {resumed} resumed from a checkpoint, "
        f"{fresh} before the first checkpoint (`--resume` refused with the clear "
        f"\"no checkpoint yet\" error, then a fresh start), {finished} after the run had finished; {with_tmp} left a "
        f"temporary file (removed on resume), {torn} a torn last metrics row (dropped on resume).",
        f"- **Divergence**: {len(divergence)} tests; every forced divergence was caught at the first bad iteration (or "
        "the "
        "next one for a parameter poisoned between iterations); `stop` ended with the message naming iteration, cause "
        "and "
        "last good checkpoint (exit 3 on the command line); `rollback` restored the last good state, halved the "
        "learning "
        "rate, logged it and completed, or stopped with the message after `--max-rollbacks`.",
        f"- **Bad input**: {len(CASES)} cases ({n_api} through the Python API, {len(CASES) - n_api} through the "
        "command "
        f"line); {len(bad)} of {len(CASES)} were answered by an error naming what was wrong and what was expected; "
        "every "
        "command-line case exited with code 2 and one `error:` line, without a traceback; in every case the files that "
        "existed before were left byte for byte as they were, and nothing was added.",
        f"- **Run folders**: {len(RUN_FOLDER_TESTS)} tests of who may write a run folder and what it may hold: a "
        "checkpoint "
        "carrying code is refused without running it (every checkpoint loads with `torch.load(weights_only=True)`); a "
        "second "
        "writer is refused at once, naming the holder's pid and host (`flock` on `.lock`, released by the OS however "
        "the "
        "writer ends); a compare killed before a sampler's first checkpoint finishes with `--resume`, and its worker "
        "processes "
        "end with it; a full disk and a failed allocation end with one `error:` line and exit 3, the last checkpoint "
        "intact (or, "
        "before the first one, the run's files removed so the command can run again); the same command line plus "
        "`--resume` "
        "continues, a changed value is refused naming both.",
        "",
        "## Crashes",
        "",
        f"A smoke run (AniLA, {CRASH_SETTINGS['iters']} iterations, a checkpoint every "
        f"{CRASH_SETTINGS['checkpoint_every']}, "
        f"a metrics row every {CRASH_SETTINGS['eval_every']}, cosine learning rate, EMA, replay buffer) is trained in "
        "a "
        "process forked from the test and killed with SIGKILL: from outside after a delay drawn from the seeded RNG "
        "(a fraction of the time an uninterrupted run takes), or by itself partway through writing the temporary file "
        "of a checkpoint or partway through appending a metrics row. Then `Run(out, resume=True)` continues it, and "
        "the result is compared with the uninterrupted run. (Figures are not drawn in these trials.)",
        "",
        "| trial | kill | where it landed | left behind | result |",
        "|---:|---|---|---|---|",
    ]
    for i, how in enumerate(PLAN):
        r = crash[i]
        lines.append(
            f"| {i + 1} | {_cell(describe_kill(how))} | {_cell(r['landed'])} | {_cell(r['leftovers'])} | identical |"
        )
    lines += [
        "",
        "## Divergence",
        "",
        "| test | forced by | policy | what happened |",
        "|---|---|---|---|",
    ]
    for name, r in divergence.items():
        lines.append(f"| `{name}` | {_cell(r['forced'])} | {_cell(r['policy'])} | {_cell(r['outcome'])} |")
    lines += [
        "",
        "## Run folders",
        "",
        "One process writes a run folder at a time, and nothing in a folder can run code. Messages are quoted as "
        "printed "
        "(after `error: `), `<tmp>` being the test's folder and `<pid>` the holder's pid.",
        "",
        "| test | case | what happened |",
        "|---|---|---|",
    ]
    for name in RUN_FOLDER_TESTS:
        r = folders[name]
        lines.append(f"| `{name}` | {_cell(r['case'])} | {_cell(r['outcome'])} |")
    lines += [
        "",
        "## Bad input",
        "",
        "Each case names the two parts its message must contain (what was wrong, what was expected); the test also",
        "hashes every file in the working folder before and after. Messages are quoted as printed (after `error: `",
        "on the command line), cut at 220 characters; `<tmp>` is the test's folder.",
        "",
        "| case | via | input | outcome | message |",
        "|---|---|---|---|---|",
    ]
    for c in CASES:
        r = bad[c.id]
        lines.append(f"| `{c.id}` | {c.interface} | {_cell(c.given)} | {r['outcome']} | {_cell(r['message'], 220)} |")
    lines += [
        "",
        "Validation of the samplers' inputs is also tested with generated inputs (hypothesis) in",
        "`tests/sampling/test_sampler_properties.py`: any step size, threshold, noise scale, norm, pSGLD setting or",
        "step count outside its range, any `x0` of the wrong type, dtype, shape or with a non-finite value, any energy",
        "of the wrong shape, and any unknown sampler name is refused with a `ValueError` that names it.",
        "",
    ]
    if HOSTILE:
        lines += [
            "## Hostile use",
            "",
            "Cases of `tests/test_hostile.py`: a run folder that would import code, a deleted lock, a dead pool "
            "worker, numbers",
            "without bounds, tampered checkpoints and sweep files, data of your own, the Python API's types and the "
            "messages",
            "of Ctrl-C and `compare --resume`. Every case below passed: no code imported that the command did not "
            "name, no",
            "second writer, no hang, no traceback, every refusal naming the file or flag at fault. `<tmp>` is the "
            "test's folder.",
            "",
            "| case | tried | outcome |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{case}` | {_cell(tried)} | {_cell(outcome, 300)} |" for case, (tried, outcome) in HOSTILE.items()
        ]
        lines.append("")
    return "\n".join(lines)


DIVERGENCE_TESTS = (
    "huge-lr-stop",
    "nan-stop-in-memory",
    "nan-cli-stop-then-resume",
    "nan-rollback",
    "huge-lr-cli-rollback",
    "huge-lr-gives-up",
    "rollback-resume-exact",
    "rollback-exact-rings",
    "rollback-exact-digits",
)


def test_a_process_forked_by_the_writer_does_not_keep_its_folder_locked(tmp_path):
    """torch forks compile workers; one that outlives the writer must not hold the run folder's lock."""
    folder = tmp_path / "run"
    folder.mkdir()
    ready = tmp_path / "child-ready"
    writer = os.fork()
    if writer == 0:  # the writer: takes the lock, forks a long-lived child, then dies
        try:
            lock = fileio.FolderLock(folder).acquire()  # held (a dropped lock object lets go)
            if os.fork() == 0:
                ready.write_text(str(os.getpid()))
                time.sleep(30)
                os._exit(0)
            while not ready.exists():
                time.sleep(0.01)
            assert lock.held
        finally:
            os._exit(0)
    os.waitpid(writer, 0)
    child = int(ready.read_text())
    try:
        assert not _gone(child), "the forked child must outlive the writer for this test to mean anything"
        assert fileio.lock_holder(folder) is None, "the writer's forked child still holds the lock"
        fileio.FolderLock(folder).acquire().release()
    finally:
        os.kill(child, signal.SIGKILL)
    _record(
        "writer-fork-keeps-no-lock",
        "a writer holding its folder's lock forks a child (as torch forks compile workers), then dies",
        "the child, still running, does not hold the lock: the folder is free for the next writer",
    )


RUN_FOLDER_TESTS = (
    "planted-code-train",
    "planted-code-compare",
    "planted-code-load_trainer",
    "second-writer",
    "busy-folder-train",
    "busy-folder-compare",
    "busy-folder-sweep",
    "compare-killed-before-checkpoint",
    "compare-workers-die-with-parent",
    "pool-workers-die-with-parent",
    "disk-full-checkpoint",
    "oom-cpu-allocator-before-checkpoint",
    "oom-memory-error-before-checkpoint",
    "oom-cuda-before-checkpoint",
    "oom-cpu-allocator-after-checkpoint",
    "resume-same-command",
    "writer-fork-keeps-no-lock",
)


def test_the_reliability_note_matches_these_tests():
    """docs/RELIABILITY.md lists exactly this file's trials, divergence tests, run-folder tests and cases (make
    reliability rewrites it)."""
    complete = (
        len(RESULTS["crash"]) == len(PLAN)
        and len(RESULTS["bad_input"]) == len(CASES)
        and set(RESULTS["divergence"]) == set(DIVERGENCE_TESTS)
        and set(RESULTS["run_folders"]) == set(RUN_FOLDER_TESTS)
    )
    target = os.environ.get("ANILA_RELIABILITY_NOTE")
    if target:  # make reliability: the rendering goes to the file it names, which make then moves to docs/
        if not complete or not HOSTILE:
            pytest.fail(
                "make reliability needs every test of tests/test_hostile.py and tests/test_reliability.py in the same "
                "session (no -k)"
            )
        Path(target).write_text(render_note())
        return
    text = DOC.read_text()
    if complete:  # the summary of a fresh rendering, less the line that varies with timing

        def summary(note):
            return [line for line in note.split("## Crashes")[0].splitlines() if "Where the kills landed" not in line]

        assert summary(render_note()) == summary(text), (
            "docs/RELIABILITY.md is out of date: rewrite it with make reliability"
        )
    assert f"{len(PLAN)} trials" in text and f"RNG seed {CRASH_SEED}" in text and f"{len(CASES)} cases" in text
    for i, how in enumerate(PLAN):
        assert f"| {i + 1} | {_cell(describe_kill(how))} |" in text, f"trial {i + 1} is missing or differs"
    rows = [
        line for line in text.split("## Bad input")[1].split("## Hostile use")[0].splitlines() if line.startswith("| `")
    ]
    assert [row.split("`")[1] for row in rows] == [c.id for c in CASES], (
        "the bad-input table lists other cases than the tests"
    )
    for row, case in zip(rows, CASES):
        assert row.startswith(f"| `{case.id}` | {case.interface} | {_cell(case.given)} |"), row
    for name in DIVERGENCE_TESTS:
        assert f"| `{name}` |" in text, f"divergence test {name} is missing"
    hostile = text.split("## Hostile use")[1] if "## Hostile use" in text else ""
    for case in HOSTILE:  # those tests/test_hostile.py ran in this session
        assert f"| `{case}` |" in hostile, f"hostile case {case} is missing: rewrite the note with make reliability"
    folder_rows = [
        line for line in text.split("## Run folders")[1].split("## Bad input")[0].splitlines() if line.startswith("| `")
    ]
    assert [row.split("`")[1] for row in folder_rows] == list(RUN_FOLDER_TESTS), (
        "the run-folder table lists other tests than these"
    )
