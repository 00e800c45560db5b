"""The transition table: each sampler's eager and compiled transition against a gradient's cost, the peers beside."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from anila_core.images.convnets import make_convnet
from anila_core.nets import MLPEnergy
from anila_core.sampling import compile_rule
from anila_core.sampling import compiled as fast
from anila_core.sampling.registry import make_sampler
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin
from peers import JAX_ROWS, add_jax_rows, check_torchebm, torchebm_sampler
from timing import (
    LoadLog,
    Stats,
    floor_measure,
    interleaved,
    machine_info,
    marginal_measure,
    matmul_chain_arrays,
    matmuls_measure,
    whole_call_measure,
)

DEFAULT_ROW_STEPS = 100  # the public-default row's call: sample(energy, x0, 100)
#: the public-default rows: the row's path, and how its energy is written (see default_energies)
DEFAULT_ROWS = {
    "default": "the module",
    "default-method": "a bound method of an object holding it",
    "default-lambda": "a lambda over it",
}

# --------------------------------------------------------------------------- energies and samplers


#: HMC's leapfrog steps in the table: each is a gradient, so its row costs about this many floors per transition
HMC_LEAPFROG = 5


def samplers_for(kind: str) -> dict[str, object]:
    """The samplers of the table, with the hyperparameters of that energy's presets (the timing does not need them).

    HMC is timed on the MLP only: its transition is ``HMC_LEAPFROG`` gradients, minutes per
    row for the ConvNet on a CPU, and its cost per gradient is what the MLP row shows.
    """
    if kind == "mlp":  # the rings' cpu preset
        return {
            **_samplers_for(0.01, 1.0, 3.0),
            f"hmc-{HMC_LEAPFROG}-leapfrog": make_sampler("hmc", step_size=0.05, n_leapfrog=HMC_LEAPFROG),
        }
    return _samplers_for(1.0, 0.01, 0.05)  # the image presets: ε = 1, cold noise τ = 0.01


def _samplers_for(eps: float, tau: float, b: float) -> dict[str, object]:
    return {
        "langevin": Langevin(eps, noise_scale=tau),
        "langevin-mala": Langevin(eps, noise_scale=tau, metropolis=True),
        "anila-coordinate": AniLA(eps, b=b, noise_scale=tau, norm="coordinate"),
        "anila-pixel": AniLA(eps, b=b, noise_scale=tau, norm="pixel"),
        "anila-sample": AniLA(eps, b=b, noise_scale=tau, norm="sample"),
        "anila-mala": AniLA(eps, b=b, noise_scale=tau, metropolis=True),
        "psgld": PSGLD(eps * 1e-3, noise_scale=tau),
    }


def make_energy(kind: str, cfg: dict, device: torch.device):
    torch.manual_seed(0)
    if kind == "mlp":
        net = MLPEnergy(2, cfg["width"], cfg["depth"]).to(device)
        x = 2.0 * torch.randn(cfg["batch"], 2, device=device)
        label = f"MLPEnergy(2,{cfg['width']},{cfg['depth']})"
    else:
        net = make_convnet((3, 32, 32), width=cfg["width"]).to(device)
        batch = cfg["cuda_batch"] if device.type == "cuda" else cfg["batch"]
        x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
        label = f"make_convnet((3,32,32), width={cfg['width']})"
    return net, x, label


# --------------------------------------------------------------------------- the table


def bench_transitions(
    kind: str,
    mode: dict,
    device: torch.device,
    compile_ok: bool,
    log: LoadLog,
    results: dict,
    only: tuple[str, ...] | None = None,
    extras: bool = True,
) -> None:
    """The transition table of one energy on one device: floor, every sampler eager and compiled, TorchEBM, extras.

    ``only``: the samplers to measure (default: all of :func:`samplers_for`). ``extras``: on a
    CPU's MLP, also the public default (``sample`` with no ``fast=``) and the JAX rows.
    """
    cfg = mode[kind]
    net, x, label = make_energy(kind, cfg, device)
    K, reps, warmup = cfg["K"], cfg["reps"], cfg["warmup"]
    samplers = {k: v for k, v in samplers_for(kind).items() if only is None or k in only}
    fast_rows = set(samplers) if (kind == "mlp" or device.type == "cuda") else set(mode["conv_fast_rows"])
    gen = torch.Generator(device=device).manual_seed(0)
    measures = {"floor": floor_measure(net, x, K)}
    compile_info: dict[str, dict] = {}
    notes: dict[str, str] = {}
    for name, sampler in samplers.items():
        measures[f"{name}/eager"] = marginal_measure(
            lambda k, s=sampler: s.sample(net, x, k, generator=gen, fast=False), K, device
        )
        if not compile_ok or name not in fast_rows:
            notes[f"{name}/fast"] = "not measured: " + (
                "compiling is off in this mode"
                if not compile_ok
                else "a ConvNet gains nothing from compiling on a CPU (measured); --all-fast measures it"
            )
            continue
        compile_info[name] = compile_row(sampler, net, x, gen)
        if compile_info[name]["failed"]:
            notes[f"{name}/fast"] = f"compile failed, eager fallback: {compile_info[name]['failed']}"
        measures[f"{name}/fast"] = marginal_measure(
            lambda k, s=sampler: s.sample(net, x, k, generator=gen, fast=True), K, device
        )
        if device.type == "cuda":  # the same transition replayed as a CUDA graph: no per-kernel launch cost
            s_graph = sampler.with_cuda_graphs()
            compile_info[name + "+cudagraphs"] = compile_row(s_graph, net, x, gen)
            measures[f"{name}/fast+cudagraphs"] = marginal_measure(
                lambda k, s=s_graph: s.sample(net, x, k, generator=gen, fast=True), K, device
            )
    ebm_check = ebm_quadratic = None
    if results["machine"].get("torchebm"):
        ebm = torchebm_sampler(net, x, samplers["langevin"])
        ebm_check = check_torchebm(ebm, net, x, samplers["langevin"], K)
        if ebm_check["equal"]:
            measures["langevin/torchebm"] = marginal_measure(
                lambda k: ebm.sample(x=x, n_steps=k, generator=gen), K, device
            )
            ebm_quadratic = torchebm_sampler(quadratic, x, samplers["langevin"])
        else:
            notes["langevin/torchebm"] = (
                f"not timed: its chain differs from ours (max |Δ| = {ebm_check['max_abs_diff']:.3g})"
            )
    else:
        notes["langevin/torchebm"] = "not timed: torchebm is not installed (pip install -e '.[bench]')"
    jax_rows, scratch = None, None
    with_extras = extras and kind == "mlp" and device.type == "cpu"
    if with_extras:
        # the public API as a user calls it: no fast= argument, so whatever the sampler's default is (measured once
        # warm), with the energy written each of the ways a user writes it
        default = samplers_for(kind)["langevin"]
        # fast="auto" compiles once the work sampled with a network reaches its threshold (about 200 of these calls,
        # 80 s): the rows measure that steady state, the network's count set here instead of sampled
        compile_rule.forget_work()
        compile_rule.compiles("auto", net, device, compile_rule.AUTO_MIN_CHAIN_STEPS)
        for path, energy in default_energies(net).items():
            measures[f"langevin/{path}"] = whole_call_measure(
                lambda e=energy: default.sample(e, x, DEFAULT_ROW_STEPS, generator=gen), DEFAULT_ROW_STEPS, device
            )
        # the least a transition can cost with each library's GEMM: its matrix products alone, torch's beside XLA's
        chain = matmul_chain_arrays(net, len(x))
        if chain:
            measures["matmuls/torch"] = matmuls_measure(chain, K, device)
        else:
            notes["matmuls/torch"] = "not measured: the network has no width × width layer"
        scratch = tempfile.TemporaryDirectory(prefix="anila-bench-")
        jax_rows = add_jax_rows(net, x, samplers_for(kind)["langevin"], K, measures, notes, results, Path(scratch.name))
    log.mark()
    try:
        samples = interleaved(measures, reps, warmup)
    finally:
        if jax_rows is not None:
            jax_rows.close()
        if scratch is not None:
            scratch.cleanup()
    log.mark()
    overhead = sampler_overheads(ebm_quadratic, samplers, x, gen, mode["overhead"])
    log.mark()
    floor = Stats.of(samples["floor"], device)
    # what every row of this table repeats: the energy and how it was measured
    measured = {"energy": label, "kind": kind, "device": str(device), "batch": len(x), "K": K, "reps": reps}
    rows = [{**measured, "row": "floor", "sampler": "-", "path": "floor", **floor, "ratio_to_floor": 1.0}]
    order = (
        ["floor"] + [f"{n}/{p}" for n in samplers for p in ("eager", "fast", "fast+cudagraphs")] + ["langevin/torchebm"]
    )
    if with_extras:
        order += [f"langevin/{path}" for path in DEFAULT_ROWS] + ["matmuls/torch", *JAX_ROWS]
    for key in order[1:]:
        name, path = key.split("/")
        if key not in samples and key not in notes:
            continue
        row = {**measured, "row": key, "sampler": name, "path": path}
        if key in samples:
            st = Stats.of(samples[key], device)
            row.update(st, ratio_to_floor=st["ms"] / floor["ms"])
            if key in overhead:  # the sampler's own cost, measured apart from the network (see sampler_overheads)
                row.update(overhead_ms=overhead[key], composed_ratio=1 + overhead[key] / floor["ms"])
        else:
            row.update(ms=None, ratio_to_floor=None)
        if path.startswith("fast") and (name + ("+cudagraphs" if "cudagraphs" in path else "")) in compile_info:
            row["compile"] = compile_info[name + ("+cudagraphs" if "cudagraphs" in path else "")]
        if name == "langevin" and path in DEFAULT_ROWS:
            row["K"] = DEFAULT_ROW_STEPS
            row["note"] = (
                f"sample(energy, x0, {DEFAULT_ROW_STEPS}) with no fast= argument, the energy {DEFAULT_ROWS[path]}: "
                f"a whole call / {DEFAULT_ROW_STEPS}, chain start included, after warm-up, in a session that has "
                "sampled enough with the network for fast='auto' to compile (its count set, not sampled)"
            )
        if name == "matmuls":
            row["note"] = (
                f"the transition's matrix products alone ({MATMUL_WORDS}), chained, nothing else: the least a "
                f"transition costs with {'torch' if path == 'torch' else 'XLA'}'s GEMM"
            )
        if path in ("jax", "blackjax", "xla") and key in samples:
            jinfo = results.get("jax", {})
            row["compile"] = {"compile_s": jinfo.get("rows", {}).get(key, {}).get("compile_s"), "inductor_cache": "XLA"}
            row["note"] = (
                "own process, one CPU"
                + (
                    f"; acceptance {jinfo['rows'][key]['acceptance']}"
                    if "acceptance" in jinfo.get("rows", {}).get(key, {})
                    else ""
                )
                + ("; " + row["note"] if "note" in row else "")
            )
        if key in notes:
            row["note"] = notes[key]
        rows.append(row)
    results["transitions"].extend(rows)
    if ebm_check is not None:
        results["torchebm_check"].append({"energy": label, "device": str(device), **ebm_check})


#: what the ``matmuls`` rows time, in the table's words
MATMUL_WORDS = "two per width × width layer: the forward x·Wᵀ and the input gradient g·W"


class _HoldsANetwork:
    """An object with the network as an attribute and its energy as a method, as a user's wrapper or a trainer is."""

    def __init__(self, net):
        self.net = net

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def default_energies(net) -> dict:
    """The public-default rows' energies, keyed by row path: the module, a bound method over it, a lambda over it."""
    return {"default": net, "default-method": _HoldsANetwork(net).energy, "default-lambda": lambda z: net(z)}


def quadratic(z: torch.Tensor) -> torch.Tensor:
    """``E(z) = ½‖z‖²``: an energy costing almost nothing, to expose what a sampler adds around the network."""
    return 0.5 * z.flatten(1).square().sum(1)


def sampler_overheads(ebm_quadratic, samplers: dict, x: torch.Tensor, gen, cfg: dict) -> dict[str, float]:
    """Each eager sampler's own cost per transition in ms: its transition on a near-free energy minus that floor.

    On a ConvNet the convolutions' run-to-run noise on a shared machine (± 10 %) hides a sampler's
    few milliseconds of noise draws and elementwise updates; measured on ``quadratic`` at the
    same shape, those milliseconds are resolved, and ``1 + overhead / floor`` composes the
    ratio the table's direct measurement estimates.
    """
    device = x.device
    measures = {"floor": floor_measure(quadratic, x, cfg["K"])}
    for name, sampler in samplers.items():
        measures[f"{name}/eager"] = marginal_measure(
            lambda k, s=sampler: s.sample(quadratic, x, k, generator=gen, fast=False), cfg["K"], device
        )
    if ebm_quadratic is not None:
        measures["langevin/torchebm"] = marginal_measure(
            lambda k: ebm_quadratic.sample(x=x, n_steps=k, generator=gen), cfg["K"], device
        )
    samples = interleaved(measures, cfg["reps"], warmup=1)
    floor = Stats.of(samples.pop("floor"), device)["ms"]
    return {key: Stats.of(values, device)["ms"] - floor for key, values in samples.items()}


def compile_row(sampler, net, x, gen) -> dict:
    """Compile (first call) the transitions this sampler creates; report their compile time and whether inductor's disk
    cache was warm."""
    from torch._dynamo.utils import counters

    before = {r["name"] for r in fast.cache_info()}
    hits = counters["inductor"]["fxgraph_cache_hit"]
    misses = counters["inductor"]["fxgraph_cache_miss"]
    start = time.perf_counter()
    # two whole calls and a call of the 2 steps left: both call lengths' graphs compile, pSGLD's first and later ones
    sampler.sample(net, x, 2 * sampler.steps_per_call + 3, generator=gen, fast=True)
    wall = time.perf_counter() - start
    new = [r for r in fast.cache_info() if r["name"] not in before]
    return {
        "compile_s": round(sum(r["compile_s"] or 0.0 for r in new), 2),
        "first_call_s": round(wall, 2),
        "graphs": len(new),
        "inductor_cache": "warm"
        if counters["inductor"]["fxgraph_cache_hit"] > hits and counters["inductor"]["fxgraph_cache_miss"] == misses
        else "cold",
        "failed": next((r["failed"] for r in new if r["failed"]), None),
    }


def device_transitions(
    device: torch.device,
    sizes: list[tuple[str, int]],
    sizing: dict[str, dict],
    only: tuple[str, ...] | None = None,
    compile_ok: bool = True,
) -> dict:
    """The transition tables of ``sizes`` (``[("mlp", 1024), ("conv", 256)]``) on ``device``, as gpu_check.py measures.

    ``sizing``: per kind, the network and repetition settings of :data:`MODES` to use
    (``width``, ``depth``, ``K``, ``reps``, ``warmup``), and ``overhead`` (``K``, ``reps``) for the
    samplers' own cost; the batch comes from ``sizes``.
    Returns ``{"machine", "clock", "transitions", "torchebm_check", "load"}``, rows as in the full benchmark.
    """
    log = LoadLog()
    log.mark()
    ok, why = fast.compile_supported()
    results = {
        "machine": machine_info(torch.get_num_threads()),
        "clock": Stats.clock,
        "transitions": [],
        "torchebm_check": [],
        "compile_unavailable": None if ok else why,
    }
    for kind, batch in sizes:
        mode = {
            kind: dict(sizing[kind], batch=batch, cuda_batch=batch),
            "conv_fast_rows": tuple(samplers_for(kind)),
            "overhead": sizing.get("overhead", dict(K=sizing[kind]["K"], reps=3)),
        }
        bench_transitions(kind, mode, device, compile_ok and ok, log, results, only=only, extras=False)
    log.mark()
    results["load"] = log.summary()
    return results
