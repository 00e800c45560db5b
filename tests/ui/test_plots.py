"""Plots draw what they claim: the density image is the grid density, the step-size map is b/max(b,|g|), samples land
where they are."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anila_core.ui import plots  # noqa: E402
from anila_core.sampling.convergence import ConvergenceResult  # noqa: E402
from anila_core.sampling.distances import grid_log_probs, grid_points  # noqa: E402
from anila_core.sampling.kernel import Trace, energy_and_grad  # noqa: E402
from anila_core.sampling.samplers import AniLA, Langevin  # noqa: E402
from anila_core.sampling.targets import Gaussian, GaussianMixture, Rings  # noqa: E402


def test_density_image_is_the_grid_density():
    rings = Rings()
    image = plots.plot_density(rings, size=60)
    expected = grid_log_probs(rings.energy, size=60).exp().numpy()
    np.testing.assert_allclose(image.get_array(), expected)
    assert image.origin == "lower" and tuple(image.get_extent()) == (-4.6, 4.6, -4.6, 4.6)
    assert image.get_array().sum() == pytest.approx(1.0)


def test_density_is_oriented_with_y_along_rows():
    # a Gaussian shifted up: its mass must sit in the upper rows of the image, centre column
    target = Gaussian([0.3, 0.3], mean=[0.0, 2.0])
    values = plots.plot_density(target, size=46).get_array()
    row, col = np.unravel_index(np.argmax(values), values.shape)
    axis, _ = grid_points(size=46)
    assert axis[row] == pytest.approx(2.0, abs=0.2) and axis[col] == pytest.approx(0.0, abs=0.2)


def test_log_density_and_precomputed_grid_agree():
    gmm = GaussianMixture()
    grid = grid_log_probs(gmm.energy, size=40)
    image = plots.plot_density(grid, size=40, log=True)
    np.testing.assert_allclose(image.get_array(), grid.numpy())
    with pytest.raises(ValueError, match="density"):
        plots.plot_density(grid, size=41)


def test_set_density_replaces_data_in_place():
    image = plots.plot_density(Rings(), size=30)
    plots.set_density(image, GaussianMixture(), size=30)
    np.testing.assert_allclose(image.get_array(), grid_log_probs(GaussianMixture().energy, size=30).exp().numpy())
    assert image.get_clim()[1] == pytest.approx(image.get_array().max())


def test_scatter_offsets_are_the_samples_and_update_in_place():
    x = torch.randn(50, 2)
    artist = plots.plot_samples(x)
    np.testing.assert_allclose(artist.get_offsets(), x.numpy(), rtol=1e-6)
    y = torch.randn(70, 2)
    plots.set_samples(artist, y)
    np.testing.assert_allclose(artist.get_offsets(), y.numpy(), rtol=1e-6)


def test_histogram_counts_the_samples_in_the_right_cells():
    x = torch.tensor([[1.05, -3.05]] * 5 + [[9.0, 9.0]])  # the last one is outside the window
    image = plots.plot_samples(x, kind="hist", bins=46)
    counts = np.asarray(image.get_array())
    assert counts.sum() == 5
    row, col = np.unravel_index(np.argmax(counts), counts.shape)
    centres = np.linspace(-4.6, 4.6, 47)[:-1] + 0.1
    assert centres[col] == pytest.approx(1.05, abs=0.1) and centres[row] == pytest.approx(-3.05, abs=0.1)
    with pytest.raises(ValueError, match="kind"):
        plots.plot_samples(x, kind="kde")
    with pytest.raises(ValueError, match="x"):
        plots.plot_samples(torch.zeros(3, 3))


def test_step_size_map_is_one_below_b_and_b_over_g_above():
    target, b = GaussianMixture(), 2.0
    sampler = AniLA(0.05, b)
    ratio = plots.step_size_map(sampler, target, size=40)
    _, pts = grid_points(size=40)
    _, grad = energy_and_grad(target.energy, pts)
    g = grad.abs().view(40, 40, 2)
    expected = torch.where(g <= b, torch.ones_like(g), b / g)
    torch.testing.assert_close(ratio, expected)
    assert (g <= b).any() and (g > b).any()  # both branches were exercised
    # the image shows the most shrunk coordinate per cell
    image = plots.plot_step_size_map(sampler, target, size=40)
    np.testing.assert_allclose(image.get_array(), expected.min(-1).values.numpy(), rtol=1e-6)


def test_step_size_map_of_langevin_is_all_ones_and_large_b_gives_langevin():
    target = Rings()
    assert torch.all(plots.step_size_map(Langevin(0.01), target, size=20) == 1)
    assert torch.all(plots.step_size_map(AniLA(0.01, float("inf")), target, size=20) == 1)
    with pytest.raises(ValueError, match="reduce"):
        plots.plot_step_size_map(AniLA(0.01, 1.0), target, size=20, reduce="median")


def test_set_step_size_map_follows_b():
    target = GaussianMixture()
    image = plots.plot_step_size_map(AniLA(0.05, 0.5), target, size=30)
    before = np.array(image.get_array())
    plots.set_step_size_map(image, AniLA(0.05, 5.0), target, size=30)
    after = np.array(image.get_array())
    assert (after >= before - 1e-7).all() and (after > before).any()  # a larger b shrinks fewer steps


def test_trajectories_follow_the_trace():
    trace = Trace(positions_at=range(11))
    Langevin(0.05).sample(
        Rings().energy, torch.full((4, 2), 3.0), 10, generator=torch.Generator().manual_seed(0), trace=trace
    )
    steps, paths = plots.trace_paths(trace)
    assert steps == list(range(11)) and paths.shape == (11, 4, 2)
    lines = plots.plot_trajectories(trace, n_show=3, density=Rings(), size=20)
    assert len(lines) == 3
    np.testing.assert_allclose(lines[1].get_xydata(), paths[:, 1].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="trace"):
        plots.trace_paths(Trace())


def test_comparison_grid_shape_and_contents():
    x, y = torch.randn(30, 2), torch.randn(40, 2)
    axes = plots.plot_comparison(
        {"a": {"Langevin": x, "AniLA": y}, "b": {"Langevin": y}}, densities={"a": Rings(), "b": Rings()}, size=20
    )
    assert axes.shape == (2, 3)
    scatter = axes[0, 2].collections[0]
    np.testing.assert_allclose(scatter.get_offsets(), y.numpy(), rtol=1e-6)
    assert not axes[1, 2].axison  # "b" has no AniLA panel


def test_convergence_plot_is_log_scale_with_floor():
    res = ConvergenceResult("mala", "g", steps=[0, 1, 10, 100], n_chains=10, tv=[1.0, 0.8, 0.3, 0.1], tv_floor=0.09)
    lines = plots.plot_convergence(res, metric="tv")
    ax = lines["mala"].axes
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    np.testing.assert_allclose(lines["mala"].get_xdata(), [1, 10, 100])  # step 0 has no place on a log axis
    assert lines["noise floor"].get_ydata()[0] == pytest.approx(0.09)
    with pytest.raises(ValueError, match="metric"):
        plots.plot_convergence(res, metric="mmd")


def test_convergence_plot_keeps_a_line_whose_unbiased_mmd_dips_below_zero():
    # an unbiased MMD² at the target scatters around 0: the negative value is drawn at a tenth of the floor, not dropped
    res = ConvergenceResult(
        "mala",
        "g",
        steps=[0, 1, 10, 100, 400],
        n_chains=10,
        tv=[1.0, 0.8, 0.3, 0.1, 0.1],
        tv_floor=0.09,
        mmd=[1.0, 0.5, 0.01, 0.002, -0.001],
        mmd_floor=0.002,
    )
    lines = plots.plot_convergence(res, metric="mmd")
    np.testing.assert_allclose(lines["mala"].get_xdata(), [1, 10, 100, 400])
    np.testing.assert_allclose(lines["mala"].get_ydata(), [0.5, 0.01, 0.002, 0.0002])
    labels = lines["mala"].axes.get_legend_handles_labels()[1]
    assert any(label.startswith("≤ 0") for label in labels)


def test_image_grid_maps_minus_one_one_to_zero_one_and_tiles():
    x = torch.stack([torch.full((3, 4, 5), -1.0), torch.full((3, 4, 5), 1.0), torch.full((3, 4, 5), 3.0)])
    grid = plots.sample_image_grid(x, nrow=2, padding=1, pad_value=0.5)
    assert grid.shape == (1 + 2 * (4 + 1), 1 + 2 * (5 + 1), 3)
    assert (grid[1:5, 1:6] == 0.0).all() and (grid[1:5, 7:12] == 1.0).all()
    assert (grid[6:10, 1:6] == 1.0).all()  # 3.0 is clipped, not rescaled
    assert (grid[6:10, 7:12] == 0.5).all()  # an empty slot is padding
    gray = plots.sample_image_grid(torch.zeros(2, 1, 4, 4), nrow=8, padding=0)
    assert gray.shape == (4, 8) and np.allclose(gray, 0.5)
    assert plots.show_image_grid(x, nrow=3).get_array().shape[-1] == 3
    with pytest.raises(ValueError, match="x"):
        plots.sample_image_grid(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="nrow"):
        plots.sample_image_grid(x, nrow=0)


def test_runs_that_coincide_stay_visible_and_the_wall_time_note_reads_the_rates():
    from types import SimpleNamespace

    from anila_core.ui.report import distinguish_runs, wall_time_note

    fig, axes = plt.subplots(1, 2)
    for ax in axes:
        for label in ("Langevin", "AniLA b = 30"):  # the same numbers: the second line lies exactly on the first
            ax.plot([1, 2, 3], [0.3, 0.2, 0.1], label=label)
        ax.legend()
    styles = distinguish_runs(axes)
    first, second = axes[0].get_lines()
    assert first.get_linestyle() != second.get_linestyle() and first.get_marker() != second.get_marker()
    assert (
        first.get_linewidth() > second.get_linewidth() and first.get_zorder() < second.get_zorder()
    )  # the wide one below
    assert set(styles) == {"Langevin", "AniLA b = 30"}
    plt.close(fig)
    slow = SimpleNamespace(history=[{"iter": 100 * i, "wall_s": 40.0 * i} for i in range(1, 5)])  # 2.5 iterations/s
    fast = SimpleNamespace(history=[{"iter": 100 * i, "wall_s": 5.0 * i} for i in range(1, 5)])  # 20 iterations/s
    note = wall_time_note({"a": slow, "b": fast})
    assert "a 2.5–2.5 (2.5)" in note and "b 20–20 (20)" in note and "×8.0" in note
    assert "×" not in wall_time_note({"a": slow, "b": slow})
