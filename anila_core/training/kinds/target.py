"""A known 2-D target (rings, a mixture, …): exact samples for training, exact density distances for evaluation."""

from __future__ import annotations

import torch

from anila_core.sampling.distances import grid_kl, grid_log_probs, grid_tv, histogram_tv, mmd
from anila_core.sampling.small_step import small_step_log_probs
from anila_core.sampling.targets import make_target
from anila_core.training.kinds.base import RUN_RECORDS, DataKind
from anila_core.training.sources import TargetSource

__all__ = ["TargetData", "RUN_FILES", "CHAIN_BINS", "check_eval_samples"]

#: what a run on a 2-D target writes
RUN_FILES = RUN_RECORDS + ("true_density.png", "learned_density.png", "samples.png", "training.png")
#: bins per axis of the histogram that compares the training chains with a density on the grid (20 × 20 over the
#: grid's window: with the 1000-2000 evaluation samples a bin holds a few samples where the density is, so the
#: histogram's own noise stays below the differences between the two densities)
CHAIN_BINS = 20


class TargetData(DataKind):
    """A 2-D target with a known density: data drawn from its exact sampler with the chain generator (the rings loop's
    stream)."""

    name = "target"
    has_density = True
    quality_metric = "grid_tv"
    own_data_stream = False
    headline = ("tv", "grid_tv")

    def __init__(self, config):
        super().__init__(config)
        self.target = make_target(config.target)

    def shape(self) -> tuple[int, ...]:
        return (self.target.dim,)

    def load(self) -> None:
        pass  # the target's sampler is all its data

    def source(self, rank_seed: int, device: torch.device, chain_generator: torch.Generator):
        return TargetSource(self.target, chain_generator)

    def probe_points(self) -> torch.Tensor:
        return self.target.sample(4, generator=torch.Generator().manual_seed(0)).float()

    def describe(self) -> str:
        return self.config.target

    def check(self) -> None:
        check_eval_samples(self.config)

    def metrics(self, parts, state, fid) -> dict:
        """Exact density distances (grid TV and KL), the MMD to exact samples, and the chains' distances to the model's
        densities."""
        c = self.config
        model = state.eval_model()
        log_p = grid_log_probs(model, device=parts.device)
        target_lp = grid_log_probs(self.target.energy)
        samples = self.sample_for_eval(parts, state)
        exact = self.target.sample(len(samples), generator=torch.Generator().manual_seed(c.seed + 1))
        row = dict(
            grid_tv=grid_tv(log_p, target_lp),
            grid_kl=grid_kl(log_p, target_lp),
            mmd=mmd(samples, exact),
            chains_tv=histogram_tv(samples, log_p, bins=CHAIN_BINS),
        )
        row.update(_sampler_density_distances(parts.sampler, model, target_lp, samples, parts.device))
        return row

    def summary(self, state, shape) -> dict:
        """The last grid TV, grid KL and MMD, the best grid TV and when."""
        kept = ("sampler_grid_tv", "sampler_grid_kl", "clipped_share", "global_accept")
        last, best, extra = self.last_and_best(state, kept)
        return {
            "sampler": self.config.sampler,
            "target": self.config.target,
            "seed": self.config.seed,
            "iters": state.iteration,
            "wall_s": round(state.wall_s, 2),
            "grid_tv": last["grid_tv"],
            "grid_kl": last["grid_kl"],
            "mmd": last["mmd"],
            "best_grid_tv": best["grid_tv"],
            "best_iter": best["iter"],
            "rollbacks": state.rollbacks,
            **extra,
            "config": self.config.to_dict(),
        }

    def result_line(self, final: dict) -> str:
        return (
            f"grid_tv {final['grid_tv']:.4f}, grid_kl {final['grid_kl']:.4f}, "
            f"best grid_tv {final['best_grid_tv']:.4f} at iteration {final['best_iter']}, {final['wall_s']:.0f} s"
        )

    def expected_files(self) -> tuple[str, ...]:
        return RUN_FILES

    def save_figures(self, trainer, out) -> None:
        from anila_core.ui.report import save_run_figures

        save_run_figures(trainer, out)


def check_eval_samples(config) -> None:
    """The evaluation of points measures the buffer's chains: it cannot ask for more than the buffer holds."""
    if config.chains == "buffer" and config.eval_samples > config.buffer_size:
        raise ValueError(
            f"eval_samples: expected at most buffer_size ({config.buffer_size}): the evaluation measures "
            "the "
            f"buffer's chains, got {config.eval_samples!r}"
        )


def _sampler_density_distances(sampler, model, target_lp: torch.Tensor, samples: torch.Tensor, device) -> dict:
    """Grid TV and KL to the target of the density the sampler draws from the trained energy as ε → 0
    (:mod:`anila_core.sampling.small_step`), and the chains' distance to it.

    Algorithm 1 fits the energy *through its sampler*; for AniLA that law is exp(−E)/a, not
    exp(−E), so a model can match the data through its sampler while exp(−E) is off (and the
    other way round). For Langevin the two densities are the same. ``chains_sampler_tv``
    (beside ``chains_tv``, the chains against exp(−E)) says which of the two the training
    chains actually hold. ``None`` for samplers with no such law as a function of x (pSGLD).
    """
    try:
        density = small_step_log_probs(sampler, model, device=device)
    except ValueError:
        return {"sampler_grid_tv": None, "sampler_grid_kl": None, "chains_sampler_tv": None}
    return {
        "sampler_grid_tv": grid_tv(density.log_probs, target_lp),
        "sampler_grid_kl": grid_kl(density.log_probs, target_lp),
        "chains_sampler_tv": histogram_tv(samples, density.log_probs, bins=CHAIN_BINS),
    }
