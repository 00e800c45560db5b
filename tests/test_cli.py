"""The command line: the files a run writes and what is in them, compare, resume, and clear errors without
tracebacks."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from anila_core.cli import main
from anila_core.fileio import read_jsonl
from anila_core.training.presets import preset
from anila_core.training import kinds
from anila_core.training.kinds import RUN_FILES
from cli_commands import smoke_argv


def run_cli(*args, cwd=None):
    """Run ``python -m anila_core`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "anila_core", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_train_writes_every_file_with_the_expected_content(tmp_path):
    out = tmp_path / "run"
    assert main(smoke_argv("train", "--sampler", "anila", "--b", "0.5", "--iters", "20", "--seed", "3", out=out)) == 0
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    config = json.loads((out / "config.json").read_text())
    assert config["sampler"] == "anila" and config["b"] == 0.5 and config["iters"] == 20 and config["seed"] == 3
    assert config["n_steps"] == 10  # from the smoke preset, not overridden
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [10, 20]
    final = json.loads((out / "final.json").read_text())
    for key in ("grid_tv", "grid_kl", "iters", "wall_s", "sampler"):
        assert key in final
    assert final["iters"] == 20 and final["sampler"] == "anila" and final["grid_tv"] == rows[-1]["grid_tv"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # tensors and plain data only: what resume loads
    assert state["iteration"] == 20
    assert {"model", "optimizer", "buffer", "generator", "torch_rng", "config"} <= set(state)
    for png in ("true_density.png", "learned_density.png", "samples.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_documents_every_hyperparameter():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for flag in (
        "--preset",
        "--sampler",
        "--step-size",
        "--b",
        "--norm",
        "--noise-scale",
        "--n-steps",
        "--chains",
        "--lr",
        "--iters",
        "--seed",
        "--device",
        "--out",
        "--resume",
        "--metropolis",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "--preset", "huge"], "preset: unknown name 'huge'"),
        (smoke_argv("train", "--step-size", "-1"), "step_size: expected a finite number > 0"),
        (smoke_argv("train", "--device", "cuda:7"), "device"),
        (["train", "--resume"], "--resume: needs --out"),
        (["train", "--preset", ""], "preset: unknown name ''"),
        (
            smoke_argv("train", "--seed", "1e20"),
            "seed: expected an integer in [0, 2**63 - 1 = 9223372036854775807]",
        ),
        (smoke_argv("train", "--eval-samples", "1e9"), "eval_samples: expected at most 10000"),
        (
            smoke_argv("train", "--seed", "two"),
            "argument --seed: expected an integer (such as 2000 or 2e3), got 'two'",
        ),
    ],
)
def test_bad_input_is_one_clear_line_without_traceback(tmp_path, args, expected):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # argparse's too: no usage block before it
    assert not any(tmp_path.iterdir()), "nothing was written"


def test_an_unknown_sampler_is_refused_by_the_parser():
    result = run_cli("train", "--sampler", "ghmc")
    assert result.returncode == 2 and "invalid choice: 'ghmc'" in result.stderr


def test_a_used_output_folder_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run_cli(*smoke_argv("train", "--out", out))
    assert result.returncode == 2 and "already holds files" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    assert (out / "precious.txt").read_text() == "keep me"


def test_resume_without_checkpoint_and_resume_with_changed_settings_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("train", "--resume", "--out", str(empty))
    assert result.returncode == 2 and "no config.json" in result.stderr
    run = tmp_path / "run"
    assert main(smoke_argv("train", "--iters", "10", out=run)) == 0
    result = run_cli("train", "--resume", "--out", str(run), "--step-size", "0.5")
    assert result.returncode == 2 and "--step-size cannot change on resume" in result.stderr
    assert json.loads((run / "config.json").read_text())["step_size"] == 0.01


def test_cli_resume_continues_to_the_new_iteration_count(tmp_path, capsys):
    out = tmp_path / "run"
    command = smoke_argv("train", "--seed", "2", out=out)
    assert main(command + ["--iters", "10"]) == 0
    capsys.readouterr()
    # the same command line, plus --resume and a longer run: every setting given equals the saved one
    assert main(command + ["--iters", "20", "--resume"]) == 0
    assert f"resuming {out} at iteration 10 of 20" in capsys.readouterr().out
    assert [r["iter"] for r in read_jsonl(out / "metrics.jsonl")] == [10, 20]
    assert json.loads((out / "final.json").read_text())["iters"] == 20


def test_compare_writes_the_side_by_side_figure_and_table(tmp_path):
    out = tmp_path / "cmp"
    assert main(smoke_argv("compare", "--iters", "10", "--jobs", "1", out=out)) == 0
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "comparison.md").read_text()
    assert "| langevin |" in table and "| anila |" in table
    for sampler in ("langevin", "anila"):
        final = json.loads((out / sampler / "final.json").read_text())
        assert final["sampler"] == sampler and final["seed"] == 0 and final["iters"] == 10


def test_compare_entries_carry_their_own_settings(tmp_path):
    from anila_core.study.commands import run_spec

    assert run_spec("anila") == ("anila", "anila", {})
    assert run_spec("anila:b=3") == ("anila-b3", "anila", {"b": 3.0})
    # short and in the study's cell ids' words (anila-eps0.05-b3-K20-buffer-seed0): step_size -> eps, n_steps -> K
    assert run_spec("anila:b=3,n_steps=5") == ("anila-b3-K5", "anila", {"b": 3.0, "n_steps": 5})
    assert run_spec("anila:step_size=0.05") == ("anila-eps0.05", "anila", {"step_size": 0.05})
    assert run_spec("langevin:lr_min=0.1") == ("langevin-lr-min0.1", "langevin", {"lr_min": 0.1})
    out = tmp_path / "cmp"
    assert main(smoke_argv("compare", "--iters", "10", "--jobs", "1", "--samplers", "anila", "anila:b=3", out=out)) == 0
    tuned, clipping = (json.loads((out / name / "config.json").read_text()) for name in ("anila", "anila-b3"))
    assert tuned["b"] == preset("smoke", "anila").b and clipping["b"] == 3.0
    assert {k for k in tuned if tuned[k] != clipping[k]} == {"b"}
    table = (out / "comparison.md").read_text()
    assert "| anila-b3 |" in table and "b=3, norm=coordinate" in table


@pytest.mark.parametrize(
    "entry, message",
    [
        ("anila:c=3", "expected NAME or NAME:setting=value"),
        ("anila:b", "expected NAME or NAME:setting=value"),
        ("anila:b=x", "anila:b=x': b: could not convert"),
        ("anila:sampler=hmc", "expected NAME or NAME:setting=value"),
        ("nope", "sampler: unknown name 'nope'"),
    ],
)
def test_compare_refuses_a_bad_entry_in_one_line(tmp_path, capsys, entry, message):
    out = tmp_path / "cmp"
    assert main(smoke_argv("compare", "--out", out, "--samplers", "langevin", entry)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_compare_shows_a_run_that_diverged_as_diverged_and_keeps_it_on_resume(tmp_path, capsys):
    out = tmp_path / "cmp"
    # a gap bound no energy meets: the run diverges at its first step, a result of the comparison, not a crash
    args = ["compare", "--preset", "smoke", "--iters", "10", "--jobs", "1", "--out", str(out), "--no-progress"]
    assert main(args + ["--samplers", "langevin", "langevin:max_energy_gap=1e-9"]) == 0
    diverged = json.loads((out / "langevin-max-energy-gap1e-09" / "final.json").read_text())
    assert diverged["diverged"] is True and diverged["diverged_at"] == 1 and "max_energy_gap" in diverged["cause"]
    assert {p.name for p in (out / "langevin-max-energy-gap1e-09").iterdir()} == set(kinds.DIVERGED_RUN_FILES)
    table = (out / "comparison.md").read_text()
    assert "| langevin-max-energy-gap1e-09 | diverged at iteration 1 |" in table and "| langevin | 0." in table
    assert (out / "comparison.png").is_file()
    capsys.readouterr()
    assert main(args + ["--resume", "--samplers", "langevin", "langevin:max_energy_gap=1e-9"]) == 0
    assert capsys.readouterr().out.count("finished earlier with these settings, kept") == 2  # not trained again


def test_compare_refuses_two_entries_for_one_folder(tmp_path, capsys):
    assert main(smoke_argv("compare", "--out", tmp_path / "c", "--samplers", "anila:b=3", "anila:b=3.0")) == 2
    assert "anila-b3 named twice" in capsys.readouterr().err


def test_compare_resume_keeps_finished_runs_and_refuses_a_folder_from_other_settings(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = smoke_argv("compare", "--iters", "10", "--jobs", "1", out=out)
    assert main(args) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".pt")}
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0  # what `make demo` does a second time
    assert "finished earlier with these settings, kept" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == before
    # an older preset or another setting: refused before anything runs, the folder untouched
    assert main(args + ["--resume", "--step-size", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds a run made with other settings" in err and "step_size" in err and str(out / "langevin") in err
    assert {p: p.read_bytes() for p in before} == before


def test_loading_a_run_to_sample_leaves_its_config_while_resume_records_the_change(tmp_path):
    from anila_core.training.run_loading import load_trainer

    out = tmp_path / "run"
    assert main(smoke_argv("train", "--iters", "10", out=out)) == 0
    before = (out / "config.json").read_bytes()
    trainer = load_trainer(out, progress=False, device="cpu", iters=30)
    assert trainer.config.device == "cpu" and trainer.config.iters == 30
    assert (out / "config.json").read_bytes() == before
    assert main(["train", "--resume", "--iters", "20", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["iters"] == 20 and saved["device"] == "cpu"


def test_resume_refuses_only_a_changed_value_and_names_both(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(smoke_argv("train", "--iters", "10", out=out)) == 0
    before = (out / "config.json").read_bytes()
    capsys.readouterr()
    # --sampler and --seed as saved: accepted; --target given as saved too
    assert (
        main(
            [
                "train",
                "--resume",
                "--sampler",
                "langevin",
                "--seed",
                "0",
                "--target",
                "rings",
                "--iters",
                "10",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["train", "--resume", "--sampler", "anila", "--seed", "0", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--sampler cannot change on resume (--sampler: 'langevin' in the run's config.json, 'anila' given)" in err
    assert (out / "config.json").read_bytes() == before


# --------------------------------------------------------------------------- help, progress, the terminal


#: the config fields whose valid values ``--help`` must list (their metavar hides argparse's own {a,b,c})
LISTED_CHOICES = ("sampler", "target", "norm", "chains", "init")


def _option_help(help_text: str, flag: str) -> str:
    """The words argparse prints for ``flag``: from its line at the options' indent to the next option's."""
    blocks = re.split(r"\n(?=  -)", help_text)
    found = [b for b in blocks if re.match(rf"  {re.escape(flag)}\b(?!-)", b)]
    assert len(found) == 1, f"{flag}: {len(found)} entries in --help"
    return " ".join(found[0].split())


@pytest.mark.parametrize("command", ["train", "compare", "sweep"])
def test_help_lists_the_valid_values_of_each_choice_flag(command):
    from dataclasses import fields

    from anila_core.study.grid import KINDS
    from anila_core.training.config import TrainConfig

    result = run_cli(command, "--help")
    assert result.returncode == 0
    choices = {"--" + f.name: f.metadata["choices"] for f in fields(TrainConfig) if f.name in LISTED_CHOICES}
    assert len(choices) == len(LISTED_CHOICES)
    # compare takes several samplers; a sweep's samplers are its kinds (mala, anila_mh, ...)
    samplers = {
        "train": ("--sampler", choices["--sampler"]),
        "compare": ("--samplers", choices["--sampler"]),
        "sweep": ("--samplers", tuple(KINDS)),
    }[command]
    del choices["--sampler"]
    if command == "sweep":
        del choices["--norm"]  # no sweep flag: the kinds fix the norm (anila_pixel, anila_sample)
    for flag, values in [samplers, *choices.items()]:
        described = _option_help(result.stdout, flag)
        missing = [v for v in values if not re.search(rf"(?<![\w-]){re.escape(str(v))}(?![\w-])", described)]
        assert not missing, f"{command} --help: {flag} does not list {missing}: {described!r}"


#: one progress line of a run: ``anila: 20/30 iterations (67%), grid TV 0.512, energy gap -0.21, 2 s, about 1 s left``
PROGRESS_LINE = (
    r"^(?P<run>[\w.-]+): (?P<done>\d+)/(?P<total>\d+) iterations \(\d+%\), grid TV \d\.\d{3}, energy gap "
    r"-?\d+\.\d\d, \d+ s"
)


def _progress(out: str, total: int) -> dict[str, list[int]]:
    """Each run's iterations in the order its progress lines came."""
    seen: dict[str, list[int]] = {}
    for m in re.finditer(PROGRESS_LINE, out, flags=re.M):
        assert int(m["total"]) == total, m[0]
        seen.setdefault(m["run"], []).append(int(m["done"]))
    return seen


def _table_start(out: str) -> int:
    """Where the comparison's Markdown table begins in a command's output."""
    return re.search(r"^\|", out, flags=re.M).start()


def test_compare_prints_a_line_per_evaluation_of_each_run_unless_told_not_to(tmp_path, capsys):
    args = smoke_argv("compare", "--iters", "20", "--jobs", "1")
    assert main(args + ["--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert _progress(capsys.readouterr().out, 20) == {}
    assert main(args + ["--out", str(tmp_path / "shown")]) == 0  # not a terminal here: lines, not a bar
    out = capsys.readouterr().out
    assert _progress(out, 20) == {"langevin": [10, 20], "anila": [10, 20]}  # the smoke preset evaluates every 10
    for run in ("langevin", "anila"):
        assert f"{run}: started, 20 iterations to go" in out and f"{run}: done in " in out
    assert out.index("anila: done in ") < _table_start(out), "the table comes after the runs"


@pytest.mark.slow  # two spawned workers that import torch: ~20 s on 2 idle cores
def test_demo_shows_each_parallel_runs_progress_before_the_table(tmp_path):
    result = run_cli("demo", "--preset", "smoke", "--out", str(tmp_path / "demo"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    progress = _progress(result.stdout, 30)  # the smoke preset: 30 iterations, an evaluation every 10
    # lines from the two worker processes may interleave, but each run's own come in order and whole
    from anila_core.study.commands import DEMO_RUNS, run_spec

    assert set(progress) == {run_spec(run)[0] for run in DEMO_RUNS}, result.stdout  # a folder name each: anila-eps0.05
    assert all(done == [10, 20, 30] for done in progress.values()), result.stdout
    assert result.stdout.rindex("iterations (100%)") < _table_start(result.stdout), "the table comes after the runs"


def test_no_cuda_runtime_notice_on_a_machine_without_a_gpu(tmp_path):
    """torch logs "No CUDA runtime is found" when inductor imports torch.utils.cpp_extension with a CUDA toolkit but no
    GPU.

    The subprocess gets both (an existing CUDA_HOME, no visible GPU), so the notice is due; the
    control run without anila_core shows it, the run with it does not, and another warning of the
    same logger still shows.
    """
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    provoke = (
        "import torch.utils.cpp_extension, logging; "
        "logging.getLogger('torch.utils.cpp_extension').warning('a real warning still shows')"
    )

    def stderr(code: str) -> str:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert "No CUDA runtime is found" in stderr(provoke), "the control no longer provokes the notice: update this test"
    quiet = stderr("import anila_core; " + provoke)
    assert "No CUDA runtime is found" not in quiet
    assert "a real warning still shows" in quiet
    help_run = subprocess.run(
        [sys.executable, "-m", "anila_core", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert help_run.returncode == 0 and "No CUDA runtime" not in help_run.stderr


def test_training_runs_on_one_torch_thread_on_a_cpu_whoever_calls_it(monkeypatch):
    """Notebooks, compare's workers and sweep cells all train through Trainer.run: one thread there, the caller's
    after."""
    from anila_core.processes import THREADS_ENV
    from anila_core.training.presets import preset
    from anila_core.training.trainer import Trainer

    monkeypatch.delenv(THREADS_ENV, raising=False)
    trainer = Trainer(preset("smoke", "langevin", iters=30, device="cpu"), progress=False)
    during = []
    caller = torch.get_num_threads()
    torch.set_num_threads(2)  # what a notebook kernel has on 2 cores
    try:
        trainer.run(10, callback=lambda t, row: during.append(torch.get_num_threads()))
        assert during == [1] and torch.get_num_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "3")  # a big idle machine may ask for more
        trainer.run(20, callback=lambda t, row: during.append(torch.get_num_threads()))
        assert during == [1, 3] and torch.get_num_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "none")
        with pytest.raises(ValueError, match=rf"\${THREADS_ENV}: expected an integer >= 1"):
            trainer.run(30)
        assert trainer.iteration == 20 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(caller)
