"""The GPU check's own behaviour without a GPU (benchmarks/gpu_check.py): the dry run says so, never writes the GPU
report, and a failing step fails the run without stopping the next one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
GPU_REPORT = ROOT / "benchmarks" / "RESULTS-cuda.md"

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the CPU dry run; on a GPU `make gpu-check` runs the real check"
)


def _check(args, tmp_path, **env):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment
    )


def test_the_dry_run_says_no_gpu_and_never_writes_the_gpu_report(tmp_path):
    before = GPU_REPORT.read_bytes() if GPU_REPORT.exists() else None
    done = _check(["--steps", "versions", "--out", str(GPU_REPORT)], tmp_path, TMPDIR=str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "No GPU found" in done.stdout and "CPU DRY RUN" in done.stdout
    assert "refusing to write benchmarks/RESULTS-cuda.md without a GPU" in done.stdout
    assert (GPU_REPORT.read_bytes() if GPU_REPORT.exists() else None) == before
    report = tmp_path / "anila-gpu-check" / "RESULTS-cuda-dryrun.md"
    text = report.read_text()
    assert text.startswith("# CPU dry run of the GPU check (no GPU found: not GPU figures)")
    saved = json.loads(report.with_name("results-cuda-dryrun.json").read_text())
    assert saved["on_gpu"] is False and saved["steps"]["versions"]["status"] == "passed"
    assert {p["package"] for p in saved["steps"]["versions"]["result"]["packages"]} >= {"torch", "torchvision", "numpy"}
    assert [n for n, s in saved["steps"].items() if s["status"] == "skipped"] == [
        "tests",
        "bench",
        "train",
    ]  # not asked for


def test_a_failing_step_fails_the_run_and_the_next_step_still_runs(tmp_path):
    # seaborn hidden: step 1 finds a needed package missing; the benchmark does not need it
    done = _check(
        ["--steps", "versions,bench", "--out", str(tmp_path / "r.md")], tmp_path, ANILA_GPU_CHECK_HIDE="seaborn"
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "seaborn missing (needed by notebook figures)" in done.stdout
    summary = done.stdout.split("summary:")[1]
    assert "failed   versions" in summary and "passed   bench" in summary and "1 step(s) failed" in summary
    assert "Traceback" not in done.stdout + done.stderr
    saved = json.loads((tmp_path / "results-cuda-dryrun.json").read_text())
    rows = saved["steps"]["bench"]["result"]["transitions"]
    assert {(r["kind"], r["batch"]) for r in rows} == {
        ("mlp", 64),
        ("mlp", 256),
        ("conv", 2),
        ("conv", 4),
    }  # the dry-run sizes
    assert all(r["ms"] is not None for r in rows if r["path"] in ("floor", "eager"))
    assert "## Transitions on cpu" in (tmp_path / "r.md").read_text()
