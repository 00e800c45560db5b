"""Stability at one step size: counts over shared seeds, exact intervals, Fisher's test, and the report's section."""

import math

import pytest

from anila_core.study.reports import markdown_report
from anila_core.study.stability import stability_contrast, stability_contrasts, stability_text

BASE = {"dataset": "", "target": "rings", "iters": 10, "batch_size": 64, "lr": 1e-3, "lr_schedule": "constant"}


def _cell(kind, eps, seed, tv=None, b=None, diverged=False):
    return {
        "id": f"{kind}-{eps}-{b}-{seed}",
        "kind": kind,
        "step_size": eps,
        "b": b,
        "n_steps": 20,
        "chains": "buffer",
        "seed": seed,
        "diverged": diverged,
        "final": {} if diverged else {"grid_tv": tv},
        "clipped_share": None if b is None else 0.3,
        "wall_s": 1.0,
        "history": [],
    }


def _summary(cells):
    return {"base": BASE, "machine": {"cpus": 2, "torch": "x"}, "cells": cells}


SEEDS = range(10)
# at ε = 0.05 Langevin diverges (seeds 0-5) or loses the target (TV ≥ 0.5, seeds 6-9); AniLA trains every seed
CONTRAST = _summary(
    [_cell("langevin", 0.01, s, 0.25) for s in SEEDS]
    + [_cell("langevin", 0.05, s, None if s < 6 else 0.8, diverged=s < 6) for s in SEEDS]
    + [_cell("anila", 0.05, s, 0.3, b=3.0) for s in SEEDS]
)


def test_ten_stable_seeds_against_none_is_more_stable_with_exact_numbers():
    (setting, langevin, c), *rest = stability_contrasts(CONTRAST)
    assert not rest and setting["kind"] == "anila" and langevin["step_size"] == 0.05
    assert (c["seeds"], c["stable"], c["reference_stable"]) == (10, 10, 0)
    # Clopper-Pearson at 10/10 and 0/10: (α/2)^(1/n) and 1 - (α/2)^(1/n)
    assert c["low"] == pytest.approx(0.025**0.1) and c["high"] == 1.0
    assert c["reference_low"] == 0.0 and c["reference_high"] == pytest.approx(1 - 0.025**0.1)
    # Fisher, two-sided, for the most extreme 10/10 against 0/10 table: 2 / C(20, 10)
    assert c["p"] == pytest.approx(2 / math.comb(20, 10))
    assert c["verdict"] == "more stable"
    assert stability_text(c) == "more stable: 10/10 [0.69, 1.00] against 0/10 [0.00, 0.31], Fisher p = 1.1e-05"


def test_close_counts_are_no_difference_and_reversed_counts_less_stable():
    anila, langevin = (
        {"kind": k, "step_size": 0.05, "b": b, "n_steps": 20, "chains": "buffer"}
        for k, b in (("anila", 3.0), ("langevin", None))
    )
    close = _summary(
        [_cell("langevin", 0.05, s, 0.3 if s < 8 else 0.9) for s in SEEDS]
        + [_cell("anila", 0.05, s, 0.3, b=3.0) for s in SEEDS]
    )
    assert stability_contrast(close, anila, langevin)["verdict"] == "no difference detected"
    assert stability_contrast(CONTRAST, langevin, anila)["verdict"] == "less stable"


def test_only_settings_run_at_the_verdict_seeds_and_unstable_somewhere_are_contrasted():
    three_seeds = _summary([c for c in CONTRAST["cells"] if c["seed"] < 3])
    assert stability_contrasts(three_seeds) == []
    both_stable = _summary(
        [_cell("langevin", 0.05, s, 0.3) for s in SEEDS] + [_cell("anila", 0.05, s, 0.3, b=3.0) for s in SEEDS]
    )
    assert stability_contrasts(both_stable) == []


def test_the_report_prints_the_contrast():
    text = markdown_report(CONTRAST)
    assert "## Stability at the same step size" in text
    assert (
        "| anila | ε=0.05, b=3, K=20, buffer | ε=0.05, K=20, buffer | 10 | 10 | 0 | more stable: 10/10 [0.69, 1.00] "
        "against 0/10 [0.00, 0.31], Fisher p = 1.1e-05 |"
    ) in text
