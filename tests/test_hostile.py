"""Hostile use (issue 26): a run folder that would import code, a deleted lock, a dead pool worker, inputs without
bounds, tampered state, API types."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest
import torch

import anila_core.training.runs as runs
import anila_core.ui.report as report
from anila_core import fileio
from anila_core.cli import main
from anila_core.training.presets import preset
from anila_core.training.runs import CHECKPOINT, Run
from anila_core.training.run_loading import load_trainer
from reliability_record import note
from cli_commands import smoke_argv

SMOKE = smoke_argv("train", "--no-progress")


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures are not what these tests are about, and drawing them costs most of a smoke run's time."""
    monkeypatch.setattr(report, "save_run_figures", lambda trainer, out: None)


def cli(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` with its exit code and everything it printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
    return code, buffer.getvalue()


def error_line(printed: str) -> str:
    """The one ``error:`` line a failing command printed (and no traceback)."""
    assert "Traceback" not in printed, printed
    lines = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, printed
    return lines[0].removeprefix("error: ")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """A folder on the Python path with a network of one's own (``mynet:Net``) and one that plants a marker when
    imported."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "mynet.py").write_text(
        textwrap.dedent("""
        from torch import nn
        class Net(nn.Module):
            def __init__(self, data_shape=(2,)):
                super().__init__()
                self.l = nn.Sequential(nn.Linear(data_shape[0], 8), nn.SiLU(), nn.Linear(8, 1))
            def forward(self, x):
                return self.l(x).squeeze(-1)
        """)
    )
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [n for n in sys.modules if n.startswith(("mynet", "planted", "exiting"))]:
        del sys.modules[name]


# --------------------------------------------------------------------------- 1. code runs only when named


def test_a_run_naming_a_module_resumes_only_when_the_command_names_it(modules, tmp_path):
    out = tmp_path / "run"
    code, printed = cli(SMOKE + ["--energy", "mynet:Net", "--out", out, "--iters", "10"])
    assert code == 0, printed
    # the folder now names a planted module: a resume that does not name it imports nothing
    (modules / "planted.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\nfrom mynet import Net\n")
    config = json.loads((out / "config.json").read_text())
    config["energy"] = "planted:Net"
    (out / "config.json").write_text(json.dumps(config))
    state = torch.load(out / CHECKPOINT, weights_only=True)
    state["config"]["energy"] = "planted:Net"
    torch.save(state, out / CHECKPOINT)
    before = tree(out)
    code, printed = cli(["train", "--resume", "--out", out, "--iters", "20", "--no-progress"])
    message = error_line(printed)
    assert code == 2 and "planted:Net" in message and "--energy planted:Net" in message and "config.json" in message
    for call in (lambda: load_trainer(out, progress=False), lambda: Run(out, resume=True, progress=False)):
        with pytest.raises(ValueError, match="imports no module that the caller did not name"):
            call()
    from anila_core.shipped import load_runs

    with pytest.raises(ValueError, match="planted:Net"):
        load_runs(tmp_path, names=["run"]) if (out / "final.json").exists() else load_trainer(out)
    assert not (tmp_path / "ran").exists(), "a module the folder named was imported"
    assert tree(out) == before
    # another spec than the saved one is refused too, before anything is imported
    code, printed = cli(["train", "--resume", "--out", out, "--iters", "20", "--no-progress", "--energy", "mynet:Net"])
    assert code == 2 and "--energy" in error_line(printed)
    assert not (tmp_path / "ran").exists()
    note(
        "resume-imports-only-named",
        "a run's config.json and checkpoint renamed to `planted:Net`, a module beside it on the path "
        "that writes a marker when imported; `train --resume` without `--energy`, `load_trainer`, `Run(resume=True)`, "
        "`load_runs`; "
        "then `--resume --energy mynet:Net` (not the saved spec)",
        f"each refused (exit 2) before anything was imported, the "
        f"marker never written, the folder unchanged: \"{message.replace(str(tmp_path), '<tmp>')}\"",
    )


def test_a_run_named_again_resumes_by_spec_or_by_class(modules, tmp_path):
    out = tmp_path / "run"
    assert cli(SMOKE + ["--energy", "mynet:Net", "--out", out, "--iters", "10"])[0] == 0
    code, printed = cli(["train", "--resume", "--out", out, "--iters", "20", "--no-progress", "--energy", "mynet:Net"])
    assert code == 0, printed
    import mynet

    trainer = load_trainer(out, progress=False, energy=mynet.Net)
    assert trainer.iteration == 20 and trainer.config.energy == "mynet:Net"

    class Other(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="not the network"):
        load_trainer(out, progress=False, energy=Other)
    with pytest.raises(TypeError, match="energy: expected"):
        load_trainer(out, progress=False, energy=3)
    note(
        "resume-named-again",
        "a run trained with `--energy mynet:Net`, resumed with `--energy mynet:Net` and loaded with "
        "`load_trainer(out, energy=Net)`; another class, and `energy=3`",
        "resumed and loaded; another class refused (ValueError), `energy=3` refused (TypeError)",
    )


@pytest.mark.parametrize("where", ["import", "forward"])
def test_a_module_that_exits_ends_the_run_with_an_error_naming_it(where, modules, tmp_path):
    body = "import sys\nsys.exit(0)\n" if where == "import" else ""
    (modules / "exiting.py").write_text(
        body
        + textwrap.dedent("""
        import sys
        from mynet import Net as Base
        class Net(Base):
            calls = 0
            def forward(self, x):
                Net.calls += 1
                if Net.calls > 3:
                    sys.exit(0)
                return super().forward(x)
        """)
    )
    out = tmp_path / "run"
    code, printed = cli(SMOKE + ["--energy", "exiting:Net", "--out", out, "--iters", "10"])
    message = error_line(printed)
    assert code == 2 and "exiting" in message and "sys.exit(0)" in message, printed
    assert not out.exists(), "a run that never checkpointed leaves nothing behind: the same command can run again"
    note(
        f"user-module-exits-at-{where}",
        f"`--energy exiting:Net`, whose module calls `sys.exit(0)` at {where}",
        "exit 2, one line naming the module and `sys.exit(0)`; no files left: "
        f"\"{message.replace(str(tmp_path), '<tmp>')}\"",
    )


# --------------------------------------------------------------------------- 2. a lock that holds


def test_a_writer_whose_lock_was_deleted_stops_and_the_second_writer_alone_writes(tmp_path):
    """``rm RUN/.lock`` while a resumed run writes, then the same command again: one writer, rows in order."""
    out = tmp_path / "run"
    settings = ["--eval-every", "2", "--checkpoint-every", "4"]
    assert cli(SMOKE + settings + ["--out", out, "--iters", "8"])[0] == 0
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    torch.set_num_threads(1)
    pid = os.fork()
    if (
        pid == 0
    ):  # the first writer: pauses after its row of iteration 12 while the lock is deleted and another writer runs
        code = 70
        try:
            append = runs.append_jsonl

            def append_then_wait(path, row):
                append(path, row)
                if row["iter"] == 12:
                    os.write(from_child, b"1")
                    os.read(to_child, 1)

            runs.append_jsonl = append_then_wait
            code, printed = cli(["train", "--resume", "--out", out, "--iters", "24", "--no-progress"])
            os.write(2, printed.encode())
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        assert os.read(to_parent, 1) == b"1", "the first writer did not reach its row"
        (out / fileio.LOCK_FILE).unlink()
        second, printed = cli(["train", "--resume", "--out", out, "--iters", "24", "--no-progress"])
    finally:
        os.write(from_parent, b"1")
    _, status = os.waitpid(pid, 0)
    first = os.WEXITSTATUS(status)
    assert second == 0, printed
    assert first == 3, f"the first writer went on writing after its lock was deleted (exit {first})"
    iters = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == sorted(set(iters)) and iters[-1] == 24, iters
    assert torch.load(out / CHECKPOINT, weights_only=True)["iteration"] == 24
    assert json.loads((out / "final.json").read_text())["iters"] == 24
    note(
        "rm-lock-second-writer",
        "`train --resume --iters 24` paused after a row; `rm RUN/.lock`; the same command again, "
        "run to its end; then the first goes on",
        "the second writer exit 0; the first stopped before its next write with "
        "exit 3 (its lock file was deleted); metrics.jsonl ordered, without duplicates, ending at 24; checkpoint and "
        "final.json at 24",
    )


def test_verify_names_a_deleted_a_replaced_and_a_moved_lock(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for spoil in ("delete", "replace", "move"):
        lock = fileio.FolderLock(folder).acquire()
        lock.verify()
        if spoil == "delete":
            lock.path.unlink()
        elif spoil == "replace":
            lock.path.unlink()
            lock.path.write_text("{}")
        else:
            folder.rename(tmp_path / "moved")
            folder.mkdir()
        with pytest.raises(fileio.LockLost, match=r"\.lock (was deleted|was replaced)"):
            lock.verify()
        lock.forget()
        for p in folder.iterdir():
            p.unlink()
        if (tmp_path / "moved").exists():
            for p in (tmp_path / "moved").iterdir():
                p.unlink()
            (tmp_path / "moved").rmdir()
    note(
        "lock-deleted-replaced-moved",
        "a held folder lock whose `.lock` is deleted, replaced by another file, or whose folder is moved",
        "`verify()` (before every checkpoint, metrics row and final.json) raises LockLost naming the lock file",
    )


# --------------------------------------------------------------------------- 3. a pool that survives its workers


def test_a_dead_worker_is_named_with_its_signal_and_the_other_jobs_finish(capfd):
    from anila_core.processes import WorkersLost, run_jobs

    from pool_jobs import job

    jobs = [("ok", "a"), ("kill", signal.SIGKILL), ("ok", "c"), ("kill", signal.SIGTERM), ("exit", 0), ("ok", "f")]
    names = [f"cell {c}" for c in "abcdef"]
    done = {}
    start = time.monotonic()
    with pytest.raises(WorkersLost) as err:
        for index, result in run_jobs(job, jobs, 2, names, rerun="run it again"):
            done[index] = result
    assert time.monotonic() - start < 90, "the parent noticed the dead workers late"
    assert done == {0: "a", 2: "c", 5: "f"}, "the other jobs finished"
    message = str(err.value)
    for name, sig in (("cell b", signal.SIGKILL), ("cell d", signal.SIGTERM)):
        assert f"{name} (was killed by {sig.name} (signal {int(sig)}" in message, message
    assert "cell e (called sys.exit(0))" in message and "run it again" in message, message
    assert sorted(j.name for j in err.value.lost) == ["cell b", "cell d", "cell e"]
    assert "error: cell b: its worker process was killed by SIGKILL" in capfd.readouterr().err, "reported as it died"
    note(
        "pool-worker-killed",
        "`run_jobs` (compare's and sweep's pool), 2 workers, 6 jobs: one worker SIGKILLed, one SIGTERMed, "
        "one job calls `sys.exit(0)`",
        "each reported on stderr as it died, the other 3 jobs finished, then WorkersLost naming "
        "each job and its signal (exit 3 on the command line)",
    )


def test_a_job_that_raises_does_not_stop_the_others():
    from anila_core.processes import run_jobs

    from pool_jobs import job

    done = {}
    with pytest.raises(ValueError, match="bad cell"):
        for index, result in run_jobs(job, [("raise", "bad cell"), ("ok", "b"), ("ok", "c")], 1, ["a", "b", "c"]):
            done[index] = result
    assert done == {1: "b", 2: "c"}


@pytest.mark.slow
def test_compare_reports_a_killed_worker_and_resume_reruns_its_run(tmp_path):
    """``kill -9`` of one worker of ``compare --jobs 2``: exit 3 naming its run and the signal, the other run kept,
    --resume finishes."""
    import subprocess

    out = tmp_path / "cmp"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    argv = [
        sys.executable,
        "-m",
        "anila_core",
        *smoke_argv("compare", *"--iters 400 --eval-every 100 --checkpoint-every 100 --jobs 2".split(), out=out),
    ]
    parent = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while (
            not (out / "langevin" / fileio.LOCK_FILE).is_file()
            or not (out / "langevin" / fileio.LOCK_FILE).read_text().strip()
        ):
            assert parent.poll() is None and time.monotonic() < deadline, "the langevin worker never started"
            time.sleep(0.1)
        worker = json.loads((out / "langevin" / fileio.LOCK_FILE).read_text())["pid"]
        os.kill(worker, signal.SIGKILL)
        _, err = parent.communicate(timeout=180)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 3, err
    assert "Traceback" not in err and f"{out / 'langevin'} (was killed by SIGKILL (signal 9" in err, err
    assert (out / "anila" / "final.json").exists() and not (out / "langevin" / "final.json").exists()
    done = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "langevin" / "final.json").read_text())["iters"] == 400
    note(
        "compare-worker-killed",
        "`kill -9` of the langevin worker of `compare --jobs 2`",
        "the parent noticed at once, "
        "finished the anila run, exit 3 naming the run and SIGKILL; `compare --resume` trained the lost run to its end",
    )


# --------------------------------------------------------------------------- 5. state validated against the config and
# itself


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished smoke run with a replay buffer and an EMA: the checkpoint the tampering cases start from."""
    out = tmp_path_factory.mktemp("saved") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "save_run_figures", lambda trainer, folder: None)
        Run(
            out,
            preset("smoke", "anila", device="cpu", iters=20, eval_every=5, checkpoint_every=10, ema=0.9),
            progress=False,
        ).train()
    return out


def _first_param(state):
    return next(iter(state["optimizer"]["state"].values()))


TAMPERED = {
    "adam-maximize": (
        lambda s: s["optimizer"]["param_groups"][0].update(maximize=True),
        "optimizer's maximize is True",
    ),
    "adam-weight-decay": (
        lambda s: s["optimizer"]["param_groups"][0].update(weight_decay=0.5),
        "optimizer's weight_decay is 0.5",
    ),
    "adam-betas": (
        lambda s: s["optimizer"]["param_groups"][0].update(betas=(0.5, 0.9)),
        "optimizer's betas is (0.5, 0.9)",
    ),
    "adam-lr": (lambda s: s["optimizer"]["param_groups"][0].update(lr=5.0), "learning rate is 5.0"),
    "adam-negative-step": (lambda s: _first_param(s).update(step=torch.tensor(-3.0)), "step count"),
    "adam-nan-moment": (lambda s: _first_param(s)["exp_avg"].fill_(float("nan")), "exp_avg"),
    "int64-weights": (lambda s: s["model"].update({k: v.long() for k, v in s["model"].items()}), "dtype torch.int64"),
    "buffer-float64": (lambda s: s.update(buffer=s["buffer"].double()), "replay buffer has dtype torch.float64"),
    "buffer-float16": (lambda s: s.update(buffer=s["buffer"].half()), "replay buffer has dtype torch.float16"),
    "buffer-nan-chain": (
        lambda s: s["buffer"][3].fill_(float("nan")),
        "replay buffer holds NaN or infinite values in 1 of",
    ),
    "generator-short": (
        lambda s: s.update(generator=s["generator"][:100]),
        "chain generator state is a torch.uint8 tensor of 100",
    ),
    "generator-float": (
        lambda s: s.update(generator=s["generator"].float()),
        "chain generator state is a torch.float32 tensor",
    ),
    "iteration-behind-history": (lambda s: s.update(iteration=10), "history's row 2 has iter 15"),
    "iteration-ahead-of-history": (lambda s: s["history"].__delitem__(slice(1, None)), "history ends at iteration 5"),
    "history-empty-row": (lambda s: s["history"].__setitem__(1, {}), "history's row 1 has iter None"),
    "history-strings": (lambda s: s["history"][1].update(energy_gap="big"), "energy_gap = 'big'"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_refused_naming_the_file_and_what_is_wrong(case, saved_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(saved_run, out)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    tamper, expected = TAMPERED[case]
    tamper(state)
    torch.save(state, out / CHECKPOINT)
    before = tree(out)
    with pytest.raises(ValueError) as err:
        load_trainer(out, progress=False, iters=40)
    message = str(err.value)
    assert message.startswith(f"{out / CHECKPOINT}: ") and expected in message, message
    assert "expected" in message
    code, printed = cli(["train", "--resume", "--out", out, "--iters", "40", "--no-progress"])
    assert code == 2 and error_line(printed).startswith(f"{out / CHECKPOINT}: "), printed
    assert tree(out) == before, "a refused resume changed the folder"
    note(
        f"checkpoint-{case}",
        f"checkpoint.pt altered: {case.replace('-', ' ')}",
        "refused by `load_trainer` and "
        f"`train --resume` (exit 2), the folder unchanged: \"{message.replace(str(tmp_path), '<tmp>')[:200]}\"",
    )


def test_an_untouched_checkpoint_still_resumes(saved_run, tmp_path):
    import shutil

    shutil.copytree(saved_run, tmp_path / "run")
    assert load_trainer(tmp_path / "run", progress=False, iters=40).iteration == 20


# --------------------------------------------------------------------------- sweep and compare files


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A one-cell sweep, run once: the folder the damaged-file cases copy."""
    from anila_core.study.sweep import run_sweep

    out = tmp_path_factory.mktemp("sweep") / "s"
    cell = dict(kind="langevin", step_size=0.01, b=None, n_steps=5, chains="buffer", seed=0)
    base = preset("smoke", "langevin", iters=10, eval_every=5, eval_samples=100, device="cpu")
    with pytest.MonkeyPatch.context() as mp:
        import anila_core.study.sweep as sweep

        mp.setattr(sweep, "write_report", lambda summary, folder: [])
        run_sweep(out, [cell], base, jobs=1, progress=False)
    return out, cell, base


def _cell_file(folder: Path) -> Path:
    return next((folder / "cells").glob("*.json"))


DAMAGED_SWEEP = {
    "cell-grid-tv-negative": (
        lambda f: _edit(_cell_file(f), lambda d: d["final"].update(grid_tv=-5)),
        "grid_tv: -5 is outside [0, 1]",
    ),
    "cell-lacks-key": (lambda f: _edit(_cell_file(f), lambda d: d.pop("final")), "lacks final"),
    "cell-is-a-list": (lambda f: _cell_file(f).write_text("[1, 2]"), "holds a JSON list"),
    "cell-not-json": (lambda f: _cell_file(f).write_text("{"), "is not valid JSON"),
    "plan-lacks-base": (
        lambda f: _edit(f / "plan.json", lambda d: d.pop("base")),
        "plan.json: is not an object with 'base'",
    ),
    "plan-is-a-list": (lambda f: (f / "plan.json").write_text("[]"), "plan.json: is not an object with 'base'"),
    "plan-not-json": (lambda f: (f / "plan.json").write_text("{]"), "plan.json: is not valid JSON"),
    "sweep-cells-hold-lists": (
        lambda f: _edit(f / "sweep.json", lambda d: d.update(cells=[[1]])),
        "sweep.json: cell 0: holds a JSON list",
    ),
    "sweep-not-json": (lambda f: (f / "sweep.json").write_text("nul"), "sweep.json: is not valid JSON"),
}


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case", list(DAMAGED_SWEEP))
def test_a_damaged_sweep_file_is_named_with_what_is_wrong(case, finished_sweep, tmp_path):
    import shutil

    from anila_core.study.results import load_sweep
    from anila_core.study.sweep import run_sweep

    source, cell, base = finished_sweep
    folder = tmp_path / "s"
    shutil.copytree(source, folder)
    damage, expected = DAMAGED_SWEEP[case]
    damage(folder)
    before = tree(folder)
    with pytest.raises(ValueError) as err:
        run_sweep(folder, [cell], base, jobs=1, progress=False)
    assert expected in str(err.value) and str(folder) in str(err.value), str(err.value)
    if case.startswith("sweep"):
        with pytest.raises(ValueError, match=expected.split(": ", 1)[1][:20]):
            load_sweep(folder)
    assert tree(folder) == before, "a refused sweep changed its folder"
    note(
        f"sweep-{case}",
        f"sweep folder: {case.replace('-', ' ')}",
        "refused before any cell ran, the folder unchanged: "
        f"\"{str(err.value).replace(str(tmp_path), '<tmp>')[:200]}\"",
    )


@pytest.mark.parametrize(
    "damage, expected",
    [("{", "is not valid JSON"), ("[]", "holds a JSON list"), ('{"sampler": "x"}', "lacks 'iters', 'config'")],
)
def test_compare_resume_names_a_damaged_final_json(damage, expected, tmp_path):
    out = tmp_path / "cmp"
    argv = smoke_argv("compare", "--iters", "10", "--samplers", "langevin", "--jobs", "1", out=out)
    assert cli(argv)[0] == 0
    (out / "langevin" / "final.json").write_text(damage)
    code, printed = cli(argv + ["--resume", "--iters", "10"])
    message = error_line(printed)
    assert code == 2 and message.startswith(str(out / "langevin" / "final.json")) and expected in message, message
    assert "delete it and --resume writes it again" in message
    note(
        f"compare-final-json-{expected.split()[0]}-{len(damage)}",
        f"`compare --resume` with final.json `{damage}`",
        f"exit 2: \"{message.replace(str(tmp_path), '<tmp>')[:200]}\"",
    )


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[]", "holds a JSON list, not an object of settings"),
        ("[" * 200_000 + "]" * 200_000, "nests its JSON too deeply"),
        ('{"iters": "many"}', "not a valid run configuration"),
    ],
)
def test_a_damaged_config_json_is_named_by_every_loader(content, expected, saved_run, tmp_path):
    import shutil

    from anila_core.shipped import load_runs

    out = tmp_path / "group" / "run"
    shutil.copytree(saved_run, out)
    (out / "config.json").write_text(content)
    for call in (lambda: load_trainer(out, progress=False), lambda: load_runs(tmp_path / "group")):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value).startswith(str(out / "config.json")) and expected in str(err.value), str(err.value)
    code, printed = cli(["train", "--resume", "--out", out, "--no-progress"])
    assert code == 2 and expected in error_line(printed)
    note(
        f"config-json-{expected.split()[0]}-{len(content) % 1000}",
        f"config.json `{content[:20]}{'…' if len(content) > 20 else ''}`"
        + (" (200 000 deep)" if len(content) > 1000 else ""),
        f"`load_trainer`, `load_runs` and `train --resume` name the file: \"{expected}\"",
    )


@pytest.mark.parametrize("name", ["checkpoint.pt", "config.json"])
def test_a_fifo_where_a_run_file_is_expected_is_refused_by_name(name, saved_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(saved_run, out)
    (out / name).unlink()
    os.mkfifo(out / name)
    code, printed = cli(["train", "--resume", "--out", out, "--iters", "40", "--no-progress"])
    message = error_line(printed)
    assert code == 2 and message.startswith(f"{out / name}: is a FIFO (named pipe), not a regular file"), message
    note(
        f"fifo-{name}",
        f"a FIFO named {name} in a run folder, `train --resume`",
        f"exit 2 at once: \"{message.replace(str(tmp_path), '<tmp>')}\"",
    )


# --------------------------------------------------------------------------- 7. API types


def _energy(x):
    return x.square().sum(1)


API_CASES = {
    "metropolis-string": (
        lambda: __import__("anila_core").Langevin(0.1, metropolis="false"),
        TypeError,
        "metropolis: expected True or False",
    ),
    "step-size-bool": (
        lambda: __import__("anila_core").Langevin(step_size=True),
        TypeError,
        "step_size: expected a finite number > 0, got True",
    ),
    "b-bool": (lambda: __import__("anila_core").AniLA(0.1, b=True), TypeError, "b: expected a number > 0"),
    "positions-at-negative": (
        lambda: __import__("anila_core").Trace(positions_at=[-1]),
        ValueError,
        "positions_at: expected step indices >= 0",
    ),
    "positions-at-float": (
        lambda: __import__("anila_core").Trace(positions_at=[1.5]),
        TypeError,
        "positions_at: expected integer step indices",
    ),
    "generator-string": (
        lambda: __import__("anila_core").Langevin(0.1).sample(_energy, torch.zeros(3, 2), 5, generator="seed"),
        TypeError,
        "generator: expected a torch.Generator",
    ),
    "energy-fn-int": (
        lambda: __import__("anila_core").Langevin(0.1).sample(3, torch.zeros(3, 2), 5),
        TypeError,
        "energy_fn: expected a callable",
    ),
    "state-of-another-sampler": (
        lambda: (
            __import__("anila_core")
            .PSGLD(0.1)
            .run(_energy, __import__("anila_core").Langevin(0.1).init(_energy, torch.zeros(3, 2)), 3)
        ),
        ValueError,
        "state: carries no per-chain state, but psgld's chains carry ['v']",
    ),
    "x0-meta": (
        lambda: __import__("anila_core").Langevin(0.1).sample(_energy, torch.zeros(3, 2, device="meta"), 5),
        ValueError,
        "x0: is on the meta device",
    ),
    "n-steps-1e39": (
        lambda: __import__("anila_core").Langevin(0.1).sample(_energy, torch.zeros(3, 2), 10**39),
        ValueError,
        "n_steps: expected at most 10,000,000",
    ),
    "step-size-1e39": (
        lambda: __import__("anila_core").Langevin(1e39),
        ValueError,
        "step_size: expected at most 1e+30",
    ),
    "leapfrog-1e39": (
        lambda: __import__("anila_core").HMC(0.1, n_leapfrog=10**39),
        ValueError,
        "n_leapfrog: expected an integer in [1, 10000]",
    ),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_an_api_argument_of_the_wrong_type_or_range_is_named(case):
    call, kind, expected = API_CASES[case]
    with pytest.raises(kind) as err:
        call()
    assert isinstance(err.value, ValueError), "every refusal is also a ValueError, as the package's others"
    assert str(err.value).startswith(expected), str(err.value)
    note(
        f"api-{case}",
        f"Python API: {case.replace('-', ' ')}",
        f"{type(err.value).__name__}: \"{str(err.value)[:160]}\"",
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--jobs", "1e39"], "--jobs: expected at most"),
        (["--iters", "1e39"], "--iters: expected at most 100,000,000"),
        (["--n-steps", "1e39"], "n_steps: expected at most 100,000"),
        (["--hmc-leapfrog", "1e39"], "hmc_leapfrog: expected at most 10,000"),
        (["--global-moves", "1e39"], "global_moves: expected at most 100,000"),
        (["--fid-samples", "1e39"], "fid_samples: expected at most 100,000"),
        (["--depth", "1e39"], "depth: expected at most 1,000"),
        (["--step-size", "1e39"], "step_size: expected a value of magnitude at most 1e+30"),
        (["--b", "1e39"], "b: expected a value of magnitude at most 1e+30"),
        (["--clamp", "1e39"], "clamp: expected a value of magnitude at most 1e+30"),
    ],
)
def test_a_number_beyond_its_bound_is_refused_before_anything_runs(flags, expected, tmp_path):
    out = tmp_path / "cmp"
    code, printed = cli(smoke_argv("compare", *flags, out=out))
    message = error_line(printed)
    assert code == 2 and message.startswith(expected), message
    assert "expected" in message and not out.exists()
    note(f"bound{flags[0]}", f"`compare {' '.join(flags)}`", f"exit 2 before anything ran: \"{message}\"")


# --------------------------------------------------------------------------- 6. data of your own


def _points(tmp_path, rows, name="points.csv") -> Path:
    import numpy as np

    path = tmp_path / name
    np.savetxt(path, np.asarray(rows, dtype=np.float64), delimiter=",")
    return path


@pytest.mark.parametrize(
    "rows, standardize, expected",
    [
        (
            [[1e200, 1.0], [2e200, 2.0], [3e200, 1.0], [4e200, 5.0], [5e200, 3.0]],
            True,
            "has 1e+200 in column 1, line 1",
        ),
        ([[1e39, 1.0], [2.0, 2.0], [3.0, 1.0], [4.0, 5.0], [5.0, 3.0]], False, "has 1e+39 in column 1, line 1"),
        ([[1e-300 * i, 1e-300 * (i % 2)] for i in range(6)], True, "vary by at most"),
        ([[1.0, 2.0]] * 6, True, "holds the same point in every training row"),
    ],
)
def test_points_whose_standardisation_would_overflow_or_underflow_are_refused(rows, standardize, expected, tmp_path):
    path = _points(tmp_path, rows)
    flags = [] if standardize else ["--no-standardize"]
    code, printed = cli(SMOKE + ["--dataset", f"points:{path}", "--out", tmp_path / "run", "--iters", "2", *flags])
    message = error_line(printed)
    assert code == 2 and expected in message and str(path) in message, message
    assert not (tmp_path / "run").exists()
    note(
        f"points-{expected.split()[0]}-{rows[0][0]:g}",
        f"points file starting {rows[0]}" + ("" if standardize else ", --no-standardize"),
        f"exit 2: \"{message.replace(str(tmp_path), '<tmp>')[:200]}\"",
    )


def test_a_fifo_named_like_a_points_file_is_named_not_called_missing(tmp_path):
    path = tmp_path / "points.csv"
    os.mkfifo(path)
    code, printed = cli(SMOKE + ["--dataset", f"points:{path}", "--out", tmp_path / "run", "--iters", "2"])
    message = error_line(printed)
    assert code == 2 and "is a FIFO (named pipe), not a regular file" in message and "does not exist" not in message, (
        message
    )
    note(
        "fifo-points-csv",
        "a FIFO named points.csv as `--dataset points:FILE`",
        f"exit 2: \"{message.replace(str(tmp_path), '<tmp>')}\"",
    )


def test_an_image_folder_follows_each_link_once(tmp_path):
    from PIL import Image

    from anila_core.images.folder import scan_image_folder

    root = tmp_path / "shapes"
    for name in ("circle", "square"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), color=30 * i).save(root / name / f"{i}.png")
    (root / "circle" / "again").symlink_to(root / "circle")  # a loop
    (root / "square" / "twice.png").symlink_to(root / "square" / "0.png")  # the same image by a second name
    scan = scan_image_folder(root)
    assert len(scan.files) == 8 and scan.labels.count(0) == 4 and scan.labels.count(1) == 4
    os.mkfifo(root / "square" / "pipe.png")
    with pytest.raises(ValueError, match=r"has square/pipe.png, which is a FIFO \(named pipe\), not a regular file"):
        scan_image_folder(root)
    note(
        "image-folder-links",
        "a class folder holding a link to itself and a second link to one image; then a FIFO named pipe.png",
        "8 images read as 8 (each folder entered once, each file counted once); the FIFO refused by name",
    )


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize("after_checkpoint", [False, True])
def test_ctrl_c_advises_resume_only_when_there_is_a_checkpoint(after_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "run"
    append = runs.append_jsonl

    def interrupted(path, row):
        append(path, row)
        if row["iter"] == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "append_jsonl", interrupted)
    every = "5" if after_checkpoint else "100"
    code, printed = cli(SMOKE + ["--out", out, "--eval-every", "10", "--checkpoint-every", every])
    assert code == 130 and "Traceback" not in printed
    if after_checkpoint:
        assert "continue with the same command plus --resume" in printed and str(out / CHECKPOINT) in printed, printed
        monkeypatch.setattr(runs, "append_jsonl", append)
        assert cli(["train", "--resume", "--out", out, "--no-progress"])[0] == 0
    else:
        assert "--resume" not in printed.replace("without --resume", "") and "run the same command again" in printed, (
            printed
        )
        assert not out.exists(), "nothing to resume: the run's files are gone, so the same command runs again"
        monkeypatch.setattr(runs, "append_jsonl", append)
        assert cli(SMOKE + ["--out", out, "--eval-every", "10", "--checkpoint-every", every])[0] == 0
    note(
        f"ctrl-c-{'after' if after_checkpoint else 'before'}-checkpoint",
        f"Ctrl-C {'after' if after_checkpoint else 'before'} the first checkpoint",
        "exit 130; "
        + (
            "advises --resume naming the checkpoint, which continues"
            if after_checkpoint
            else "the run's files removed and the same command advised (not --resume), which then runs"
        ),
    )


def test_compare_resume_with_a_longer_iters_extends_the_runs_without_naming_lr_decay_iters(tmp_path):
    out = tmp_path / "cmp"
    argv = smoke_argv("compare", "--samplers", "langevin", "--jobs", "1", out=out)
    assert cli(argv + ["--iters", "10"])[0] == 0
    code, printed = cli(argv + ["--iters", "20", "--resume"])
    assert code == 0 and "lr_decay_iters" not in printed, printed
    assert json.loads((out / "langevin" / "final.json").read_text())["iters"] == 20
    code, printed = cli(argv + ["--iters", "15", "--resume"])
    assert code == 2 and error_line(printed).startswith("--iters: 15 is below the 20 iterations")
    note(
        "compare-resume-longer-iters",
        "`compare --resume` with a larger `--iters`, then a smaller one",
        "the finished runs "
        "trained on to the new --iters (lr_decay_iters, fixed at the start, not named); fewer iterations refused "
        "naming --iters",
    )


def test_a_module_that_raises_in_a_later_forward_of_a_sweep_cell_is_named(modules, tmp_path):
    (modules / "raising.py").write_text(
        textwrap.dedent("""
        from mynet import Net as Base
        class Net(Base):
            calls = 0
            def forward(self, x):
                Net.calls += 1
                if Net.calls > 5:
                    raise RuntimeError("my network broke")
                return super().forward(x)
        """)
    )
    out = tmp_path / "s"
    code, printed = cli(
        smoke_argv("sweep", "--samplers", "langevin", "--energy", "raising:Net", "--jobs", "1", "--iters", "5", out=out)
    )
    message = error_line(printed)
    assert code == 2 and "raising:Net raised RuntimeError: my network broke" in message and "raising.py" in message, (
        message
    )
    sys.modules.pop("raising", None)
    note(
        "user-module-raises-in-sweep",
        "`sweep --jobs 1 --energy raising:Net`, whose forward raises after its check",
        f"exit 2, one line naming the module, file and line: \"{message.replace(str(tmp_path), '<tmp>')[:200]}\"",
    )


def test_a_sweep_whose_lock_was_deleted_writes_no_summary(tmp_path, monkeypatch):
    import anila_core.study.sweep as sweep

    out = tmp_path / "s"
    cell = dict(kind="langevin", step_size=0.01, b=None, n_steps=5, chains="buffer", seed=0)
    base = preset("smoke", "langevin", iters=10, eval_every=5, eval_samples=100, device="cpu")
    worker = sweep.cell_worker

    def lock_deleted_meanwhile(job):
        (out / fileio.LOCK_FILE).unlink()
        return worker(job)

    monkeypatch.setattr(sweep, "cell_worker", lock_deleted_meanwhile)
    with pytest.raises(fileio.LockLost, match=r"\.lock was deleted"):
        sweep.run_sweep(out, [cell], base, jobs=1, progress=False)
    assert not (out / "sweep.json").exists() and len(list((out / "cells").glob("*.json"))) == 1, (
        "the finished cell is kept"
    )
    note(
        "sweep-lock-deleted",
        "a sweep's `.lock` deleted while a cell runs",
        "the cell's file kept; LockLost before sweep.json "
        "is written (exit 3 on the command line); the same sweep again finishes it",
    )
