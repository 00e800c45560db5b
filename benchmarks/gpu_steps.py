"""The GPU check's steps, run by ``gpu_check.py``: versions, the gpu tests, the CUDA transition table, training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

from gpu_versions import step_versions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAPER_ITERS = 100_000

# What each step measures, on a GPU and in the CPU dry run.
SIZES = {
    "gpu": dict(
        # the most telling sizes first: what does not fit the step's budget is skipped from the end
        bench_sizes=[("mlp", 1024), ("conv", 256), ("mlp", 16384), ("conv", 64)],
        bench=dict(
            mlp=dict(width=128, depth=3, K=20, reps=11, warmup=2),
            conv=dict(width=64, K=10, reps=5, warmup=1),
            overhead=dict(K=10, reps=5),
        ),
        train_overrides={},
        train_iters=200,
        compile=True,
    ),
    "cpu": dict(
        bench_sizes=[("mlp", 64), ("mlp", 256), ("conv", 2), ("conv", 4)],
        bench=dict(
            mlp=dict(width=16, depth=2, K=3, reps=2, warmup=1),
            conv=dict(width=4, K=3, reps=1, warmup=1),
            overhead=dict(K=3, reps=1),
        ),
        # the paper preset's network and chains, shrunk until an iteration takes milliseconds
        train_overrides=dict(conv_width=4, n_steps=2, batch_size=4),
        train_iters=2,
        compile=False,  # compiling on a CPU takes tens of seconds per graph: the dry run checks the plumbing only
    ),
}


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
    run_pytest = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import gpu_check; "
        "gpu_check.hide_packages_if_asked(); import pytest; sys.exit(pytest.main(sys.argv[1:]))"
    )
    argv = [
        sys.executable,
        "-c",
        run_pytest,
        "-v",
        "-rs",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        "--durations=5",
        str(ROOT / "tests" / "test_gpu.py"),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
    }
    # the dry run runs the tests' bodies on the CPU, so that a broken test fails here, not on the GPU
    if ctx["size"] != "gpu":
        env["ANILA_GPU_TESTS_ON_CPU"] = "1"
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=max(30.0, ctx["timeout"] - 10), env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired as err:
        seen = (err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or "").splitlines()
        finished = [ln for ln in seen if "::" in ln and (" PASSED" in ln or " FAILED" in ln or " SKIPPED" in ln)]
        cases = [
            {
                "test": ln.split(" ")[0].split("::")[-1],
                "outcome": ln.split(" ")[1].lower() if " " in ln else "?",
                "seconds": 0,
                "detail": "before the step's time ran out",
            }
            for ln in finished
        ]
        raise StepFailed(
            f"the gpu tests ran past this step's {err.timeout:.0f} s; {len(cases)} finished",
            {"cases": cases, "counts": {}},
        ) from None
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
        cases.append(
            {
                "test": case.get("name"),
                "outcome": outcome,
                "seconds": round(float(case.get("time") or 0), 1),
                "detail": detail,
            }
        )
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

    import transition_table

    size = SIZES[ctx["size"]]
    device = torch.device("cuda" if ctx["size"] == "gpu" else "cpu")
    torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
    only = tuple(ctx["bench_samplers"])
    unknown = sorted(set(only) - set(transition_table.samplers_for("mlp")))
    if unknown:
        known = sorted(transition_table.samplers_for("mlp"))
        raise StepFailed(f"--bench-samplers: unknown {unknown}; expected some of {known}", {})
    clock = Budget(ctx["timeout"])
    out = {
        "device": str(device),
        "transitions": [],
        "skipped": [],
        "compile": size["compile"] and ctx["compile"],
        "samplers": list(only),
    }
    for kind, batch in size["bench_sizes"]:
        if not clock.fits(kind):
            out["skipped"].append(
                f"{kind} batch {batch}: does not fit what is left of this step's time "
                f"({clock.left():.0f} s; --budget-s)"
            )
            continue
        print(f"  {kind} batch {batch} on {device} ...", flush=True)
        try:
            with clock.unit(kind):
                part = transition_table.device_transitions(
                    device, [(kind, batch)], size["bench"], only=only, compile_ok=out["compile"]
                )
        except Exception as err:  # noqa: BLE001 - one size's failure is that size's result; the other sizes still run
            out.setdefault("errors", []).append(f"{kind} batch {batch}: {type(err).__name__}: {str(err).strip()[:300]}")
            print(f"    FAILED: {out['errors'][-1]}", flush=True)
            continue
        out["transitions"] += part["transitions"]
        missing = f"skipped: not installed ({part['machine'].get('torchebm_error', '')[:80]})"
        out["torchebm"] = part["machine"].get("torchebm") or missing
        out["load"] = part["load"]
        out["clock"] = part["clock"]
        _save_partial(ctx, out)
    for r in out["transitions"]:
        ms = "—" if r["ms"] is None else format(r["ms"], "9.4f")
        ratio = "—" if r["ratio_to_floor"] is None else format(r["ratio_to_floor"], ".3f")
        print(
            f"  {r['energy'][:34]:34s} {r['batch']:6d} {r['sampler']:17s} {r['path']:16s} "
            f"{ms:>9s} ms  ×floor {ratio}  {r.get('note', '')[:60]}"
        )
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
    from anila_core.training.presets import preset
    from anila_core.training.trainer import Trainer

    sys.path.insert(0, str(ROOT / "tests"))
    from image_fixtures import write_tiny_cifar10
    from make_tiny_datasets import CIFAR_PER_BATCH

    size = SIZES[ctx["size"]]
    device = torch.device("cuda" if ctx["size"] == "gpu" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    data = Path(ctx["scratch"]) / "data"
    # the files tests/make_tiny_datasets.py writes (official layout, synthetic pixels)
    write_tiny_cifar10(data, n_per_batch=CIFAR_PER_BATCH)
    os.environ["ANILA_DATA_VERIFY"] = "0"
    iters = ctx["train_iters"] or size["train_iters"]
    clock = Budget(ctx["timeout"])
    out = {
        "device": str(device),
        "iters_asked": iters,
        "seconds_per_run": ctx["train_seconds"],
        "runs": [],
        "skipped": [],
        "overrides": size["train_overrides"],
        "hmc": None,
    }
    samplers = _samplers_to_train()
    out["hmc"] = "hmc" in samplers
    for flags, variant in TRAIN_VARIANTS:
        for sampler in samplers:
            label = f"{sampler} {flags}"
            if variant.get("compile") and not (size["compile"] and ctx["compile"]):
                out["skipped"].append(
                    f"{label}: not run in the CPU dry run (compiling a ConvNet on a CPU takes minutes)"
                )
                continue
            if not clock.fits(flags, unknown_factor=2.0 if variant.get("compile") else 1.0):
                out["skipped"].append(
                    f"{label}: does not fit what is left of this step's time ({clock.left():.0f} s; --budget-s)"
                )
                continue
            print(f"  train {label} ...", flush=True)
            # the paper's iteration count stays in the config: it decides --fast auto as in a real paper run
            config = preset(
                "paper",
                sampler,
                dataset="cifar10",
                data_root=str(data),
                device=device.type,
                fast=parse_fast(ctx["train_fast"]),
                **variant,
                **size["train_overrides"],
            )
            before = {r["name"] for r in fast.cache_info()}
            try:
                with clock.unit(flags):
                    seconds = min(ctx["train_seconds"], clock.left())
                    row = _time_training(Trainer(config, progress=False), iters, seconds, device)
                # a compiled transition that failed runs eagerly with a warning: the row must say so, not "compiled"
                failed = [r["failed"] for r in fast.cache_info() if r["name"] not in before and r["failed"]]
                row["sampler_path"] = (
                    ("eager (compile failed: " + failed[0] + ")") if failed else "compiled" if row["fast"] else "eager"
                )
            except Exception as err:  # noqa: BLE001 - one run's failure is that row's result; the others still run
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                row = {"error": f"{type(err).__name__}: {first_line}"[:300]}
                ctx.setdefault("errors", []).append(label)
            row.update(
                sampler=sampler, flags=flags, batch=config.batch_size, K=config.n_steps, conv_width=config.conv_width
            )
            out["runs"].append(row)
            print(f"    {_train_line(row)}", flush=True)
            _save_partial(ctx, out)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if ctx.get("errors"):
        raise StepFailed(f"training failed for {', '.join(ctx['errors'])}", out)
    return out


class Budget:
    """A step's time: a unit (a size, a training run) starts only when the last one like it would fit, with a margin.

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


def _time_training(trainer, iters: int, seconds: float, device) -> dict:
    """Two warm-up iterations (compiling happens there), then up to ``iters`` timed ones, or ``seconds`` of them."""
    import torch

    from timing import sync

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(2):
        trainer.train_step()
    sync(device)
    warmup_s = time.perf_counter() - start
    done, start = 0, time.perf_counter()
    while done < iters:
        stats = trainer.train_step()
        done += 1
        if done % 5 == 0 or done == iters:
            sync(device)
            if time.perf_counter() - start > seconds:
                break
    sync(device)
    elapsed = time.perf_counter() - start
    finite = bool(torch.isfinite(trainer.samples).all()) and all(
        bool(torch.isfinite(v).all()) for v in stats.values() if isinstance(v, torch.Tensor)
    )
    its = done / elapsed
    return {
        "iters_timed": done,
        "seconds": round(elapsed, 2),
        "warmup_s": round(warmup_s, 1),
        "it_per_s": its,
        "paper_hours": PAPER_ITERS / its / 3600,
        "finite": finite,
        "amp": trainer.nets.amp,
        "fast": trainer.fast,
        "channels_last": trainer.nets.channels_last,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
    }


def _train_line(r: dict) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}"
    return (
        f"{r['it_per_s']:.2f} it/s over {r['iters_timed']} iterations (warm-up {r['warmup_s']} s): the paper's "
        f"{PAPER_ITERS:,} iterations ≈ {r['paper_hours']:.1f} h; finite: {r['finite']}"
    )


STEPS = {"versions": step_versions, "tests": step_tests, "bench": step_bench, "train": step_train}


def _save_partial(ctx: dict, out: dict) -> None:
    if ctx.get("result_file"):
        Path(ctx["result_file"]).write_text(json.dumps({"status": "partial", "result": out}, default=str))
