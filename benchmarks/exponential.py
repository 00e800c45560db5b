"""The compiled CPU step's exponential, side by side: Sleef's 1-ulp ``exp`` against ATen's ``exp_u20``.

Each sampler is compiled twice in this one process, for two copies of one MLP (same weights, so
separate compiled steps): once with ``anila_core.sampling.vector_exp.use_exp_u20`` off, once on.
Every repetition then times both, in turns (the bench's ``interleaved``), on this process's CPU
clock (one torch thread), each as the bench's marginal cost ``(t(K) − t(1)) / (K − 1)``: the
steady cost per transition at K = 65 (eight compiled calls of eight) and the transition table's
K = 20. The ratio and the difference are taken within each repetition
(paired) before the median, so a slow minute of a shared machine slows both sides alike. Beside
the times, what each costs in accuracy: the largest |compiled − eager| of a 40-step chain.

    python benchmarks/exponential.py [--reps 30] [--out FILE.json]

Minutes: two compiles per sampler (tens of seconds each) and the repetitions.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from anila_core.device import processor_name
from anila_core.nets import MLPEnergy
from anila_core.sampling import vector_exp
from anila_core.sampling.samplers import AniLA, Langevin

# the benchmark's other modules, found beside this script (its folder is the first entry of sys.path)
from timing import interleaved, load_average, marginal_measure

SAMPLERS = {  # the rings' cpu preset's settings, as in the transition table
    "langevin": lambda: Langevin(0.01),
    "langevin-mala": lambda: Langevin(0.01, metropolis=True),
    "anila-coordinate": lambda: AniLA(0.01, b=3.0),
}
VARIANTS = ("sleef", "exp_u20")
STEADY_K = 65  # (t(65) − t(1)) / 64: eight calls of eight transitions, the steady cost


def _clock(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(name: str, reps: int, batch: int = 1024, width: int = 128, depth: int = 3) -> dict:
    """One sampler's row: both exponentials' steady and K = 20 costs (ms per transition), paired ratios, chain error."""
    torch.manual_seed(0)
    nets = {"sleef": MLPEnergy(2, width, depth)}
    nets["exp_u20"] = copy.deepcopy(nets["sleef"])  # the same weights, its own compiled steps
    x = 2.0 * torch.randn(batch, 2)
    sampler = SAMPLERS[name]()
    gen = torch.Generator()

    def run(variant: str, n: int, seed: int | None = None, fast: bool = True) -> torch.Tensor:
        if seed is not None:
            gen.manual_seed(seed)
        return sampler.sample(nets[variant], x, n, generator=gen, fast=fast)

    compile_s = {}
    for variant in VARIANTS:
        vector_exp.use_exp_u20 = variant == "exp_u20"
        try:  # every call length the measures use, compiled with this variant's exponential
            compile_s[variant] = sum(_clock(lambda n=n: run(variant, n)) for n in (STEADY_K, 20, 2, 1, 40))
        finally:
            vector_exp.use_exp_u20 = True
    eager = run("sleef", 40, seed=1, fast=False)
    error = {v: (run(v, 40, seed=1) - eager).abs().max().item() for v in VARIANTS}
    cpu = torch.device("cpu")
    measures = {(v, K): marginal_measure(lambda k, v=v: run(v, k), K, cpu) for v in VARIANTS for K in (STEADY_K, 20)}
    # taking turns, one sample of each per repetition: the i-th samples of the two exponentials are a pair
    samples = interleaved(measures, reps, warmup=1)

    def summary(K: int) -> dict:
        times = {v: [cpu_s * 1e3 for _, cpu_s in samples[(v, K)]] for v in VARIANTS}
        pairs = list(zip(times["sleef"], times["exp_u20"]))
        return {
            "sleef_ms": statistics.median(times["sleef"]),
            "exp_u20_ms": statistics.median(times["exp_u20"]),
            "ratio": statistics.median(b / a for a, b in pairs),
            "saved_ms": statistics.median(a - b for a, b in pairs),
            "saved_ms_p25_p75": statistics.quantiles([a - b for a, b in pairs], n=4)[::2],
        }

    return {
        "sampler": name,
        "steady": summary(STEADY_K),
        "k20": summary(20),
        "max_abs_diff_from_eager": error,
        "compile_cpu_s": compile_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30, help="repetitions, each timing both exponentials (default 30)")
    parser.add_argument("--samplers", nargs="+", choices=sorted(SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.reps < 2:
        parser.error(f"--reps: expected at least 2 (a median and its quartiles), got {args.reps}")
    if not vector_exp.AVAILABLE:
        sys.exit("exponential.py: this torch's inductor has no vector operation table; compiled steps use Sleef's exp")
    torch.set_num_threads(1)

    started, load_start = time.perf_counter(), load_average()
    rows = [measure(name, args.reps) for name in args.samplers]
    result = {
        "cpu": processor_name(),
        "torch": torch.__version__,
        "reps": args.reps,
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
        "wall_s": time.perf_counter() - started,
        "rows": rows,
    }
    print(
        f"{result['cpu']}, torch {result['torch']}, one thread, MLP 2-128-128-128-1, batch 1024, {args.reps} "
        f"repetitions, load average {load_start} → {result['load_avg_end']}: ms per transition (CPU clock), "
        "ratio and saving paired within each repetition"
    )
    print("| sampler | measure | Sleef exp | exp_u20 | exp_u20 / Sleef | saved ms [p25–p75] |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        for key, label in (("steady", "steady, (t(65) − t(1))/64"), ("k20", "K = 20, (t(20) − t(1))/19")):
            m = row[key]
            print(
                f"| {row['sampler']} | {label} | {m['sleef_ms']:.3f} | {m['exp_u20_ms']:.3f} | {m['ratio']:.3f} | "
                f"{m['saved_ms']:.3f} [{m['saved_ms_p25_p75'][0]:.3f}–{m['saved_ms_p25_p75'][1]:.3f}] |"
            )
    print(
        "largest |compiled − eager| after 40 steps: "
        + "; ".join(
            f"{r['sampler']} Sleef {r['max_abs_diff_from_eager']['sleef']:.2g}, exp_u20 "
            f"{r['max_abs_diff_from_eager']['exp_u20']:.2g}"
            for r in rows
        )
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
