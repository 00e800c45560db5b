"""The trained-image panel of notebooks 04 and 07: sample_trained_images' logic, and sliders that rerun it and update
the figure in place."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anila_core.training.presets import preset
from anila_core.training.trainer import Trainer  # noqa: E402
from anila_core.ui.plots import sample_image_grid  # noqa: E402
from anila_core.ui.sampling_runs import sample_trained_images  # noqa: E402
from anila_core.ui.widgets import image_sampling_panel  # noqa: E402


@pytest.fixture(scope="module")
def trainer():
    t = Trainer(
        preset("smoke", "anila", dataset="digits", device="cpu", iters=3, fid_every=0, eval_every=3), progress=False
    )
    t.run()
    return t


def test_b_infinite_is_langevin_and_the_seed_fixes_the_images(trainer):
    kw = dict(step_size=0.5, K=5, n=9, seed=3)
    langevin = sample_trained_images(trainer, "langevin", b=1.0, **kw)
    anila_inf = sample_trained_images(trainer, "anila", b=float("inf"), **kw)
    torch.testing.assert_close(anila_inf["images"], langevin["images"], rtol=0, atol=0)
    assert torch.equal(sample_trained_images(trainer, "langevin", b=1.0, **kw)["images"], langevin["images"])
    assert not torch.equal(
        sample_trained_images(trainer, "langevin", b=1.0, **{**kw, "seed": 4})["images"], langevin["images"]
    )
    assert langevin["images"].shape == (9, 1, 8, 8) and langevin["images"].abs().max() <= trainer.config.clamp
    # AniLA's map at a b far above every gradient: full steps everywhere
    assert torch.allclose(anila_inf["step_map"], torch.ones(8, 8))


def test_defaults_are_the_runs_own_settings(trainer):
    c = trainer.config
    params = sample_trained_images(trainer, n=4)["params"]
    assert (params["b"], params["step_size"], params["K"], params["noise_scale"]) == (
        c.b,
        c.step_size,
        c.n_steps,
        c.noise_scale,
    )
    with pytest.raises(ValueError, match="sampler_name"):
        sample_trained_images(trainer, "hmc", n=4)
    with pytest.raises(ValueError, match="K"):
        sample_trained_images(trainer, K=0, n=4)


def test_the_panel_reruns_on_each_control_and_changes_the_figure_in_place(trainer):
    panel = image_sampling_panel(trainer, n_images=9, seed=0)
    assert panel.b_slider.value == pytest.approx(trainer.config.b) and panel.k_slider.value == trainer.config.n_steps
    image_artist, map_artist = panel.grid_image, panel.map_image
    np.testing.assert_allclose(image_artist.get_array(), sample_image_grid(panel.result["images"], nrow=3))
    panel.sampler_selector.value = "langevin"
    assert panel.result["params"]["sampler_name"] == "langevin" and "Langevin" in panel.axes["samples"].get_title()
    before = panel.result["images"]
    panel.k_slider.value = 1
    assert not torch.equal(panel.result["images"], before)
    panel.b_slider.value = 1e-5  # tiny b: AniLA's map shrinks nearly every step
    assert float(panel.result["step_map"].mean()) < 0.5
    np.testing.assert_allclose(map_artist.get_array(), panel.result["step_map"].numpy())
    seed = panel.seed
    panel.run_new_chains()
    assert panel.seed == seed + 1 and panel.result["params"]["seed"] == seed + 1
    assert panel.grid_image is image_artist  # the same artists, redrawn
    with pytest.raises(ValueError, match="trainer"):
        image_sampling_panel(object())
