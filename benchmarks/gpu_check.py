"""The GPU check (``make gpu-check``): versions, gpu tests, CUDA transitions, paper-preset training, RESULTS-cuda.md.

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
   eager floor (the benchmark's transition table, benchmarks/transition_table.py), MLP at batch
   1024 and 16384, the 32×32 ConvNet at 64 and 256, TorchEBM beside them when installed;
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
import importlib.abc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # the source tree's anila_core and the benchmark's modules, installed or not

from gpu_steps import PAPER_ITERS, STEPS, StepFailed, StepSkipped  # noqa: E402 - found through the path set above

GPU_REPORT = HERE / "RESULTS-cuda.md"

#: what the bare GPU machine lacks: the CPU dry run hides these from its steps, so that a step
#: that needs one fails here first instead of on the GPU machine's few minutes
NOT_ON_GPU_MACHINE = (
    "ipywidgets",
    "IPython",
    "ipykernel",
    "jupyterlab",
    "nbmake",
    "torchebm",
    "blackjax",
    "voila",
    "playwright",
)

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
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (hidden by ANILA_GPU_CHECK_HIDE: the machine rehearsed lacks it)"
            )
        return None


def hide_packages_if_asked() -> None:
    names = [n for n in os.environ.get("ANILA_GPU_CHECK_HIDE", "").split(",") if n]
    if names:
        sys.meta_path.insert(0, _Hide(names))


# --------------------------------------------------------------------------- running the steps


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
    """Run step ``name`` in a child process with ``timeout`` seconds; a crash, a hang or an error is its failure."""
    result_file = Path(ctx["scratch"]) / f"{name}.json"
    child_ctx = {**ctx, "result_file": str(result_file), "timeout": timeout}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
    }
    if ctx["size"] == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--step", name, "--ctx", json.dumps(child_ctx)],
            timeout=timeout + GRACE_S,
            env=env,
            cwd=ROOT,
        )
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    wall = time.perf_counter() - start
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = {}
    if code == "timeout":
        result = {
            "status": "failed",
            "result": result.get("result"),
            "error": f"ran past its share of the time, {timeout:.0f} s (+{GRACE_S:.0f}), and was ended; "
            "the report keeps what it "
            f"measured until then (more time: --budget-s; this step alone: --steps {name})",
        }
    elif code != 0 or result.get("status") not in ("passed", "failed", "skipped"):
        result = {
            "status": "failed",
            "error": f"the step's process ended with exit code {code} before reporting",
            "result": result.get("result"),
        }
    result["wall_s"] = round(wall, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="seconds for all steps together on a GPU (default 420: with the processes' start-up and "
        "grace, within 8 minutes of device time); each step gets its share and skips, saying so, "
        "what does not fit",
    )
    parser.add_argument(
        "--train-iters",
        type=int,
        default=0,
        help="timed iterations per training run (default: 200 on a GPU, 2 in the CPU dry run)",
    )
    parser.add_argument(
        "--train-seconds",
        type=float,
        default=10.0,
        help="at most this many seconds of timed iterations per training run (default 10)",
    )
    parser.add_argument(
        "--train-fast",
        choices=("auto", "true", "false"),
        default="auto",
        help="--fast of the training runs (default auto, what the CLI does: at the paper's 100k "
        "iterations on CUDA the sampler's transition is compiled, in the warm-up; false saves "
        "that compile)",
    )
    parser.add_argument(
        "--bench-samplers",
        default="langevin,anila-coordinate",
        help="samplers of the CUDA transition table (comma-separated names of bench.py's rows; "
        "default langevin,anila-coordinate: each adds two compiles per size, and step 2 already "
        "checks every sampler compiled and graphed)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="measure eager paths only (no compiled, CUDA-graph or --compile rows)"
    )
    parser.add_argument(
        "--steps", default="versions,tests,bench,train", help="steps to run, comma-separated (default: all)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"the report (default: {GPU_REPORT.relative_to(ROOT)} on a GPU; a temporary folder in the "
        "CPU dry run, which never writes benchmarks/RESULTS-cuda.md)",
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    parser.add_argument("--ctx", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        return run_child(args.step, json.loads(args.ctx))

    started = time.perf_counter()
    import torch  # only to learn whether a GPU is here; the steps import what they need themselves

    from timing import load_average

    on_gpu = torch.cuda.is_available()
    size = "gpu" if on_gpu else "cpu"
    if not on_gpu:  # the steps see what the GPU machine has; the children get the same through the environment
        os.environ["ANILA_GPU_CHECK_HIDE"] = ",".join(
            filter(None, [os.environ.get("ANILA_GPU_CHECK_HIDE", ""), *NOT_ON_GPU_MACHINE])
        )
    hide_packages_if_asked()
    out = args.out
    if out is None:
        out = GPU_REPORT if on_gpu else Path(tempfile.gettempdir()) / "anila-gpu-check" / "RESULTS-cuda-dryrun.md"
    if not on_gpu and out.resolve() == GPU_REPORT.resolve():
        print(
            f"refusing to write {GPU_REPORT.relative_to(ROOT)} without a GPU (it holds GPU figures); "
            "writing the dry run's report to the temporary folder instead"
        )
        out = Path(tempfile.gettempdir()) / "anila-gpu-check" / "RESULTS-cuda-dryrun.md"
    print("=" * 78)
    if on_gpu:
        print(f"GPU check on {torch.cuda.get_device_name(0)}: every step at full size, budget {args.budget_s:.0f} s")
    else:
        print(
            "No GPU found (torch.cuda.is_available() is False): this is the CPU DRY RUN. Every step runs at a tiny "
            "CPU dry-run size to check the plumbing; no figure here is a GPU figure, and the gpu tests skip."
        )
        print(f"The dry run hides the packages the GPU machine lacks from its steps: {', '.join(NOT_ON_GPU_MACHINE)}.")
    print("=" * 78, flush=True)
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STEPS))
    if unknown:
        parser.error(f"--steps: unknown {unknown}; expected some of {list(STEPS)}")
    # a busy CI machine is slow, not wrong: its dry run compiles on 2 CPU cores what the GPU machine compiles on 16
    # (every compiled chain two graphs, 8 steps a call and 1), so it gets more time than the GPU's budget
    budget = args.budget_s if on_gpu else max(args.budget_s, 900.0)
    with tempfile.TemporaryDirectory(prefix="anila-gpu-check-") as scratch:
        ctx = {
            "size": size,
            "scratch": scratch,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "train_iters": args.train_iters,
            "train_seconds": args.train_seconds,
            "train_fast": args.train_fast,
            "compile": not args.no_compile,
            "bench_samplers": [s for s in args.bench_samplers.split(",") if s],
        }
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
            if (
                name == "tests" and r["status"] == "passed" and not r["result"]["counts"]["passed"]
            ):  # every test skipped (no GPU)
                r["status"] = "skipped"
                r["error"] = r["result"].get("skipped_because", "")
            print(f"  -> {r['status']} in {r['wall_s']} s{': ' + r['error'] if r.get('error') else ''}", flush=True)
        print(f"\n[{len(STEPS) + 1}/{len(STEPS) + 1}] report", flush=True)
        report = {
            "on_gpu": on_gpu,
            "date": ctx["date"],
            "steps": results,
            "wall_s": time.perf_counter() - started,
            "load_end": load_average(),
            "command": "PYTHONPATH=. python3 benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(report))
        out.with_name("results-cuda.json" if on_gpu else "results-cuda-dryrun.json").write_text(
            json.dumps(report, indent=1, default=str) + "\n"
        )
        print(f"  wrote {out}")
    print("\nsummary:")
    for name, r in results.items():
        print(f"  {r['status']:8s} {name}{': ' + r['error'] if r.get('error') else ''}")
    failed = [n for n, r in results.items() if r["status"] == "failed"]
    print(
        f"{'GPU check' if on_gpu else 'CPU dry run'}: {len(failed)} step(s) failed, wall "
        f"{time.perf_counter() - started:.0f} s" + ("" if on_gpu else " (no GPU found: nothing here is a GPU figure)")
    )
    return 1 if failed else 0


# --------------------------------------------------------------------------- the report


def render(report: dict) -> str:
    steps = report["steps"]
    v = (steps.get("versions") or {}).get("result") or {}
    title = "# CUDA results" if report["on_gpu"] else "# CPU dry run of the GPU check (no GPU found: not GPU figures)"
    lines = [
        title,
        "",
        f"Written by `benchmarks/gpu_check.py` on {report['date']} (`{report['command'].strip()}`), "
        f"{report['wall_s']:.0f} s in all.",
        "",
    ]
    if v:
        lines += [
            f"**Machine**: {v.get('gpu') or 'no GPU'} (compute capability {v.get('gpu_capability')}, "
            f"{v.get('gpu_memory_gib')} GiB), "
            f"driver / nvidia-smi: {v.get('nvidia_smi') or 'not found'}; {v.get('cpu')}, {v.get('cores')} cores. "
            f"Python {v.get('python')}, torch {v.get('torch')} (CUDA {v.get('torch_cuda')}, cuDNN {v.get('cudnn')}); "
            f"bf16 supported: {v.get('bf16_supported')}, NCCL: {v.get('nccl')}, C compiler (for Triton): "
            f"{v.get('c_compiler') or 'none found'}. "
            f"Load average at the start {v.get('load_avg')}, at the end {report.get('load_end')}.",
            "",
        ]
        lines += ["| package | version | minimum | status |", "|---|---|---|---|"]
        lines += [
            f"| {p['package']} | {p['version'] or '—'} | {p['minimum'] or '—'} | {p['status']} |"
            for p in v.get("packages", [])
        ]
    lines += ["", "## Steps", "", "| step | status | wall s | note |", "|---|---|---|---|"]
    for name, r in steps.items():
        lines.append(
            f"| {name} | {r['status']} | {r.get('wall_s', '—')} | {(r.get('error') or '').replace('|', '/')[:300]} |"
        )
    t = (steps.get("tests") or {}).get("result")
    if t:
        lines += [
            "",
            "## GPU tests (`pytest -m gpu tests/test_gpu.py`)",
            "",
            "| test | outcome | s | detail |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c['test']} | {c['outcome']} | {c['seconds']} | {c['detail'].replace('|', '/')} |" for c in t["cases"]
        ]
    b = (steps.get("bench") or {}).get("result")
    if b:
        lines += [
            "",
            f"## Transitions on {b['device']}",
            "",
            "Per transition: median over repetitions of `(t(K) − t(1)) / (K − 1)` for one `sample` call, wall time "
            "after "
            "`torch.cuda.synchronize()` on CUDA (`benchmarks/bench.py`'s machinery, rows taking turns within each "
            "repetition); "
            "floor: one eager forward + backward with respect to the input. `fast`: the compiled transition; "
            "`fast+cudagraphs`: the same replayed as a CUDA graph (`sampler.with_cuda_graphs()`). "
            f"TorchEBM: {b.get('torchebm')}. Load during the step: {b.get('load')}.",
            "",
            "| energy | batch | K | sampler | path | ms / transition [p25–p75] | × floor | compile s | note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in b["transitions"]:
            c = r.get("compile") or {}
            ms = "—" if r["ms"] is None else f"{r['ms']:.4f} [{r['ms_p25']:.4f}–{r['ms_p75']:.4f}]"
            ratio = "—" if r["ratio_to_floor"] is None else f"{r['ratio_to_floor']:.3f}"
            comp = "" if c.get("compile_s") is None else f"{c['compile_s']:.1f}"
            lines.append(
                f"| {r['energy']} | {r['batch']} | {r['K']} | {r['sampler']} | {r['path']} | {ms} | {ratio} | {comp} | "
                f"{r.get('note', '')} |"
            )
        lines += [f"- skipped: {s}" for s in b.get("skipped", [])] + [f"- FAILED: {e}" for e in b.get("errors", [])]
    tr = (steps.get("train") or {}).get("result")
    if tr:
        lines += [
            "",
            f"## Training speed on {tr['device']}: CIFAR-10 ConvNet at the `paper` preset",
            "",
            "`Trainer.train_step` (what `python -m anila_core train --preset paper --dataset cifar10 FLAGS` runs per "
            "iteration: "
            "K transitions, the loss, Adam), timed after two warm-up iterations (compiling happens there) on "
            "CIFAR-format "
            "files with synthetic pixels (the speed does not depend on them); evaluation and checkpoints not included. "
            f"Projected: the paper's {PAPER_ITERS:,} iterations at the measured rate. HMC: {tr.get('hmc')}."
            + (f" CPU dry-run sizes: {tr['overrides']}." if tr.get("overrides") else ""),
            "",
            "| sampler | flags | batch | K | width | it/s | 100k iterations | warm-up s | timed | bf16 on | sampler | "
            "finite | peak GiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in tr["runs"]:
            if "error" in r:
                lines.append(
                    f"| {r['sampler']} | `{r['flags']}` | {r['batch']} | {r['K']} | {r['conv_width']} | failed: "
                    f"{r['error'].replace('|', '/')} ||||||||"
                )
                continue
            lines.append(
                f"| {r['sampler']} | `{r['flags']}` | {r['batch']} | {r['K']} | {r['conv_width']} | "
                f"{r['it_per_s']:.2f} | "
                f"{r['paper_hours']:.1f} h | {r['warmup_s']} | {r['iters_timed']} in {r['seconds']} s | {r['amp']} | "
                f"{r.get('sampler_path', '—')} | "
                f"{r['finite']} | {r['peak_gib'] or '—'} |"
            )
        lines += [f"- skipped: {s}" for s in tr.get("skipped", [])]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
