"""The sampler study's figures: quality maps, stability, quality against a budget, two densities, clipping."""

from __future__ import annotations

import math
from typing import Sequence

from anila_core.study.grid import KINDS, number_text, uses_b
from anila_core.study.results import QUALITY_LABELS, budget_curves, main_slice, quality_key, summarize, two_density_rows

__all__ = [
    "plot_heatmaps",
    "plot_stability",
    "plot_quality_vs_budget",
    "plot_two_densities",
    "plot_clipping",
    "plot_histories",
]


def _main_rows(summary: dict) -> tuple:
    """What the maps draw: the quality key, the pooled rows at the main gradient budget and chain kind, that budget and
    kind, the samplers and step sizes present."""
    key = quality_key(summary)
    rows = summarize(summary)
    budget, chains = main_slice(rows)
    rows = [r for r in rows if r["gradients"] == budget and r["chains"] == chains]
    kinds = [kind for kind in KINDS if any(r["kind"] == kind for r in rows)]
    steps = sorted({r["step_size"] for r in rows})
    return key, rows, budget, chains, kinds, steps


def plot_heatmaps(summary: dict, axes=None):
    """Mean final quality over (step size, b) for each sampler at the main gradient budget and chain kind; ✕ marks
    settings where a seed was unstable.

    Each panel has its own rows (the step sizes that sampler ran: HMC's ε is a leapfrog step, on
    another scale) and a width in proportion to its thresholds, so every number stays readable.
    """
    import numpy as np

    key, rows, budget, chains, kinds, _ = _main_rows(summary)
    mine = {kind: [r for r in rows if r["kind"] == kind] for kind in kinds}
    bs = {kind: sorted({r["b"] for r in mine[kind] if r["b"] is not None}) or [None] for kind in kinds}
    steps = {kind: sorted({r["step_size"] for r in mine[kind]}) for kind in kinds}
    colorbar_axes = None
    if axes is None:
        axes, colorbar_axes = _heatmap_axes(kinds, bs, steps)
    vmax = 1.0 if key == "grid_tv" else max((r.get(key, 0) for r in rows), default=1.0) or 1.0
    image = None
    for ax, kind in zip(axes, kinds):
        grid = np.full((len(steps[kind]), len(bs[kind])), np.nan)
        for r in mine[kind]:
            i, j = steps[kind].index(r["step_size"]), bs[kind].index(r["b"])
            grid[i, j] = r.get(key, np.nan)
            mark = "" if r["stable_share"] == 1 else "✕"
            text = "div" if key not in r else f"{r[key]:.2f}"
            ax.text(
                j,
                i,
                f"{text}{mark}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if key in r and r[key] > 0.55 * vmax else "black",
            )
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto", origin="lower")
        ax.set_xticks(range(len(bs[kind])), ["—" if b is None else number_text(b) for b in bs[kind]], fontsize=9)
        ax.set_yticks(range(len(steps[kind])), [number_text(v) for v in steps[kind]], fontsize=9)
        ax.set_title(kind, fontsize=11)
        ax.set_xlabel("b" if bs[kind] != [None] else "")
        ax.set_ylabel("step size ε" if ax.get_subplotspec().is_first_col() else "")
    if image is not None:
        label = f"final {QUALITY_LABELS[key]} (lower is better)"
        if colorbar_axes is not None:
            axes[0].figure.colorbar(image, cax=colorbar_axes, label=label)
        else:
            axes[0].figure.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    axes[0].figure.suptitle(
        f"quality over (ε, b), {budget} gradients per iteration, {chains} chains; ✕: a seed diverged or collapsed",
        fontsize=11,
    )
    return axes


#: the widest row of heatmap panels, in units of one threshold column: what stays readable on a projector at 9-point
#: numbers
HEATMAP_ROW_UNITS = 7.0


def _heatmap_axes(kinds: list[str], bs: dict, steps: dict) -> tuple[list, object]:
    """Panels for :func:`plot_heatmaps` in rows no wider than :data:`HEATMAP_ROW_UNITS`, each as wide as its thresholds
    need.

    One row of every sampler was about 19 inches (1900 pixels on screen) with 6-point numbers:
    unreadable at lecture size. Rows keep the figure about 11 inches wide at 9 points.
    """
    import matplotlib.pyplot as plt

    widths = {kind: max(1.0, 0.75 * len(bs[kind])) for kind in kinds}
    rows: list[list[str]] = [[]]
    for kind in kinds:
        if rows[-1] and sum(widths[k] for k in rows[-1]) + widths[kind] > HEATMAP_ROW_UNITS:
            rows.append([])
        rows[-1].append(kind)
    widest = max(sum(widths[k] for k in row) for row in rows)
    tallest = max(len(v) for v in steps.values())
    # constrained layout keeps each panel's ε labels, the titles and the colour bar apart
    fig = plt.figure(figsize=(1.45 * widest + 2.5, (0.5 * tallest + 1.5) * len(rows) + 0.6), layout="constrained")
    outer = fig.add_gridspec(len(rows), 2, width_ratios=[widest, 0.2])  # the colour bar's own column, for every row
    axes = []
    for i, row in enumerate(rows):
        # a last column takes up what the row leaves free, so every panel keeps the width of its thresholds
        free = widest - sum(widths[k] for k in row)
        inner = outer[i, 0].subgridspec(
            1, len(row) + (free > 0), width_ratios=[widths[k] for k in row] + ([free] if free > 0 else [])
        )
        axes += [fig.add_subplot(inner[0, j]) for j in range(len(row))]
    return axes, fig.add_subplot(outer[:, 1])


def plot_stability(summary: dict, ax=None):
    """The stability region: for each sampler (rows) and step size (columns), the share of seeds that trained stably,
    at its most stable b (the best of those)."""
    import matplotlib.pyplot as plt
    import numpy as np

    key, rows, budget, chains, kinds, steps = _main_rows(summary)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.75 * len(steps) + 2.5, 0.42 * len(kinds) + 1.4))
    share = np.full((len(kinds), len(steps)), np.nan)
    for i, kind in enumerate(kinds):
        for j, step in enumerate(steps):
            mine = [r for r in rows if r["kind"] == kind and r["step_size"] == step]
            if not mine:
                continue
            # an AniLA user would pick the most stable b, and among those the best one
            best = max(mine, key=lambda r: (r["stable_share"], -r.get(key, math.inf)))
            share[i, j] = best["stable_share"]
            n = len(best["seeds"])
            b = "" if best["b"] is None else f"\nb={number_text(best['b'])}"
            ax.text(j, i, f"{round(best['stable_share'] * n)}/{n}{b}", ha="center", va="center", fontsize=7)
    ax.imshow(share, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(steps)), [number_text(s) for s in steps])
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xlabel("step size ε")
    ax.set_title(f"seeds that trained stably (most stable b; {budget} gradients per iteration, {chains})", fontsize=10)
    return ax


def plot_quality_vs_budget(summary: dict, axes=None):
    """The fixed-budget view: quality against training CPU time and against gradient evaluations, for each sampler's
    best setting (mean over its seeds).

    CPU time (one thread per cell) is what compares samplers whose cells ran while the machine
    was shared unevenly; cells written before it was recorded are left out of that panel.
    Gradient evaluations per chain (iterations × K, × the leapfrog steps for HMC) do not depend
    on the machine at all.
    """
    import matplotlib.pyplot as plt

    key = quality_key(summary)
    if axes is None:
        axes = list(plt.subplots(1, 2, figsize=(11, 3.8))[1])
    for ax, clock, label in (
        (axes[0], "cpu_s", "training CPU time (s, all threads of the run)"),
        (axes[1], "gradients", "gradient evaluations per chain"),
    ):
        for entry, (x, value) in budget_curves(summary, clock):
            w = entry["best"]
            b = "" if w["b"] is None else f", b={number_text(w['b'])}"
            ax.plot(x, value, "o-", ms=3, label=f"{entry['kind']} (ε={number_text(w['step_size'])}{b})")
        ax.set_xlabel(label)
        ax.set_ylabel(QUALITY_LABELS[key])
        if not ax.get_legend_handles_labels()[0]:
            ax.text(
                0.5,
                0.5,
                "every seed diverged\n(or no CPU time recorded)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7)
    axes[0].set_title("quality against CPU time, each sampler's best setting", fontsize=10)
    axes[1].set_title("quality against gradient evaluations", fontsize=10)
    axes[0].figure.tight_layout()
    return axes


def plot_two_densities(summary: dict, ax=None):
    """Per AniLA setting: grid TV of exp(−E) against that of its sampler's small-step density, coloured by the clipped
    share.

    Below the diagonal the energy fits the data *through its sampler* better than as exp(−E).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 4.2))
    mine = two_density_rows(summarize(summary))
    if not mine:
        ax.text(0.5, 0.5, "no AniLA setting with both densities", ha="center", va="center", transform=ax.transAxes)
        return ax
    markers = {"buffer": "o", "short_run": "^"}
    for chains, marker in markers.items():
        rs = [r for r in mine if r["chains"] == chains]
        if rs:
            dots = ax.scatter(
                [r["grid_tv"] for r in rs],
                [r["sampler_grid_tv"] for r in rs],
                marker=marker,
                s=28,
                cmap="viridis",
                c=[100 * (r["clipped_share"] or 0) for r in rs],
                vmin=0,
                vmax=100,
                edgecolors="k",
                linewidths=0.3,
                label=f"{chains} chains",
            )
    top = max(max(r["grid_tv"], r["sampler_grid_tv"]) for r in mine) * 1.05
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.figure.colorbar(dots, ax=ax, label="clipped coordinates (%)")
    ax.set_xlabel("grid TV of exp(−E)")
    ax.set_ylabel("grid TV of its sampler's density")
    ax.set_title("AniLA: which density did training fit?", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_clipping(summary: dict, ax=None):
    """For every finished AniLA cell: the share of clipped coordinates against its final quality, coloured by step
    size."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    key = quality_key(summary)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    cells = [
        r
        for r in summary["cells"]
        if uses_b(r["kind"]) and not r["diverged"] and r.get("clipped_share") is not None and key in r["final"]
    ]
    markers = {"anila": "o", "anila_sample": "s", "anila_noise": "^", "anila_mh": "D", "anila_pixel": "v"}
    steps = [r["step_size"] for r in cells] or [1.0]
    norm = LogNorm(min(steps), max(steps) if max(steps) > min(steps) else min(steps) * 10)
    dots = None
    for kind in markers:
        mine = [r for r in cells if r["kind"] == kind]
        if mine:
            dots = ax.scatter(
                [100 * r["clipped_share"] for r in mine],
                [r["final"][key] for r in mine],
                c=[r["step_size"] for r in mine],
                cmap="plasma",
                norm=norm,
                marker=markers[kind],
                s=22,
                edgecolors="k",
                linewidths=0.3,
                label=kind,
            )
    if dots is not None:
        ax.figure.colorbar(dots, ax=ax, label="step size ε")
        ax.legend(fontsize=7)
    ax.set_xlabel("coordinates with |∇E| > b (%, mean over training)")
    ax.set_ylabel(f"final {QUALITY_LABELS[key]}")
    ax.set_title("how much AniLA clips, and what it costs or buys", fontsize=10)
    return ax


def plot_histories(summary: dict, settings: Sequence[dict], metric: str = "energy_gap", ax=None):
    """``metric`` (e.g. ``energy_gap``, ``grid_tv``, ``clipped_share``) over training for the cells matching each of
    ``settings``, one line per seed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for n, wanted in enumerate(settings):
        colour = f"C{n}"
        matches = [r for r in summary["cells"] if all(r.get(k) == v for k, v in wanted.items())]
        if not matches:
            raise ValueError(f"settings: no cell of the sweep matches {wanted}")
        for i, r in enumerate(matches):
            rows = [h for h in r["history"] if metric in h]
            label = _setting_label(wanted, settings) if i == 0 else None
            ax.plot(
                [h["iter"] for h in rows], [h[metric] for h in rows], "o-", ms=3, color=colour, alpha=0.8, label=label
            )
            if r["diverged"]:
                ax.axvline(r["diverged_at"], color=colour, ls=":", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.legend(fontsize=7)
    return ax


#: how plot_histories names a sampler kind and a metric in its legend and axis
_KIND_LABELS = {
    "langevin": "Langevin",
    "mala": "MALA",
    "anila": "AniLA",
    "anila_sample": "AniLA (sample norm)",
    "anila_pixel": "AniLA (pixel norm)",
    "anila_noise": "AniLA (noise only)",
    "anila_mh": "AniLA + Metropolis",
    "psgld": "pSGLD",
    "hmc": "HMC",
}


_METRIC_LABELS = {
    "energy_gap": "E(data) − E(samples)",
    "grid_tv": "grid TV to target",
    "clipped_share": "share of |∇E| > b",
    "fid": "FID",
}


def _setting_label(wanted: dict, settings: Sequence[dict]) -> str:
    """A legend entry for one setting: ``Langevin, ε = 0.1``, ``AniLA, ε = 0.1, b = 30``; K, chains and seed only where
    the settings differ."""
    parts = [_KIND_LABELS.get(wanted["kind"], wanted["kind"])] if "kind" in wanted else []
    if "step_size" in wanted:
        parts.append(f"ε = {number_text(wanted['step_size'])}")
    if wanted.get("b") is not None:
        parts.append(f"b = {number_text(wanted['b'])}")
    for key, text in (("n_steps", "K = {}"), ("chains", "{} chains"), ("seed", "seed {}")):
        if key in wanted and len({str(s.get(key)) for s in settings}) > 1:
            parts.append(text.format(wanted[key]))
    return ", ".join(parts)
