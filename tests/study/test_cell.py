"""A sweep cell interrupted and resumed from its checkpoint ends as the same cell run straight; a bad checkpoint is
named and the cell starts over."""

import json
import shutil

import pytest
import torch

from anila_core.study import cell as study_cell
from anila_core.study.grid import cell_id
from anila_core.study.results import known_results
from anila_core.study.sweep import run_sweep
from anila_core.training.presets import preset

# 20 iterations, a checkpoint point every 5: an interruption after the one at 10 leaves half the cell to resume
BASE = preset("smoke", "anila", iters=20, eval_every=5, checkpoint_every=5, eval_samples=100, device="cpu")
CELL = dict(kind="anila", step_size=0.01, b=0.05, n_steps=5, chains="buffer", seed=0)
OTHER = {**CELL, "seed": 1}
CLOCKS = ("wall_s", "cpu_s")


class Interrupted(Exception):
    """What the test raises where a session would have ended."""


def _without_clocks(result: dict) -> dict:
    """A cell result but for what measures time (and the machine's load): what an interruption must not change."""
    kept = {k: v for k, v in result.items() if k not in ("wall_s", "load_avg")}
    return {**kept, "history": [{k: v for k, v in row.items() if k not in CLOCKS} for row in result["history"]]}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The cells run straight (a smoke cell is far shorter than the checkpoint interval: it writes no checkpoint)."""
    out = tmp_path_factory.mktemp("straight")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_cell, "_save", lambda *a: pytest.fail("a cell of seconds wrote a checkpoint"))
        summary = run_sweep(out, [CELL, OTHER], BASE, jobs=1, progress=False)
    return {r["id"]: r for r in summary["cells"]}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A sweep folder whose cell was interrupted right after its checkpoint at iteration 10."""
    out = tmp_path_factory.mktemp("interrupted")
    with pytest.MonkeyPatch.context() as patch:
        real = study_cell._save
        patch.setattr(study_cell, "CHECKPOINT_S", 0.0)

        def save_then_stop(trainer, *args):
            real(trainer, *args)
            if trainer.iteration == 10:
                raise Interrupted

        patch.setattr(study_cell, "_save", save_then_stop)
        with pytest.raises(Interrupted):
            run_sweep(out, [CELL], BASE, jobs=1, progress=False)
    return out


def _resumed_from(monkeypatch) -> list[int]:
    """The iteration each cell of the next sweep starts from."""
    starts, real = [], study_cell._start

    def start(*args):
        trainer, clock = real(*args)
        starts.append(trainer.iteration)
        return trainer, clock

    monkeypatch.setattr(study_cell, "_start", start)
    return starts


def test_an_interrupted_cell_resumes_and_writes_the_result_of_the_cell_run_straight(
    interrupted, straight, tmp_path, monkeypatch
):
    out = tmp_path / "s"
    shutil.copytree(interrupted, out)
    scratch = study_cell.scratch_folder(out, CELL)
    saved = torch.load(scratch / "checkpoint.pt", weights_only=True)
    assert saved["iteration"] == 10 and saved["sweep_cell"]["cpu_s"] > 0
    assert known_results(out) == {} and not (out / "cells" / f"{cell_id(CELL)}.json").exists(), (
        "the scratch folder is no result"
    )
    starts = _resumed_from(monkeypatch)
    summary = run_sweep(out, [CELL], BASE, jobs=1, progress=False)
    assert starts == [10]
    result = summary["cells"][0]
    assert _without_clocks(result) == _without_clocks(straight[cell_id(CELL)])
    for key in ("final", "diverged", "clipped_share", "energy_gap", "best_grid_tv", "iters"):
        assert result[key] == straight[cell_id(CELL)][key], key
    # the clocks sum the pieces: the rows after the checkpoint go on from the CPU time it saved
    cpu = [row["cpu_s"] for row in result["history"]]
    assert cpu[:2] == [row["cpu_s"] for row in saved["history"]] and cpu == sorted(cpu)
    assert cpu[2] > saved["sweep_cell"]["cpu_s"] and result["wall_s"] >= saved["sweep_cell"]["wall_s"]
    assert not scratch.exists(), "the scratch folder is deleted once the result is written"
    assert json.loads((out / "cells" / f"{cell_id(CELL)}.json").read_text()) == result
    # a worker killed between its result and the folder's removal: the next sweep removes the folder, keeps the result
    shutil.copytree(study_cell.scratch_folder(interrupted, CELL), scratch)
    assert run_sweep(out, [CELL], BASE, jobs=1, progress=False)["cells"] == [result] and starts == [10]
    assert not scratch.exists()


def _damage_truncated(out):
    path = study_cell.scratch_folder(out, CELL) / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:1000])


def _damage_foreign(out):
    (study_cell.scratch_folder(out, CELL) / "checkpoint.pt").write_bytes(b"not a checkpoint")


def _damage_other_cell(out):
    study_cell.scratch_folder(out, CELL).rename(study_cell.scratch_folder(out, OTHER))


def _damage_settings(out):
    path = study_cell.scratch_folder(out, CELL) / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["config"]["lr"] *= 2
    torch.save(state, path)


@pytest.mark.parametrize(
    "damage, version, message",
    [
        (_damage_truncated, 1, "cannot be read as a checkpoint, it is truncated"),
        (_damage_foreign, 1, "refused: it may not be a checkpoint of anila_core"),
        (_damage_other_cell, 1, f"it is the checkpoint of cell '{cell_id(CELL)}'"),
        (_damage_settings, 1, "it was trained with other settings \\(lr"),
        (lambda out: None, 2, "it was written by version 1 of the design, this is 2"),
    ],
)
def test_a_damaged_or_mismatched_checkpoint_is_named_and_the_cell_starts_over(
    interrupted, straight, tmp_path, monkeypatch, damage, version, message
):
    out = tmp_path / "s"
    shutil.copytree(interrupted, out)
    damage(out)
    cells = [CELL, OTHER]
    starts = _resumed_from(monkeypatch)
    with pytest.warns(RuntimeWarning, match=f"partial/.*/checkpoint.pt: cannot resume sweep cell .*{message}.*"):
        summary = run_sweep(out, cells, BASE, jobs=1, progress=False, version=version)
    assert starts == [0, 0], "no cell resumed from a checkpoint that is not its own"
    for result in summary["cells"]:
        assert _without_clocks({**result, "version": 1}) == _without_clocks(straight[result["id"]])
    assert not list((out / "partial").iterdir())


def test_a_pool_worker_resumes_the_cell_too(interrupted, straight, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(interrupted, out)
    saved = torch.load(study_cell.scratch_folder(out, CELL) / "checkpoint.pt", weights_only=True)
    summary = run_sweep(out, [CELL, OTHER], BASE, jobs=2, progress=False)
    results = {r["id"]: r for r in summary["cells"]}
    for name, result in results.items():
        assert _without_clocks(result) == _without_clocks(straight[name])
    # the rows before the checkpoint are the saved ones, their CPU times included: the cell resumed, it did not restart
    assert [r["cpu_s"] for r in results[cell_id(CELL)]["history"][:2]] == [r["cpu_s"] for r in saved["history"]]
    assert not list((out / "partial").iterdir())


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), "300", True])
def test_a_bad_checkpoint_interval_is_refused_by_name(seconds, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_s: expected a number of seconds >= 0"):
        study_cell.run_cell(BASE, CELL, tmp_path / "partial", checkpoint_s=seconds)
    assert not list(tmp_path.iterdir())
