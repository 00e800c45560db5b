"""DistributedDataParallel on CPU (Gloo): two ranks under torchrun train the same model with their own chains, rank 0
writes, resume is exact."""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from anila_core.training.presets import preset
from anila_core.fileio import read_jsonl
from anila_core.training.kinds import data_kind
from anila_core.training.runs import CHECKPOINT
from digits_judge import digits_data_root
from cli_commands import digits_argv, torchrun_argv

WORKER = Path(__file__).resolve().parents[1] / "ddp_worker.py"

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with Gloo"
)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One torchrun launch of two ranks running four commands in turn; returns the folders and each rank's reports."""
    base = tmp_path_factory.mktemp("ddp")
    data_root = digits_data_root(tmp_path_factory.getbasetemp())
    reports = base / "reports"
    reports.mkdir()
    common = ["--preset", "smoke", "--sampler", "anila", "--device", "cpu", "--no-progress", "--checkpoint-every", "10"]
    commands = [
        ["train", *common, "--iters", "20", "--out", str(base / "straight")],
        ["train", *common, "--iters", "10", "--out", str(base / "split")],
        ["train", "--resume", "--iters", "20", "--device", "cpu", "--no-progress", "--out", str(base / "split")],
        digits_argv("train", data_root, "--sampler", "anila", "--device", "cpu", out=base / "digits"),
    ]
    argv = torchrun_argv(2, WORKER, reports)
    for command in commands:
        argv += ["--", *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ANILA_DATA", None)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(2)]
    return base, ranks, result


def test_every_command_succeeds_on_both_ranks(launched):
    _, ranks, result = launched
    for reports in ranks:
        assert [r["exit_code"] for r in reports] == [0, 0, 0, 0]
        assert all(r["world_size"] == 2 for r in reports)
    assert "on 2 processes" in result.stdout
    assert result.stdout.count("run directory:") == 4  # rank 0 speaks, rank 1 stays quiet


def test_ranks_end_with_identical_parameters_but_their_own_chains(launched):
    _, (rank0, rank1), _ = launched
    for i, (a, b) in enumerate(zip(rank0, rank1)):
        assert a["iteration"] == b["iteration"]
        assert a["params"] == b["params"]  # DDP averaged the gradients: one model
        assert a["samples"] != b["samples"]  # each rank sampled its own chains
        # only rank 0 evaluates; rank 1 holds just the rows a resumed checkpoint brought along
        assert b["history_rows"] < a["history_rows"]
        if i != 2:
            assert b["history_rows"] == 0


def test_rank0_checkpoint_is_the_model_every_rank_holds_and_keeps_each_ranks_chains(launched):
    base, (rank0, _), _ = launched
    state = torch.load(base / "straight" / CHECKPOINT, weights_only=False)
    assert state["iteration"] == 20 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["buffer"], state["ranks"][1]["buffer"])
    h = hashlib.sha256()
    for p in state["model"].values():  # parameters() order is state_dict order for this MLP
        h.update(p.contiguous().numpy().tobytes())
    assert h.hexdigest() == rank0[0]["params"]


def test_resumed_distributed_run_equals_the_uninterrupted_one(launched):
    base, (rank0, rank1), _ = launched
    straight, resumed = rank0[0], rank0[2]
    assert resumed["params"] == straight["params"] and rank1[2]["params"] == rank1[0]["params"]
    assert resumed["samples"] == straight["samples"] and rank1[2]["samples"] == rank1[0]["samples"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(base / "split" / "metrics.jsonl")) == strip(read_jsonl(base / "straight" / "metrics.jsonl"))


@pytest.mark.parametrize("name, dataset", [("straight", ""), ("digits", "digits")])
def test_run_directories_are_complete(launched, name, dataset):
    base, _, _ = launched
    out = base / name
    config = preset("smoke", "anila", dataset=dataset)
    for f in data_kind(config).expected_files():
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert not list(out.glob(".*.tmp"))  # no torn writes left behind
    final = json.loads((out / "final.json").read_text())
    assert final["iters"] == (config.iters if dataset else 20)
    if dataset:
        assert final["fid"] is not None and final["coverage"] is not None
