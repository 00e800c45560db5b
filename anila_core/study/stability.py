"""Stability compared at one step size: each setting's stable seeds against Langevin's at the same ε, with exact tests.

A paired difference of final quality says nothing where one side lost the target: its
diverged seeds have no final value. What the study can say there is how often each sampler
trained stably at the same step size, K and chains, over the same seeds. Each share gets its
exact (Clopper–Pearson) 95 % interval (``scipy.stats.binomtest``) and the two are compared
with Fisher's exact test, two-sided (``scipy.stats.fisher_exact``): "more stable" or "less
stable" where p < 0.05, else "no difference detected".
"""

from __future__ import annotations

from anila_core.study.results import CONFIDENCE, paired_cells, quality_key, stable_result, summarize

__all__ = ["MIN_SEEDS", "stability_contrast", "stability_contrasts", "stability_text"]


#: a stability contrast is drawn only between settings run at this many seeds at least (the verdict seeds)
MIN_SEEDS = 10


def stability_contrast(summary: dict, setting: dict, reference: dict) -> dict:
    """How often ``setting`` and ``reference`` (rows of :func:`summarize`) trained stably over the seeds both ran.

    Returns the counts (``stable``, ``reference_stable`` of ``seeds``), each share's exact
    interval (``low``/``high`` and ``reference_low``/``reference_high``), Fisher's two-sided
    ``p`` and the ``verdict`` ("more stable", "less stable" or "no difference detected").
    """
    from scipy import stats

    key = quality_key(summary)
    shared = list(paired_cells(summary, setting, reference).values())
    n = len(shared)
    mine = sum(stable_result(both["mine"], key) for both in shared)
    ref = sum(stable_result(both["ref"], key) for both in shared)
    out = {"seeds": n, "stable": mine, "reference_stable": ref}
    if n == 0:
        return {**out, "p": None, "verdict": None}
    for prefix, k in (("", mine), ("reference_", ref)):
        interval = stats.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
        out[prefix + "low"], out[prefix + "high"] = float(interval.low), float(interval.high)
    p = float(stats.fisher_exact([[mine, n - mine], [ref, n - ref]], alternative="two-sided")[1])
    verdict = "no difference detected" if p >= 1 - CONFIDENCE else "more stable" if mine > ref else "less stable"
    return {**out, "p": p, "verdict": verdict}


def stability_contrasts(summary: dict) -> list[tuple[dict, dict, dict]]:
    """``(setting, langevin, contrast)`` for every setting that shares its step size, K and chains with a Langevin
    setting, both run at :data:`MIN_SEEDS` seeds or more, where either lost the target at least once."""
    rows = summarize(summary)
    langevin = {(r["step_size"], r["n_steps"], r["chains"]): r for r in rows if r["kind"] == "langevin"}
    out = []
    for r in rows:
        ref = langevin.get((r["step_size"], r["n_steps"], r["chains"]))
        if r["kind"] == "langevin" or ref is None or min(len(r["seeds"]), len(ref["seeds"])) < MIN_SEEDS:
            continue
        if r["stable_share"] < 1 or ref["stable_share"] < 1:
            out.append((r, ref, stability_contrast(summary, r, ref)))
    return out


def stability_text(contrast: dict) -> str:
    """A contrast in the study's words, e.g. "more stable: 10/10 [0.69, 1.00] against 0/10 [0.00, 0.31], Fisher p =
    1.1e-05"."""
    if contrast["verdict"] is None:
        return "no shared seeds"

    def share(prefix: str) -> str:
        k = contrast[prefix + "stable"]
        return f"{k}/{contrast['seeds']} [{contrast[prefix + 'low']:.2f}, {contrast[prefix + 'high']:.2f}]"

    return f"{contrast['verdict']}: {share('')} against {share('reference_')}, Fisher p = {contrast['p']:.2g}"
