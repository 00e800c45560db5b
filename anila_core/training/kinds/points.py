"""Points of a file (``points:FILE``): batches of its training points, sample distances to its held-out points, no known
density."""

from __future__ import annotations

import torch

from anila_core.sampling.distances import grid_log_probs, grid_tv
from anila_core.sampling.sample_distances import kde_grid_log_probs, scaled_mmd, sliced_wasserstein
from anila_core.training.file_sources import PointsSource, load_file_data
from anila_core.training.kinds.base import RUN_RECORDS, DataKind
from anila_core.training.kinds.target import check_eval_samples

__all__ = ["PointsData", "POINTS_RUN_FILES", "DIRECTIONS_SEED"]

# : what a run on points of a file writes: ``data_density.png`` and ``learned_density.png`` in 2-D, ``projections.png``
# above
POINTS_RUN_FILES = RUN_RECORDS + ("samples.png", "training.png")
POINTS_2D_FIGURES = ("data_density.png", "learned_density.png")
# : the seed of the sliced Wasserstein distance's directions: the same for every run and seed, so that runs compare on
# one measure
DIRECTIONS_SEED = 0


class PointsData(DataKind):
    """Points of a file: a :class:`~anila_core.training.points_file.PointSet` (training and held-out points, their
    units)."""

    name = "points"
    quality_metric = "sliced_wasserstein"
    headline = ("sw", "sliced_wasserstein")

    def __init__(self, config):
        super().__init__(config)
        self.spec = config.data_spec
        self.dataset = None  # the PointSet, read by load()
        #: the held-out points' density on the grid (2-D only), computed at the first evaluation: the data do not change
        self._reference_grid: torch.Tensor | None = None

    def shape(self) -> tuple[int, ...]:
        return (self._read().dim,)

    def load(self) -> None:
        self.dataset = self._read()

    def _read(self):
        """The file's points (read once per version of the file, see :func:`load_file_data`)."""
        return load_file_data(self.spec, self.config.image_size, self.config.standardize)

    def source(self, rank_seed: int, device: torch.device, chain_generator: torch.Generator):
        return PointsSource(self.dataset, rank_seed, device)

    def probe_points(self) -> torch.Tensor:
        return self.dataset.train[:4]

    @property
    def fingerprint(self) -> str | None:
        return self.dataset.fingerprint

    def describe(self) -> str:
        points = self.dataset
        return (
            f"{self.config.dataset} ({len(points.train)} points in {points.dim} dimensions, "
            f"{len(points.held_out)} held out)"
        )

    def check(self) -> None:
        check_eval_samples(self.config)

    def metrics(self, parts, state, fid) -> dict:
        """How far the model's samples are from the held-out points: MMD², sliced Wasserstein, in 2-D the KDE grid TV.

        No density of the data is known, so these compare samples (``eval_samples`` of the
        chains, as for the rings) with the held-out points, in the model's units. ``kde_grid_tv``
        is the grid TV between exp(−E) normalised on the window's grid and a kernel density
        estimate of the held-out points on the same grid: smoothed, so not 0 even for a perfect
        model, and not the rings' exact ``grid_tv``.
        """
        samples = self.sample_for_eval(parts, state)
        reference = self.dataset.held_out[: self.config.eval_samples]  # already in a seeded random order
        row = {
            "mmd": scaled_mmd(samples, reference),
            "sliced_wasserstein": sliced_wasserstein(samples, reference, seed=DIRECTIONS_SEED),
        }
        if self.dataset.dim == 2:
            window = self.dataset.window
            if self._reference_grid is None:
                self._reference_grid = kde_grid_log_probs(reference, extent=window)
            learned = grid_log_probs(state.eval_model(), extent=window, device=parts.device)
            row["kde_grid_tv"] = grid_tv(learned, self._reference_grid, extent=window)
        return row

    def summary(self, state, shape) -> dict:
        """The last MMD², sliced Wasserstein and (2-D) KDE grid TV, the best sliced Wasserstein, the data's units."""
        last, best, extra = self.last_and_best(state, ("kde_grid_tv", "clipped_share", "acceptance", "global_accept"))
        points, c = self.dataset, self.config
        return {
            "sampler": c.sampler,
            "dataset": c.dataset,
            "dim": points.dim,
            "n_train": len(points.train),
            "n_held_out": len(points.held_out),
            # a model point z is mean + scale · z in the file's units
            "units": {"mean": list(points.mean), "scale": points.scale, "standardized": c.standardize},
            "data_sha256": points.fingerprint,
            "seed": c.seed,
            "iters": state.iteration,
            "wall_s": round(state.wall_s, 2),
            "mmd": last["mmd"],
            "sliced_wasserstein": last["sliced_wasserstein"],
            "best_sliced_wasserstein": best["sliced_wasserstein"],
            "best_iter": best["iter"],
            "energy_gap": last["energy_gap"],
            "rollbacks": state.rollbacks,
            **extra,
            "config": c.to_dict(),
        }

    def result_line(self, final: dict) -> str:
        kde = f", KDE grid TV {final['kde_grid_tv']:.4f}" if "kde_grid_tv" in final else ""
        return (
            f"sliced Wasserstein {final['sliced_wasserstein']:.4f}, MMD² {final['mmd']:.4f}{kde} to the held-out "
            "points; "
            f"best sliced Wasserstein {final['best_sliced_wasserstein']:.4f} at iteration {final['best_iter']}, "
            f"{final['wall_s']:.0f} s"
        )

    def expected_files(self) -> tuple[str, ...]:
        return POINTS_RUN_FILES + (POINTS_2D_FIGURES if self.shape() == (2,) else ("projections.png",))

    def save_figures(self, trainer, out) -> None:
        from anila_core.ui.points_report import save_points_run_figures

        save_points_run_figures(trainer, out)
