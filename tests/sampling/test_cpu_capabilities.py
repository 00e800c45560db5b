"""The compiled chains of every sampler on the 2-D MLPs under each vector ISA this CPU runs (``ATEN_CPU_CAPABILITY``),
against the eager chains; and inductor's disk cache kept apart per ISA.

Torch picks its vector kernels (and inductor the C++ it writes) once per process, from the
CPU or from ``ATEN_CPU_CAPABILITY``, so each capability runs in a process of its own
(``compiled_chains_worker.py``). These tests cover every capability themselves: CI's second
pass under another capability (``.ci/run``) leaves them out.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import anila_core

WORKER = Path(__file__).resolve().parents[1] / "compiled_chains_worker.py"
ROOT = Path(anila_core.__file__).resolve().parents[1]


def cpu_capabilities() -> list[str]:
    """The values of ``ATEN_CPU_CAPABILITY`` this CPU can run, widest first: ``avx512`` and ``avx2`` where /proc/cpuinfo
    lists them, and ``default`` (no vector kernels) everywhere."""
    flags: set[str] = set()
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split())
                        break
        except (
            OSError
        ):  # no /proc (macOS, Windows): the vector ISAs cannot be told apart here, so only the one every CPU runs
            pass
    return [c for c, flag in (("avx512", "avx512f"), ("avx2", "avx2")) if flag in flags] + ["default"]


def start_worker(capability: str, report: Path, cases: str, inductor_cache: Path | None = None) -> subprocess.Popen:
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": capability,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if inductor_cache is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache)
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(report), cases],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(capability: str, worker: subprocess.Popen, report: Path) -> list[dict]:
    """The worker's rows, after checking that it ran under ``capability``."""
    output, _ = worker.communicate(timeout=1200)
    assert worker.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}: {output[-3000:]}"
    result = json.loads(report.read_text())
    assert result["capability"] == capability.upper(), result["capability"]  # torch really ran these kernels
    return result["rows"]


def check_rows(capability: str, rows: list[dict]) -> None:
    for row in rows:
        where = f"ATEN_CPU_CAPABILITY={capability}, {row['case']}: {row}"
        # compiled, not the eager fallback: a fallback chain equals the eager one by construction
        assert row["compiled"] and not row["failed"] and not row["warnings"], where
        assert row["eager_finite"] and row["compiled_finite"], where
        assert row["moved"] > 1e-3, where  # the chains moved, so agreeing says something
        assert row["close"], where  # to the float tolerance of the worker's TOLERANCE, written there with why


@pytest.mark.slow
def test_compiled_chains_equal_eager_chains_under_every_cpu_capability(tmp_path):
    """Every sampler (Langevin, MALA, AniLA per norm and with the test, pSGLD, HMC) on MLP 2-128-128-128-1, and two on
    MLP 2-32-32-1."""
    capabilities = cpu_capabilities()
    # side by side: each process compiles about ten graphs, on a core of its own where there are two
    workers = {c: start_worker(c, tmp_path / f"{c}.json", "all") for c in capabilities}
    for capability, worker in workers.items():
        rows = finished(capability, worker, tmp_path / f"{capability}.json")
        assert len(rows) == 10
        check_rows(capability, rows)


def test_the_compile_cache_keeps_each_cpu_capability_apart(tmp_path):
    """One inductor disk cache, the widest ISA first: a narrower one must compile its own code, not be served the wider
    one's.

    Served the AVX2 code, a ``default`` process failed to build it (and fell back to eager); served
    the AVX-512 code, an ``avx2`` process ran 16-float loops over 8-float vectors and every
    chain was NaN from its first step.
    """
    capabilities = cpu_capabilities()
    if len(capabilities) < 2:
        pytest.skip("this CPU offers torch one vector ISA only (or /proc/cpuinfo cannot tell)")
    cache = tmp_path / "inductor-cache"
    for capability in capabilities:  # in turn: each one finds the cache the wider ones filled
        report = tmp_path / f"{capability}.json"
        check_rows(capability, finished(capability, start_worker(capability, report, "tiny", cache), report))
