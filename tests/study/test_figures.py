"""Figures that must read cleanly: no label reaching into the next panel, titles apart, legends in words, colour bars
labelled."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anila_core.study.figures import plot_heatmaps, plot_histories  # noqa: E402
from anila_core.study.results import load_sweep  # noqa: E402
from anila_core.ui import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _box(artist, renderer):
    return artist.get_window_extent(renderer)


def test_training_curves_y_labels_stay_clear_of_the_panel_on_their_left():
    history = [{"iter": i, "grid_tv": 0.5 / i, "energy_gap": -1234.5 * i, "clipped_share": 0.1} for i in range(1, 6)]
    axes = report.plot_training_curves(history)
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for left, right in zip(axes, axes[1:]):
        label = right.yaxis.get_tightbbox(renderer)  # tick labels and the axis label
        assert label.x0 > _box(left, renderer).x1, "a y label runs into the panel on its left"
    plt.close(fig)


@pytest.mark.parametrize("study", ["digits", "rings"])
def test_heatmaps_label_each_panels_step_sizes_clear_of_its_neighbour_and_keep_the_title_above(study):
    summary = load_sweep(ROOT / "docs" / "study" / study)
    axes = plot_heatmaps(summary)
    fig = axes[0].figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # each panel has the step sizes its sampler ran (HMC's are leapfrog steps), labelled beside it
    for ax in axes:
        assert [t.get_text() for t in ax.get_yticklabels()] and all(t.get_text() for t in ax.get_yticklabels())
    for left, right in zip(axes, axes[1:]):
        if abs(left.get_position().y0 - right.get_position().y0) > 1e-6:
            continue  # the panels wrap into rows: the next one starts a new row
        assert right.yaxis.get_tightbbox(renderer).x0 > _box(left, renderer).x1, (
            "step-size labels run into the panel on their left"
        )
    # readable at lecture size: numbers of at least 9 points, and a figure no wider than a slide at 100 dpi
    assert min(t.get_fontsize() for ax in axes for t in ax.texts) >= 9
    assert fig.get_size_inches()[0] <= 12.5
    title = _box(fig._suptitle, renderer)
    assert all(title.y0 >= _box(ax.title, renderer).y1 - 0.5 for ax in axes), (
        "the figure title overlaps a panel's title"
    )
    plt.close(fig)


def test_history_legend_names_settings_in_words():
    cells = [
        {
            "kind": kind,
            "step_size": 0.1,
            "b": b,
            "n_steps": 20,
            "chains": "buffer",
            "seed": seed,
            "diverged": False,
            "history": [{"iter": 100, "energy_gap": 0.0}, {"iter": 200, "energy_gap": 1.0}],
        }
        for kind, b in (("langevin", None), ("anila", 30.0))
        for seed in (0, 1)
    ]
    ax = plot_histories(
        {"cells": cells},
        [
            dict(kind="langevin", step_size=0.1, n_steps=20, chains="buffer"),
            dict(kind="anila", step_size=0.1, b=30.0, n_steps=20, chains="buffer"),
        ],
    )
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Langevin, ε = 0.1", "AniLA, ε = 0.1, b = 30"]
    assert ax.get_ylabel() == "E(data) − E(samples)"
    plt.close(ax.figure)


def test_step_size_maps_have_a_labelled_colour_bar():
    image = report.plot_step_size_image(torch.rand(8, 8))
    bars = [a for a in image.axes.figure.axes if a is not image.axes]
    assert len(bars) == 1 and bars[0].get_ylabel() == report.STEP_MAP_LABEL
    plt.close(image.axes.figure)
