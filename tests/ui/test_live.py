"""Live training plots: LivePlot redraws its artists in place from the history, run_together trains side by side without
changing results."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anila_core.training.presets import preset
from anila_core.ui.live import LivePlot, run_together  # noqa: E402
from anila_core.ui.report import markdown_table  # noqa: E402
from anila_core.training.guard import TrainingDiverged, divergence_record  # noqa: E402
from anila_core.training.runs import Run  # noqa: E402
from anila_core.training.trainer import Trainer  # noqa: E402


def tiny(sampler, **kw):
    # b = 0.05 so that AniLA really clips on the smoke model (its gradients are ≈ 0.1–1)
    settings = dict(device="cpu", iters=20, eval_every=10, **({"b": 0.05} if sampler == "anila" else {}))
    return preset("smoke", sampler, **{**settings, **kw})


@pytest.fixture
def trainers():
    return {"Langevin": Trainer(tiny("langevin"), progress=False), "AniLA": Trainer(tiny("anila"), progress=False)}


def test_lines_follow_the_history_and_artists_are_updated_in_place(trainers):
    live = LivePlot(trainers, grid_size=24, n_samples=40)
    fig, lines, densities, scatters = live.fig, live.lines, dict(live.densities), dict(live.scatters)
    line_objects = {(c, lbl): line for c, by_label in lines.items() for lbl, line in by_label.items()}
    before = {label: np.array(image.get_array()) for label, image in densities.items()}
    assert all(len(line.get_xdata()) == 0 for line in line_objects.values())  # nothing trained yet

    run_together(trainers.values(), callback=live)

    assert live.fig is fig and live.n_updates == 4  # 2 evaluations × 2 trainers, one figure
    for (curve, label), line in line_objects.items():
        assert live.lines[curve][label] is line
        history = trainers[label].history
        np.testing.assert_array_equal(line.get_xdata(), [r["iter"] for r in history])
        expected = [r.get(curve, math.nan) for r in history]
        np.testing.assert_array_equal(line.get_ydata(), expected)  # NaN == NaN here: a gap, not a zero
    assert np.isnan(live.lines["clipped_share"]["Langevin"].get_ydata()).all()
    assert 0 < live.lines["clipped_share"]["AniLA"].get_ydata()[-1] <= 1
    for label, trainer in trainers.items():
        assert live.densities[label] is densities[label] and live.scatters[label] is scatters[label]
        assert not np.allclose(live.densities[label].get_array(), before[label])  # the learned density moved
        np.testing.assert_allclose(live.scatters[label].get_offsets(), trainer.samples[:40].numpy(), rtol=1e-6)
        assert f"iter {trainer.iteration}" in live.titles[label].get_text()
    # the curves' axes follow the data (the gap is not confined to a fixed range)
    gap_ax = live.curve_axes["energy_gap"]
    gaps = [r["energy_gap"] for t in trainers.values() for r in t.history]
    low, high = gap_ax.get_ylim()
    assert low <= min(gaps) and high >= max(gaps)


def test_it_is_a_plain_trainer_run_callback(trainers):
    trainer = trainers["AniLA"]
    live = LivePlot({"AniLA": trainer}, curves=("grid_tv", "mmd"), grid_size=20)
    trainer.run(callback=live)
    assert live.n_updates == len(trainer.history) == 2
    np.testing.assert_array_equal(live.lines["mmd"]["AniLA"].get_ydata(), [r["mmd"] for r in trainer.history])


def test_taking_turns_gives_the_same_runs_as_training_alone(trainers):
    run_together(trainers.values())
    alone = Trainer(tiny("anila"), progress=False)
    alone.run()
    drop = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert drop(trainers["AniLA"].history) == drop(alone.history)
    for p, q in zip(trainers["AniLA"].model.parameters(), alone.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [t.iteration for t in trainers.values()] == [20, 20]


def test_run_together_respects_each_trainers_own_evaluation_points():
    a = Trainer(tiny("langevin", eval_every=5), progress=False)
    b = Trainer(tiny("anila", eval_every=7), progress=False)
    run_together([a, b], iters=14)
    assert [r["iter"] for r in a.history] == [5, 10, 14]
    assert [r["iter"] for r in b.history] == [7, 14]


def test_run_together_stops_a_trainer_that_diverges_and_trains_the_others():
    a = Trainer(tiny("langevin", max_energy_gap=1e-9), progress=False)  # a gap bound no energy meets
    b = Trainer(tiny("anila"), progress=False)
    diverged = run_together([a, b])
    assert diverged[1] is None and b.iteration == 20
    assert isinstance(diverged[0], TrainingDiverged) and a.iteration == 1
    record = divergence_record(a, diverged[0])
    assert record["diverged"] is True and record["diverged_at"] == 1 and "max_energy_gap" in record["cause"]
    assert "| Langevin | diverged at iteration 1 |" in markdown_table({"Langevin": record, "AniLA": b.summary()})
    # the tables of image and points comparisons count it too, rather than failing on its missing measures
    from anila_core.ui.points_report import points_markdown_table
    from anila_core.ui.report import image_markdown_table

    for table in (image_markdown_table, points_markdown_table):
        assert "| Langevin | diverged at iteration 1 |" in table({"Langevin": record})


def test_the_summary_is_what_a_run_directory_writes(tmp_path):
    run = Run(tmp_path / "run", tiny("anila"), progress=False)
    final = run.train()
    assert run.trainer.summary() == final
    table = markdown_table({"AniLA": run.trainer.summary()})
    assert "| AniLA |" in table and "b=0.05" in table


def test_bad_input_names_the_parameter(trainers):
    with pytest.raises(ValueError, match="trainers"):
        LivePlot({})
    with pytest.raises(ValueError, match="curves"):
        LivePlot(trainers, curves=("accuracy",))
    with pytest.raises(ValueError, match="grid_size"):
        LivePlot(trainers, grid_size=0)
    live = LivePlot({"Langevin": trainers["Langevin"]}, grid_size=16)
    with pytest.raises(ValueError, match="trainer: not one of"):
        live(trainers["AniLA"], {})
    with pytest.raises(ValueError, match="trainers"):
        run_together([])
    with pytest.raises(ValueError, match="iters"):
        run_together(trainers.values(), iters=0)
    with pytest.raises(ValueError, match="trainer: has no evaluation rows"):
        trainers["AniLA"].summary()


def test_figure_not_shown_keeps_the_interactive_mode_a_backend_turns_on_inside():
    from anila_core.ui.notebook_figures import figure_not_shown

    was = plt.isinteractive()
    try:
        for before, switched_on_inside, after in ((False, False, False), (True, False, True), (False, True, True)):
            matplotlib.interactive(before)
            with figure_not_shown():
                assert not plt.isinteractive()  # no figure is shown on creation
                if switched_on_inside:  # what IPython does when pyplot loads its backend
                    matplotlib.interactive(True)
            assert plt.isinteractive() is after
    finally:
        matplotlib.interactive(was)


@pytest.mark.slow  # starts a Jupyter kernel (≈ 10 s)
def test_a_live_plot_as_first_figure_leaves_later_inline_figures_shown(tmp_path):
    # pyplot loads its backend on the first figure; if that happens inside a plain plt.ioff()
    # block, IPython's interactive mode is switched off for good and no later figure shows
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    first = (
        "import matplotlib\n"
        "matplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt, torch\n"
        "torch.set_num_threads(1)\n"
        "from anila_core.training.presets import preset\n"
        "from anila_core.ui.live import LivePlot\n"
        "from anila_core.training.trainer import Trainer\n"
        "t = Trainer(preset('smoke', 'anila', device='cpu', iters=10), progress=False)\n"
        "live = LivePlot({'AniLA': t}, grid_size=16)\n"
        "live.show()\n"
        "t.run(callback=live)\n"
        "print(live.n_updates, type(live.widget).__name__)"
    )
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(first), nbformat.v4.new_code_cell("plt.plot([0, 1]);")]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert "1 Output" in "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[1].outputs)
