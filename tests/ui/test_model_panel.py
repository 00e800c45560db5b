"""The trained-energy panel: plain logic in sample_trained, sliders that rerun it on release and update the figure in
place."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anila_core.training.presets import preset
from anila_core.sampling.kernel import energy_and_grad  # noqa: E402
from anila_core.sampling.hmc import HMC  # noqa: E402
from anila_core.sampling.samplers import AniLA, Langevin  # noqa: E402
from anila_core.training.trainer import Trainer  # noqa: E402
from anila_core.ui.sampling_runs import MODEL_SAMPLERS, format_model_readout, sample_trained  # noqa: E402
from anila_core.ui.widgets import model_sampling_panel  # noqa: E402


@pytest.fixture(scope="module")
def trainer():
    t = Trainer(preset("smoke", "anila", device="cpu", iters=10), progress=False)
    t.run()
    return t


@pytest.fixture(scope="module")
def energy(trainer):
    return trainer.eval_model()


def test_b_infinite_is_langevin_and_the_seed_fixes_the_result(energy):
    kw = dict(step_size=0.05, K=15, n=64, seed=4)
    langevin = sample_trained(energy, "langevin", b=1.0, **kw)
    anila_inf = sample_trained(energy, "anila", b=float("inf"), **kw)
    assert isinstance(langevin["sampler"], Langevin) and isinstance(anila_inf["sampler"], AniLA)
    torch.testing.assert_close(anila_inf["samples"], langevin["samples"], rtol=0, atol=0)
    torch.testing.assert_close(
        sample_trained(energy, "langevin", b=1.0, **kw)["samples"], langevin["samples"], rtol=0, atol=0
    )
    assert not torch.equal(
        sample_trained(energy, "langevin", b=1.0, **{**kw, "seed": 5})["samples"], langevin["samples"]
    )
    # same start for both samplers; a small b really changes AniLA's path
    torch.testing.assert_close(sample_trained(energy, "anila", b=0.01, **kw)["x0"], langevin["x0"])
    assert not torch.equal(sample_trained(energy, "anila", b=0.01, **kw)["samples"], langevin["samples"])
    assert langevin["samples"].shape == (64, 2) and (langevin["x0"].abs() <= 4.6).all()


def test_readout_numbers_are_what_they_say(energy):
    res = sample_trained(energy, "anila", step_size=0.02, b=0.1, K=10, n=80, seed=0)
    x = res["samples"]
    e, g = energy_and_grad(energy, x)
    r = res["readout"]
    assert r["mean_energy"] == pytest.approx(float(e.mean()), rel=1e-5)
    assert r["share_grad_above_b"] == pytest.approx(float((g.abs() > 0.1).float().mean()))
    assert r["acceptance_rate"] is None and r["n_diverged"] == 0
    mala = sample_trained(energy, "langevin", step_size=0.02, b=0.1, K=10, n=80, seed=0, metropolis=True)
    assert 0.0 < mala["readout"]["acceptance_rate"] <= 1.0
    text = format_model_readout(mala, data_energy=-1.25)
    assert "Langevin" in text and "-1.250" in text and "%" in text and "0 / 80" in text


def test_hmc_of_one_leapfrog_step_is_mala_at_the_squared_step(energy):
    kw = dict(K=8, n=64, seed=3)
    hmc = sample_trained(energy, "hmc", step_size=0.2, n_leapfrog=1, **kw)
    mala = sample_trained(energy, "langevin", step_size=0.2**2, metropolis=True, **kw)
    assert isinstance(hmc["sampler"], HMC) and hmc["sampler"].n_leapfrog == 1
    torch.testing.assert_close(hmc["samples"], mala["samples"], rtol=1e-5, atol=1e-5)
    assert hmc["readout"]["acceptance_rate"] == pytest.approx(mala["readout"]["acceptance_rate"])
    longer = sample_trained(energy, "hmc", step_size=0.2, n_leapfrog=10, **kw)
    assert longer["sampler"].n_leapfrog == 10 and not torch.allclose(longer["samples"], hmc["samples"])


def test_zero_noise_is_gradient_descent_on_the_energy(energy):
    res = sample_trained(energy, "langevin", step_size=0.1, K=1, n=16, seed=2, noise_scale=0.0)
    _, g = energy_and_grad(energy, res["x0"])
    torch.testing.assert_close(res["samples"], res["x0"] - 0.05 * g)


def test_bad_input_names_the_parameter(energy):
    for kwargs, name in [
        (dict(sampler_name="psgld"), "sampler_name"),
        (dict(sampler_name="hmc", n_leapfrog=0), "n_leapfrog"),
        (dict(K=0), "K"),
        (dict(n=0), "n"),
        (dict(b=0.0), "b"),
        (dict(seed=-1), "seed"),
        (dict(step_size=-0.1), "step_size"),
        (dict(metropolis=True, noise_scale=0.0), "metropolis"),
    ]:
        with pytest.raises(ValueError, match=name):
            sample_trained(energy, **kwargs)
    with pytest.raises(ValueError, match="energy_fn"):
        model_sampling_panel("not a model")
    with pytest.raises(ValueError, match="sampler"):
        model_sampling_panel(energy, sampler="psgld")


@pytest.fixture
def panel(energy, trainer):
    data = trainer.target.sample(200, torch.Generator().manual_seed(0))
    return model_sampling_panel(
        energy, sampler="anila", step_size=0.02, b=1.0, K=10, n_chains=40, grid_size=24, data=data
    )


def test_sliders_do_not_update_while_dragging(panel):
    for w in (panel.b_slider, panel.step_slider, panel.k_slider, panel.noise_slider):
        assert w.continuous_update is False
    assert set(panel.sampler_selector.options) == set(MODEL_SAMPLERS.items())
    assert "data" in panel.readout.value  # the data's mean energy is there for scale


def test_figure_shows_the_current_samples(panel):
    np.testing.assert_allclose(panel.scatter.get_offsets(), panel.result["samples"].numpy(), rtol=1e-6)


def test_moving_b_changes_readout_samples_and_step_map_in_place(panel):
    fig, scatter, step_map = panel.fig, panel.scatter, panel.step_map
    text, offsets, image = panel.readout.value, np.array(scatter.get_offsets()), np.array(step_map.get_array())
    panel.b_slider.value = 0.01
    assert panel.fig is fig and panel.scatter is scatter and panel.step_map is step_map  # not re-created
    assert panel.readout.value != text
    assert not np.allclose(scatter.get_offsets(), offsets)
    assert (np.asarray(step_map.get_array()) < image - 1e-6).any()  # smaller b, more shrunk steps
    np.testing.assert_allclose(scatter.get_offsets(), panel.result["samples"].numpy(), rtol=1e-6)
    assert panel.result["sampler"].b == pytest.approx(0.01)


def test_selector_step_and_k_rerun(panel):
    panel.b_slider.value = 0.01
    offsets = np.array(panel.scatter.get_offsets())
    panel.sampler_selector.value = "langevin"
    assert isinstance(panel.result["sampler"], Langevin)
    assert not np.allclose(panel.scatter.get_offsets(), offsets)
    for slider, value in ((panel.step_slider, 0.05), (panel.k_slider, 12)):
        offsets = np.array(panel.scatter.get_offsets())
        slider.value = value
        assert not np.allclose(panel.scatter.get_offsets(), offsets)
    assert panel.result["params"]["K"] == 12 and panel.result["params"]["step_size"] == pytest.approx(0.05)


def test_hmc_in_the_panel_takes_its_leapfrog_steps_from_the_slider(panel):
    panel.sampler_selector.value = "hmc"
    panel.leapfrog_slider.value = 3
    assert isinstance(panel.result["sampler"], HMC) and panel.result["sampler"].n_leapfrog == 3
    assert panel.result["readout"]["acceptance_rate"] is not None  # HMC always ends in the Metropolis test
    assert "HMC" in panel.readout.value and "L=3" in panel.title.get_text()


def test_run_button_draws_fresh_chains(panel):
    seed, offsets = panel.seed, np.array(panel.scatter.get_offsets())
    panel.run_button.click()
    assert panel.seed == seed + 1 and panel.result["params"]["seed"] == seed + 1
    assert not np.allclose(panel.scatter.get_offsets(), offsets)
    assert f"seed {seed + 1}" in panel.readout.value


def test_metropolis_adds_acceptance_and_a_bad_combination_is_explained(panel):
    assert "–" in panel.readout.value  # no acceptance rate without the test
    panel.metropolis_checkbox.value = True
    assert panel.result["readout"]["acceptance_rate"] is not None
    panel.noise_slider.value = 0.0
    assert "noise_scale" in panel.readout.value
