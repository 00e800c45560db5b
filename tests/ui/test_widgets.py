"""The sampling panel: plain logic in run_comparison, sliders that rerun it on release and update the figure in
place."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anila_core.sampling.samplers import AniLA, Langevin  # noqa: E402
from anila_core.ui.sampling_runs import PANEL_TARGETS, format_readout, run_comparison  # noqa: E402
from anila_core.ui.widgets import sampling_panel  # noqa: E402


def test_run_comparison_runs_both_samplers_from_one_start():
    res = run_comparison("gmm", step_size=0.05, b=1.0, K=20, n_chains=64, seed=3)
    assert isinstance(res["samplers"]["langevin"], Langevin) and isinstance(res["samplers"]["anila"], AniLA)
    assert res["samples"]["langevin"].shape == res["samples"]["anila"].shape == (64, 2)
    assert (res["x0"].abs() <= 4.6).all()
    for r in res["readout"].values():
        assert 0.0 <= r["share_grad_above_b"] <= 1.0 and r["acceptance_rate"] is None and r["n_diverged"] == 0
    # same seed, same numbers; b = inf makes AniLA exactly Langevin
    again = run_comparison("gmm", step_size=0.05, b=float("inf"), K=20, n_chains=64, seed=3)
    torch.testing.assert_close(again["samples"]["anila"], again["samples"]["langevin"])
    torch.testing.assert_close(again["samples"]["langevin"], res["samples"]["langevin"])


def test_readout_numbers_are_what_they_say():
    res = run_comparison("ill_gaussian", step_size=0.01, b=1.0, K=10, n_chains=50, seed=0, metropolis=True)
    x = res["samples"]["anila"]
    energy = res["target"].energy(x)
    assert res["readout"]["anila"]["mean_energy"] == pytest.approx(float(energy.mean()), rel=1e-5)
    # |g| of the stiff coordinate is 100|x|: above b = 1 unless |x| < 0.01
    grad = torch.stack([x[:, 0] / 0.01, x[:, 1] / 100.0], 1)
    assert res["readout"]["anila"]["share_grad_above_b"] == pytest.approx(float((grad.abs() > 1.0).float().mean()))
    assert 0.0 < res["readout"]["anila"]["acceptance_rate"] <= 1.0
    assert "AniLA" in format_readout(res) and "%" in format_readout(res)


def test_a_step_size_that_breaks_langevin_is_reported_as_divergence():
    # ε = 0.1 > 4σ² = 0.04 on the stiff coordinate: Langevin's update multiplies x by −4 each step
    res = run_comparison("ill_gaussian", step_size=0.1, b=1.0, K=100, n_chains=20, seed=0)
    assert res["readout"]["langevin"]["n_diverged"] == 20
    assert res["readout"]["anila"]["n_diverged"] == 0  # AniLA's drift is capped at ε·b/2


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="target"):
        run_comparison("banana")
    with pytest.raises(ValueError, match="K"):
        run_comparison("rings", K=0)
    with pytest.raises(ValueError, match="b"):
        run_comparison("rings", b=-1.0)


@pytest.fixture
def panel():
    return sampling_panel(target="gmm", step_size=0.05, b=1.0, K=10, n_chains=40, grid_size=24)


def test_sampling_sliders_do_not_update_while_dragging(panel):
    for w in (panel.b_slider, panel.step_slider, panel.k_slider, panel.noise_slider):
        assert w.continuous_update is False
    assert type(panel.b_slider).__name__ == "FloatLogSlider" and type(panel.step_slider).__name__ == "FloatLogSlider"
    assert set(panel.target_dropdown.options) == set(PANEL_TARGETS.items())


def test_figure_shows_the_current_samples(panel):
    for name, scatter in panel.scatters.items():
        np.testing.assert_allclose(scatter.get_offsets(), panel.result["samples"][name].numpy(), rtol=1e-6)


def test_moving_b_changes_readout_samples_and_step_map_in_place(panel):
    fig, scatter, step_map = panel.fig, panel.scatters["anila"], panel.step_map
    text, offsets, image = panel.readout.value, np.array(scatter.get_offsets()), np.array(step_map.get_array())
    panel.b_slider.value = 0.05
    assert panel.fig is fig and panel.scatters["anila"] is scatter and panel.step_map is step_map  # not re-created
    assert panel.readout.value != text
    assert not np.allclose(scatter.get_offsets(), offsets)
    assert (np.asarray(step_map.get_array()) < image - 1e-6).any()  # smaller b, more shrunk steps
    np.testing.assert_allclose(scatter.get_offsets(), panel.result["samples"]["anila"].numpy(), rtol=1e-6)
    assert panel.result["samplers"]["anila"].b == pytest.approx(0.05)


def test_k_and_target_controls_rerun_and_redraw(panel):
    background = np.array(panel.densities["anila"].get_array())
    offsets = np.array(panel.scatters["langevin"].get_offsets())
    panel.k_slider.value = 12
    assert not np.allclose(panel.scatters["langevin"].get_offsets(), offsets)
    panel.target_dropdown.value = "rings"
    assert panel.result["target"].name == "rings"
    assert not np.allclose(panel.densities["anila"].get_array(), background)


def test_metropolis_box_adds_acceptance_and_bad_combination_is_explained(panel):
    assert "–" in panel.readout.value  # no acceptance rate without the test
    panel.metropolis_checkbox.value = True
    assert panel.result["readout"]["anila"]["acceptance_rate"] is not None
    panel.noise_slider.value = 0.0  # Metropolis needs noise: the panel says so instead of raising
    assert "noise_scale" in panel.readout.value
