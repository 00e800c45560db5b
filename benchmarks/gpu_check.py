"""The GPU check (``make gpu-check``): versions, the ``gpu`` tests, the CUDA transition benchmark, paper-preset training speed, and benchmarks/RESULTS-cuda.md.

On the GPU machine (bare: no package registry, the source tree only, its own ``python3``),
from the repository root:

    PYTHONPATH=. python3 benchmarks/gpu_check.py

Elsewhere ``make gpu-check`` runs the same with the project's .venv. Without a GPU this is the
CPU dry run: every step at a tiny size (seconds), the report written to a temporary folder
(never to benchmarks/RESULTS-cuda.md, which holds GPU figures only); CI runs it.

Steps 2–4 each in a process of its own (a failing or hanging step cannot take the next ones with
it, and a CUDA error cannot poison them), each with its share of the time budget:

1. ``versions``: machine, Python, torch, CUDA, driver (nvidia-smi), package versions; fails
   if a package the project needs is missing or too old;
2. ``tests``: ``pytest -m gpu tests/test_gpu.py`` (compiled and CUDA-graph chains of every
   sampler equal the eager chain, bf16 chains stay finite, resume CPU↔CUDA, NCCL/DDP on one GPU);
3. ``bench``: per-transition cost of eager, compiled and CUDA-graph transitions against the
   eager floor (benchmarks/bench.py's machinery), MLP at batch 1024 and 16384, the 32×32
   ConvNet at 64 and 256, TorchEBM beside them when installed;
4. ``train``: the CIFAR-10 ConvNet at the ``paper`` preset on CIFAR-format files written like
   tests/make_tiny_datasets.py does, with ``--amp bf16``, ``--amp bf16 --channels-last`` and
   ``--amp bf16 --compile``: iterations per second and the projected time of the paper's
   100 000 iterations, per sampler;
5. the report: RESULTS-cuda.md (and results-cuda.json) with every table.

The summary lists passed / failed / skipped steps; the exit code is 1 when a step failed.
``ANILA_GPU_CHECK_HIDE=pkg,...`` makes the steps see those packages as missing, to rehearse a
machine without them (the CPU dry run always hides what the GPU machine lacks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.abc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # the source tree's anila_core and bench.py, installed or not

GPU_REPORT = HERE / "RESULTS-cuda.md"
PAPER_ITERS = 100_000

#: (import name, distribution name, minimum version or None, needed by): checked in step 1
PACKAGES = [
    ("torch", "torch", "2.4", "everything"),
    ("torchvision", "torchvision", "0.19", "image datasets"),
    ("numpy", "numpy", "1.24", "everything"),
    ("matplotlib", "matplotlib", "3.7", "run figures"),
    ("scipy", "scipy", "1.10", "metrics"),
    ("sklearn", "scikit-learn", "1.3", "the digits data"),
    ("seaborn", "seaborn", None, "notebook figures"),
    ("tqdm", "tqdm", "4.65", "progress bars"),
    ("torchmetrics", "torchmetrics", "1.4", "FID/KID"),
    ("pytest", "pytest", "7.4", "step 2"),
]
#: optional: missing is a skip with a line saying so, never a failure
OPTIONAL = [("triton", "triton"), ("jax", "jax"), ("torchebm", "torchebm"), ("blackjax", "blackjax"), ("hypothesis", "hypothesis"),
            ("ipywidgets", "ipywidgets"), ("torch_fidelity", "torch-fidelity")]
#: what the bare GPU machine lacks: the CPU dry run hides these from its steps, so that a step
#: that needs one fails here first instead of on the GPU machine's few minutes
NOT_ON_GPU_MACHINE = ("ipywidgets", "IPython", "ipykernel", "jupyterlab", "nbmake", "torchebm", "blackjax", "voila", "playwright")

# What each step measures, on a GPU and in the CPU dry run.
SIZES = {
    "gpu": dict(
        # the most telling sizes first: what does not fit the step's budget is skipped from the end
        bench_sizes=[("mlp", 1024), ("conv", 256), ("mlp", 16384), ("conv", 64)],
        bench=dict(mlp=dict(width=128, depth=3, K=20, reps=11, warmup=2), conv=dict(width=64, K=10, reps=5, warmup=1),
                   overhead=dict(K=10, reps=5)),
        train_overrides={},
        train_iters=200,
        compile=True,
    ),
    "cpu": dict(
        bench_sizes=[("mlp", 64), ("mlp", 256), ("conv", 2), ("conv", 4)],
        bench=dict(mlp=dict(width=16, depth=2, K=3, reps=2, warmup=1), conv=dict(width=4, K=3, reps=1, warmup=1),
                   overhead=dict(K=3, reps=1)),
        # the paper preset's network and chains, shrunk until an iteration takes milliseconds
        train_overrides=dict(conv_width=4, n_steps=2, batch_size=4),
        train_iters=2,
        compile=False,  # compiling on a CPU takes tens of seconds per graph: the dry run checks the plumbing only
    ),
}
#: each step's share of --budget-s (the rest is process start-up and the report)
SHARES = {"versions": 0.0, "tests": 0.38, "bench": 0.30, "train": 0.30}
#: seconds a step's process may run past its share (finishing the unit under way) before it is ended
GRACE_S = 20.0


# --------------------------------------------------------------------------- the dry run's missing packages


class _Hide(importlib.abc.MetaPathFinder):
    """Makes ``import NAME`` fail for the packages the GPU machine lacks, as it would there."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by ANILA_GPU_CHECK_HIDE: the machine rehearsed lacks it)")
        return None


def hide_packages_if_asked() -> None:
    names = [n for n in os.environ.get("ANILA_GPU_CHECK_HIDE", "").split(",") if n]
    if names:
        sys.meta_path.insert(0, _Hide(names))


# --------------------------------------------------------------------------- step 1: versions


def _version_of(module_name: str, dist_name: str) -> tuple[str | None, str | None]:
    """(version, why missing): found on the path (nothing is imported: seconds saved per package) and its distribution's version."""
    import importlib.util
    from importlib import metadata

    try:
        if importlib.util.find_spec(module_name) is None:
            return None, f"No module named {module_name!r}"
    except Exception as err:  # noqa: BLE001 - hidden by the dry run, or a broken install: "not usable here", with its reason
        return None, f"{type(err).__name__}: {err}"
    try:
        return metadata.version(dist_name), None
    except metadata.PackageNotFoundError:  # on the path without metadata (a source checkout): ask the module itself
        try:
            return getattr(importlib.import_module(module_name), "__version__", "?"), None
        except Exception as err:  # noqa: BLE001
            return None, f"{type(err).__name__}: {err}"


def _at_least(version: str, minimum: str) -> bool:
    def parts(v):
        out = []
        for piece in v.split("+")[0].split(".")[:3]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            out.append(int(digits) if digits else 0)
        return out + [0] * (3 - len(out))

    return parts(version) >= parts(minimum)


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        return done.stdout.strip() or done.stderr.strip() or None
    except (OSError, subprocess.SubprocessError) as err:
        return f"nvidia-smi failed: {err}"


def step_versions(ctx: dict) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "machine": platform.node(), "platform": platform.platform(), "cpu": _cpu_name(), "cores": os.cpu_count(),
        "python": platform.python_version(), "python_executable": sys.executable,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_available": cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "nvidia_smi": _nvidia_smi(), "date": ctx["date"], "load_avg": _load(),
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "nccl": bool(torch.distributed.is_available() and torch.distributed.is_nccl_available()),
        # torch.compile's GPU kernels (Triton) build a small launcher with the host's C compiler: without one every compile falls back
        "c_compiler": shutil.which("gcc") or shutil.which("cc") or shutil.which("clang"),
    }
    rows, problems = [], []
    for module, dist_name, minimum, why in PACKAGES:
        version, error = _version_of(module, dist_name)
        ok = version is not None and (minimum is None or _at_least(version, minimum))
        rows.append({"package": dist_name, "version": version, "minimum": minimum, "status": "ok" if ok else "MISSING" if version is None else "too old"})
        if not ok:
            problems.append(f"{dist_name} {'missing' if version is None else version + ' < ' + minimum} (needed by {why})")
    for module, dist_name in OPTIONAL:
        version, error = _version_of(module, dist_name)
        rows.append({"package": dist_name, "version": version, "minimum": None,
                     "status": "ok" if version else f"optional, not installed: what needs it is skipped ({(error or '')[:90]})"})
    info["packages"] = rows
    for k in ("machine", "python", "torch", "torch_cuda", "cudnn", "gpu", "gpu_capability", "gpu_memory_gib", "nvidia_smi", "bf16_supported", "nccl",
              "c_compiler"):
        print(f"  {k:15s} {info[k]}")
    for r in rows:
        print(f"  {r['package']:15s} {r['version'] or '—':12s} {r['status']}")
    if problems:
        raise RuntimeError("; ".join(problems))
    return info


def _cpu_name() -> str:
    from anila_core.device import processor_name

    return processor_name()


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------- step 2: the gpu tests


def step_tests(ctx: dict) -> dict:
    import importlib.util

    try:
        have_pytest = importlib.util.find_spec("pytest") is not None
    except ModuleNotFoundError:  # hidden
        have_pytest = False
    if not have_pytest:
        raise StepSkipped("pytest is not installed here, and the gpu tests need it")
    junit = Path(ctx["scratch"]) / "gpu-tests.xml"
    # pytest through this module, so that the dry run's hidden packages stay hidden there too
    run_pytest = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import gpu_check; gpu_check.hide_packages_if_asked(); "
                  "import pytest; sys.exit(pytest.main(sys.argv[1:]))")
    argv = [sys.executable, "-c", run_pytest, "-v", "-rs", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={junit}",
            "--durations=5", str(ROOT / "tests" / "test_gpu.py")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "MPLBACKEND": "Agg"}
    if ctx["size"] != "gpu":  # the dry run runs the tests' bodies on the CPU, so that a broken test fails here, not on the GPU
        env["ANILA_GPU_TESTS_ON_CPU"] = "1"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=max(30.0, ctx["timeout"] - 10), env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        seen = (err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or "").splitlines()
        cases = [{"test": ln.split(" ")[0].split("::")[-1], "outcome": ln.split(" ")[1].lower() if " " in ln else "?", "seconds": 0,
                  "detail": "before the step's time ran out"} for ln in seen if "::" in ln and (" PASSED" in ln or " FAILED" in ln or " SKIPPED" in ln)]
        raise StepFailed(f"the gpu tests ran past this step's {err.timeout:.0f} s; {len(cases)} finished", {"cases": cases, "counts": {}}) from None
    print("\n".join("  " + ln for ln in done.stdout.strip().splitlines()[-30:]))
    if not junit.exists():
        raise RuntimeError(f"pytest wrote no report (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}[child.tag]
                detail = (child.get("message") or "").strip().splitlines()[0][:200] if child.get("message") else ""
        cases.append({"test": case.get("name"), "outcome": outcome, "seconds": round(float(case.get("time") or 0), 1), "detail": detail})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    result = {"cases": cases, "counts": counts, "exit_code": done.returncode}
    if done.returncode not in (0, 5) or counts["failed"]:
        raise StepFailed(f"{counts['failed']} of {len(cases)} gpu tests failed", result)
    if counts["passed"] == 0:
        result["skipped_because"] = cases[0]["detail"] if cases else "no tests collected"
    return result


class StepSkipped(Exception):
    """A step that cannot run here (a package it needs is missing): a skip with its reason, not a failure."""


class StepFailed(RuntimeError):
    """A step that failed but measured something worth reporting (``partial``)."""

    def __init__(self, message: str, partial: dict):
        super().__init__(message)
        self.partial = partial


# --------------------------------------------------------------------------- step 3: the benchmark


def step_bench(ctx: dict) -> dict:
    import torch

    import bench

    size = SIZES[ctx["size"]]
    device = torch.device("cuda" if ctx["size"] == "gpu" else "cpu")
    torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
    only = tuple(ctx["bench_samplers"])
    unknown = sorted(set(only) - set(bench.samplers_for("mlp")))
    if unknown:
        raise StepFailed(f"--bench-samplers: unknown {unknown}; expected some of {sorted(bench.samplers_for('mlp'))}", {})
    clock = Budget(ctx["timeout"])
    out = {"device": str(device), "transitions": [], "skipped": [], "compile": size["compile"] and ctx["compile"],
           "samplers": list(only)}
    for kind, batch in size["bench_sizes"]:
        if not clock.fits(kind):
            out["skipped"].append(f"{kind} batch {batch}: does not fit what is left of this step's time ({clock.left():.0f} s; --budget-s)")
            continue
        print(f"  {kind} batch {batch} on {device} ...", flush=True)
        try:
            with clock.unit(kind):
                part = bench.device_transitions(device, [(kind, batch)], size["bench"], only=only, compile_ok=out["compile"])
        except Exception as err:  # noqa: BLE001 - one size's failure is that size's result; the other sizes still run
            out.setdefault("errors", []).append(f"{kind} batch {batch}: {type(err).__name__}: {str(err).strip()[:300]}")
            print(f"    FAILED: {out['errors'][-1]}", flush=True)
            continue
        out["transitions"] += part["transitions"]
        out["torchebm"] = part["machine"].get("torchebm") or f"skipped: not installed ({part['machine'].get('torchebm_error', '')[:80]})"
        out["load"] = part["load"]
        out["clock"] = part["clock"]
        _save_partial(ctx, out)
    for r in out["transitions"]:
        print(f"  {r['energy'][:34]:34s} {r['batch']:6d} {r['sampler']:17s} {r['path']:16s} "
              f"{'—' if r['ms'] is None else format(r['ms'], '9.4f'):>9s} ms  ×floor {'—' if r['ratio_to_floor'] is None else format(r['ratio_to_floor'], '.3f')}"
              f"  {r.get('note', '')[:60]}")
    if out.get("errors"):
        raise StepFailed("; ".join(out["errors"]), out)
    return out


# --------------------------------------------------------------------------- step 4: training speed


TRAIN_VARIANTS = [
    ("--amp bf16", dict(amp="bf16")),
    ("--amp bf16 --channels-last", dict(amp="bf16", channels_last=True)),
    ("--amp bf16 --compile", dict(amp="bf16", compile=True)),
]


def _samplers_to_train() -> list[str]:
    from anila_core.sampling.registry import SAMPLERS

    return [n for n in ("langevin", "anila", "hmc") if n in SAMPLERS]


def step_train(ctx: dict) -> dict:
    import torch

    from anila_core.sampling import compiled as fast
    from anila_core.sampling.compile_rule import parse_fast
    from anila_core.training.config import preset
    from anila_core.training.trainer import Trainer

    sys.path.insert(0, str(ROOT / "tests"))
    from image_fixtures import write_tiny_cifar10
    from make_tiny_datasets import CIFAR_PER_BATCH

    size = SIZES[ctx["size"]]
    device = torch.device("cuda" if ctx["size"] == "gpu" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    data = Path(ctx["scratch"]) / "data"
    write_tiny_cifar10(data, n_per_batch=CIFAR_PER_BATCH)  # the files tests/make_tiny_datasets.py writes (official layout, synthetic pixels)
    os.environ["ANILA_DATA_VERIFY"] = "0"
    iters = ctx["train_iters"] or size["train_iters"]
    clock = Budget(ctx["timeout"])
    out = {"device": str(device), "iters_asked": iters, "seconds_per_run": ctx["train_seconds"], "runs": [], "skipped": [],
           "overrides": size["train_overrides"], "hmc": None}
    samplers = _samplers_to_train()
    out["hmc"] = "hmc" in samplers
    for flags, variant in TRAIN_VARIANTS:
        for sampler in samplers:
            label = f"{sampler} {flags}"
            if variant.get("compile") and not (size["compile"] and ctx["compile"]):
                out["skipped"].append(f"{label}: not run in the CPU dry run (compiling a ConvNet on a CPU takes minutes)")
                continue
            if not clock.fits(flags, unknown_factor=2.0 if variant.get("compile") else 1.0):
                out["skipped"].append(f"{label}: does not fit what is left of this step's time ({clock.left():.0f} s; --budget-s)")
                continue
            print(f"  train {label} ...", flush=True)
            # the paper's iteration count stays in the config: it decides --fast auto as in a real paper run
            config = preset("paper", sampler, dataset="cifar10", data_root=str(data), device=device.type,
                            fast=parse_fast(ctx["train_fast"]),
                            **variant, **size["train_overrides"])
            before = {r["name"] for r in fast.cache_info()}
            try:
                with clock.unit(flags):
                    row = _time_training(Trainer(config, progress=False), iters, min(ctx["train_seconds"], clock.left()), device)
                # a compiled transition that failed runs eagerly with a warning: the row must say so, not "compiled"
                failed = [r["failed"] for r in fast.cache_info() if r["name"] not in before and r["failed"]]
                row["sampler_path"] = ("eager (compile failed: " + failed[0] + ")") if failed else "compiled" if row["fast"] else "eager"
            except Exception as err:  # noqa: BLE001 - one run's failure is that row's result; the others still run
                row = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]}
                ctx.setdefault("errors", []).append(label)
            row.update(sampler=sampler, flags=flags, batch=config.batch_size, K=config.n_steps, conv_width=config.conv_width)
            out["runs"].append(row)
            print(f"    {_train_line(row)}", flush=True)
            _save_partial(ctx, out)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if ctx.get("errors"):
        raise StepFailed(f"training failed for {', '.join(ctx['errors'])}", out)
    return out


class Budget:
    """A step's time: a unit (a size, a training run) starts only when the last one like it would still fit, with a margin.

    A unit without a record of its own kind is expected to cost what the last unit of any kind
    cost, times ``unknown_factor`` (2 for one that compiles a network), so that one slow compile
    cannot push the step past its share, where its process would be ended.
    """

    MARGIN_S = 15.0  # writing the rows measured so far

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds - self.MARGIN_S
        self.costs: dict[str, float] = {}
        self.last = 0.0

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def fits(self, kind: str, unknown_factor: float = 1.0) -> bool:
        expected = self.costs.get(kind, self.last * unknown_factor)
        return self.left() > 1.2 * expected

    @contextmanager
    def unit(self, kind: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.last = self.costs[kind] = time.monotonic() - start


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_training(trainer, iters: int, seconds: float, device) -> dict:
    """Two warm-up iterations (compiling happens there), then up to ``iters`` timed ones or ``seconds``, whichever comes first."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(2):
        trainer.train_step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    done, start = 0, time.perf_counter()
    while done < iters:
        stats = trainer.train_step()
        done += 1
        if done % 5 == 0 or done == iters:
            _sync(device)
            if time.perf_counter() - start > seconds:
                break
    _sync(device)
    elapsed = time.perf_counter() - start
    finite = bool(torch.isfinite(trainer.samples).all()) and all(
        bool(torch.isfinite(v).all()) for v in stats.values() if isinstance(v, torch.Tensor))
    its = done / elapsed
    return {"iters_timed": done, "seconds": round(elapsed, 2), "warmup_s": round(warmup_s, 1), "it_per_s": its,
            "paper_hours": PAPER_ITERS / its / 3600, "finite": finite, "amp": trainer.nets.amp, "fast": trainer.fast,
            "channels_last": trainer.nets.channels_last, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def _train_line(r: dict) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}"
    return (f"{r['it_per_s']:.2f} it/s over {r['iters_timed']} iterations (warm-up {r['warmup_s']} s): the paper's "
            f"{PAPER_ITERS:,} iterations ≈ {r['paper_hours']:.1f} h; finite: {r['finite']}")


# --------------------------------------------------------------------------- running the steps


STEPS = {"versions": step_versions, "tests": step_tests, "bench": step_bench, "train": step_train}


def _save_partial(ctx: dict, out: dict) -> None:
    if ctx.get("result_file"):
        Path(ctx["result_file"]).write_text(json.dumps({"status": "partial", "result": out}, default=str))


def run_child(name: str, ctx: dict) -> int:
    """One step in this process (``--step NAME``); its result goes to ``ctx['result_file']`` as JSON."""
    hide_packages_if_asked()
    try:
        result = {"status": "passed", "result": STEPS[name](ctx)}
    except StepSkipped as err:
        result = {"status": "skipped", "error": str(err)}
    except StepFailed as err:
        result = {"status": "failed", "error": str(err), "result": err.partial}
    except Exception as err:  # noqa: BLE001 - the step's failure is its result; the parent goes on to the next step
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
    Path(ctx["result_file"]).write_text(json.dumps(result, default=str))
    return 0


def run_here(name: str, ctx: dict) -> dict:
    """Run step ``name`` in this process; an error is the step's failure, printed, and the next step goes on."""
    start = time.perf_counter()
    try:
        result = {"status": "passed", "result": STEPS[name](ctx)}
    except Exception as err:  # noqa: BLE001
        result = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def run_step(name: str, ctx: dict, timeout: float) -> dict:
    """Run step ``name`` in a child process with ``timeout`` seconds; a crash, a hang or an error is the step's failure."""
    result_file = Path(ctx["scratch"]) / f"{name}.json"
    child_ctx = {**ctx, "result_file": str(result_file), "timeout": timeout}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "MPLBACKEND": "Agg"}
    if ctx["size"] == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--step", name, "--ctx", json.dumps(child_ctx)],
                              timeout=timeout + GRACE_S, env=env, cwd=ROOT)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    wall = time.perf_counter() - start
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = {}
    if code == "timeout":
        result = {"status": "failed", "result": result.get("result"),
                  "error": f"ran past its share of the time, {timeout:.0f} s (+{GRACE_S:.0f}), and was ended; the report keeps what it "
                           f"measured until then (more time: --budget-s; this step alone: --steps {name})"}
    elif code != 0 or result.get("status") not in ("passed", "failed", "skipped"):
        result = {"status": "failed", "error": f"the step's process ended with exit code {code} before reporting", "result": result.get("result")}
    result["wall_s"] = round(wall, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="seconds for all steps together on a GPU (default 420: with the processes' start-up and grace, within 8 minutes "
                             "of device time); "
                             "each step gets its share and skips, saying so, what does not fit")
    parser.add_argument("--train-iters", type=int, default=0, help="timed iterations per training run (default: 200 on a GPU, 2 in the CPU dry run)")
    parser.add_argument("--train-seconds", type=float, default=10.0, help="at most this many seconds of timed iterations per training run (default 10)")
    parser.add_argument("--train-fast", choices=("auto", "true", "false"), default="auto",
                        help="--fast of the training runs (default auto, what the CLI does: at the paper's 100k iterations on CUDA the "
                             "sampler's transition is compiled, in the warm-up; false saves that compile)")
    parser.add_argument("--bench-samplers", default="langevin,anila-coordinate",
                        help="samplers of the CUDA transition table (comma-separated names of bench.py's rows; default langevin,anila-coordinate: "
                             "each adds two compiles per size, and step 2 already checks every sampler compiled and graphed)")
    parser.add_argument("--no-compile", action="store_true", help="measure eager paths only (no compiled, CUDA-graph or --compile rows)")
    parser.add_argument("--steps", default="versions,tests,bench,train", help="steps to run, comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the report (default: {GPU_REPORT.relative_to(ROOT)} on a GPU; a temporary folder in the CPU dry run, "
                             "which never writes benchmarks/RESULTS-cuda.md)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    parser.add_argument("--ctx", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_child(args.step, json.loads(args.ctx))

    started = time.perf_counter()
    import torch  # only to learn whether a GPU is here; the steps import what they need themselves

    on_gpu = torch.cuda.is_available()
    size = "gpu" if on_gpu else "cpu"
    if not on_gpu:  # the steps see what the GPU machine has; the children get the same through the environment
        os.environ["ANILA_GPU_CHECK_HIDE"] = ",".join(filter(None, [os.environ.get("ANILA_GPU_CHECK_HIDE", ""), *NOT_ON_GPU_MACHINE]))
    hide_packages_if_asked()
    out = args.out
    if out is None:
        out = GPU_REPORT if on_gpu else Path(tempfile.gettempdir()) / "anila-gpu-check" / "RESULTS-cuda-dryrun.md"
    if not on_gpu and out.resolve() == GPU_REPORT.resolve():
        print(f"refusing to write {GPU_REPORT.relative_to(ROOT)} without a GPU (it holds GPU figures); "
              "writing the dry run's report to the temporary folder instead")
        out = Path(tempfile.gettempdir()) / "anila-gpu-check" / "RESULTS-cuda-dryrun.md"
    print("=" * 78)
    if on_gpu:
        print(f"GPU check on {torch.cuda.get_device_name(0)}: every step at full size, budget {args.budget_s:.0f} s")
    else:
        print("No GPU found (torch.cuda.is_available() is False): this is the CPU DRY RUN. Every step runs at a tiny "
              "CPU dry-run size to check the plumbing; no figure here is a GPU figure, and the gpu tests skip.")
        print(f"The dry run hides the packages the GPU machine lacks from its steps: {', '.join(NOT_ON_GPU_MACHINE)}.")
    print("=" * 78, flush=True)
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STEPS))
    if unknown:
        parser.error(f"--steps: unknown {unknown}; expected some of {list(STEPS)}")
    budget = args.budget_s if on_gpu else max(args.budget_s, 240.0)  # a busy CI machine is slow, not wrong
    with tempfile.TemporaryDirectory(prefix="anila-gpu-check-") as scratch:
        ctx = {"size": size, "scratch": scratch, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "train_iters": args.train_iters, "train_seconds": args.train_seconds, "train_fast": args.train_fast, "compile": not args.no_compile,
               "bench_samplers": [s for s in args.bench_samplers.split(",") if s]}
        results: dict = {}
        for i, name in enumerate(STEPS, 1):
            if name not in wanted:
                results[name] = {"status": "skipped", "error": "not asked for (--steps)"}
                continue
            print(f"\n[{i}/{len(STEPS) + 1}] {name} {'(CPU dry-run size)' if not on_gpu else ''}", flush=True)
            if name == "versions":  # in this process: it imports nothing but torch, which is already here
                results[name] = run_here(name, ctx)
            else:
                results[name] = run_step(name, ctx, timeout=max(60.0, SHARES[name] * budget))
            r = results[name]
            if name == "tests" and r["status"] == "passed" and not r["result"]["counts"]["passed"]:  # every test skipped (no GPU)
                r["status"] = "skipped"
                r["error"] = r["result"].get("skipped_because", "")
            print(f"  -> {r['status']} in {r['wall_s']} s{': ' + r['error'] if r.get('error') else ''}", flush=True)
        print(f"\n[{len(STEPS) + 1}/{len(STEPS) + 1}] report", flush=True)
        report = {"on_gpu": on_gpu, "date": ctx["date"], "steps": results, "wall_s": time.perf_counter() - started,
                  "load_end": _load(), "command": "PYTHONPATH=. python3 benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:])}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(report))
        out.with_name("results-cuda.json" if on_gpu else "results-cuda-dryrun.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"  wrote {out}")
    print("\nsummary:")
    for name, r in results.items():
        print(f"  {r['status']:8s} {name}{': ' + r['error'] if r.get('error') else ''}")
    failed = [n for n, r in results.items() if r["status"] == "failed"]
    print(f"{'GPU check' if on_gpu else 'CPU dry run'}: {len(failed)} step(s) failed, wall {time.perf_counter() - started:.0f} s"
          + ("" if on_gpu else " (no GPU found: nothing here is a GPU figure)"))
    return 1 if failed else 0


# --------------------------------------------------------------------------- the report


def render(report: dict) -> str:
    steps = report["steps"]
    v = (steps.get("versions") or {}).get("result") or {}
    title = "# CUDA results" if report["on_gpu"] else "# CPU dry run of the GPU check (no GPU found: not GPU figures)"
    lines = [title, "", f"Written by `benchmarks/gpu_check.py` on {report['date']} (`{report['command'].strip()}`), "
             f"{report['wall_s']:.0f} s in all.", ""]
    if v:
        lines += [f"**Machine**: {v.get('gpu') or 'no GPU'} (compute capability {v.get('gpu_capability')}, {v.get('gpu_memory_gib')} GiB), "
                  f"driver / nvidia-smi: {v.get('nvidia_smi') or 'not found'}; {v.get('cpu')}, {v.get('cores')} cores. "
                  f"Python {v.get('python')}, torch {v.get('torch')} (CUDA {v.get('torch_cuda')}, cuDNN {v.get('cudnn')}); "
                  f"bf16 supported: {v.get('bf16_supported')}, NCCL: {v.get('nccl')}, C compiler (for Triton): {v.get('c_compiler') or 'none found'}. "
                  f"Load average at the start {v.get('load_avg')}, at the end {report.get('load_end')}.", ""]
        lines += ["| package | version | minimum | status |", "|---|---|---|---|"]
        lines += [f"| {p['package']} | {p['version'] or '—'} | {p['minimum'] or '—'} | {p['status']} |" for p in v.get("packages", [])]
    lines += ["", "## Steps", "", "| step | status | wall s | note |", "|---|---|---|---|"]
    for name, r in steps.items():
        lines.append(f"| {name} | {r['status']} | {r.get('wall_s', '—')} | {(r.get('error') or '').replace('|', '/')[:300]} |")
    t = (steps.get("tests") or {}).get("result")
    if t:
        lines += ["", "## GPU tests (`pytest -m gpu tests/test_gpu.py`)", "", "| test | outcome | s | detail |", "|---|---|---|---|"]
        lines += [f"| {c['test']} | {c['outcome']} | {c['seconds']} | {c['detail'].replace('|', '/')} |" for c in t["cases"]]
    b = (steps.get("bench") or {}).get("result")
    if b:
        lines += ["", f"## Transitions on {b['device']}", "",
                  "Per transition: median over repetitions of `(t(K) − t(1)) / (K − 1)` for one `sample` call, wall time after "
                  "`torch.cuda.synchronize()` on CUDA (`benchmarks/bench.py`'s machinery, rows taking turns within each repetition); "
                  "floor: one eager forward + backward with respect to the input. `fast`: the compiled transition; "
                  "`fast+cudagraphs`: the same replayed as a CUDA graph (`sampler.fast_cuda_graphs = True`). "
                  f"TorchEBM: {b.get('torchebm')}. Load during the step: {b.get('load')}.", "",
                  "| energy | batch | K | sampler | path | ms / transition [p25–p75] | × floor | compile s | note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in b["transitions"]:
            c = r.get("compile") or {}
            ms = "—" if r["ms"] is None else f"{r['ms']:.4f} [{r['ms_p25']:.4f}–{r['ms_p75']:.4f}]"
            ratio = "—" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.3f}"
            comp = "" if c.get("compile_s") is None else f"{c['compile_s']:.1f}"
            lines.append(f"| {r['energy']} | {r['batch']} | {r['K']} | {r['sampler']} | {r['path']} | {ms} | {ratio} | {comp} | {r.get('note', '')} |")
        lines += [f"- skipped: {s}" for s in b.get("skipped", [])] + [f"- FAILED: {e}" for e in b.get("errors", [])]
    tr = (steps.get("train") or {}).get("result")
    if tr:
        lines += ["", f"## Training speed on {tr['device']}: CIFAR-10 ConvNet at the `paper` preset", "",
                  "`Trainer.train_step` (what `python -m anila_core train --preset paper --dataset cifar10 FLAGS` runs per iteration: "
                  "K transitions, the loss, Adam), timed after two warm-up iterations (compiling happens there) on CIFAR-format "
                  "files with synthetic pixels (the speed does not depend on them); evaluation and checkpoints not included. "
                  f"Projected: the paper's {PAPER_ITERS:,} iterations at the measured rate. HMC: {tr.get('hmc')}."
                  + (f" CPU dry-run sizes: {tr['overrides']}." if tr.get("overrides") else ""), "",
                  "| sampler | flags | batch | K | width | it/s | 100k iterations | warm-up s | timed | bf16 on | sampler | finite | peak GiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in tr["runs"]:
            if "error" in r:
                lines.append(f"| {r['sampler']} | `{r['flags']}` | {r['batch']} | {r['K']} | {r['conv_width']} | failed: {r['error'].replace('|', '/')} ||||||||")
                continue
            lines.append(f"| {r['sampler']} | `{r['flags']}` | {r['batch']} | {r['K']} | {r['conv_width']} | {r['it_per_s']:.2f} | "
                         f"{r['paper_hours']:.1f} h | {r['warmup_s']} | {r['iters_timed']} in {r['seconds']} s | {r['amp']} | {r.get('sampler_path', '—')} | "
                         f"{r['finite']} | {r['peak_gib'] or '—'} |")
        lines += [f"- skipped: {s}" for s in tr.get("skipped", [])]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
