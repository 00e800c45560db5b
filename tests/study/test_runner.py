"""The runner of cells: each cell's command read back, submitit for sweep and compare, a divergence kept whole."""

import functools
import json
import shlex

import pytest

from anila_core.cli import build_parser, main
from anila_core.flags import config_overrides
from anila_core.study import cell as study_cell
from anila_core.study.grid import Grid, cell_id
from anila_core.study.runner import Cell, Executor, _answer, config_flags, run_cells
from anila_core.training.guard import TrainingDiverged
from anila_core.training.kinds import RUN_FILES
from cli_commands import TINY_SWEEP, smoke_argv

#: the fields of a cell file as a sweep writes it (the format the committed studies hold)
CELL_KEYS = {
    "id",
    "kind",
    "step_size",
    "b",
    "n_steps",
    "chains",
    "seed",
    "leapfrog",
    "damping",
    "diverged",
    "diverged_at",
    "cause",
    "iters",
    "wall_s",
    "load_avg",
    "cpu",
    "gradients_per_iter",
    "history",
    "final",
    "clipped_share",
    "energy_gap",
    "best_grid_tv",
    "version",
}


def test_config_flags_read_back_as_the_same_settings():
    settings = {
        "step_size": 0.1 + 0.2,
        "iters": 30,
        "chains": "short_run",
        "standardize": False,
        "compile": True,
        "b": float("inf"),
    }
    args = build_parser().parse_args(["train", *config_flags(settings)])
    assert config_overrides(args) == settings


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(kind="slurm"), "executor: expected one of local, submitit, got 'slurm'"),
        (dict(jobs=0), "jobs: expected an integer >= 1, got 0"),
        (dict(kind="submitit"), "executor: submitit needs a folder"),
        (dict(kind="submitit", folder="x", time_min=0), "time_min: expected an integer >= 1"),
    ],
)
def test_executor_settings_are_checked_by_name(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Executor(**options)


def _diverges(job):
    raise TrainingDiverged(
        f"training diverged at iteration {job}: the loss is not finite", job, "the loss is not finite"
    )


def test_a_divergence_reaches_the_caller_as_its_type_with_its_fields():
    """Across a process boundary the caller gets the exception itself (type, iteration, cause), not a message to
    search."""
    ok, err = _answer(_diverges, 7)  # what a submitit job returns
    assert not ok and isinstance(err, TrainingDiverged) and (err.iteration, err.cause) == (7, "the loss is not finite")
    with pytest.raises(TrainingDiverged) as raised:  # a local pool of two workers
        list(run_cells(_diverges, [Cell("a", 3), Cell("b", 5)], Executor(jobs=2), rerun="again"))
    assert (raised.value.iteration, raised.value.cause) == (3, "the loss is not finite")


def test_cli_sweep_print_commands_lists_one_command_per_cell_and_collects_them(tmp_path, capsys, monkeypatch):
    out = tmp_path / "s"
    assert main([*TINY_SWEEP, "--out", str(out), "--print-commands"]) == 0
    commands = capsys.readouterr().out.splitlines()
    ids = [cell_id(c) for c in Grid(kinds=("langevin", "anila"), step_sizes=(0.01,), bs=(3.0,), n_steps=(5,)).cells()]
    assert sorted(line.rsplit(" ", 1)[1] for line in commands) == sorted(ids)
    assert all(line.startswith("python -m anila_core sweep ") and f"--out {out}" in line for line in commands)
    assert (out / "plan.json").is_file() and not list((out / "cells").glob("*.json")), "nothing ran"
    assert main(shlex.split(commands[0])[3:]) == 0  # what a scheduler runs: one cell, its file written
    capsys.readouterr()
    assert main([*TINY_SWEEP, "--out", str(out), "--print-commands"]) == 0
    assert capsys.readouterr().out.splitlines() == commands[1:], "only the unfinished cell is listed"
    assert main(shlex.split(commands[1])[3:]) == 0
    monkeypatch.setattr(
        study_cell, "run_cell", lambda base, cell, *a: pytest.fail(f"collecting computed {cell_id(cell)} again")
    )
    assert main([*TINY_SWEEP, "--out", str(out)]) == 0
    summary = json.loads((out / "sweep.json").read_text())
    assert sorted(c["id"] for c in summary["cells"]) == sorted(ids) and (out / "sweep.md").is_file()
    for c in summary["cells"]:
        assert set(c) == CELL_KEYS and [h["iter"] for h in c["history"]] == [5, 10] and 0 <= c["final"]["grid_tv"] <= 1


def test_a_cell_command_refuses_a_folder_without_the_sweeps_plan_and_a_cell_not_in_it(tmp_path, capsys):
    assert main([*TINY_SWEEP, "--out", str(tmp_path / "none"), "--cell", "langevin-eps0.01-K5-buffer-seed0"]) == 2
    assert "holds no sweep; run the sweep's command with --print-commands first" in capsys.readouterr().err
    assert main([*TINY_SWEEP, "--out", str(tmp_path / "s"), "--print-commands"]) == 0
    assert main([*TINY_SWEEP, "--out", str(tmp_path / "s"), "--cell", "gibbs-eps1-K5-buffer-seed0"]) == 2
    assert "--cell: 'gibbs-eps1-K5-buffer-seed0' is not a cell of this sweep" in capsys.readouterr().err


@pytest.fixture
def submitit_local(monkeypatch):
    """submitit's own local processes even where SLURM is installed: the tests need no cluster."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit, "AutoExecutor", functools.partial(submitit.AutoExecutor, cluster="local"))


def test_cli_sweep_through_submitits_local_executor(tmp_path, capsys, submitit_local):
    out = tmp_path / "s"
    assert main([*TINY_SWEEP, "--out", str(out), "--executor", "submitit"]) == 0
    assert "sweep: 2 cells on rings, 10 iterations each" in capsys.readouterr().out
    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["cells"]) == 2 and len(list((out / "cells").glob("*.json"))) == 2
    for c in summary["cells"]:
        assert set(c) == CELL_KEYS and not c["diverged"] and 0 <= c["final"]["grid_tv"] <= 1 and c["iters"] == 10
    assert list((out / "submitit").glob("*_result.pkl")), "the cells ran as submitit jobs"
    assert "## Every setting" in (out / "sweep.md").read_text()


#: a tiny comparison on the command line: Langevin and a clipping AniLA, 10 iterations each, one after the other
TINY_COMPARE = ["--iters", "10", "--samplers", "langevin", "anila:b=3", "--jobs", "1"]


def test_cli_compare_through_submitits_local_executor(tmp_path, capsys, submitit_local):
    out = tmp_path / "cmp"
    assert main(smoke_argv("compare", *TINY_COMPARE, "--executor", "submitit", out=out)) == 0
    printed = capsys.readouterr().out
    assert "| langevin |" in printed and "| anila-b3 |" in printed
    for label, b in (("langevin", None), ("anila-b3", 3.0)):
        assert {p.name for p in (out / label).iterdir()} >= set(RUN_FILES) | {"checkpoint.pt"}
        final = json.loads((out / label / "final.json").read_text())
        assert final["iters"] == 10 and 0 <= final["grid_tv"] <= 1 and (b is None or final["config"]["b"] == b)
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2, "each run was a submitit job"


def test_compare_print_commands_lists_one_train_command_per_run_and_resume_collects_them(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = smoke_argv("compare", *TINY_COMPARE, out=out)
    assert main(args + ["--print-commands"]) == 0
    commands = capsys.readouterr().out.splitlines()
    train = "python -m anila_core train --preset smoke"
    assert commands == [
        f"{train} --sampler langevin --iters 10 --out {out / 'langevin'} --no-progress",
        f"{train} --sampler anila --iters 10 --b 3.0 --out {out / 'anila-b3'} --no-progress",
    ]
    for line in commands:  # what a scheduler runs: each run in its own folder
        assert main(shlex.split(line)[3:]) == 0
    capsys.readouterr()
    assert main(args + ["--print-commands", "--resume"]) == 0
    assert capsys.readouterr().out == "", "every run finished: nothing left to list"
    assert main(args + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier with these settings, kept") == 2 and (out / "comparison.md").is_file()
    assert "| langevin |" in printed and "| anila-b3 |" in printed
