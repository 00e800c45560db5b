"""What every sampling panel is built from: one set of sampler controls, a figure redrawn in place on change."""

from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as widgets

from anila_core.sampling.samplers import AniLA
from anila_core.ui import plots
from anila_core.ui.notebook_figures import figure_host, redisplay

__all__ = ["SliderRanges", "POINT_RANGES", "image_ranges", "Panel", "STYLE", "WIDTH"]

STYLE = {"description_width": "110px"}
WIDTH = "420px"


@dataclass(frozen=True)
class SliderRanges:
    """Where the sliders go: log10 bounds of b and ε, K's largest value, log10 bounds of τ (``None``: linear from 0)."""

    b_log10: tuple[float, float]
    step_log10: tuple[float, float]
    k_max: int
    noise_log10: tuple[float, float] | None
    b_format: str


#: the 2-D energies' ranges; τ is linear so that τ = 0 (no noise: gradient descent) can be set
POINT_RANGES = SliderRanges(b_log10=(-3, 3), step_log10=(-4, 0), k_max=1000, noise_log10=None, b_format=".3g")


def image_ranges(n_steps: int) -> SliderRanges:
    """The image energies' ranges, K up to ten times the run's own."""
    # image energies' gradients per pixel are far below the 2-D toys': b and τ get their own, lower ranges
    return SliderRanges(b_log10=(-5, 1), step_log10=(-3, 1), k_max=10 * n_steps, noise_log10=(-4, 0), b_format=".2g")


class Panel:
    """A live panel: controls that rerun a plain function (``_compute``), a figure changed in place (``_show``).

    A panel defines ``_build_figure`` (the figure and its artists, ending in ``_place_figure``),
    ``params`` (the controls' values as the function's keyword arguments), ``_compute`` and
    ``_show``; it lists its controls in ``self.controls`` and calls ``_start``, then ``_lay_out``.
    """

    def _sampler_sliders(self, ranges: SliderRanges, b: float, step_size: float, K: int, noise_scale: float) -> list:
        """The b, ε, K and τ sliders (the attributes ``b_slider``, ``step_slider``, ``k_slider``, ``noise_slider``)."""
        # continuous_update=False: a drag would otherwise rerun the samplers at each pixel
        common = dict(continuous_update=False, style=STYLE, layout=widgets.Layout(width=WIDTH))

        def log_slider(value: float, log10_bounds: tuple[float, float], description: str, readout: str):
            low, high = log10_bounds
            return widgets.FloatLogSlider(
                value=value,
                base=10,
                min=low,
                max=high,
                step=0.1,
                description=description,
                readout_format=readout,
                **common,
            )

        self.b_slider = log_slider(b, ranges.b_log10, "threshold b", ranges.b_format)
        self.step_slider = log_slider(step_size, ranges.step_log10, "step size ε", ".2g")
        self.k_slider = widgets.IntSlider(value=K, min=1, max=ranges.k_max, step=1, description="steps K", **common)
        if ranges.noise_log10 is None:
            self.noise_slider = widgets.FloatSlider(
                value=noise_scale, min=0.0, max=1.5, step=0.05, description="noise scale τ", **common
            )
        else:
            self.noise_slider = log_slider(noise_scale, ranges.noise_log10, "noise scale τ", ".2g")
        return [self.b_slider, self.step_slider, self.k_slider, self.noise_slider]

    def _sampler_selector(self, samplers: dict, value: str) -> widgets.ToggleButtons:
        """Buttons choosing one of ``samplers`` (label → name); also the attribute ``sampler_selector``."""
        self.sampler_selector = widgets.ToggleButtons(
            options=list(samplers.items()), value=value, description="sampler", style=STYLE
        )
        return self.sampler_selector

    def _metropolis_box(self, metropolis: bool) -> widgets.Checkbox:
        """The Metropolis test's box; also the attribute ``metropolis_checkbox``."""
        self.metropolis_checkbox = widgets.Checkbox(
            value=metropolis, description="Metropolis (MALA) test", indent=False
        )
        return self.metropolis_checkbox

    def _slider_values(self) -> dict:
        """The b, ε, K and τ sliders' values, by the samplers' argument names."""
        return {
            "step_size": self.step_slider.value,
            "b": self.b_slider.value,
            "K": self.k_slider.value,
            "noise_scale": self.noise_slider.value,
        }

    def _start(self) -> None:
        """Draw the figure, run once, and rerun whenever a control changes."""
        self.readout = widgets.HTML()
        self._build_figure()
        self.result: dict | None = None
        self.update()
        for control in self.controls:
            control.observe(self.update, names="value")

    def _lay_out(self, run_button: widgets.Button | None = None) -> None:
        """The controls (and a button below them) beside the readout, the figure below: the attribute ``widget``."""
        if run_button is not None:
            run_button.on_click(self.run_new_chains)
        column = widgets.VBox([*self.controls, *([run_button] if run_button is not None else [])])
        self.widget = widgets.VBox([widgets.HBox([column, self.readout]), self._figure_widget])

    def update(self, change=None) -> None:
        """Rerun the panel's function for the current controls and change the readout and the figure in place."""
        params = self.params()
        try:
            result = self._compute(params)
        except ValueError as err:
            self._show_error(err)
            return
        self.result = result
        self._show(result, params)
        self._redraw()

    def run_new_chains(self, button=None) -> None:
        """The panel's button: the next seed (a fresh start and fresh noise), same settings."""
        self.seed += 1
        self.update()

    def _draw_step_map(self, energy, **title_style) -> None:
        """AniLA's step-size map ``γ/ε`` at the sliders' b and ε on ``energy``, with its colour bar."""
        ax = self.axes["step_map"]
        sampler = AniLA(self.step_slider.value, self.b_slider.value)
        self.step_map = plots.plot_step_size_map(sampler, energy, ax=ax, extent=self.extent, size=self.grid_size)
        ax.set_title("AniLA step size γ/ε (min over coords)", **title_style)
        self.fig.colorbar(self.step_map, ax=ax, fraction=0.046)

    def _place_figure(self) -> None:
        """Finish the figure's layout and choose how it is shown: as ipympl's canvas widget, or in an Output widget."""
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
