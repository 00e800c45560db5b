"""The benchmark's smallest run: every section runs and writes the rows and ratios its report needs (seconds; no compiling)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ["langevin", "anila-coordinate", "anila-pixel", "anila-sample", "anila-mala", "psgld"]


def test_minimal_benchmark_writes_the_expected_rows(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--minimal", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "RESULTS.md").read_text()

    machine = results["machine"]
    for key in ("cpu", "cores", "torch", "date", "load_avg_start", "torch_threads"):
        assert machine[key] is not None, key
    assert results["load"]["samples"] > 0

    rows = {(r["kind"], r["row"]): r for r in results["transitions"] if r["device"] == "cpu"}
    for kind in ("mlp", "conv"):
        assert rows[(kind, "floor")]["ms"] > 0
        for name in SAMPLERS:
            eager = rows[(kind, f"{name}/eager")]
            assert eager["ms"] > 0 and eager["ratio_to_floor"] > 0, eager
            assert (kind, f"{name}/fast") in rows  # present, with a note saying why it is not measured in this mode
        ebm = rows[(kind, "langevin/torchebm")]
        assert ebm["ms"] is None or ebm["ratio_to_floor"] > 0
        assert ebm["ms"] is not None or "note" in ebm
    for check in results["torchebm_check"]:
        assert check["equal"], check  # timed only after it reproduced our chain

    assert {(r["kind"], r["sampler"]) for r in results["training"]} == {(k, s) for k in ("mlp", "conv") for s in ("langevin", "anila")}
    assert all(r["ratio_to_K_plus_2_floors"] > 0 for r in results["training"])
    assert {r["kind"] for r in results["memory"]} == {"mlp", "conv"}
    assert {q["sampler"] for q in results["quality"]} == {"langevin", "anila"}
    assert all(len(q["points"]) > 0 and 0 <= q["points"][-1][2] <= 1 for q in results["quality"])
    assert results["targets"]

    for heading in ("## Transitions", "## TorchEBM equivalence check", "## Training iteration", "## Peak memory against K",
                    "## Time to quality", "## Targets", "**Load**"):
        assert heading in report
