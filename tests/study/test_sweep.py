"""The sampler sweep: the grid it expands, the table it pools, and a tiny sweep end to end (parallel, resumable,
divergence recorded)."""

import json

import pytest

from anila_core.cli import main
from anila_core.study import cell as study_cell
from anila_core.study import sweep
from anila_core.study.figures import plot_quality_vs_budget
from anila_core.study.grid import Grid, cell_config, cell_id, gradients_per_iteration
from anila_core.study.reports import markdown_report
from anila_core.study.results import (
    best_settings,
    main_slice,
    paired_difference,
    search_seeds,
    summarize,
    two_density_rows,
    verdict_cells,
    verdict_settings,
    verdict_text,
)
from anila_core.study.sweep import run_sweep
from anila_core.training.presets import preset
from cli_commands import TINY_SWEEP


def tiny_base(**changes):
    return preset("smoke", "langevin", iters=10, eval_every=5, eval_samples=100, **changes)


def test_grid_gives_b_to_anila_kinds_only():
    grid = Grid(kinds=("langevin", "anila", "psgld"), step_sizes=(0.01, 0.1), bs=(1.0, 3.0, 10.0), seeds=(0, 1))
    cells = grid.cells()
    # langevin and psgld: 2 step sizes × 2 seeds; anila: × 3 thresholds
    assert len(cells) == 2 * 2 + 2 * 3 * 2 + 2 * 2
    assert all(c["b"] is None for c in cells if c["kind"] != "anila")
    assert sorted({c["b"] for c in cells if c["kind"] == "anila"}) == [1.0, 3.0, 10.0]
    assert len({cell_id(c) for c in cells}) == len(cells)
    assert cell_id(cells[0]) == "langevin-eps0.01-K30-buffer-seed0"


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(kinds=("gibbs",)), "samplers: unknown name 'gibbs'"),
        (dict(step_sizes=(0.01, -1.0)), "step_size: expected finite numbers > 0, got [-1.0]"),
        (dict(bs=(0.0,)), "b: expected numbers > 0"),
        (dict(n_steps=(0,)), "n_steps: expected integers >= 1"),
        (dict(chains=("pool",)), "chains: expected some of"),
        (dict(seeds=()), "seeds: expected at least one value"),
    ],
)
def test_grid_rejects_bad_values_by_name(changes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        Grid(**changes)


def _result(kind, eps, b, seed, tv, diverged=False, wall=10.0):
    return {
        "id": f"{kind}{eps}{b}{seed}",
        "kind": kind,
        "step_size": eps,
        "b": b,
        "n_steps": 30,
        "chains": "buffer",
        "seed": seed,
        "diverged": diverged,
        "final": {} if diverged else {"grid_tv": tv, "grid_kl": 2 * tv, "mmd": tv / 10},
        "best_grid_tv": None if diverged else tv,
        "clipped_share": None if b is None else 0.25,
        "wall_s": wall,
        "history": [] if diverged else [{"iter": 10, "wall_s": wall, "grid_tv": tv}],
    }


FIXED = {
    "base": {"dataset": "", "target": "rings", "iters": 10, "batch_size": 64, "lr": 1e-3, "lr_schedule": "constant"},
    "machine": {"cpus": 2, "torch": "x"},
    "cells": [
        _result("langevin", 0.01, None, 0, 0.2),
        _result("langevin", 0.01, None, 1, 0.4),
        _result("langevin", 0.1, None, 0, None, diverged=True),
        _result("langevin", 0.1, None, 1, 0.3),
        _result("anila", 0.01, 3.0, 0, 0.1),
        _result("anila", 0.01, 3.0, 1, 0.6),
        _result("anila", 0.1, 3.0, 0, 0.25),
        _result("anila", 0.1, 3.0, 1, 0.35),
    ],
}


def test_summary_pools_seeds_exactly():
    rows = {(r["kind"], r["step_size"]): r for r in summarize(FIXED)}
    assert rows[("langevin", 0.01)]["grid_tv"] == pytest.approx(0.3)
    assert rows[("langevin", 0.01)]["grid_tv_sd"] == pytest.approx(0.1414213562)
    assert rows[("langevin", 0.01)]["stable_share"] == 1.0
    # a diverged seed is left out of the means and counted
    assert rows[("langevin", 0.1)]["diverged"] == 1 and rows[("langevin", 0.1)]["grid_tv"] == pytest.approx(0.3)
    assert rows[("langevin", 0.1)]["stable_share"] == 0.5
    # a seed that ended at TV >= 0.5 (lost the target) is unstable without having diverged
    assert rows[("anila", 0.01)]["diverged"] == 0 and rows[("anila", 0.01)]["stable_share"] == 0.5
    assert rows[("anila", 0.01)]["clipped_share"] == 0.25
    best = {e["kind"]: e for e in best_settings(FIXED)}
    assert best["langevin"]["best"]["step_size"] == 0.01 and best["langevin"]["stable_step_sizes"] == [0.01]
    assert best["anila"]["best"]["step_size"] == 0.1 and best["anila"]["best"]["grid_tv"] == pytest.approx(0.3)
    table = markdown_report(FIXED)
    assert "| langevin | 0.1 | — | 30 | buffer | 2 | 1/2 | 1/2 | 0.300 |" in table
    assert (
        "| anila | 0.1 | 3 | 30 | buffer | 0.300 ± 0.071 | 0.1 |" in table
    )  # K and chains tell apart settings sharing ε and b


def _two_density_cell(kind, eps, b, seed, tv, sampler_tv, clipped, chains="buffer", n_steps=20, cpu=(10.0, 20.0)):
    return {
        "id": f"{kind}{eps}{b}{seed}{chains}{n_steps}",
        "kind": kind,
        "step_size": eps,
        "b": b,
        "n_steps": n_steps,
        "chains": chains,
        "seed": seed,
        "diverged": False,
        "final": {"grid_tv": tv, "sampler_grid_tv": sampler_tv},
        "best_grid_tv": tv,
        "clipped_share": clipped,
        "wall_s": 1.0,
        "history": [{"iter": 5, "cpu_s": cpu[0], "grid_tv": tv + 0.1}, {"iter": 10, "cpu_s": cpu[1], "grid_tv": tv}],
    }


TWO = {
    "base": {
        "dataset": "",
        "target": "rings",
        "iters": 10,
        "batch_size": 64,
        "lr": 1e-3,
        "lr_schedule": "constant",
        "hmc_leapfrog": 5,
    },
    "machine": {"cpus": 2, "torch": "x"},
    "cells": [
        _two_density_cell("langevin", 0.01, None, 0, 0.30, 0.30, None, cpu=(10.0, 20.0)),
        _two_density_cell("anila", 0.01, 3.0, 0, 0.40, 0.20, 0.5, cpu=(12.0, 24.0)),  # clips: sampler closer
        _two_density_cell("anila", 0.01, 30.0, 0, 0.25, 0.26, 0.0, cpu=(11.0, 22.0)),  # barely clips: nearly equal
        _two_density_cell("anila", 1.0, 0.03, 0, 0.45, 0.40, 0.9, chains="short_run"),
        _two_density_cell("hmc", 0.1, None, 0, 0.22, 0.22, None, n_steps=4, cpu=(30.0, 60.0)),
    ],
}


def test_hmc_cells_join_the_slice_of_equal_gradients_per_iteration():
    rows = summarize(TWO)
    assert {r["kind"]: r["gradients"] for r in rows if r["chains"] == "buffer"} == {
        "langevin": 20,
        "anila": 20,
        "hmc": 20,
    }
    assert main_slice(rows) == (20, "buffer")
    best = {e["kind"]: e["best"] for e in best_settings(TWO)}
    # AniLA's best is among the settings that clip: b = 30 clips nothing here, which is Langevin's chain
    assert best["hmc"]["step_size"] == 0.1 and best["anila"]["b"] == 3.0
    assert "| hmc | 0.1 | — | 4×5 | buffer |" in markdown_report(TWO)


def test_best_table_names_the_verdicts_setting_when_verdict_seeds_move_its_mean():
    """Chosen on the search seeds (those every setting ran), reported over all seeds: the table of best settings and
    the verdicts' reference are one setting, even where the verdict seeds raised its mean above another's."""
    cells = [_two_density_cell("langevin", 0.01, None, s, 0.20, 0.20, None) for s in (0, 1, 2)]
    cells += [_two_density_cell("langevin", 0.01, None, s, 0.40, 0.40, None) for s in (3, 4, 5)]  # verdict seeds
    cells += [_two_density_cell("langevin", 0.005, None, s, 0.25, 0.25, None) for s in (0, 1, 2)]
    summary = {**TWO, "cells": cells}
    best = {e["kind"]: e["best"] for e in best_settings(summary)}
    assert best["langevin"]["step_size"] == 0.01 and best["langevin"]["grid_tv"] == pytest.approx(0.30)
    assert [r["step_size"] for r in verdict_settings(summary)] == [0.01]
    text = markdown_report(summary)
    assert "| langevin | 0.01 | — | 20 | buffer | 0.300 ± 0.110 |" in text
    assert "Langevin at its best (ε=0.01, K=20, buffer)" in text


def test_report_counts_which_density_training_fitted():
    text = markdown_report(TWO)
    # three stable AniLA settings: two with the sampler's density closer to the data (0.20 < 0.40, 0.40 < 0.45)
    assert "closer to the data than exp(−E) in **2 of 3** stable settings (mean TV 0.287 against 0.367)" in text
    assert "clips more than 1 % of coordinates: **2 of 2** (mean TV 0.300 against 0.425)" in text
    assert (
        "| anila | 0.01 | 3 | 20 | buffer | 1/1 | 50.0 % | 0.400 | 0.200 | -0.200 | — | — |" in text
    )  # K tells rows apart
    # a setting that lost the target is listed but not counted
    lost = {**TWO, "cells": TWO["cells"] + [_two_density_cell("anila", 0.1, 1.0, 0, 0.95, 0.60, 0.8)]}
    text = markdown_report(lost)
    assert (
        "in **2 of 3** stable settings" in text
        and "| anila | 0.1 | 1 | 20 | buffer | 0/1 | 80.0 % | 0.950 | 0.600 | -0.350 |" in text
    )
    assert [r["b"] for r in two_density_rows(summarize(TWO))] == [3.0, 30.0, 0.03]


def test_report_shows_the_papers_rule_and_a_fixed_budget():
    text = markdown_report(TWO)
    paper = text.split("## The paper's rule")[1].split("##")[0]
    assert "b = 0.03, short_run chains, final grid TV 0.450 (90 % of coordinates clipped)" in paper
    budget = text.split("## At a fixed compute budget")[1].split("##")[0]
    # the budget is the cheapest best setting's whole run (Langevin, 20 s); HMC's first evaluation came at 30 s
    assert "**20 s**" in budget
    assert "| langevin | ε=0.01 | 20 | 20 | 0.300 | 0.300 |" in budget
    # AniLA's curve is its clipping setting (b = 3): b = 30 clips nothing, it is Langevin's chain, not a competitor
    assert "| anila | ε=0.01, b=3 | 20 | 24 | 0.500 | 0.400 |" in budget and "b=30" not in budget
    assert "| anila | ε=1, b=0.03 | 20 | 20 | 0.450 | 0.450 |" in budget  # the paper's rule, a verdict of its own
    assert "| hmc | ε=0.1 | 20 | 60 | — (not evaluated yet) | 0.220 |" in budget


def test_report_figures_for_two_densities_and_budget(tmp_path):
    written = sweep.write_report(TWO, tmp_path)
    assert [p.name for p in written] == [
        "sweep.md",
        "heatmaps.png",
        "stability.png",
        "quality_vs_budget.png",
        "two_densities.png",
    ]
    for p in written[1:]:
        assert p.read_bytes()[:4] == b"\x89PNG"
    axes = plot_quality_vs_budget(TWO)
    # gradient evaluations per chain: iterations × 20 for every sampler, HMC's 4 × 5 included
    assert [list(line.get_xdata()) for line in axes[1].get_lines()] == [[100, 200]] * 4


def test_tiny_sweep_end_to_end_parallel_and_resumable(tmp_path, monkeypatch):
    grid = Grid(kinds=("langevin", "anila"), step_sizes=(0.01, 0.05), bs=(3.0,), n_steps=(5,), seeds=(0,))
    out = tmp_path / "sweep"
    summary = run_sweep(out, grid.cells(), tiny_base(), jobs=2, progress=False)
    assert len(summary["cells"]) == 4
    for name in ("sweep.json", "sweep.md", "plan.json", "heatmaps.png", "stability.png", "quality_vs_budget.png"):
        assert (out / name).stat().st_size > 0, name
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 4
    saved = json.loads((out / "sweep.json").read_text())
    for r in saved["cells"]:
        assert not r["diverged"] and 0 <= r["final"]["grid_tv"] <= 1 and r["iters"] == 10
        assert [h["iter"] for h in r["history"]] == [5, 10]
        assert 0 < r["history"][0]["cpu_s"] <= r["history"][1]["cpu_s"]
        assert (r["clipped_share"] is None) == (r["kind"] == "langevin")
    # a finished cell is never computed again; a new cell is
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    computed = []
    real = study_cell.run_cell
    monkeypatch.setattr(
        study_cell, "run_cell", lambda base, cell, *a: computed.append(cell_id(cell)) or real(base, cell, *a)
    )
    more = Grid(kinds=("langevin",), step_sizes=(0.01, 0.02), n_steps=(5,), seeds=(0,)).cells()
    summary = run_sweep(out, grid.cells() + more[1:], tiny_base(), jobs=1, progress=False)
    assert computed == ["langevin-eps0.02-K5-buffer-seed0"]
    assert len(summary["cells"]) == 5
    assert {p.name: p.stat().st_mtime_ns for p in cells} == stamps


def test_cells_record_their_cpu_and_collecting_again_keeps_where_they_ran(tmp_path):
    from anila_core.device import processor_name

    cells = Grid(kinds=("langevin",), step_sizes=(0.01,), n_steps=(2,), seeds=(0,)).cells()
    first = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False)
    assert first["cells"][0]["cpu"] == processor_name()
    assert f"the cells ran on: {processor_name()} (1)." in (tmp_path / "sweep.md").read_text()
    # the summary as if another machine had run the cells on another day; collecting them here changes neither
    saved = json.loads((tmp_path / "sweep.json").read_text())
    saved["machine"]["processor"], saved["date"] = "Elsewhere CPU", "2000-01-01"
    (tmp_path / "sweep.json").write_text(json.dumps(saved))
    again = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False)
    assert again["machine"]["processor"] == "Elsewhere CPU" and again["date"] == "2000-01-01"
    assert "sweep.json written on" in (tmp_path / "sweep.md").read_text()
    # a cell without the record (written before cells kept it) is counted as such
    old = {**again, "cells": [{k: v for k, v in c.items() if k != "cpu"} for c in again["cells"]]}
    assert "the cells did not record their CPU" in markdown_report(old)


def test_a_diverged_cell_is_a_result(tmp_path):
    base = tiny_base(max_energy_gap=1e-12)  # the guard trips at the first iteration
    cell = dict(kind="langevin", step_size=0.01, b=None, n_steps=5, chains="buffer", seed=0)
    summary = run_sweep(tmp_path / "s", [cell], base, jobs=1, progress=False)
    r = summary["cells"][0]
    assert r["diverged"] and r["diverged_at"] == 1 and "energy gap" in r["cause"] and r["final"] == {}
    assert "| langevin | 0.01 | — | 5 | buffer | 1 | 1/1 | 1/1 | — |" in (tmp_path / "s" / "sweep.md").read_text()


def test_a_folder_with_another_sweep_or_other_files_is_refused(tmp_path):
    cell = dict(kind="langevin", step_size=0.01, b=None, n_steps=5, chains="buffer", seed=0)
    run_sweep(tmp_path / "s", [cell], tiny_base(), jobs=1, progress=False)
    with pytest.raises(ValueError, match="holds a sweep with other base settings \\(lr\\)"):
        run_sweep(tmp_path / "s", [cell], tiny_base(lr=0.01), jobs=1, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds files that are not a sweep"):
        run_sweep(tmp_path / "other", [cell], tiny_base(), jobs=1, progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_cli_sweep_writes_the_table(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main([*TINY_SWEEP, "--jobs", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sweep: 2 cells on rings, 10 iterations each" in printed and str(out / "sweep.md") in printed
    assert json.loads((out / "sweep.json").read_text())["command"].startswith("python -m anila_core")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--study", "smoke", "--samplers", "langevin"], "--study: fixes the grid and the preset; drop --samplers"),
        (["--samplers", "gibbs"], "invalid choice: 'gibbs'"),
        (["--step-size", "0"], "step_size: expected finite numbers > 0, got [0.0]"),
    ],
)
def test_cli_sweep_bad_input(tmp_path, capsys, argv, message):
    try:
        code = main(["sweep", "--out", str(tmp_path / "x"), *argv])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_digits_cells_report_fid_kid_and_coverage(tmp_path_factory, monkeypatch):
    from digits_judge import digits_data_root

    monkeypatch.delenv("ANILA_DATA", raising=False)
    root = digits_data_root(tmp_path_factory.getbasetemp())
    base = preset(
        "smoke",
        "langevin",
        dataset="digits",
        device="cpu",
        data_root=str(root),
        iters=2,
        eval_every=2,
        fid_every=2,
        fid_samples=32,
    )
    cells = Grid(kinds=("langevin", "anila"), step_sizes=(1.0,), bs=(0.1,), n_steps=(3,), chains=("short_run",)).cells()
    out = tmp_path_factory.mktemp("digits-sweep")
    summary = run_sweep(out, cells, base, jobs=1, progress=False)
    for r in summary["cells"]:
        assert (
            set(r["final"]) == {"fid", "kid", "coverage"}
            and r["final"]["fid"] >= 0
            and 0 <= r["final"]["coverage"] <= 1
        )
    table = (out / "sweep.md").read_text()
    assert (
        "| sampler | ε | b / L / λ | K | chains | seeds | diverged | FID | KID | coverage | clipped | wall s |" in table
    )
    assert "final FID" in table


def test_hmc_leapfrogs_and_psgld_damping_are_cell_settings():
    grid = Grid(
        kinds=("langevin", "hmc", "psgld"), step_sizes=(0.05,), leapfrogs=(5, 10), dampings=(1e-5, 0.1), n_steps=(4,)
    )
    ids = sorted(cell_id(c) for c in grid.cells())
    assert ids == [
        "hmc-eps0.05-L10-K4-buffer-seed0",
        "hmc-eps0.05-L5-K4-buffer-seed0",
        "langevin-eps0.05-K4-buffer-seed0",
        "psgld-eps0.05-lam0.1-K4-buffer-seed0",
        "psgld-eps0.05-lam1e-05-K4-buffer-seed0",
    ]
    cells = {cell_id(c): c for c in grid.cells()}
    config = cell_config(tiny_base(), cells["hmc-eps0.05-L10-K4-buffer-seed0"])
    assert config.sampler == "hmc" and config.hmc_leapfrog == 10 and gradients_per_iteration(config) == 40
    assert cell_config(tiny_base(), cells["psgld-eps0.05-lam0.1-K4-buffer-seed0"]).psgld_damping == 0.1
    with pytest.raises(ValueError, match="leapfrog: expected integers >= 1"):
        Grid(kinds=("hmc",), leapfrogs=(0,))


PAIRED = {
    **FIXED,
    "cells": [
        *[_result("langevin", 0.01, None, seed, tv) for seed, tv in enumerate((0.20, 0.30, 0.25, 0.22))],
        *[_result("anila", 0.01, 3.0, seed, tv) for seed, tv in enumerate((0.25, 0.36, 0.27, 0.30))],
        _result("anila", 0.1, 3.0, 0, None, diverged=True),
        *[_result("anila", 0.1, 3.0, s, 0.2 + 0.01 * s) for s in (1, 2, 3)],
    ],
}


def test_paired_difference_is_the_t_interval_of_the_seedwise_differences():
    rows = {(r["kind"], r["step_size"]): r for r in summarize(PAIRED)}
    paired = paired_difference(PAIRED, rows[("anila", 0.01)], rows[("langevin", 0.01)])
    # differences 0.05, 0.06, 0.02, 0.08: mean 0.0525, sd 0.025, t(0.975, 3) = 3.182446
    half = 3.182446305 * 0.025 / 2
    assert paired["pairs"] == 4 and paired["mean"] == pytest.approx(0.0525)
    assert (paired["low"], paired["high"]) == pytest.approx((0.0525 - half, 0.0525 + half), abs=1e-6)
    assert paired["verdict"] == "worse" and verdict_text(paired).startswith("worse (95 % interval [+0.013, +0.092])")
    # a diverged seed is counted on its side and leaves the pairs
    other = paired_difference(PAIRED, rows[("anila", 0.1)], rows[("langevin", 0.01)])
    assert (other["seeds"], other["pairs"], other["diverged"], other["reference_diverged"]) == (4, 3, 1, 0)
    # the same runs against themselves: no comparison at all
    itself = paired_difference(PAIRED, rows[("langevin", 0.01)], rows[("langevin", 0.01)])
    assert itself["verdict"] == "same chain" and "no comparison" in verdict_text(itself)


def test_an_interval_across_zero_says_no_difference_detected():
    cells = [
        *[_result("langevin", 0.01, None, s, tv) for s, tv in enumerate((0.2, 0.3, 0.25))],
        *[_result("mala", 0.01, None, s, tv) for s, tv in enumerate((0.25, 0.28, 0.24))],
    ]
    summary = {**FIXED, "cells": cells}
    rows = {r["kind"]: r for r in summarize(summary)}
    paired = paired_difference(summary, rows["mala"], rows["langevin"])
    assert paired["verdict"] == "no difference detected" and paired["low"] < 0 < paired["high"]
    assert "no difference detected (95 % interval [" in verdict_text(paired)


def test_verdict_settings_take_a_clipping_anila_and_give_them_more_seeds():
    cells = [
        *[_result("langevin", 0.01, None, s, 0.2) for s in (0, 1)],
        *[{**_result("anila", 0.01, 30.0, s, 0.2), "clipped_share": 0.0} for s in (0, 1)],  # Langevin's own chain
        *[_result("anila", 0.01, 3.0, s, 0.3) for s in (0, 1)],
    ]  # clips 25 %: worse, but a comparison
    summary = {**FIXED, "cells": cells}
    chosen = {(r["kind"], r["b"]) for r in verdict_settings(summary)}
    assert chosen == {("langevin", None), ("anila", 3.0)}
    extra = sorted(cell_id(c) for c in verdict_cells(summary, (0, 1, 2)))
    assert extra == ["anila-eps0.01-b3-K30-buffer-seed2", "langevin-eps0.01-K30-buffer-seed2"]
    report = markdown_report(summary)
    assert "## Verdicts: paired differences to Langevin" in report and "clips nothing: Langevin's chain" in report


def test_a_new_design_reuses_no_cell_of_an_older_one(tmp_path):
    cells = Grid(kinds=("langevin",), step_sizes=(0.01,), n_steps=(2,), seeds=(0,)).cells()
    first = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False, version=1)
    assert first["version"] == 1
    (tmp_path / "cells" / f"{cell_id(cells[0])}.json").unlink()  # only the summary holds it now
    again = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False, version=1)
    assert again["cells"][0]["wall_s"] == first["cells"][0]["wall_s"]  # reused from the summary
    second = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False, version=2, verdict_seeds=(0, 1))
    assert second["version"] == 2 and all(c["version"] == 2 for c in second["cells"])
    assert sorted(c["seed"] for c in second["cells"]) == [0, 1]  # the verdict seeds ran too


def test_the_product_formula_is_measured_once_per_design_and_kept(tmp_path, monkeypatch):
    calls = []

    def measured(base, bs, **kw):
        calls.append(list(bs))
        return [
            {
                "b": b,
                "formula_tv": 0.2,
                "energy_tv": 0.3,
                "floor": 0.1,
                "densities_tv": 0.4,
                "exact": False,
                "chains": 10,
                "steps": 5,
                "step_size": 0.01,
            }
            for b in bs
        ]

    monkeypatch.setattr(sweep, "product_formula_errors", measured)
    cells = Grid(kinds=("langevin", "anila"), step_sizes=(0.01,), bs=(3.0,), n_steps=(2,), seeds=(0,)).cells()
    first = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False, version=2, product_formula_check=True)
    again = run_sweep(tmp_path, cells, tiny_base(), jobs=1, progress=False, version=2, product_formula_check=True)
    assert calls == [[3.0]] and first["product_formula"] == again["product_formula"]
    assert "| 3 | 0.200 | 0.300 | 0.100 | 0.400 |" in (tmp_path / "sweep.md").read_text()


def test_verdict_settings_are_chosen_on_the_search_seeds_and_stay_chosen_after_the_verdict_seeds():
    search = [
        *[_result("langevin", 0.01, None, s, tv) for s, tv in enumerate((0.20, 0.22, 0.24))],
        *[_result("langevin", 0.05, None, s, tv) for s, tv in enumerate((0.23, 0.21, 0.25))],
    ]
    before = {**FIXED, "cells": search}
    assert search_seeds(before) == [0, 1, 2]
    chosen = verdict_settings(before)
    assert [r["step_size"] for r in chosen] == [0.01]  # mean 0.22 against 0.23
    # the chosen setting's verdict seeds come out worse: over all cells its mean (0.2425) passes the other's (0.23)
    verdict = [_result("langevin", 0.01, None, s, 0.26) for s in range(3, 10)]
    after = {**FIXED, "cells": search + verdict}
    old_rule = min(
        (r for r in summarize(after) if r["kind"] == "langevin"), key=lambda r: (-r["stable_share"], r["grid_tv"])
    )
    assert old_rule["step_size"] == 0.05, "all seeds pooled, the choice would flip"
    assert search_seeds(after) == [0, 1, 2], "the search seeds come from the cells: those every setting ran"
    again = verdict_settings(after)
    assert [r["step_size"] for r in again] == [0.01]
    # the chosen row is over all its seeds: the reports compare it there
    assert again[0]["seeds"] == list(range(10)) and again[0]["grid_tv"] == pytest.approx((0.66 + 7 * 0.26) / 10)
    assert "chosen on the search seeds (0, 1, 2" in markdown_report(after)
