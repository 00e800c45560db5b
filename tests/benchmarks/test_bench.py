"""The benchmark's smallest run: every section runs and writes the rows and ratios its report needs (seconds; no
compiling); the JAX rows' plumbing and skips."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anila_core.sampling.samplers import Langevin

ROOT = Path(__file__).resolve().parents[2]
SAMPLERS = ["langevin", "langevin-mala", "anila-coordinate", "anila-pixel", "anila-sample", "anila-mala", "psgld"]
HAVE_JAX = importlib.util.find_spec("jax") is not None
HAVE_BLACKJAX = importlib.util.find_spec("blackjax") is not None


def test_minimal_benchmark_writes_the_expected_rows(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--minimal", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "RESULTS.md").read_text()

    machine = results["machine"]
    for key in ("cpu", "cores", "torch", "date", "load_avg_start", "torch_threads"):
        assert machine[key] is not None, key
    assert results["load"]["samples"] > 0

    rows = {(r["kind"], r["row"]): r for r in results["transitions"] if r["device"] == "cpu"}
    # A marginal (t(K) − t(1)) / (K − 1) at this size and a repetition or three is noise-sized and can
    # come out at or below zero on a busy machine: measured and finite is the property, its size is the benchmark's.
    measured = lambda r: r["ms"] is not None and math.isfinite(r["ms"]) and math.isfinite(r["ratio_to_floor"])  # noqa: E731
    for kind in ("mlp", "conv"):
        assert measured(rows[(kind, "floor")]) and rows[(kind, "floor")]["ms"] != 0
        for name in SAMPLERS:
            eager = rows[(kind, f"{name}/eager")]
            assert measured(eager), eager
            assert (kind, f"{name}/fast") in rows  # present, with a note saying why it is not measured in this mode
        ebm = rows[(kind, "langevin/torchebm")]
        assert ebm["ms"] is None or measured(ebm)
        assert ebm["ms"] is not None or "note" in ebm
    for check in results["torchebm_check"]:
        assert check["equal"], check  # timed only after it reproduced our chain

    # the public API with no fast= argument, the energy written as a module, a bound method and a lambda
    for path, words in (("default", "the module"), ("default-method", "bound method"), ("default-lambda", "lambda")):
        default = rows[("mlp", f"langevin/{path}")]
        assert (
            default["ms"] > 0
            and default["K"] == 100
            and "no fast= argument" in default["note"]
            and words in default["note"]
        )
    assert (
        measured(rows[("mlp", "matmuls/torch")]) and "matrix products alone" in rows[("mlp", "matmuls/torch")]["note"]
    )
    for key, present in (
        ("langevin/jax", HAVE_JAX),
        ("langevin-mala/blackjax", HAVE_JAX and HAVE_BLACKJAX),
        ("matmuls/xla", HAVE_JAX),
    ):
        row = rows[("mlp", key)]
        if present:
            assert measured(row), row
        else:
            assert row["ms"] is None and row["note"].startswith("skipped: "), row
    if HAVE_JAX:
        assert results["jax"]["check"]["equal"]  # the same energy as the torch MLP, weights copied
        assert "intra_op_parallelism_threads=1" in results["jax"]["xla_flags"]
    targets = [t["target"] for t in results["targets"]]
    assert any("BlackJAX" in t for t in targets) and sum("public default" in t for t in targets) == 3
    assert any("≤ 0.8× eager floor" in t for t in targets)

    # each row's rest beside it (the row − its library's matmuls row), and the two ratios, printed and written
    rest = {r["row"]: r for r in results["rest"]["rows"]}
    ours = {f"langevin/{path}" for path in ("default", "default-method", "default-lambda")}  # no compiling here
    assert ours <= set(rest) and all(rest[k]["library"] == "torch" for k in ours)
    assert ({"langevin/jax", "langevin-mala/blackjax"} <= set(rest)) == (HAVE_JAX and HAVE_BLACKJAX)
    mm = rows[("mlp", "matmuls/torch")]["ms"]
    assert all(rest[k]["rest_ms"] == rows[("mlp", k)]["ms"] - mm for k in ours)
    assert [(r["ours"], r["peer"]) for r in results["rest"]["ratios"]] == [
        ("langevin/fast", "langevin/jax"),
        ("langevin-mala/fast", "langevin-mala/blackjax"),
    ]
    for ratio in results["rest"]["ratios"]:  # this mode compiles nothing: no compiled row to set against the peer's
        blackjax_missing = "blackjax" in ratio["peer"] and not HAVE_BLACKJAX
        no_peer = "no JAX" if not HAVE_JAX else "no BlackJAX" if blackjax_missing else None
        assert ratio["ratio"] is None and ratio["why"] == (no_peer or f"{ratio['ours']} not measured")
    assert sum("rest of " in t for t in targets) == 2
    assert "rest = a row's time per transition minus its own library's `matmuls` row" in done.stdout
    assert "rest(langevin/fast) / rest(langevin/jax)" in done.stdout and "| rest ms |" in report

    assert {(r["kind"], r["sampler"]) for r in results["training"]} == {
        (k, s) for k in ("mlp", "conv") for s in ("langevin", "anila")
    }
    assert all(r["ratio_to_K_plus_2_floors"] > 0 for r in results["training"])
    assert {r["kind"] for r in results["memory"]} == {"mlp", "conv"}
    assert {q["sampler"] for q in results["quality"]} == {"langevin", "anila"}
    assert all(len(q["points"]) > 0 and 0 <= q["points"][-1][2] <= 1 for q in results["quality"])
    assert results["targets"]

    for heading in (
        "## Transitions",
        "## TorchEBM equivalence check",
        "## JAX and BlackJAX",
        "## Training iteration",
        "## Peak memory against K",
        "## Time to quality",
        "## Targets",
        "**Load**",
    ):
        assert heading in report


def _transition(row: str, ms: float | None, device: str = "cpu") -> dict:
    sampler, path = row.split("/")
    return {"device": device, "energy": "MLP", "row": row, "sampler": sampler, "path": path, "ms": ms}


def test_rest_is_the_row_minus_its_own_librarys_matmuls_and_the_ratios_set_ours_against_the_peers(monkeypatch):
    """Fixed numbers, binary fractions: the arithmetic is exact, so every figure is asserted with ==."""
    rest_figures = _benchmark_module("rest", monkeypatch).rest_figures
    rows = [
        _transition(*r)
        for r in (
            ("floor/floor", 4.0),
            ("langevin/eager", 4.25),
            ("langevin/fast", 3.5),
            ("langevin-mala/fast", 2.5),
            ("anila-coordinate/fast", 3.25),
            ("hmc-5-leapfrog/fast", 12.0),
            ("langevin/default", 3.75),
            ("psgld/fast", None),
            ("matmuls/torch", 1.5),
            ("langevin/jax", 2.5),
            ("langevin-mala/blackjax", 3.0),
            ("matmuls/xla", 2.0),
        )
    ] + [_transition("langevin/fast", 9.0, device="cuda")]  # no matmuls row on that device: no rest
    figures = rest_figures(rows)
    rest = {r["row"]: (r["library"], r["matmuls_ms"], r["rest_ms"]) for r in figures["rows"]}
    # eager rows, the unmeasured one, HMC's several gradients and the matmuls rows themselves have none
    assert rest == {
        "langevin/fast": ("torch", 1.5, 2.0),
        "langevin-mala/fast": ("torch", 1.5, 1.0),
        "anila-coordinate/fast": ("torch", 1.5, 1.75),
        "langevin/default": ("torch", 1.5, 2.25),
        "langevin/jax": ("xla", 2.0, 0.5),
        "langevin-mala/blackjax": ("xla", 2.0, 1.0),
    }
    langevin, mala = figures["ratios"]
    assert (langevin["ours"], langevin["peer"], langevin["ratio"], langevin["met"]) == (
        "langevin/fast",
        "langevin/jax",
        4.0,
        False,
    )
    assert (mala["ours"], mala["peer"], mala["ratio"], mala["met"]) == (
        "langevin-mala/fast",
        "langevin-mala/blackjax",
        1.0,
        True,
    )
    assert langevin["target"] == mala["target"] == 1.1 and langevin["why"] is mala["why"] is None

    # without JAX our rows keep their rest and the ratios say why they are missing
    no_jax = rest_figures([r for r in rows if r["path"] not in ("jax", "blackjax", "xla")])
    assert {r["row"] for r in no_jax["rows"]} == set(rest) - {"langevin/jax", "langevin-mala/blackjax"}
    assert [(r["ratio"], r["met"], r["why"]) for r in no_jax["ratios"]] == [(None, None, "no JAX")] * 2
    no_blackjax = rest_figures([r for r in rows if r["path"] != "blackjax"])
    assert [r["why"] for r in no_blackjax["ratios"]] == [None, "no BlackJAX"]


def _benchmark_module(name: str, monkeypatch):
    """A module of benchmarks/, a folder of scripts rather than a package, imported as the scripts import each other."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module(name)


def _tiny_mlp():
    from anila_core.nets import MLPEnergy

    torch.manual_seed(0)
    return MLPEnergy(2, 8, 2), torch.randn(16, 2)


def test_matmul_chain_is_orthogonal_and_keeps_the_norm(monkeypatch):
    """The products the ``matmuls`` rows time: one orthogonal matrix per square hidden layer, so a long chain neither
    grows nor shrinks."""
    from anila_core.nets import MLPEnergy

    timing = _benchmark_module("timing", monkeypatch)
    net = MLPEnergy(2, 32, 3)  # layers 2→32, 32→32, 32→32, 32→1: two square ones
    arrays = timing.matmul_chain_arrays(net, 64)
    assert sorted(arrays) == ["mm_h", "mm_q0", "mm_q1"] and arrays["mm_h"].shape == (64, 32)
    h = torch.from_numpy(arrays["mm_h"]).double()
    for name in ("mm_q0", "mm_q1"):
        q = torch.from_numpy(arrays[name]).double()
        assert torch.allclose(q.T @ q, torch.eye(32, dtype=torch.float64), atol=1e-6)
    start = h.norm()
    for _ in range(100):
        h = h @ torch.from_numpy(arrays["mm_q0"]).double().T @ torch.from_numpy(arrays["mm_q1"]).double().T
    assert abs(h.norm() / start - 1) < 1e-4
    assert timing.matmul_chain_arrays(MLPEnergy(2, 32, 1), 8) == {}  # 2→32→1: nothing square to time


def test_jax_rows_say_skipped_when_jax_is_not_installed(tmp_path, monkeypatch):
    peers = _benchmark_module("peers", monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    net, x = _tiny_mlp()
    measures, notes, results = {}, {}, {}
    assert peers.add_jax_rows(net, x, Langevin(0.01), 3, measures, notes, results, tmp_path) is None
    assert not measures
    assert set(notes) == set(peers.JAX_ROWS) and all(n.startswith("skipped: not installed") for n in notes.values())
    assert results["jax"]["skipped"].startswith("skipped: not installed")


def test_jax_rows_say_why_when_jax_cannot_be_imported(tmp_path, monkeypatch):
    """A jax that is present but broken: the child says so in one line, no traceback reaches the table, the torch rows
    go on."""
    fake = tmp_path / "fake"
    (fake / "jax").mkdir(parents=True)
    (fake / "jax" / "__init__.py").write_text("raise ImportError('simulated broken jax')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), str(ROOT)]))
    monkeypatch.syspath_prepend(str(fake))  # found here too, installed or not: the child's import is what fails
    peers = _benchmark_module("peers", monkeypatch)
    net, x = _tiny_mlp()
    measures, notes, results = {}, {}, {}
    assert peers.add_jax_rows(net, x, Langevin(0.01), 3, measures, notes, results, tmp_path) is None
    assert not measures
    for key in peers.JAX_ROWS:
        assert notes[key] == "skipped: jax cannot be imported (ImportError: simulated broken jax)"


@pytest.mark.skipif(not HAVE_JAX, reason="jax is not installed (the bench extra: pip install -e '.[bench]')")
def test_jax_child_runs_the_torch_mlp_and_answers_each_measure(tmp_path, monkeypatch):
    peers = _benchmark_module("peers", monkeypatch)
    net, x = _tiny_mlp()
    measures, notes, results = {}, {}, {}
    child = peers.add_jax_rows(net, x, Langevin(0.01), 3, measures, notes, results, tmp_path)
    try:
        assert child is not None and results["jax"]["check"]["equal"], results
        assert len(results["jax"]["cpu_affinity"]) == 1  # one CPU for XLA: its flags alone left two threads computing
        assert results["jax"]["cpu_per_wall"] <= 1.2
        expected = set(peers.JAX_ROWS) - (set() if HAVE_BLACKJAX else {"langevin-mala/blackjax"})
        assert set(measures) == expected
        for measure in measures.values():
            wall, cpu = measure()
            assert math.isfinite(wall) and math.isfinite(cpu)
    finally:
        if child is not None:
            child.close()
    assert child.proc.returncode == 0  # it quit when asked, nothing left running
