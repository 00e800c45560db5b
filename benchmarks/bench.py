"""Speed benchmark of the samplers: transitions against a gradient's cost, the peers, training, memory, time to quality.

Run ``python benchmarks/bench.py`` (``make bench``); ``--quick`` for a sanity run of a couple of
minutes, ``--minimal`` for the seconds-long run the tests use; ``--device cpu|cuda`` for one
device only. Every timing is measured in this one process, side by side: the rows of a table
take turns within each repetition (so a neighbour's load spike hits them all alike), after
warm-up, and the table gives medians. Writes ``results.json`` and ``RESULTS.md`` to ``--out``
(default: this folder) and prints the tables.

This file is the command and the sections beyond the transition table; the rest lies beside it:
``timing.py`` (the clocks, the measures, the load average, memory peaks), ``transition_table.py``
(the transition table, which ``gpu_check.py`` measures on CUDA too), ``peers.py`` (TorchEBM, and
JAX and BlackJAX through their child process ``jax_rows.py``), ``rest.py`` (each row's rest and
ours over the peers') and ``report.py`` (the targets, ``RESULTS.md``, ``results.json``, the
printed summary).

What the rows mean:

* floor: one eager forward and backward of the energy with respect to its input
  (``anila_core.sampling.samplers.energy_and_grad``), no update: the gradient every transition needs;
* a transition: the marginal cost of one more step of ``Sampler.sample``,
  ``(t(K) − t(1)) / (K − 1)``, so a chain's start (its first gradient; for MALA the gradient of
  the initial state) is not counted; ``eager`` is the plain loop, ``fast`` the compiled
  transition of :mod:`anila_core.sampling.compiled` (its compile time reported apart); the floor is
  measured the same way, as the marginal cost of one more call;
* TorchEBM: its ``LangevinDynamics`` on the same energy, batch and K, timed only after a check
  that it produces our Langevin chain for the same generator;
* JAX and BlackJAX (CPU MLP): a ``jax.jit`` Langevin loop and BlackJAX's ``mala`` vmapped over
  the chains, on the MLP's weights copied from torch (timed only after their energies and
  gradients agree with torch's), in a child process held to one CPU with XLA's one-thread flags
  (``benchmarks/jax_rows.py``) whose measures take their turns with the torch rows; skipped,
  saying so, when jax or blackjax is not installed (``pip install -e '.[bench]'``);
* matrix products (CPU MLP): a transition's GEMMs alone (two per square hidden layer, chained
  through orthogonal matrices of the layers' shapes), with torch's ``mm`` and, in the JAX
  child, XLA's ``dot``: the least a transition can cost with each library, and so how much
  of a gap between the two lies in the GEMMs;
* rest (CPU MLP: the compiled rows, the public default, JAX and BlackJAX): a row minus its own
  library's matrix-products row, what the transition costs beyond its GEMMs; the report sets
  the rest of our compiled Langevin against JAX's and of our compiled MALA against BlackJAX's
  (target: at most 1.1 times theirs);
* public default (CPU MLP): ``sampler.sample(energy, x0, 100)`` with no ``fast=`` argument, a
  whole call divided by 100, after warm-up: what a user gets without asking; three rows, one
  per way of writing the energy: the module itself (``default``), a bound method of an object
  holding it (``default-method``) and a lambda over it (``default-lambda``);
* a training iteration: one ``Trainer.train_step`` (the second of two in a row), against
  (K + 2) × floor.

With one torch thread (the default here) CPU rows are timed by the process's CPU time, which
the time slices other jobs take do not inflate (``--clock``); wall time is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

import anila_core.images.datasets
from anila_core.images.datasets import ImageDataset
from anila_core.sampling import compiled as fast
from anila_core.training.presets import preset
from anila_core.training.trainer import Trainer

# the benchmark's other modules, found beside this script (its folder is the first entry of sys.path)
from report import judge, print_summary, write_results
from timing import LoadLog, Stats, floor_measure, interleaved, load_average, machine_info, peak_memory, primed
from transition_table import bench_transitions, make_energy, samplers_for

HERE = Path(__file__).resolve().parent

# Sizes per mode. K: transitions per timed call; reps: timed repetitions (medians over them).
MODES = {
    "full": dict(
        mlp=dict(width=128, depth=3, batch=1024, K=20, reps=21, warmup=2),
        conv=dict(width=64, batch=64, cuda_batch=256, K=3, reps=6, warmup=1),
        overhead=dict(K=10, reps=30),
        conv_fast_rows=("langevin", "anila-coordinate"),  # on a CPU; every row on CUDA
        # K = 20 for the ConvNet: its parameter backward costs ≈ 3.5 floors, not the 2 that
        # (K + 2) × floor assumes, so at small K no loop could come within 10 % of it
        train=dict(mlp_K=20, mlp_reps=9, mlp_warmup=1, conv_K=20, conv_reps=3, conv_warmup=0),
        memory=dict(mlp_K=(4, 16, 64), conv_K=(1, 2, 4)),
        # each sampler's tuned cpu preset, shortened (the full 3000 iterations take minutes; --runs
        # reads finished runs instead). The smoke preset's b = 0.05 is sized to clip within 30
        # iterations and stalls AniLA's chains over hundreds, so it is no measure of quality.
        quality=dict(preset="cpu", iters=400, eval_every=50, eval_samples=500),
        compile=True,
    ),
    "quick": dict(
        mlp=dict(width=128, depth=3, batch=1024, K=10, reps=5, warmup=1),
        conv=dict(width=64, batch=64, cuda_batch=256, K=2, reps=2, warmup=1),
        overhead=dict(K=10, reps=10),
        conv_fast_rows=(),
        train=dict(mlp_K=10, mlp_reps=3, mlp_warmup=1, conv_K=2, conv_reps=1, conv_warmup=0),
        memory=dict(mlp_K=(2, 8), conv_K=(1, 2)),
        quality=dict(preset="cpu", iters=100, eval_every=25, eval_samples=300),
        compile=True,
    ),
    # for the tests: tiny networks, no compile; checks that every section runs and reports
    "minimal": dict(
        mlp=dict(width=16, depth=2, batch=64, K=8, reps=3, warmup=1),
        conv=dict(width=4, batch=2, cuda_batch=2, K=3, reps=1, warmup=1),
        overhead=dict(K=3, reps=2),
        conv_fast_rows=(),
        train=dict(mlp_K=3, mlp_reps=1, mlp_warmup=1, conv_K=2, conv_reps=1, conv_warmup=0),
        memory=dict(mlp_K=(1, 2), conv_K=(1, 2)),
        quality=dict(preset="smoke", iters=4, eval_every=2, eval_samples=100),
        compile=False,
    ),
}

MEMORY_SLACK = (1.25, 4.0)  # "flat": the peak at the largest K at most 1.25 × the smallest's + 4 MB


@contextmanager
def synthetic_images(n: int = 512):
    """CIFAR-10-shaped images for the image trainer where the files are absent (an iteration's time ignores pixels)."""
    real = anila_core.images.datasets.load_dataset

    def load(name, data_root=None, size=None, split="train", **kw):
        try:
            return real(name, data_root, size, split, **kw)
        except Exception:  # not on disk (this benchmark never downloads)
            g = torch.Generator().manual_seed(0)
            data = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
            return ImageDataset(
                name=name, data=data, labels=torch.zeros(n, dtype=torch.long), data_max=255.0, split=split
            )

    with mock.patch.object(anila_core.images.datasets, "load_dataset", load):
        yield


def bench_training(mode: dict, device: torch.device, compile_ok: bool, log: LoadLog, results: dict) -> None:
    """One training iteration (K transitions, two forwards, a backward and an Adam step) against (K + 2) × floor."""
    t = mode["train"]
    for kind in ("mlp", "conv"):
        cfg = mode[kind]
        trainers: dict[str, Trainer] = {}
        for sampler in ("langevin", "anila"):
            for fast_mode in (False, True):
                if fast_mode and (not compile_ok or (kind == "conv" and device.type == "cpu")):
                    continue
                if kind == "mlp":
                    config = preset(
                        "cpu",
                        sampler,
                        batch_size=cfg["batch"],
                        n_steps=t["mlp_K"],
                        width=cfg["width"],
                        depth=cfg["depth"],
                        device=str(device),
                        fast=fast_mode,
                    )
                else:
                    batch = cfg["cuda_batch"] if device.type == "cuda" else cfg["batch"]
                    config = preset(
                        "cpu",
                        sampler,
                        dataset="cifar10",
                        image_size=32,
                        conv_width=cfg["width"],
                        batch_size=batch,
                        n_steps=t["conv_K"],
                        device=str(device),
                        fast=fast_mode,
                    )
                with synthetic_images():
                    trainers[f"{sampler}/{'fast' if fast_mode else 'eager'}"] = Trainer(config, progress=False)
        first = next(iter(trainers.values()))
        x = first.chains.start(first.config.batch_size)
        K = first.config.n_steps
        # the floor at a few calls: a ConvNet's K = 20 would make it the slowest row
        measures = {
            "floor": floor_measure(first.model, x, min(K, 4)),
            "loss": primed(lambda: loss_step(first, x), device),
        }
        for name, trainer in trainers.items():
            measures[name] = primed(trainer.train_step, device)
        log.mark()
        samples = interleaved(
            measures, t[f"{kind}_reps"], warmup=t[f"{kind}_warmup"]
        )  # primed: each measure warms itself
        log.mark()
        floor = Stats.of(samples["floor"], device)
        loss = Stats.of(samples["loss"], device)
        for name, trainer in trainers.items():
            st = Stats.of(samples[name], device)
            sampler, path = name.split("/")
            results["training"].append(
                {
                    "kind": kind,
                    "energy": type(trainer.model).__name__,
                    "device": str(device),
                    "batch": trainer.config.batch_size,
                    "K": K,
                    "sampler": sampler,
                    "path": path,
                    **st,
                    "floor_ms": floor["ms"],
                    "loss_step_floors": loss["ms"] / floor["ms"],
                    "ratio_to_K_plus_2_floors": st["ms"] / ((K + 2) * floor["ms"]),
                }
            )


def loss_step(trainer: Trainer, x: torch.Tensor) -> None:
    """An iteration's parameter-update half as the trainer computes it: forwards of data and samples, the backward."""
    trainer.model.zero_grad(set_to_none=True)
    if trainer.nets.joint_forward:
        energy = trainer.model(torch.cat([x, x]))
    else:
        energy = torch.cat([trainer.model(x), trainer.model(x)])
    energy.mean().backward()
    trainer.model.zero_grad(set_to_none=True)


def bench_memory(mode: dict, device: torch.device, compile_ok: bool, log: LoadLog, results: dict) -> None:
    """Peak memory of one sampling call against K: it must not grow (no graph or history kept across transitions)."""
    for kind in ("mlp", "conv"):
        net, x, label = make_energy(kind, mode[kind], device)
        sampler = samplers_for(kind)["anila-coordinate"]
        paths = ["eager"] + (["fast"] if compile_ok and (kind == "mlp" or device.type == "cuda") else [])
        for path in paths:
            flag = path == "fast"
            sampler.sample(net, x, 2, fast=flag)  # allocate what every call needs once (and compile) before measuring
            peaks = {}
            for K in mode["memory"][f"{kind}_K"]:
                peaks[K] = peak_memory(lambda: sampler.sample(net, x, K, fast=flag), device)
            ks = sorted(peaks)
            flat = None
            if all(v is not None for v in peaks.values()):
                lo, hi = peaks[ks[0]], peaks[ks[-1]]
                flat = hi <= MEMORY_SLACK[0] * max(lo, 0.0) + MEMORY_SLACK[1]
            results["memory"].append(
                {
                    "energy": label,
                    "kind": kind,
                    "device": str(device),
                    "batch": len(x),
                    "sampler": "anila-coordinate",
                    "path": path,
                    "peak_mib": {str(k): (None if v is None else round(v, 2)) for k, v in peaks.items()},
                    "flat": flat,
                }
            )
        log.mark()


def bench_quality(mode: dict, run_dirs: list[Path], log: LoadLog, results: dict) -> None:
    """Exact grid TV distance to the rings against training wall time, for Langevin and AniLA."""
    if run_dirs:
        for d in run_dirs:
            config = json.loads((d / "config.json").read_text())
            points = []
            for line in (d / "metrics.jsonl").read_text().splitlines():
                row = json.loads(line)
                if "grid_tv" in row:
                    points.append([row["iter"], row["wall_s"], row["grid_tv"]])
            results["quality"].append(
                {"source": str(d), "sampler": config.get("sampler"), "config": _brief(config), "points": points}
            )
        return
    q = mode["quality"]
    for sampler in ("langevin", "anila"):
        config = preset(
            q["preset"],
            sampler,
            iters=q["iters"],
            eval_every=q["eval_every"],
            eval_samples=q["eval_samples"],
            checkpoint_every=q["iters"],
            device="cpu",
        )
        trainer = Trainer(config, progress=False)
        history = trainer.run()
        points = [[row["iter"], row["wall_s"], row["grid_tv"]] for row in history]
        results["quality"].append(
            {
                "source": f"Trainer, preset {q['preset']!r}, {q['iters']} iterations",
                "sampler": sampler,
                "fast": trainer.fast,
                "config": _brief(config.to_dict()),
                "points": points,
                "clipped_share": history[-1].get("clipped_share") if history else None,
            }
        )
        log.mark()


def _brief(config: dict) -> dict:
    keys = ("sampler", "step_size", "b", "norm", "n_steps", "batch_size", "width", "depth", "chains", "iters", "lr")
    return {k: config.get(k) for k in keys}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="a sanity run of a couple of minutes (fewer repetitions, smaller K)"
    )
    size.add_argument("--minimal", action="store_true", help="tiny networks and no compiling: seconds (for the tests)")
    parser.add_argument(
        "--out", type=Path, default=HERE, help="folder for results.json and RESULTS.md (default: benchmarks/)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine a busy neighbour stalls every "
        "multi-threaded op; 0 = torch's default)",
    )
    parser.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="CPU rows: 'cpu' = this process's CPU time, which time slices lost to other jobs do not "
        "inflate; 'wall' = elapsed time; 'auto' (default) = cpu with one thread, else wall. CUDA "
        "rows always use wall time",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        default=[],
        help="run directories (config.json + metrics.jsonl) to take the time-to-quality curves from "
        "instead of training",
    )
    parser.add_argument(
        "--all-fast",
        action="store_true",
        help="also compile every sampler for the ConvNet on a CPU (minutes of compiling)",
    )
    parser.add_argument("--no-compile", action="store_true", help="measure the eager paths only")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to measure: 'auto' (default) = the CPU, then CUDA when present; 'cpu' or 'cuda' "
        "alone (the time-to-quality section trains on the CPU and runs with 'auto' or 'cpu' only)",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        help="a line for the report's Notes (repeatable): what the reader should know about this run",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="only rewrite RESULTS.md and results.json (in --out) from an existing results.json: "
        "its measurements kept, what is computed from them (rest, targets) computed anew, any "
        "--note added",
    )
    args = parser.parse_args(argv)

    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["notes"] = results.get("notes", []) + args.note
        results.update(judge(results))  # figures this code computes from the measurements, the rest ratios among them
        write_results(results, args.out)
        return results

    name = "minimal" if args.minimal else "quick" if args.quick else "full"
    mode = dict(MODES[name])
    if args.all_fast:
        mode["conv_fast_rows"] = tuple(samplers_for("conv"))
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # with one thread every CPU cycle of the computation is this process's own, so its CPU time is the
    # cost of the work itself; with more, CPU time adds the threads up and only wall time is latency
    Stats.use_clock(("cpu" if torch.get_num_threads() == 1 else "wall") if args.clock == "auto" else args.clock)
    compile_ok, why = fast.compile_supported()
    compile_ok = compile_ok and mode["compile"] and not args.no_compile
    started = time.perf_counter()
    log = LoadLog()
    log.mark()
    results = {
        "mode": name,
        "clock": Stats.clock,
        "machine": machine_info(torch.get_num_threads()),
        "transitions": [],
        "torchebm_check": [],
        "training": [],
        "memory": [],
        "quality": [],
        "compile_unavailable": None if fast.compile_supported()[0] else why,
    }
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here (torch.cuda.is_available() is False)")
    devices = ([torch.device("cpu")] if args.device in ("auto", "cpu") else []) + (
        [torch.device("cuda")] if args.device in ("auto", "cuda") and torch.cuda.is_available() else []
    )
    for device in devices:
        for kind in ("mlp", "conv"):
            print(f"transitions: {kind} on {device} ...", file=sys.stderr, flush=True)
            bench_transitions(kind, mode, device, compile_ok, log, results)
        print(f"training on {device} ...", file=sys.stderr, flush=True)
        bench_training(mode, device, compile_ok, log, results)
        print(f"memory on {device} ...", file=sys.stderr, flush=True)
        bench_memory(mode, device, compile_ok, log, results)
    if args.device != "cuda":
        print("time to quality ...", file=sys.stderr, flush=True)
        bench_quality(mode, args.runs, log, results)
    log.mark()
    results["machine"]["load_avg_end"] = load_average()
    results["load"] = log.summary()
    results["fast_cache"] = fast.cache_info()
    results.update(judge(results))
    results["wall_s"] = time.perf_counter() - started
    results["notes"] = args.note
    write_results(results, args.out)
    print_summary(results)
    return results


if __name__ == "__main__":
    main()
