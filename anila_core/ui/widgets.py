"""The notebooks' live sampling panels (known target, trained 2-D or image energy) over ``sampling_runs``."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from anila_core.sampling.distances import GRID_EXTENT, grid_log_probs
from anila_core.sampling.samplers import AniLA
from anila_core.sampling.targets import make_target
from anila_core.ui import plots
from anila_core.ui.controls import POINT_RANGES, STYLE, WIDTH, Panel, image_ranges
from anila_core.ui.notebook_figures import figure_not_shown
from anila_core.ui.sampling_runs import (
    IMAGE_SAMPLERS,
    MODEL_SAMPLERS,
    PANEL_TARGETS,
    SAMPLER_LABELS,
    check_count,
    device_of,
    format_model_readout,
    format_readout,
    on_device,
    run_comparison,
    sample_trained,
    sample_trained_images,
)

__all__ = [
    "SamplingPanel",
    "sampling_panel",
    "ModelSamplingPanel",
    "model_sampling_panel",
    "trained_model_panel",
    "ImageSamplingPanel",
    "image_sampling_panel",
]


def _chain_settings(panel: Panel) -> dict:
    """What both panels on points pass their sampling alike: the sliders' values, the seed, the Metropolis box and the
    plotted window."""
    return {
        **panel._slider_values(),
        "seed": panel.seed,
        "metropolis": panel.metropolis_checkbox.value,
        "extent": panel.extent,
    }


# --------------------------------------------------------------------------- a known target


class SamplingPanel(Panel):
    """Sliders for ``b``, ``ε``, ``K``, ``τ``, a target dropdown and a Metropolis box over one live figure.

    Every control calls ``update``, which reruns ``run_comparison`` and changes the figure's
    artists in place (``set_offsets``, ``set_data``): left Langevin, middle AniLA, right
    AniLA's step-size map ``γ/ε``. With the ipympl backend (``%matplotlib widget``) the
    figure canvas is itself a widget and is redrawn live; with any other backend it is shown
    through an ``Output`` widget and re-displayed after each change. Widgets and artists are
    attributes (``b_slider``, ``step_slider``, ``k_slider``, ``noise_slider``,
    ``target_dropdown``, ``metropolis_checkbox``, ``readout``, ``fig``, ``scatters``,
    ``densities``, ``step_map``) so tests can drive the panel without a browser.
    """

    def __init__(
        self,
        target: str = "rings",
        step_size: float = 0.01,
        b: float = 1.0,
        K: int = 100,
        noise_scale: float = 1.0,
        n_chains: int = 500,
        seed: int = 0,
        metropolis: bool = False,
        grid_size: int = 100,
        extent: float = GRID_EXTENT,
    ):
        if target not in PANEL_TARGETS.values():
            raise ValueError(f"target: expected one of {sorted(PANEL_TARGETS.values())}, got {target!r}")
        self.n_chains = check_count("n_chains", n_chains)
        self.seed = seed
        self.grid_size = check_count("grid_size", grid_size)
        self.extent = extent
        self.target_dropdown = widgets.Dropdown(
            options=list(PANEL_TARGETS.items()),
            value=target,
            description="target",
            style=STYLE,
            layout=widgets.Layout(width=WIDTH),
        )
        self.controls = [
            self.target_dropdown,
            *self._sampler_sliders(POINT_RANGES, b, step_size, K, noise_scale),
            self._metropolis_box(metropolis),
        ]
        self._start()
        self._lay_out()

    def _build_figure(self) -> None:
        # the inline backend must not show the figure on creation, ipympl must not display
        # its canvas twice; the panel places it itself
        with figure_not_shown():
            self.fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
        self.axes = dict(zip(("langevin", "anila", "step_map"), axes))
        self._density_target = self.target_dropdown.value
        target = make_target(self._density_target)
        self.densities, self.scatters = {}, {}
        for name in ("langevin", "anila"):
            ax = self.axes[name]
            self.densities[name] = plots.plot_density(
                target, ax=ax, extent=self.extent, size=self.grid_size, cmap="Greys"
            )
            self.scatters[name] = plots.plot_samples(torch.zeros(1, 2), ax=ax, extent=self.extent, s=5, alpha=0.6)
            ax.set_title(SAMPLER_LABELS[name])
        self._draw_step_map(target)
        self._place_figure()

    def params(self) -> dict:
        """The current control values as ``run_comparison`` keyword arguments."""
        return {
            "target_name": self.target_dropdown.value,
            **_chain_settings(self),
            "n_chains": self.n_chains,
        }

    def _compute(self, params: dict) -> dict:
        return run_comparison(**params)

    def _show(self, result: dict, params: dict) -> None:
        self.readout.value = format_readout(result)
        if params["target_name"] != self._density_target:  # the background only changes with the target
            for image in self.densities.values():
                plots.set_density(image, result["target"], self.extent, self.grid_size)
            self._density_target = params["target_name"]
        for name, artist in self.scatters.items():
            plots.set_samples(artist, result["samples"][name], self.extent)
        plots.set_step_size_map(
            self.step_map, result["samplers"]["anila"], result["target"], extent=self.extent, size=self.grid_size
        )
        self.title.set_text(
            f"{params['target_name']}: K={params['K']}, ε={params['step_size']:.2g}, b={params['b']:.3g}"
        )


def sampling_panel(**kwargs) -> SamplingPanel:
    """Build a ``SamplingPanel`` (same keyword arguments); display it by leaving it last in a cell."""
    return SamplingPanel(**kwargs)


# --------------------------------------------------------------------------- a trained energy


class ModelSamplingPanel(Panel):
    """Sample a trained energy live: sliders for ``b``, ``ε``, ``K``, ``τ`` and HMC's L, the sampler, a Run button.

    Every slider reruns ``sample_trained`` when released (``continuous_update=False``) with
    the same seed, so a change in the picture comes from the setting, not from luck; the Run
    button draws fresh chains (the next seed). The figure is drawn once and updated in place:
    left the samples over the model's own density (normalised on the grid), right AniLA's
    step-size map ``γ/ε = b / max(b, |∇E|)`` on the model's energy for the current ``b``. The
    readout gives the mean energy at the final states (next to the data's, when ``data`` is
    given), the share of coordinates with ``|g| > b``, the acceptance rate with the
    Metropolis box ticked and how many chains diverged. Widgets and artists are attributes
    (``sampler_selector``, ``b_slider``, ``step_slider``, ``k_slider``, ``noise_slider``,
    ``leapfrog_slider``, ``metropolis_checkbox``, ``run_button``, ``readout``, ``fig``, ``scatter``, ``density``,
    ``step_map``) so tests drive the panel without a browser.
    """

    def __init__(
        self,
        energy_fn,
        sampler: str = "anila",
        step_size: float = 0.01,
        b: float = 1.0,
        K: int = 100,
        noise_scale: float = 1.0,
        n_chains: int = 500,
        seed: int = 0,
        metropolis: bool = False,
        data: torch.Tensor | None = None,
        grid_size: int = 100,
        extent: float = GRID_EXTENT,
        title: str = "trained energy",
        device=None,
        n_leapfrog: int = 5,
    ):
        if not callable(energy_fn):
            raise ValueError(
                "energy_fn: expected a callable (N, 2) → (N,), e.g. trainer.eval_model(), "
                f"got {type(energy_fn).__name__}"
            )
        if sampler not in MODEL_SAMPLERS.values():
            raise ValueError(f"sampler: expected one of {list(MODEL_SAMPLERS.values())}, got {sampler!r}")
        self.energy_fn = energy_fn
        self.device = device_of(energy_fn, device)
        self.n_chains = check_count("n_chains", n_chains)
        self.grid_size = check_count("grid_size", grid_size)
        self.seed = seed
        self.extent = extent
        self.name = title
        self.data_energy = None
        if data is not None:
            with torch.no_grad():
                self.data_energy = float(energy_fn(data.to(self.device)).mean())
        self.run_button = widgets.Button(
            description="Run (new chains)", icon="play", tooltip="draw a fresh start and noise: the next seed"
        )
        self.leapfrog_slider = widgets.IntSlider(
            value=n_leapfrog,
            min=1,
            max=50,
            step=1,
            description="HMC leapfrog L",
            continuous_update=False,
            style=STYLE,
            layout=widgets.Layout(width=WIDTH),
            tooltip="leapfrog steps per HMC transition (each costs one gradient)",
        )
        self.controls = [
            self._sampler_selector(MODEL_SAMPLERS, sampler),
            *self._sampler_sliders(POINT_RANGES, b, step_size, K, noise_scale),
            self._metropolis_box(metropolis),
            self.leapfrog_slider,
        ]
        self._start()
        self._lay_out(self.run_button)

    def _build_figure(self) -> None:
        # not shown on creation: the panel places the figure itself (see figure_not_shown)
        with figure_not_shown():
            self.fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.9))
        self.axes = dict(zip(("samples", "step_map"), axes))
        # the model does not change while the panel lives: its density is computed once
        log_p = grid_log_probs(self.energy_fn, self.extent, self.grid_size, device=self.device)
        self.density = plots.plot_density(
            log_p, ax=self.axes["samples"], extent=self.extent, size=self.grid_size, cmap="Greys"
        )
        self.scatter = plots.plot_samples(
            torch.zeros(1, 2), ax=self.axes["samples"], extent=self.extent, s=5, alpha=0.6
        )
        self.axes["samples"].set_title("samples over the learned density", fontsize=9)
        self._draw_step_map(on_device(self.energy_fn, self.device), fontsize=9)
        self._place_figure()

    def params(self) -> dict:
        """The current control values as ``sample_trained`` keyword arguments (without the energy)."""
        return {
            "sampler_name": self.sampler_selector.value,
            **_chain_settings(self),
            "n": self.n_chains,
            "device": self.device,
            "n_leapfrog": self.leapfrog_slider.value,
        }

    def _compute(self, params: dict) -> dict:
        return sample_trained(self.energy_fn, **params)

    def _show(self, result: dict, params: dict) -> None:
        self.readout.value = format_model_readout(result, self.data_energy)
        plots.set_samples(self.scatter, result["samples"], self.extent)
        # γ/ε depends on b only, so the map shows AniLA's steps whichever sampler is selected
        plots.set_step_size_map(
            self.step_map,
            AniLA(params["step_size"], params["b"]),
            on_device(self.energy_fn, self.device),
            extent=self.extent,
            size=self.grid_size,
        )
        label = next(k for k, v in MODEL_SAMPLERS.items() if v == params["sampler_name"])
        detail = (
            f"L={params['n_leapfrog']}"
            if params["sampler_name"] == "hmc"
            else f"b={params['b']:.3g}, τ={params['noise_scale']:.2g}"
        )
        self.title.set_text(f"{self.name}, {label}: K={params['K']}, ε={params['step_size']:.2g}, {detail}")


def model_sampling_panel(energy_fn, **kwargs) -> ModelSamplingPanel:
    """A ``ModelSamplingPanel`` for ``energy_fn`` (same keyword arguments); display it by leaving it last in a cell."""
    return ModelSamplingPanel(energy_fn, **kwargs)


def trained_model_panel(
    run=None, n_chains: int = 500, seed: int = 0, device=None, energy=None, **kwargs
) -> ModelSamplingPanel:
    """A ``ModelSamplingPanel`` on a finished 2-D run, started at the run's own ε, b and K.

    ``run``: a run folder, or a ``Trainer`` already in memory; by default the shipped demo's AniLA
    (ε = 0.005, b = 10), a run that clips (``anila_core.shipped.default_panel_run``). A folder is read by
    :func:`anila_core.training.run_loading.load_trainer` (``weights_only``: no code in a checkpoint
    runs; ``energy``: the spec or class of a network of your own the run names, which is
    imported only when given here). ``kwargs`` override the panel's other arguments.
    """
    from anila_core.shipped import default_panel_run, run_label
    from anila_core.training.run_loading import load_trainer

    if run is None:
        run = default_panel_run()
        if run is None:
            raise ValueError(
                "run: no run named and no shipped run found in data/trained/rings-demo; "
                "pass a run folder (e.g. runs/demo/anila after `python -m anila_core demo`)"
            )
    trainer = run if hasattr(run, "eval_model") else load_trainer(run, progress=False, device=device, energy=energy)
    c = trainer.config
    if trainer.kind.name == "images":
        raise ValueError(f"run: {c.dataset} is an image run; sample it with image_sampling_panel(trainer)")
    options = dict(
        sampler="anila",
        step_size=c.step_size,
        b=c.b,
        K=c.n_steps,
        n_chains=n_chains,
        seed=seed,
        data=trainer.target.sample(2000, torch.Generator().manual_seed(seed)),
        title=f"energy learned with {run_label(c)}",
    )
    options.update(kwargs)
    return ModelSamplingPanel(trainer.eval_model(), **options)


# --------------------------------------------------------------------------- a trained image energy


class ImageSamplingPanel(Panel):
    """Sample a trained image energy live: Langevin/AniLA, sliders for ``b``, ``ε``, ``K``, ``τ``, a New chains button.

    Every slider reruns :func:`sample_trained_images` when released, with the same seed, so a
    change in the picture comes from the setting; **New chains** draws fresh noise (the
    next seed). Left the samples, right AniLA's step-size map at them for the current ``b``.
    The sliders start at the run's own settings. Widgets and artists are attributes
    (``sampler_selector``, ``b_slider``, ``step_slider``, ``k_slider``, ``noise_slider``,
    ``run_button``, ``fig``, ``grid_image``, ``map_image``, ``result``) so tests drive it
    without a browser.
    """

    def __init__(self, trainer, n_images: int = 36, seed: int = 0, sampler: str = "anila"):
        if getattr(getattr(trainer, "kind", None), "name", None) != "images":
            raise ValueError(
                "trainer: expected the Trainer of an image run (load_trainer(run folder) or one trained here)"
            )
        if sampler not in IMAGE_SAMPLERS.values():
            raise ValueError(f"sampler: expected one of {list(IMAGE_SAMPLERS.values())}, got {sampler!r}")
        self.trainer = trainer
        self.n_images = check_count("n_images", n_images)
        self.seed = seed
        c = trainer.config
        self.run_button = widgets.Button(
            description="New chains", icon="play", tooltip="draw fresh noise: the next seed"
        )
        # a log slider cannot show τ = 0: a run without noise starts at its lowest value
        sliders = self._sampler_sliders(image_ranges(c.n_steps), c.b, c.step_size, c.n_steps, max(c.noise_scale, 1e-4))
        self.controls = [self._sampler_selector(IMAGE_SAMPLERS, sampler), *sliders]
        self._start()
        self._lay_out(self.run_button)

    def params(self) -> dict:
        """The current control values as :func:`sample_trained_images` keyword arguments (without the trainer)."""
        return {
            "sampler_name": self.sampler_selector.value,
            **self._slider_values(),
            "n": self.n_images,
            "seed": self.seed,
        }

    def _build_figure(self) -> None:
        from anila_core.ui.report import plot_step_size_image

        with figure_not_shown():  # drawn once, updated in place (see figure_not_shown)
            self.fig, (ax_samples, ax_map) = plt.subplots(1, 2, figsize=(8, 3.9))
        self.axes = {"samples": ax_samples, "step_map": ax_map}
        blank = torch.zeros(self.n_images, *self.trainer.data_shape)
        self.grid_image = plots.show_image_grid(blank, nrow=self._nrow(), ax=ax_samples)
        self.map_image = plot_step_size_image(torch.ones(self.trainer.data_shape[-2:]), ax=ax_map)
        self._place_figure()

    def _nrow(self) -> int:
        return max(1, int(self.n_images**0.5))

    def _compute(self, params: dict) -> dict:
        return sample_trained_images(self.trainer, **params)

    def _show(self, result: dict, params: dict) -> None:
        self.readout.value = ""
        self.grid_image.set_data(plots.sample_image_grid(result["images"], nrow=self._nrow()))
        self.map_image.set_data(result["step_map"].numpy())
        label = next(k for k, v in IMAGE_SAMPLERS.items() if v == params["sampler_name"])
        self.axes["samples"].set_title(
            f"{label}: K={params['K']}, ε={params['step_size']:.2g}, τ={params['noise_scale']:.2g}, "
            f"seed {params['seed']}",
            fontsize=9,
        )
        self.axes["step_map"].set_title(
            f"AniLA γ/ε at b = {params['b']:.2g}: mean {float(result['step_map'].mean()):.2f}", fontsize=9
        )


def image_sampling_panel(trainer, **kwargs) -> ImageSamplingPanel:
    """An ``ImageSamplingPanel`` on ``trainer`` (same keyword arguments); display it by leaving it last in a cell."""
    return ImageSamplingPanel(trainer, **kwargs)
