"""Live plots while training: a ``LivePlot`` callback that updates one figure in place, and ``run_together`` to train
side by side.

``Trainer.run(callback=fn)`` calls ``fn(trainer, row)`` after every evaluation. A
``LivePlot`` is such a callback for one or several trainers: the top row shows each
trainer's learned density (normalised on a grid) with its latest negative samples, the
bottom row the grid TV, the energy gap and the clipped share against iteration, one line per
trainer. The figure is drawn once; each call only changes the artists' data
(``set_data``, ``set_offsets``) and redraws, so a long run shows progress without piling up
figures.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch

from anila_core.ui import plots
from anila_core.sampling.distances import GRID_EXTENT, grid_log_probs
from anila_core.ui.notebook_figures import figure_host, figure_not_shown, redisplay

__all__ = ["CURVES", "LivePlot", "run_together"]

#: history keys a ``LivePlot`` can draw → axis label
CURVES = {
    "grid_tv": "grid TV to target",
    "energy_gap": "E(data) − E(samples)",
    "clipped_share": "share of |∇E| > b",
    "grid_kl": "grid KL (nats)",
    "mmd": "MMD² to target",
    "loss": "loss",
    "grad_norm": "mean |∇E| of the chains",
    "acceptance": "acceptance rate",
    "global_accept": "acceptance of the global moves",
    "lr": "learning rate",
}
#: curves that are shares or TV, drawn on a fixed [0, 1] axis: a fixed scale reads at a glance
UNIT_CURVES = ("grid_tv", "clipped_share", "acceptance", "global_accept")


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return value


def run_together(trainers: Iterable, iters: int | None = None, callback: Callable | None = None) -> list:
    """Train several trainers in turns, one evaluation interval each, so live curves grow side by side.

    Each trainer stops only at its own evaluation points (multiples of its ``eval_every``)
    or at its end, so its history and parameters are exactly those of one uninterrupted
    ``trainer.run(iters)``: taking turns changes the order of the work, not the result.
    ``iters`` defaults to each trainer's ``config.iters``. A trainer that diverges stops there
    and the others go on (a comparison's result, as in ``compare``): returns, per trainer, its
    :class:`~anila_core.training.guard.TrainingDiverged` or ``None``.
    """
    from anila_core.training.guard import TrainingDiverged

    trainers = list(trainers)
    if not trainers:
        raise ValueError("trainers: expected at least one Trainer")
    if iters is not None:
        _count("iters", iters)
    ends = [t.config.iters if iters is None else iters for t in trainers]
    diverged: list = [None] * len(trainers)
    while True:
        moved = False
        for i, (trainer, end) in enumerate(zip(trainers, ends)):
            if trainer.iteration >= end or diverged[i] is not None:
                continue
            every = trainer.config.eval_every
            stop = min((trainer.iteration // every + 1) * every, end)
            try:
                trainer.run(stop, callback=callback)
            except TrainingDiverged as err:
                diverged[i] = err
            moved = True
        if not moved:
            return diverged


class LivePlot:
    """A ``Trainer.run`` callback that keeps one figure of several trainers up to date, in place.

    ``trainers`` maps a label to a ``Trainer`` (the figure's columns, in order). ``curves``
    names the history keys drawn in the bottom row (see ``CURVES``); a row that lacks a key
    (Langevin has no clipped share) leaves a gap rather than a made-up zero. ``grid_size``
    sets the resolution of the density images and ``n_samples`` how many negative samples
    are drawn over them. Artists are attributes so tests can check them: ``densities`` and
    ``scatters`` (label → artist), ``lines`` (curve → label → ``Line2D``), ``fig``.

    Call it as ``trainer.run(callback=live)`` or ``run_together(trainers, callback=live)``;
    ``show()`` displays the figure first (it is also called on the first update). With the
    ipympl backend (``%matplotlib widget``) the canvas is a widget redrawn live; otherwise the
    figure is shown through an ``Output`` widget and re-displayed after each update.
    """

    def __init__(
        self,
        trainers: Mapping[str, object],
        curves: Iterable[str] = ("grid_tv", "energy_gap", "clipped_share"),
        grid_size: int = 80,
        n_samples: int = 500,
        extent: float = GRID_EXTENT,
        panel_size: float = 3.0,
    ):
        if not isinstance(trainers, Mapping) or not trainers:
            raise ValueError("trainers: expected a non-empty mapping label → Trainer")
        self.trainers = dict(trainers)
        self.curves = list(curves)
        unknown = [c for c in self.curves if c not in CURVES]
        if unknown or not self.curves:
            raise ValueError(f"curves: expected a non-empty list from {sorted(CURVES)}, got {list(curves)!r}")
        self.grid_size = _count("grid_size", grid_size)
        self.n_samples = _count("n_samples", n_samples)
        self.extent = float(extent)
        self.n_updates = 0
        self._shown = False
        self._build_figure(panel_size)

    # ------------------------------------------------------------------ figure

    def _build_figure(self, panel_size: float) -> None:
        n_top, n_bottom = len(self.trainers), len(self.curves)
        width = panel_size * max(n_top, n_bottom)
        # not shown on creation: the figure is placed by show() (see notebook_figures.figure_not_shown)
        with figure_not_shown():
            self.fig = plt.figure(figsize=(width, 2 * panel_size + 0.6), layout="constrained")
        top, bottom = self.fig.subfigures(2, 1, height_ratios=[1.15, 1])
        density_axes = top.subplots(1, n_top, squeeze=False)[0]
        curve_axes = bottom.subplots(1, n_bottom, squeeze=False)[0]
        self.density_axes = dict(zip(self.trainers, density_axes))
        self.curve_axes = dict(zip(self.curves, curve_axes))
        self.densities, self.scatters, self.titles = {}, {}, {}
        for label, trainer in self.trainers.items():
            ax = self.density_axes[label]
            self.densities[label] = plots.plot_density(
                self._log_p(trainer), ax=ax, extent=self.extent, size=self.grid_size
            )
            self.scatters[label] = plots.plot_samples(
                np.zeros((0, 2)), ax=ax, extent=self.extent, s=4, alpha=0.6, color="tab:red"
            )
            self.titles[label] = ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        self.lines: dict[str, dict[str, object]] = {}
        for curve, ax in self.curve_axes.items():
            self.lines[curve] = {}
            for i, label in enumerate(self.trainers):
                (self.lines[curve][label],) = ax.plot([], [], "o-", ms=3, color=colors[i % len(colors)], label=label)
            ax.set_xlabel("iteration", fontsize=8)
            ax.set_ylabel(CURVES[curve], fontsize=8)
            ax.tick_params(labelsize=7)
            if curve == "energy_gap":
                ax.axhline(0.0, color="grey", lw=0.8)
            if curve in UNIT_CURVES:
                ax.set_ylim(0.0, 1.0)
        next(iter(self.curve_axes.values())).legend(fontsize=7)
        for label, trainer in self.trainers.items():
            self._update_trainer(label, trainer)
        # loaded runs arrive with their whole history: fit the axes to it now, not at a first update that never comes
        self._rescale()
        self.widget, self.output = figure_host(self.fig)

    def _log_p(self, trainer) -> torch.Tensor:
        with torch.no_grad():
            log_p = grid_log_probs(trainer.eval_model(), self.extent, self.grid_size, device=trainer.device)
        trainer.model.train()  # eval_model() may have switched it to eval mode; training continues after us
        return log_p

    # ------------------------------------------------------------------ updates

    def _label_of(self, trainer) -> str:
        for label, t in self.trainers.items():
            if t is trainer:
                return label
        raise ValueError(f"trainer: not one of this LivePlot's trainers (labels {list(self.trainers)})")

    def _update_trainer(self, label: str, trainer) -> None:
        history = trainer.history
        iters = [r["iter"] for r in history]
        for curve, lines in self.lines.items():
            lines[label].set_data(iters, [r.get(curve, math.nan) for r in history])
        plots.set_density(self.densities[label], self._log_p(trainer), self.extent, self.grid_size)
        samples = trainer.samples
        if samples is None and history:  # a loaded run: its chains, not its last batch
            samples = trainer.sample_for_eval()
        if samples is not None:
            plots.set_samples(self.scatters[label], samples[: self.n_samples].detach().cpu())
        title = f"{label}: iter {trainer.iteration}"
        if history:
            title += f", TV {history[-1]['grid_tv']:.3f}"
        self.titles[label].set_text(title)

    def _rescale(self) -> None:
        for curve, ax in self.curve_axes.items():
            ax.relim()
            ax.autoscale_view(scaley=curve not in UNIT_CURVES)

    def __call__(self, trainer, row: dict | None = None) -> None:
        """The callback: redraw ``trainer``'s density, samples and curves from its history (``row`` is its last
        entry)."""
        self._update_trainer(self._label_of(trainer), trainer)
        self._rescale()
        self.n_updates += 1
        self.redraw()

    def update(self) -> None:
        """Redraw every trainer from its current state (e.g. after loading finished runs)."""
        for label, trainer in self.trainers.items():
            self._update_trainer(label, trainer)
        self._rescale()
        self.redraw()

    # ------------------------------------------------------------------ display

    def show(self) -> None:
        """Display the figure in the notebook (once); later updates change it in place."""
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:  # plain Python (tests, scripts): nothing to display into
            return
        if not self._shown:
            display(self.widget)
            self._shown = True
        self.redraw()

    def redraw(self) -> None:
        """Show the artists' current data: redraw the ipympl canvas, or re-display the figure in the Output widget."""
        from IPython import get_ipython

        if get_ipython() is None:  # plain Python: the artists hold the data; fig.savefig() draws them
            return
        if not self._shown:
            self.show()
            return
        if self.output is None:
            # draw(), not draw_idle(): training blocks the kernel, and ipympl sends a drawn
            # image at once but an idle request only when the kernel is free again
            self.fig.canvas.draw()
            return
        redisplay(self.output, self.fig)

    def _ipython_display_(self):
        self.show()
