"""ipywidgets panels that only wire controls to plain, tested functions; ``run_comparison`` holds the logic."""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch

from . import plots
from .metrics import GRID_EXTENT
from .samplers import AniLA, Langevin, Trace, energy_and_grad
from .targets import make_target

__all__ = ["PANEL_TARGETS", "run_comparison", "format_readout", "SamplingPanel", "sampling_panel"]

#: dropdown label → ``targets.make_target`` name
PANEL_TARGETS = {
    "rings": "rings",
    "8-mode Gaussian mixture": "gmm",
    "ill-conditioned Gaussian [0.1, 10]": "ill_gaussian",
}
SAMPLER_LABELS = {"langevin": "Langevin", "anila": "AniLA"}


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def _readout(sampler, target, x: torch.Tensor, b: float, trace: Trace) -> dict:
    finite = torch.isfinite(x).all(1)
    out = {
        "mean_energy": math.nan,
        "share_grad_above_b": math.nan,
        "acceptance_rate": None,
        "n_diverged": int((~finite).sum()),
    }
    if finite.any():
        energy, grad = energy_and_grad(target.energy, x[finite])
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
    samplers = {
        "langevin": Langevin(step_size, noise_scale=noise_scale, metropolis=metropolis),
        "anila": AniLA(step_size, b, noise_scale=noise_scale, metropolis=metropolis),
    }
    gen = torch.Generator().manual_seed(seed)
    x0 = (2 * torch.rand(n_chains, 2, generator=gen) - 1) * extent
    samples, readout = {}, {}
    for name, sampler in samplers.items():
        trace = Trace()
        chain_gen = torch.Generator().manual_seed(seed + 1)
        samples[name] = sampler.sample(target.energy, x0, K, generator=chain_gen, trace=trace)
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


class SamplingPanel:
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
        style = {"description_width": "110px"}
        layout = widgets.Layout(width="420px")
        # continuous_update=False: a drag would otherwise rerun every sampler at each pixel
        self.target_dropdown = widgets.Dropdown(
            options=list(PANEL_TARGETS.items()), value=target, description="target", style=style, layout=layout
        )
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
        self.controls = [
            self.target_dropdown, self.b_slider, self.step_slider, self.k_slider, self.noise_slider, self.metropolis_checkbox,
        ]

        self._build_figure()
        self.result: dict | None = None
        self.update()
        for control in self.controls:
            control.observe(self.update, names="value")
        self.widget = widgets.VBox(
            [widgets.HBox([widgets.VBox(self.controls), self.readout]), self._figure_widget]
        )

    # ------------------------------------------------------------------ figure

    def _build_figure(self) -> None:
        # ioff: the inline backend must not show the figure on creation, ipympl must not
        # display its canvas twice; the panel places it itself
        with plt.ioff():
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
        self.title = self.fig.suptitle(" ", fontsize=10)  # made now so tight_layout leaves room for it
        self.fig.tight_layout()
        if isinstance(self.fig.canvas, widgets.DOMWidget):  # ipympl: the canvas is a widget
            self.output = None
            self._figure_widget = self.fig.canvas
        else:
            # off pyplot's list, so an inline backend never shows it a second time at the end
            # of a cell; the Output widget displays it instead
            plt.close(self.fig)
            self.output = widgets.Output()
            self._figure_widget = self.output

    def _redraw(self) -> None:
        self.fig.canvas.draw_idle()
        if self.output is None:
            return
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:  # plain Python (tests): nothing to display into
            return
        with self.output:
            self.output.clear_output(wait=True)
            display(self.fig)

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
        except ValueError as err:  # e.g. Metropolis with τ = 0: say why instead of raising in a callback
            self.readout.value = f"<span style='color:#b00'>{html.escape(str(err))}</span>"
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

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
        self._redraw()


def sampling_panel(**kwargs) -> SamplingPanel:
    """Build a ``SamplingPanel`` (same keyword arguments); display it by leaving it last in a cell."""
    return SamplingPanel(**kwargs)
