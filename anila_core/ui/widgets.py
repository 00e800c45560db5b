"""ipywidgets panels that only wire controls to plain, tested functions: ``run_comparison`` (known targets), ``sample_trained`` (a trained 2-D energy) and ``sample_trained_images`` (a trained image energy)."""

from __future__ import annotations

import html
import math
from contextlib import contextmanager

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from anila_core.ui import plots
from anila_core.sampling.distances import GRID_EXTENT, grid_log_probs
from anila_core.sampling.kernel import Trace, energy_and_grad, positive_or_inf
from anila_core.sampling.registry import applicable, make_sampler
from anila_core.sampling.samplers import AniLA
from anila_core.sampling.targets import make_target

__all__ = [
    "PANEL_TARGETS",
    "run_comparison",
    "format_readout",
    "SamplingPanel",
    "sampling_panel",
    "MODEL_SAMPLERS",
    "sample_trained",
    "format_model_readout",
    "ModelSamplingPanel",
    "model_sampling_panel",
    "trained_model_panel",
    "IMAGE_SAMPLERS",
    "sample_trained_images",
    "ImageSamplingPanel",
    "image_sampling_panel",
    "figure_not_shown",
    "figure_host",
    "redisplay",
]

#: dropdown label → ``targets.make_target`` name
PANEL_TARGETS = {
    "rings": "rings",
    "8-mode Gaussian mixture": "gmm",
    "ill-conditioned Gaussian [0.1, 10]": "ill_gaussian",
}
SAMPLER_LABELS = {"langevin": "Langevin", "anila": "AniLA"}


@contextmanager
def figure_not_shown():
    """``plt.ioff()`` for a figure that a panel places itself, leaving interactive mode as the session wants it.

    pyplot loads its backend when the first figure is made, and in IPython that turns
    interactive mode on. Inside a plain ``plt.ioff()`` block that first figure's switch-on
    is undone when the block ends, and the inline backend then shows no later figure of the
    notebook; this block turns it back on when the backend asked for it.
    """
    was_interactive = plt.isinteractive()
    with plt.ioff():
        yield
        turned_on_inside = plt.isinteractive()
    if turned_on_inside and not was_interactive:
        plt.ion()


def figure_host(fig) -> tuple[widgets.DOMWidget, widgets.Output | None]:
    """``(widget, output)``: the widget that shows ``fig``, and the ``Output`` widget to re-display it into (``None`` under ipympl).

    Under ipympl the canvas itself is a widget and redraws in place. Otherwise the figure is
    taken off pyplot's list, so that an inline backend never shows it a second time at the end
    of a cell, and an ``Output`` widget displays it instead (:func:`redisplay`).
    """
    if isinstance(fig.canvas, widgets.DOMWidget):
        return fig.canvas, None
    plt.close(fig)
    output = widgets.Output()
    return output, output


def redisplay(output: widgets.Output, fig) -> None:
    """Show ``fig`` as it is now in ``output``, in place of what was there."""
    from IPython.display import display

    with output:
        output.clear_output(wait=True)
        display(fig)


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def _readout(sampler, target, x: torch.Tensor, b: float, trace: Trace) -> dict:
    return _energy_readout(target.energy, x, b, trace)


def _energy_readout(energy_fn, x: torch.Tensor, b: float, trace: Trace) -> dict:
    """Mean energy and share of ``|g| > b`` at the finite final states, acceptance rate, diverged chains."""
    finite = torch.isfinite(x).all(1)
    out = {
        "mean_energy": math.nan,
        "share_grad_above_b": math.nan,
        "acceptance_rate": None,
        "n_diverged": int((~finite).sum()),
    }
    if finite.any():
        energy, grad = energy_and_grad(energy_fn, x[finite])
        out["mean_energy"] = float(energy.mean())
        # the same |g| the AniLA sampler thresholds, so the number explains its step-size map
        size = AniLA(1.0, b).gradient_size(grad)
        out["share_grad_above_b"] = float((size > b).float().mean())
    if trace.acceptance_rate:
        out["acceptance_rate"] = sum(trace.acceptance_rate) / len(trace.acceptance_rate)
    return out


def run_comparison(
    target_name: str = "rings",
    step_size: float = 0.01,
    b: float = 1.0,
    K: int = 100,
    noise_scale: float = 1.0,
    n_chains: int = 500,
    seed: int = 0,
    metropolis: bool = False,
    extent: float = GRID_EXTENT,
) -> dict:
    """Run Langevin and AniLA for ``K`` steps from the same uniform start and noise; return samples and readout numbers.

    Chains start uniformly on ``[-extent, extent]²`` (short-run sampling from noise). Both
    samplers get generators with the same seed, so any difference between the two panels is
    the step-size map, not luck. Returns a dict with ``target``, ``samplers``
    (name → sampler), ``x0``, ``samples`` (name → final states ``(n_chains, 2)``) and
    ``readout`` (name → mean energy at the final states, share of coordinates with
    ``|g| > b`` there, acceptance rate when ``metropolis``, number of diverged chains),
    plus ``reference`` (the mean energy of exact target samples, for scale).
    """
    target = make_target(target_name)
    K, n_chains = _check_count("K", K), _check_count("n_chains", n_chains)
    settings = dict(step_size=step_size, b=b, noise_scale=noise_scale, metropolis=metropolis)
    samplers = {name: make_sampler(name, **applicable(name, settings)) for name in ("langevin", "anila")}
    gen = torch.Generator().manual_seed(seed)
    x0 = (2 * torch.rand(n_chains, 2, generator=gen) - 1) * extent
    samples, readout = {}, {}
    for name, sampler in samplers.items():
        trace = Trace()
        chain_gen = torch.Generator().manual_seed(seed + 1)
        # allow_nonfinite: the panel counts and shows diverged chains rather than stopping at them
        samples[name] = sampler.sample(target.energy, x0, K, generator=chain_gen, trace=trace, allow_nonfinite=True)
        readout[name] = _readout(sampler, target, samples[name], b, trace)
    exact = target.sample(n_chains, gen)
    return {
        "target": target,
        "samplers": samplers,
        "x0": x0,
        "samples": samples,
        "readout": readout,
        "reference": {"mean_energy": float(target.energy(exact).mean())},
    }


def _fmt(value, spec: str) -> str:
    if value is None:
        return "–"
    return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def format_readout(result: dict) -> str:
    """An HTML table of ``run_comparison``'s readout: one row per sampler, exact-sample mean energy below."""
    head = "<tr><th></th><th>mean E</th><th>share |g|&gt;b</th><th>acceptance</th><th>diverged</th></tr>"
    rows = []
    for name, r in result["readout"].items():
        rows.append(
            f"<tr><td><b>{SAMPLER_LABELS.get(name, name)}</b></td><td>{_fmt(r['mean_energy'], '.3f')}</td>"
            f"<td>{_fmt(r['share_grad_above_b'], '.1%')}</td><td>{_fmt(r['acceptance_rate'], '.1%')}</td>"
            f"<td>{r['n_diverged']}</td></tr>"
        )
    ref = f"<tr><td>exact samples</td><td>{result['reference']['mean_energy']:.3f}</td><td></td><td></td><td></td></tr>"
    return f"<table>{head}{''.join(rows)}{ref}</table>"


class _Panel:
    """What both panels share: the sampler's sliders, placing the figure, redrawing it, the error readout."""

    STYLE = {"description_width": "110px"}

    def _sampler_controls(self, step_size: float, b: float, K: int, noise_scale: float, metropolis: bool) -> list:
        """The b, ε, K and τ sliders and the Metropolis box (also set as attributes), in display order."""
        style, layout = self.STYLE, widgets.Layout(width="420px")
        # continuous_update=False: a drag would otherwise rerun the samplers at each pixel
        self.b_slider = widgets.FloatLogSlider(
            value=b, base=10, min=-3, max=3, step=0.1, description="threshold b",
            continuous_update=False, readout_format=".3g", style=style, layout=layout,
        )
        self.step_slider = widgets.FloatLogSlider(
            value=step_size, base=10, min=-4, max=0, step=0.1, description="step size ε",
            continuous_update=False, readout_format=".2g", style=style, layout=layout,
        )
        self.k_slider = widgets.IntSlider(
            value=K, min=1, max=1000, step=1, description="steps K", continuous_update=False, style=style, layout=layout
        )
        self.noise_slider = widgets.FloatSlider(
            value=noise_scale, min=0.0, max=1.5, step=0.05, description="noise scale τ",
            continuous_update=False, style=style, layout=layout,
        )
        self.metropolis_checkbox = widgets.Checkbox(value=metropolis, description="Metropolis (MALA) test", indent=False)
        self.readout = widgets.HTML()
        return [self.b_slider, self.step_slider, self.k_slider, self.noise_slider, self.metropolis_checkbox]

    def _start(self) -> None:
        """Draw the figure, run once, and rerun whenever a control changes."""
        self._build_figure()
        self.result: dict | None = None
        self.update()
        for control in self.controls:
            control.observe(self.update, names="value")

    def _place_figure(self) -> None:
        """Finish the figure's layout and choose how it is shown: as the ipympl canvas widget, or through an Output widget."""
        self.title = self.fig.suptitle(" ", fontsize=10)  # made now so tight_layout leaves room for it
        self.fig.tight_layout()
        self._figure_widget, self.output = figure_host(self.fig)

    def _show_error(self, err: Exception) -> None:
        # e.g. Metropolis with τ = 0: say why in the readout instead of raising in a callback
        self.readout.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"

    def _redraw(self) -> None:
        self.fig.canvas.draw_idle()
        if self.output is None:
            return
        from IPython import get_ipython

        if get_ipython() is None:  # plain Python (tests): nothing to display into
            return
        redisplay(self.output, self.fig)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
        self._redraw()


class SamplingPanel(_Panel):
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
        self.n_chains = _check_count("n_chains", n_chains)
        self.seed = seed
        self.grid_size = _check_count("grid_size", grid_size)
        self.extent = extent
        self.target_dropdown = widgets.Dropdown(
            options=list(PANEL_TARGETS.items()), value=target, description="target", style=self.STYLE,
            layout=widgets.Layout(width="420px"),
        )
        self.controls = [self.target_dropdown, *self._sampler_controls(step_size, b, K, noise_scale, metropolis)]
        self._start()
        self.widget = widgets.VBox(
            [widgets.HBox([widgets.VBox(self.controls), self.readout]), self._figure_widget]
        )

    # ------------------------------------------------------------------ figure

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
            self.densities[name] = plots.plot_density(target, ax=ax, extent=self.extent, size=self.grid_size, cmap="Greys")
            self.scatters[name] = plots.plot_samples(torch.zeros(1, 2), ax=ax, extent=self.extent, s=5, alpha=0.6)
            ax.set_title(SAMPLER_LABELS[name])
        sampler = AniLA(self.step_slider.value, self.b_slider.value)
        self.step_map = plots.plot_step_size_map(sampler, target, ax=self.axes["step_map"], extent=self.extent, size=self.grid_size)
        self.axes["step_map"].set_title("AniLA step size γ/ε (min over coords)")
        self.fig.colorbar(self.step_map, ax=self.axes["step_map"], fraction=0.046)
        self._place_figure()

    # ------------------------------------------------------------------ logic

    def params(self) -> dict:
        """The current control values as ``run_comparison`` keyword arguments."""
        return {
            "target_name": self.target_dropdown.value,
            "step_size": self.step_slider.value,
            "b": self.b_slider.value,
            "K": self.k_slider.value,
            "noise_scale": self.noise_slider.value,
            "n_chains": self.n_chains,
            "seed": self.seed,
            "metropolis": self.metropolis_checkbox.value,
            "extent": self.extent,
        }

    def update(self, change=None) -> None:
        """Rerun the comparison for the current controls and update the readout and the figure in place."""
        params = self.params()
        try:
            result = run_comparison(**params)
        except ValueError as err:
            self._show_error(err)
            return
        self.result = result
        self.readout.value = format_readout(result)
        if params["target_name"] != self._density_target:  # the background only changes with the target
            for image in self.densities.values():
                plots.set_density(image, result["target"], self.extent, self.grid_size)
            self._density_target = params["target_name"]
        for name, artist in self.scatters.items():
            plots.set_samples(artist, result["samples"][name], self.extent)
        plots.set_step_size_map(self.step_map, result["samplers"]["anila"], result["target"], extent=self.extent, size=self.grid_size)
        self.title.set_text(f"{params['target_name']}: K={params['K']}, ε={params['step_size']:.2g}, b={params['b']:.3g}")
        self._redraw()


def sampling_panel(**kwargs) -> SamplingPanel:
    """Build a ``SamplingPanel`` (same keyword arguments); display it by leaving it last in a cell."""
    return SamplingPanel(**kwargs)


# --------------------------------------------------------------------------- a trained energy

#: selector label → sampler name, for ``ModelSamplingPanel``
MODEL_SAMPLERS = {"Langevin": "langevin", "AniLA": "anila", "HMC": "hmc"}


def _device_of(energy_fn, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(energy_fn, torch.nn.Module):
        for p in energy_fn.parameters():
            return p.device
    return torch.device("cpu")


def _on_device(energy_fn, device: torch.device):
    """``energy_fn`` for inputs on any device: grid helpers build their points on the CPU."""
    if device.type == "cpu":
        return energy_fn
    return lambda x: energy_fn(x.to(device)).to(x.device)




def sample_trained(
    energy_fn,
    sampler_name: str = "anila",
    step_size: float = 0.01,
    b: float = 1.0,
    K: int = 100,
    noise_scale: float = 1.0,
    n: int = 500,
    seed: int = 0,
    metropolis: bool = False,
    extent: float = GRID_EXTENT,
    device=None,
    n_leapfrog: int = 5,
) -> dict:
    """Run ``K`` steps of one sampler on a trained energy from uniform noise on ``[-extent, extent]²``.

    ``energy_fn`` maps ``(N, 2)`` to ``(N,)`` energies (e.g. ``trainer.eval_model()``); chains
    run on ``device`` (default: where the network's parameters are). The start comes from a
    generator seeded ``seed`` and the noise from one seeded ``seed + 1``, so Langevin and AniLA
    with the same seed see the same start and the same noise (and AniLA with ``b = inf`` *is*
    Langevin). For HMC a step is one transition of ``n_leapfrog`` leapfrog steps of size
    ``step_size`` (it always ends in the Metropolis test, and ignores ``noise_scale``). Returns
    ``sampler``, ``x0`` and ``samples`` (on the CPU), ``params`` (the arguments) and
    ``readout``: mean energy and share of coordinates with ``|g| > b`` at the final states
    (finite ones), acceptance rate for Metropolis-adjusted chains (else ``None``) and the number
    of diverged chains.
    """
    if sampler_name not in MODEL_SAMPLERS.values():
        raise ValueError(f"sampler_name: expected one of {list(MODEL_SAMPLERS.values())}, got {sampler_name!r}")
    K, n = _check_count("K", K), _check_count("n", n)
    b = positive_or_inf("b", b)  # checked for Langevin too: the readout's |g| > b uses it
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    settings = dict(step_size=step_size, b=b, noise_scale=noise_scale, metropolis=metropolis, n_leapfrog=n_leapfrog)
    sampler = make_sampler(sampler_name, **applicable(sampler_name, settings))
    dev = _device_of(energy_fn, device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    x0 = (2 * torch.rand(n, 2, generator=gen, device=dev) - 1) * extent
    trace = Trace()
    chain_gen = torch.Generator(device=dev).manual_seed(seed + 1)
    # fast=False: every slider setting would be a compile of its own (seconds), longer than the sampling it saves
    x = sampler.sample(energy_fn, x0, K, generator=chain_gen, trace=trace, fast=False, allow_nonfinite=True)
    return {
        "sampler": sampler,
        "x0": x0.cpu(),
        "samples": x.cpu(),
        "readout": _energy_readout(energy_fn, x, b, trace),
        "params": {"sampler_name": sampler_name, "step_size": step_size, "b": b, "K": K,
                   "noise_scale": noise_scale, "n": n, "seed": seed, "metropolis": metropolis, "n_leapfrog": n_leapfrog},
    }


def format_model_readout(result: dict, data_energy: float | None = None) -> str:
    """An HTML table of ``sample_trained``'s readout, with the data's mean energy for scale when given.

    A trained energy is only defined up to an additive constant, so its mean on the samples
    means something only next to its mean on the data.
    """
    r, p = result["readout"], result["params"]
    label = next(k for k, v in MODEL_SAMPLERS.items() if v == p["sampler_name"])
    head = "<tr><th></th><th>mean E</th><th>share |g|&gt;b</th><th>acceptance</th><th>diverged</th></tr>"
    row = (
        f"<tr><td><b>{label}</b> (seed {p['seed']})</td><td>{_fmt(r['mean_energy'], '.3f')}</td>"
        f"<td>{_fmt(r['share_grad_above_b'], '.1%')}</td><td>{_fmt(r['acceptance_rate'], '.1%')}</td>"
        f"<td>{r['n_diverged']} / {p['n']}</td></tr>"
    )
    ref = "" if data_energy is None else f"<tr><td>data</td><td>{data_energy:.3f}</td><td></td><td></td><td></td></tr>"
    return f"<table>{head}{row}{ref}</table>"


class ModelSamplingPanel(_Panel):
    """Sample a trained energy live: sliders for ``b``, ``ε``, ``K``, ``τ`` and HMC's leapfrog steps, a Langevin/AniLA/HMC selector, a Run button.

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
            raise ValueError(f"energy_fn: expected a callable (N, 2) → (N,), e.g. trainer.eval_model(), got {type(energy_fn).__name__}")
        if sampler not in MODEL_SAMPLERS.values():
            raise ValueError(f"sampler: expected one of {list(MODEL_SAMPLERS.values())}, got {sampler!r}")
        self.energy_fn = energy_fn
        self.device = _device_of(energy_fn, device)
        self.n_chains = _check_count("n_chains", n_chains)
        self.grid_size = _check_count("grid_size", grid_size)
        self.seed = seed
        self.extent = extent
        self.name = title
        self.data_energy = None
        if data is not None:
            with torch.no_grad():
                self.data_energy = float(energy_fn(data.to(self.device)).mean())
        self.sampler_selector = widgets.ToggleButtons(options=list(MODEL_SAMPLERS.items()), value=sampler, description="sampler",
                                                      style=self.STYLE)
        self.run_button = widgets.Button(description="Run (new chains)", icon="play", tooltip="draw a fresh start and noise: the next seed")
        self.leapfrog_slider = widgets.IntSlider(
            value=n_leapfrog, min=1, max=50, step=1, description="HMC leapfrog L", continuous_update=False, style=self.STYLE,
            layout=widgets.Layout(width="420px"), tooltip="leapfrog steps per HMC transition (each costs one gradient)",
        )
        self.controls = [self.sampler_selector, *self._sampler_controls(step_size, b, K, noise_scale, metropolis), self.leapfrog_slider]
        self._start()
        self.run_button.on_click(self.run_new_chains)
        self.widget = widgets.VBox(
            [widgets.HBox([widgets.VBox([*self.controls, self.run_button]), self.readout]), self._figure_widget]
        )

    # ------------------------------------------------------------------ figure

    def _build_figure(self) -> None:
        # not shown on creation: the panel places the figure itself (see figure_not_shown)
        with figure_not_shown():
            self.fig, axes = plt.subplots(1, 2, figsize=(8.2, 3.9))
        self.axes = dict(zip(("samples", "step_map"), axes))
        on_grid = _on_device(self.energy_fn, self.device)
        # the model does not change while the panel lives: its density is computed once
        log_p = grid_log_probs(self.energy_fn, self.extent, self.grid_size, device=self.device)
        self.density = plots.plot_density(log_p, ax=self.axes["samples"], extent=self.extent, size=self.grid_size, cmap="Greys")
        self.scatter = plots.plot_samples(torch.zeros(1, 2), ax=self.axes["samples"], extent=self.extent, s=5, alpha=0.6)
        self.axes["samples"].set_title("samples over the learned density", fontsize=9)
        self.step_map = plots.plot_step_size_map(
            AniLA(self.step_slider.value, self.b_slider.value), on_grid, ax=self.axes["step_map"], extent=self.extent, size=self.grid_size
        )
        self.axes["step_map"].set_title("AniLA step size γ/ε (min over coords)", fontsize=9)
        self.fig.colorbar(self.step_map, ax=self.axes["step_map"], fraction=0.046)
        self._place_figure()

    # ------------------------------------------------------------------ logic

    def params(self) -> dict:
        """The current control values as ``sample_trained`` keyword arguments (without the energy)."""
        return {
            "sampler_name": self.sampler_selector.value,
            "step_size": self.step_slider.value,
            "b": self.b_slider.value,
            "K": self.k_slider.value,
            "noise_scale": self.noise_slider.value,
            "n": self.n_chains,
            "seed": self.seed,
            "metropolis": self.metropolis_checkbox.value,
            "extent": self.extent,
            "device": self.device,
            "n_leapfrog": self.leapfrog_slider.value,
        }

    def update(self, change=None) -> None:
        """Rerun ``sample_trained`` for the current controls and update the readout and the figure in place."""
        params = self.params()
        try:
            result = sample_trained(self.energy_fn, **params)
        except ValueError as err:
            self._show_error(err)
            return
        self.result = result
        self.readout.value = format_model_readout(result, self.data_energy)
        plots.set_samples(self.scatter, result["samples"], self.extent)
        # γ/ε depends on b only, so the map shows AniLA's steps whichever sampler is selected
        plots.set_step_size_map(
            self.step_map, AniLA(params["step_size"], params["b"]), _on_device(self.energy_fn, self.device),
            extent=self.extent, size=self.grid_size,
        )
        label = next(k for k, v in MODEL_SAMPLERS.items() if v == params["sampler_name"])
        detail = f"L={params['n_leapfrog']}" if params["sampler_name"] == "hmc" else f"b={params['b']:.3g}, τ={params['noise_scale']:.2g}"
        self.title.set_text(f"{self.name}, {label}: K={params['K']}, ε={params['step_size']:.2g}, {detail}")
        self._redraw()

    def run_new_chains(self, button=None) -> None:
        """The Run button: the next seed (a fresh start and fresh noise), same settings."""
        self.seed += 1
        self.update()


def model_sampling_panel(energy_fn, **kwargs) -> ModelSamplingPanel:
    """Build a ``ModelSamplingPanel`` for ``energy_fn`` (same keyword arguments); display it by leaving it last in a cell."""
    return ModelSamplingPanel(energy_fn, **kwargs)


def trained_model_panel(run=None, n_chains: int = 500, seed: int = 0, device=None, energy=None, **kwargs) -> ModelSamplingPanel:
    """A ``ModelSamplingPanel`` on a finished 2-D run, started at the run's own ε, b and K.

    ``run``: a run folder, or a ``Trainer`` already in memory; by default the trained AniLA
    run the repository ships (``anila_core.shipped.default_panel_run``). A folder is read by
    :func:`anila_core.training.runs.load_trainer` (``weights_only``: no code in a checkpoint
    runs; ``energy``: the spec or class of a network of your own the run names, which is
    imported only when given here). ``kwargs`` override the panel's other arguments.
    """
    from anila_core.shipped import default_panel_run, run_label
    from anila_core.training.runs import load_trainer

    if run is None:
        run = default_panel_run()
        if run is None:
            raise ValueError("run: no run named and no shipped run found in data/trained/rings-demo; "
                             "pass a run folder (e.g. runs/demo/anila after `python -m anila_core demo`)")
    trainer = run if hasattr(run, "eval_model") else load_trainer(run, progress=False, device=device, energy=energy)
    c = trainer.config
    if c.is_image:
        raise ValueError(f"run: {c.dataset} is an image run; sample it with image_sampling_panel(trainer)")
    options = dict(sampler="anila", step_size=c.step_size, b=c.b, K=c.n_steps, n_chains=n_chains, seed=seed,
                   data=trainer.target.sample(2000, torch.Generator().manual_seed(seed)),
                   title=f"energy learned with {run_label(c)}")
    options.update(kwargs)
    return ModelSamplingPanel(trainer.eval_model(), **options)


# --------------------------------------------------------------------------- a trained image energy

#: selector label → sampler name, for ``ImageSamplingPanel`` (the two samplers the image runs train with)
IMAGE_SAMPLERS = {"Langevin": "langevin", "AniLA": "anila"}


def sample_trained_images(trainer, sampler_name: str = "anila", b: float | None = None, step_size: float | None = None,
                          K: int | None = None, noise_scale: float | None = None, n: int = 36, seed: int = 0) -> dict:
    """Short-run chains from uniform noise on a trained image energy, with the run's settings where an argument is ``None``.

    The sampler is the run's own configuration with these settings replaced (its norm and
    variant kept, no Metropolis test), so ``sampler_name="anila"`` with the run's ``b`` is the
    very sampler it was trained with. Returns ``images`` (CPU, clamped as in training),
    ``step_map`` (AniLA's ``γ/ε`` per pixel at those images for this ``b`` and ε, whichever
    sampler ran) and ``params`` (the settings used).
    """
    from anila_core.images.evaluation import sample_from_noise, step_size_image
    from anila_core.sampling.registry import sampler_from_config

    c = trainer.config
    if not c.is_image:
        raise ValueError("trainer: a 2-D run; sample it with trained_model_panel or model_sampling_panel")
    if sampler_name not in IMAGE_SAMPLERS.values():
        raise ValueError(f"sampler_name: expected one of {list(IMAGE_SAMPLERS.values())}, got {sampler_name!r}")
    params = {"sampler_name": sampler_name, "b": c.b if b is None else b, "step_size": c.step_size if step_size is None else step_size,
              "K": c.n_steps if K is None else K, "noise_scale": c.noise_scale if noise_scale is None else noise_scale,
              "n": _check_count("n", n), "seed": seed}
    _check_count("K", params["K"])
    chain = sampler_from_config(c.replace(sampler=sampler_name, step_size=params["step_size"], b=params["b"],
                                          noise_scale=params["noise_scale"], metropolis=False).validate())
    images = sample_from_noise(trainer.eval_energy, chain, trainer.data_shape, n, params["K"], seed=seed,
                               clamp=c.clamp, device=trainer.device)
    ratio = step_size_image(AniLA(params["step_size"], params["b"], norm=c.norm), trainer.eval_energy, images.to(trainer.device))
    return {"images": images, "step_map": ratio, "params": params}


class ImageSamplingPanel(_Panel):
    """Sample a trained image energy live: Langevin/AniLA, sliders for ``b``, ``ε``, ``K``, ``τ``, and a New chains button.

    Every slider reruns :func:`sample_trained_images` when released, with the same seed, so a
    change in the picture comes from the setting; **New chains** draws fresh noise (the
    next seed). Left the samples, right AniLA's step-size map at them for the current ``b``.
    The sliders start at the run's own settings. Widgets and artists are attributes
    (``sampler_selector``, ``b_slider``, ``step_slider``, ``k_slider``, ``noise_slider``,
    ``run_button``, ``fig``, ``grid_image``, ``map_image``, ``result``) so tests drive it
    without a browser.
    """

    def __init__(self, trainer, n_images: int = 36, seed: int = 0, sampler: str = "anila"):
        if not getattr(getattr(trainer, "config", None), "is_image", False):
            raise ValueError("trainer: expected the Trainer of an image run (load_trainer(run folder) or one trained here)")
        if sampler not in IMAGE_SAMPLERS.values():
            raise ValueError(f"sampler: expected one of {list(IMAGE_SAMPLERS.values())}, got {sampler!r}")
        self.trainer = trainer
        self.n_images = _check_count("n_images", n_images)
        self.seed = seed
        c = trainer.config
        style, layout = self.STYLE, widgets.Layout(width="420px")
        self.sampler_selector = widgets.ToggleButtons(options=list(IMAGE_SAMPLERS.items()), value=sampler, description="sampler",
                                                      style=style)
        # image energies' gradients per pixel are far below the 2-D toys': b and τ get their own, lower ranges
        self.b_slider = widgets.FloatLogSlider(value=c.b, base=10, min=-5, max=1, step=0.1, description="threshold b",
                                               continuous_update=False, readout_format=".2g", style=style, layout=layout)
        self.step_slider = widgets.FloatLogSlider(value=c.step_size, base=10, min=-3, max=1, step=0.1, description="step size ε",
                                                  continuous_update=False, readout_format=".2g", style=style, layout=layout)
        self.k_slider = widgets.IntSlider(value=c.n_steps, min=1, max=10 * c.n_steps, description="steps K",
                                          continuous_update=False, style=style, layout=layout)
        self.noise_slider = widgets.FloatLogSlider(value=max(c.noise_scale, 1e-4), base=10, min=-4, max=0, step=0.1,
                                                   description="noise scale τ", continuous_update=False, readout_format=".2g",
                                                   style=style, layout=layout)
        self.readout = widgets.HTML()
        self.run_button = widgets.Button(description="New chains", icon="play", tooltip="draw fresh noise: the next seed")
        self.controls = [self.sampler_selector, self.b_slider, self.step_slider, self.k_slider, self.noise_slider]
        self._start()
        self.run_button.on_click(self.run_new_chains)
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox([*self.controls, self.run_button]), self.readout]), self._figure_widget])

    def params(self) -> dict:
        """The current control values as :func:`sample_trained_images` keyword arguments (without the trainer)."""
        return {"sampler_name": self.sampler_selector.value, "b": self.b_slider.value, "step_size": self.step_slider.value,
                "K": self.k_slider.value, "noise_scale": self.noise_slider.value, "n": self.n_images, "seed": self.seed}

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
        return max(1, int(self.n_images ** 0.5))

    def update(self, change=None) -> None:
        """Rerun the chains for the current controls and change the figure in place."""
        params = self.params()
        try:
            result = sample_trained_images(self.trainer, **params)
        except ValueError as err:
            self._show_error(err)
            return
        self.result = result
        self.readout.value = ""
        self.grid_image.set_data(plots.sample_image_grid(result["images"], nrow=self._nrow()))
        self.map_image.set_data(result["step_map"].numpy())
        label = next(k for k, v in IMAGE_SAMPLERS.items() if v == params["sampler_name"])
        self.axes["samples"].set_title(f"{label}: K={params['K']}, ε={params['step_size']:.2g}, τ={params['noise_scale']:.2g}, "
                                       f"seed {params['seed']}", fontsize=9)
        self.axes["step_map"].set_title(f"AniLA γ/ε at b = {params['b']:.2g}: mean {float(result['step_map'].mean()):.2f}", fontsize=9)
        self._redraw()

    def run_new_chains(self, button=None) -> None:
        """The New chains button: the next seed, same settings."""
        self.seed += 1
        self.update()


def image_sampling_panel(trainer, **kwargs) -> ImageSamplingPanel:
    """Build an ``ImageSamplingPanel`` on ``trainer`` (same keyword arguments); display it by leaving it last in a cell."""
    return ImageSamplingPanel(trainer, **kwargs)
