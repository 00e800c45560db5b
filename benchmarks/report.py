"""The benchmark's report: the issue's targets judged, RESULTS.md rendered, results.json written, a summary printed."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rest import REST_WORDS, rest_figures, rest_of
from timing import LoadLog
from transition_table import DEFAULT_ROW_STEPS, DEFAULT_ROWS, MATMUL_WORDS

# Targets of the issue that asked for this benchmark (CPU).
TARGET_FAST_TO_FLOOR = 0.85  # MLP: compiled Langevin and AniLA transitions at most this times the floor
TARGET_FAST_TO_FLOOR_NEXT = 0.80  # the sampler-kernel issue's tighter bound for the same rows
TARGET_DEFAULT_TO_FLOOR = 0.85  # MLP: sampler.sample(energy, x0, 100) with no fast= argument, once warm
TARGET_VS_TORCHEBM = 1.4  # MLP: compiled transitions at least this much faster than TorchEBM's
TARGET_CONV_TO_FLOOR = 1.03  # ConvNet: every eager sampler within 3 % of the floor
TARGET_TRAIN = 1.10  # ConvNet: a training iteration within 10 % of (K + 2) × floor


def judge(results: dict) -> dict:
    """What a run's measurements imply: ``rest`` (:func:`rest.rest_figures`) and ``targets``, to add to its results."""
    rest = rest_figures(results["transitions"])
    return {"rest": rest, "targets": evaluate_targets(results, rest)}


def evaluate_targets(results: dict, rest: dict) -> list[dict]:
    """The issue's CPU targets, each with the measured value and whether it is met (``None``: not measured, ``why``)."""
    rows = [r for r in results["transitions"] if r["device"] == "cpu"]
    get = lambda kind, key: next((r for r in rows if r["kind"] == kind and r["row"] == key), None)  # noqa: E731
    out = []
    for name in ("langevin", "anila-coordinate"):
        r = get("mlp", f"{name}/fast")
        v = None if r is None or r["ms"] is None else r["ratio_to_floor"]
        out.append(
            {
                "target": f"CPU MLP: compiled {name} transition ≤ {TARGET_FAST_TO_FLOOR}× eager floor",
                "value": v,
                "met": None if v is None else v <= TARGET_FAST_TO_FLOOR,
            }
        )
        out.append(
            {
                "target": f"CPU MLP: compiled {name} transition ≤ {TARGET_FAST_TO_FLOOR_NEXT}× eager floor",
                "value": v,
                "met": None if v is None else v <= TARGET_FAST_TO_FLOOR_NEXT,
            }
        )
        ebm = get("mlp", "langevin/torchebm")
        s = None if v is None or ebm is None or ebm["ms"] is None else ebm["ms"] / r["ms"]
        out.append(
            {
                "target": f"CPU MLP: compiled {name} ≥ {TARGET_VS_TORCHEBM}× faster than TorchEBM LangevinDynamics",
                "value": s,
                "met": None if s is None else s >= TARGET_VS_TORCHEBM,
            }
        )
    ours, theirs = get("mlp", "langevin-mala/fast"), get("mlp", "langevin-mala/blackjax")
    s = (
        None
        if ours is None or theirs is None or ours["ms"] is None or theirs["ms"] is None
        else theirs["ms"] / ours["ms"]
    )
    out.append(
        {
            "target": "CPU MLP: compiled Langevin MALA faster than BlackJAX's mala (vmapped, jit; their ms / ours)",
            "value": s,
            "met": None if s is None else s > 1.0,
        }
    )
    for ratio in rest["ratios"]:
        out.append(
            {
                "target": f"CPU MLP: rest of {ratio['ours']} ≤ {ratio['target']}× rest of {ratio['peer']} "
                "(rest = the row − its library's matmuls row)",
                "value": ratio["ratio"],
                "met": ratio["met"],
                **({"why": ratio["why"]} if ratio["why"] else {}),
            }
        )
    for path, words in DEFAULT_ROWS.items():
        r = get("mlp", f"langevin/{path}")
        v = None if r is None or r["ms"] is None else r["ratio_to_floor"]
        out.append(
            {
                "target": f"CPU MLP: public default sample(energy, x0, {DEFAULT_ROW_STEPS}), the energy {words}, "
                f"≤ {TARGET_DEFAULT_TO_FLOOR}× eager floor",
                "value": v,
                "met": None if v is None else v <= TARGET_DEFAULT_TO_FLOOR,
            }
        )
    for r in rows:
        if r["kind"] == "conv" and r["path"] == "eager" and r["ms"] is not None:
            # judged on 1 + own/floor: the direct ratio's noise here (± 10 %) is wider than the 3 % asked
            out.append(
                {
                    "target": f"CPU ConvNet: eager {r['sampler']} within 3% of floor "
                    f"(1 + own/floor; direct {r['ratio_to_floor']:.3f})",
                    "value": r.get("composed_ratio"),
                    "met": None if r.get("composed_ratio") is None else r["composed_ratio"] <= TARGET_CONV_TO_FLOOR,
                }
            )
    for r in results["training"]:
        if r["device"] == "cpu" and r["kind"] == "conv":
            out.append(
                {
                    "target": f"CPU ConvNet: training iteration ({r['sampler']}, {r['path']}) "
                    "within 10% of (K+2)×floor",
                    "value": r["ratio_to_K_plus_2_floors"],
                    "met": r["ratio_to_K_plus_2_floors"] <= TARGET_TRAIN,
                }
            )
    for r in results["memory"]:
        out.append(
            {
                "target": f"peak memory flat in K ({r['kind']}, {r['device']}, {r['path']})",
                "value": r["peak_mib"],
                "met": r["flat"],
            }
        )
    return out


def _clock_words(clock: str) -> str:
    if clock == "cpu":
        return (
            "the process's CPU time (`time.process_time`, one torch thread): time slices lost to the other jobs do not "
            "count, while their pressure on caches and memory bandwidth still does"
        )
    return "wall-clock time (`time.perf_counter`)"


def _f(v, fmt="{:.3f}"):
    return "—" if v is None else fmt.format(v)


def _load_words(load: dict, machine: dict) -> str:
    # the benchmark itself keeps torch_threads cores busy: only load beyond that is someone else's
    if load["max"] <= machine["torch_threads"] + 0.5:
        return "nothing else ran on this machine during the run (the load stayed at the benchmark's own)."
    return "other jobs shared this machine during the run, so absolute times are inflated and noisy."


def render_markdown(results: dict) -> str:
    m = results["machine"]
    load = results["load"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `benchmarks/bench.py` ({results['mode']} mode) on {m['date']}: {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']} with {m['torch_threads']} thread(s), Python {m['python']}, TorchEBM "
        f"{m.get('torchebm') or 'not installed'}.",
        "",
        f"**Load**: {_load_words(load, m)} The 1-minute load average was "
        f"{load['min']:.2f}–{load['max']:.2f} (median {load['median']:.2f}, {load['samples']} samples) on {m['cores']} "
        "cores, "
        "the benchmark's own thread(s) included. The ratios, measured side by side with the rows taking turns within "
        "each "
        "repetition, are the figures to read.",
        "",
        f"**Clock**: CPU rows report {_clock_words(results['clock'])}; the wall-clock median is given beside it. "
        "CUDA rows (when present) use wall time after `torch.cuda.synchronize()`.",
        "",
    ]
    if not m["gpu"]:
        lines += [
            "**CUDA**: no GPU was available, so no CUDA figures were measured here; on a machine with one the same "
            "command adds CUDA rows (batch 256 for the ConvNet, and the `fast+cudagraphs` path).",
            "",
        ]
    lines += [
        "## Transitions",
        "",
        "Time per transition: median over repetitions of `(t(K) − t(1)) / (K − 1)` for one `sample` call "
        "(p25–p75 in brackets); floor: one `energy_and_grad` (forward + input gradient, no update). "
        "Own ms: the sampler's own cost per transition (noise draw, step sizes, update, bookkeeping), measured apart "
        "on "
        "the near-free energy ½‖x‖² at the same shape, minus that energy's floor; 1 + own/floor is the ratio it "
        "implies, "
        "resolved where the network's run-to-run noise hides it (the ConvNet). "
        "Compile: the first call's compile time of the fast path (paid once per sampler, energy, shape; "
        "warm = inductor's on-disk cache held the kernels). "
        "Rest ms (the CPU MLP's compiled rows, HMC's aside as its transition is several gradients, the public "
        f"default and the JAX and BlackJAX rows): {REST_WORDS}.",
        "",
    ]
    lines += [
        "| energy | device | batch | K | sampler | path | ms / transition | wall ms | × floor | rest ms | own ms "
        "| 1 + own/floor | compile s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rest = results["rest"]
    for r in results["transitions"]:
        c = r.get("compile")
        comp = "" if not c or c.get("compile_s") is None else f"{c['compile_s']:.1f} ({c['inductor_cache']})"
        ms = "—" if r["ms"] is None else f"{r['ms']:.3f} [{r['ms_p25']:.3f}–{r['ms_p75']:.3f}]"
        lines.append(
            f"| {r['energy']} | {r['device']} | {r['batch']} | {r['K']} | {r['sampler']} | {r['path']} | {ms} | "
            f"{_f(r.get('wall_ms'))} | {_f(r['ratio_to_floor'])} | {_f(rest_of(rest, r))} | "
            f"{_f(r.get('overhead_ms'))} | {_f(r.get('composed_ratio'))} | "
            f"{comp} | {r.get('note', '')} |"
        )
    lines += [
        "",
        "Ours against the peers, each transition's rest in the same run: "
        + "; ".join(_ratio_words(ratio) for ratio in rest["ratios"])
        + ".",
    ]
    lines += ["", "## TorchEBM equivalence check", ""]
    if results["torchebm_check"]:
        lines += [
            "TorchEBM's `LangevinDynamics(step_size=ε/2, noise_scale=τ)` is our `Langevin(ε, noise_scale=τ)`: its "
            "Euler–Maruyama step is `x − η∇E + sqrt(2s²η)·ξ` with ξ from `randn_like(x, generator=...)` after the "
            "gradient, our draw's order. Same start, generators of the same seed, K steps:",
            "",
            "| energy | device | K | max abs difference | largest coordinate | largest move | same chain |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in results["torchebm_check"]:
            lines.append(
                f"| {c['energy']} | {c['device']} | {c['K']} | {c['max_abs_diff']:.2e} | {c['max_abs_state']:.3g} | "
                f"{c['max_move']:.3g} | {'yes' if c['equal'] else 'NO'} |"
            )
    else:
        lines.append(f"Not run: TorchEBM is not installed ({m.get('torchebm_error', '')}).")
    lines += ["", "## JAX and BlackJAX", ""]
    j = results.get("jax") or {}
    if j.get("check"):
        c = j["check"]
        v = j.get("versions", {})
        lines += [
            f"jax {v.get('jax')}, BlackJAX {v.get('blackjax') or 'not installed'}, in a process of their own with "
            f"`XLA_FLAGS={j.get('xla_flags')}`, `OMP_NUM_THREADS=1` and held to one CPU (CPU {j.get('cpu_affinity')}; "
            f"CPU time / wall time while timed: {j.get('cpu_per_wall')}), one CPU's work at a time like the torch "
            "rows' one thread, taking their turns "
            "with the torch rows in every repetition. The same MLP, its weights copied from torch: energies differ by "
            "at most "
            f"{c['energy_max_abs_diff']:.2e} and input gradients by {c['grad_max_abs_diff']:.2e} (largest "
            f"{c['grad_max_abs']:.3g}). "
            "`langevin/jax`: a `jax.jit` `lax.fori_loop` of our Langevin update (`jax.random` noise, so another chain "
            "of "
            "the same law); `langevin-mala/blackjax`: `blackjax.mala(log p = −E, step_size = ε/2)` vmapped over the "
            "chains in a jitted `fori_loop` — the same proposal as our `Langevin(ε, metropolis=True)`. Both per "
            "transition as `(t(K) − t(1)) / (K − 1)`; their compile time is XLA's.",
            "",
        ]
        split = _matmul_split(results)
        if split:
            lines += [split, ""]
    else:
        lines.append(f"Not run: {j.get('skipped') or j.get('why') or 'no CPU MLP rows in this run'}.")
    lines += [
        "",
        "## Training iteration",
        "",
        "One `Trainer.train_step` (K transitions, the two energy forwards, the parameter backward, Adam) against "
        "(K + 2) × floor at the training batch. ConvNet: synthetic CIFAR-shaped images when CIFAR-10 is not on disk. "
        "Loss step: the iteration's parameter half alone (the energy forwards of data and samples and the backward "
        "for the parameters), in floors; (K + 2) × floor assumes it costs 2.",
        "",
        "| energy | device | batch | K | sampler | path | ms / iteration | floor ms | loss step (floors) | × "
        "(K+2)·floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["training"]:
        lines.append(
            f"| {r['energy']} | {r['device']} | {r['batch']} | {r['K']} | {r['sampler']} | {r['path']} | "
            f"{r['ms']:.1f} [{r['ms_p25']:.1f}–{r['ms_p75']:.1f}] | {r['floor_ms']:.2f} | {r['loss_step_floors']:.2f} "
            "| "
            f"{r['ratio_to_K_plus_2_floors']:.3f} |"
        )
    lines += [
        "",
        "## Peak memory against K",
        "",
        "Peak memory of one `sample` call above what was held before (CPU: resident-set high-water mark; CUDA: "
        "`max_memory_allocated`), AniLA (coordinate).",
        "",
        "| energy | device | batch | path | peak MiB by K | flat |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["memory"]:
        peaks = ", ".join(f"K={k}: {_f(v, '{:.1f}')}" for k, v in r["peak_mib"].items())
        lines.append(
            f"| {r['energy']} | {r['device']} | {r['batch']} | {r['path']} | {peaks} | {_f(r['flat'], '{}')} |"
        )
    lines += [
        "",
        "## Time to quality (rings)",
        "",
        "Exact grid TV distance to the rings against training wall time (evaluation excluded).",
        "",
        "| sampler | source | AniLA's clipped share at the end | points (wall s → grid TV) |",
        "|---|---|---|---|",
    ]
    for q in results["quality"]:
        pts = ", ".join(f"{p[1]:.1f} s → {p[2]:.3f}" for p in q["points"])
        lines.append(f"| {q['sampler']} | {q['source']} | {_f(q.get('clipped_share'))} | {pts} |")
    lines += ["", "## Targets (CPU)", "", "| target | measured | met |", "|---|---|---|"]
    for t in results["targets"]:
        v = t["value"]
        shown = (f"{v:.3f}" if isinstance(v, float) else json.dumps(v)) if v is not None else t.get("why", "—")
        lines.append(f"| {t['target']} | {shown} | {_f(t['met'], '{}')} |")
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    if results.get("compile_unavailable"):
        lines += ["", f"Compiling was unavailable: {results['compile_unavailable']}."]
    lines += ["", f"Wall time of the whole run: {results['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def _ratio_words(ratio: dict) -> str:
    """One of the issue's rest ratios in words: its value against its target, or what is missing."""
    head = f"rest({ratio['ours']}) / rest({ratio['peer']})"
    if ratio["ratio"] is None:
        return f"{head}: {ratio['why']}"
    return f"{head} = {ratio['ratio']:.3f} (target ≤ {ratio['target']}: {'met' if ratio['met'] else 'NOT met'})"


def _matmul_split(results: dict) -> str | None:
    """A sentence splitting the compiled MALA and BlackJAX's into matrix products and the rest (``None``: no row)."""
    rest = {r["row"]: r for r in results["rest"]["rows"] if r["device"] == "cpu"}
    if "langevin-mala/fast" not in rest or "langevin-mala/blackjax" not in rest:
        return None
    ours, theirs = rest["langevin-mala/fast"], rest["langevin-mala/blackjax"]
    torch_mm, xla_mm, whole = ours["matmuls_ms"], theirs["matmuls_ms"], theirs["ms"]
    return (
        f"Where the difference lies: the matrix products alone ({MATMUL_WORDS}; the `matmuls` rows) take "
        f"{torch_mm:.3f} ms with torch's GEMM and {xla_mm:.3f} ms with XLA's ({torch_mm / xla_mm:.2f}×); the rest "
        f"of a transition (the elementwise work, the Metropolis test, the loop) takes {ours['rest_ms']:.3f} ms in "
        f"the compiled MALA and {theirs['rest_ms']:.3f} ms in BlackJAX's. Torch's products alone are "
        f"{torch_mm / whole:.2f}× BlackJAX's whole MALA transition"
        + (
            f", so a torch MALA faster than BlackJAX's would have to do the rest in under {whole - torch_mm:.3f} ms, "
            f"{theirs['rest_ms'] / (whole - torch_mm):.1f}× less than BlackJAX does."
            if whole > torch_mm
            else ": with torch's GEMM no MALA transition can be as fast as BlackJAX's."
        )
    )


def print_summary(results: dict) -> None:
    m, load = results["machine"], results.get("load") or LoadLog().summary()
    jax_flags = (results.get("jax") or {}).get("xla_flags")
    print(
        f"\nmeasured side by side in this one run: torch {m['torch']}, {m['torch_threads']} torch thread(s)"
        f"{', JAX: its own process on one CPU' if jax_flags else ''}; {m['cores']} cores, 1-min load average "
        f"{load['min']:.2f}–{load['max']:.2f} (median {load['median']:.2f}); clock: {results['clock']}"
    )
    print(
        f"{'energy':36s} {'dev':5s} {'sampler':17s} {'path':16s} {'ms':>10s} {'×floor':>7s} {'rest ms':>8s} "
        f"{'compile s':>9s}  note"
    )
    rest = results["rest"]
    for r in results["transitions"]:
        c = r.get("compile")
        comp = "" if not c or c.get("compile_s") is None else format(c["compile_s"], "9.1f")
        print(
            f"{r['energy'][:36]:36s} {r['device']:5s} {r['sampler']:17s} {r['path']:16s} "
            f"{_f(r['ms'], '{:10.3f}'):>10s} {_f(r['ratio_to_floor'], '{:7.3f}'):>7s} "
            f"{_f(rest_of(rest, r), '{:8.3f}'):>8s} {comp:>9s}  {r.get('note', '')[:90]}"
        )
    print(f"\n{REST_WORDS}.")
    for ratio in rest["ratios"]:
        print(f"  {_ratio_words(ratio)}")
    print("\ntraining:")
    for r in results["training"]:
        print(
            f"  {r['kind']:5s} {r['sampler']:9s} {r['path']:6s} {r['ms']:9.1f} ms  × (K+2)·floor "
            f"{r['ratio_to_K_plus_2_floors']:.3f}"
        )
    print("\ntargets:")
    for t in results["targets"]:
        shown = t["value"] if t["value"] is not None else t.get("why")
        print(f"  [{'met' if t['met'] else 'NOT met' if t['met'] is False else 'n/a'}] {t['target']}: {shown}")
    print(f"\nload average {results['load']}  wall {results['wall_s']:.0f} s")


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def write_results(results: dict, folder: Path) -> None:
    """``results.json`` (non-finite numbers as ``null``) and ``RESULTS.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    (folder / "RESULTS.md").write_text(render_markdown(results))
