"""What a trainer measures at its evaluation points: energies and chain statistics, exact distances for 2-D targets, sample distances for points of a file, FID/KID for images."""

from __future__ import annotations

import math

import torch

from anila_core.notices import notice as show_notice
from anila_core.sampling.distances import grid_kl, grid_log_probs, grid_tv, histogram_tv, mmd
from anila_core.sampling.kernel import Trace
from anila_core.sampling.sample_distances import kde_grid_log_probs, scaled_mmd, sliced_wasserstein
from anila_core.sampling.small_step import small_step_log_probs
from anila_core.training.chains import Chains
from anila_core.training.config import TrainConfig

__all__ = ["is_eval_point", "is_fid_point", "evaluate", "sample_for_eval", "ImageScoring", "step_size_image"]

#: the seed of the sliced Wasserstein distance's directions: the same for every run and seed, so that runs compare on one measure
DIRECTIONS_SEED = 0
#: bins per axis of the histogram that compares the training chains with a density on the grid (20 × 20 over the
#: grid's window: with the 1000-2000 evaluation samples a bin holds a few samples where the density is, so the
#: histogram's own noise stays below the differences between the two densities)
CHAIN_BINS = 20
#: notices already printed in this process: a notebook training two samplers says each once
_NOTICES_SHOWN: set[str] = set()


def is_fid_point(config: TrainConfig, iteration: int, end: int) -> bool:
    """Whether the evaluation after ``iteration`` computes FID/KID: every ``fid_every`` iterations and at the end."""
    if not config.is_image:
        return False
    if iteration == end:
        return True
    return iteration % (config.fid_every or config.eval_every) == 0


def is_eval_point(config: TrainConfig, iteration: int, end: int) -> bool:
    """Whether a row of diagnostics is computed after ``iteration``: every ``eval_every`` iterations, at FID points and at the end."""
    return iteration % config.eval_every == 0 or iteration == end or is_fid_point(config, iteration, end)


@torch.no_grad()
def evaluate(trainer, stats: dict, trace: Trace | None, fid: bool | None = None) -> dict:
    """A row of diagnostics of ``trainer``: energies and their gap, chain statistics, and the data's own distances.

    2-D targets: exact density distances (grid TV and KL) and the MMD to exact samples.
    Points of a file: distances to the held-out points (see :func:`points_distances`).
    Images: FID/KID (and the digits' class coverage) when ``fid`` (default: at
    ``fid_every`` iterations and at the end).
    """
    c = trainer.config
    model = trainer.eval_model().eval()
    row = {
        "iter": trainer.iteration,
        "wall_s": round(trainer.wall_s, 3),
        "lr": trainer.learning_rate(trainer.iteration - 1),
        "loss": float(stats["loss"]),
        "energy_data": float(stats["energy_data"]),
        "energy_samples": float(stats["energy_samples"]),
        "energy_gap": float(stats["energy_data"] - stats["energy_samples"]),
    }
    if c.is_image:
        if fid is None:
            fid = is_fid_point(c, trainer.iteration, c.iters)
        if fid:
            row.update(trainer.image_scores())
    elif c.is_points:
        row.update(points_distances(trainer, model))
    else:
        log_p = grid_log_probs(model, device=trainer.device)
        target_lp = grid_log_probs(trainer.target.energy)
        samples = trainer.sample_for_eval()
        exact = trainer.target.sample(len(samples), generator=torch.Generator().manual_seed(c.seed + 1))
        row.update(grid_tv=grid_tv(log_p, target_lp), grid_kl=grid_kl(log_p, target_lp), mmd=mmd(samples, exact),
                   chains_tv=histogram_tv(samples, log_p, bins=CHAIN_BINS))
        row.update(_sampler_density_distances(trainer.sampler, model, target_lp, samples, trainer.device))
    if "global_accept" in stats:
        row["global_accept"] = float(stats["global_accept"])
    if trace is not None:
        row.update(_chain_statistics(trace, trainer.data_shape if c.is_image else None))
    trainer.model.train()
    return row


def points_distances(trainer, model) -> dict:
    """How far the model's samples are from the held-out points of a file: MMD², sliced Wasserstein and, in 2-D, the KDE grid TV.

    No density of the data is known, so these compare samples (``eval_samples`` of the
    chains, as for the rings) with the held-out points, in the model's units. ``kde_grid_tv``
    is the grid TV between exp(−E) normalised on the window's grid and a kernel density
    estimate of the held-out points on the same grid: smoothed, so not 0 even for a perfect
    model, and not the rings' exact ``grid_tv``.
    """
    samples = trainer.sample_for_eval()
    reference = trainer.source.reference(trainer.config.eval_samples)
    row = {"mmd": scaled_mmd(samples, reference),
           "sliced_wasserstein": sliced_wasserstein(samples, reference, seed=DIRECTIONS_SEED)}
    if trainer.source.points.dim == 2:
        window = trainer.source.points.window
        if trainer.source.reference_grid is None:
            trainer.source.reference_grid = kde_grid_log_probs(reference, extent=window)
        row["kde_grid_tv"] = grid_tv(grid_log_probs(model, extent=window, device=trainer.device), trainer.source.reference_grid,
                                     extent=window)
    return row


def _sampler_density_distances(sampler, model, target_lp: torch.Tensor, samples: torch.Tensor, device) -> dict:
    """Grid TV and KL to the target of the density the sampler draws from the trained energy as ε → 0 (:mod:`anila_core.sampling.small_step`), and the chains' distance to it.

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
    return {"sampler_grid_tv": grid_tv(density.log_probs, target_lp), "sampler_grid_kl": grid_kl(density.log_probs, target_lp),
            "chains_sampler_tv": histogram_tv(samples, density.log_probs, bins=CHAIN_BINS)}


def _chain_statistics(trace: Trace, image_shape: tuple[int, ...] | None) -> dict:
    """The sampler's averages over the iteration's transitions: gradient norm, AniLA's clipped share, Metropolis acceptance."""
    row = {"grad_norm": float(sum(trace.mean_grad_norm) / len(trace.mean_grad_norm))}
    if image_shape is not None:
        # per-coordinate scale of |∇E|: what AniLA's threshold b is compared with
        row["grad_rms"] = row["grad_norm"] / math.sqrt(math.prod(image_shape))
    if trace.clipped_share:
        row["clipped_share"] = float(sum(trace.clipped_share) / len(trace.clipped_share))
    if trace.acceptance_rate:
        row["acceptance"] = float(sum(trace.acceptance_rate) / len(trace.acceptance_rate))
    return row


def sample_for_eval(trainer, n: int | None = None) -> torch.Tensor:
    """Model samples for the metrics (CPU): the buffer's chains, or fresh short-run chains from noise.

    ``n`` defaults to ``eval_samples`` for 2-D targets and ``fid_samples`` for images.
    Fresh chains use a generator seeded ``seed + 2``: the same start and noise at every
    evaluation, so a metric's curve shows the model changing, not the draw.
    """
    c = trainer.config
    n = n or (c.fid_samples if c.is_image else c.eval_samples)
    if trainer.chains.buffer is not None:
        return trainer.chains.buffer[:n].detach().cpu()
    gen = torch.Generator(device=trainer.device).manual_seed(c.seed + 2)
    chains = Chains(c, trainer.data_shape, trainer.device, gen)
    model = trainer.eval_model()
    if not c.is_image:
        return trainer.sampler.sample(model, chains.noise(n), c.n_steps, generator=gen, allow_nonfinite=True).cpu()
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, n, c.batch_size):  # in training-sized batches: memory stays that of training
        x = trainer.sampler.sample(trainer.eval_energy, chains.noise(min(c.batch_size, n - start)), c.n_steps, generator=gen,
                                   allow_nonfinite=True)
        out.append((x.clamp(-c.clamp, c.clamp) if c.clamp > 0 else x).float().cpu())
    model.train(was_training)
    return torch.cat(out)


class ImageScoring:
    """FID/KID of a trainer's samples against its dataset; the scorer (a feature network) is built at the first use.

    ``unavailable`` says why there is no scorer (Inception's weights or torch-fidelity missing), ``None`` otherwise.
    """

    def __init__(self):
        self._scorer = None
        self.unavailable: str | None = None

    def scorer(self, trainer):
        """The FID/KID scorer of ``trainer``'s dataset, built once; ``None`` (after one printed notice) when Inception is unavailable."""
        from anila_core.images.evaluation import make_scorer
        from anila_core.images.metrics import InceptionUnavailableError

        c = trainer.config
        if self._scorer is None and self.unavailable is None and c.data_spec is not None:
            self._scorer = self._folder_scorer(trainer)
        if self._scorer is None and self.unavailable is None:
            real = trainer.source.reference(c.fid_samples, seed=c.seed + 3)
            try:
                # enable_grad: the digits classifier trains on first use, and evaluation runs under no_grad
                with torch.enable_grad():
                    self._scorer = make_scorer(c.dataset, real, trainer.device, c.data_root or None)
            except InceptionUnavailableError as err:
                self.unavailable = str(err)
                notice = (f"notice: FID/KID for {c.dataset} are not computed (training goes on; the metrics rows "
                          f"and final.json say \"fid\": null). Why: {err}")
                if trainer.dist.is_main and notice not in _NOTICES_SHOWN:
                    _NOTICES_SHOWN.add(notice)
                    show_notice(notice)
        return self._scorer

    def _folder_scorer(self, trainer):
        """The scorer of a folder of your own: Inception's features when here, else features made from the folder (named in every row)."""
        from anila_core.images.folder_features import make_folder_scorer

        c = trainer.config
        real = trainer.source.reference(c.fid_samples, seed=c.seed + 3)
        with torch.enable_grad():  # a classifier of the folder trains on first use, and evaluation runs under no_grad
            scorer, why = make_folder_scorer(trainer.dataset, real, trainer.device, trainer.data_fingerprint)
        if why is not None:
            notice = (f"notice: Inception's features are unavailable here ({why}), so FID/KID for {c.dataset} are computed on "
                      f"{scorer.features} (each metrics row names them in fid_features): comparable between runs on this "
                      "folder, not with Inception FIDs")
            if trainer.dist.is_main and notice not in _NOTICES_SHOWN:
                _NOTICES_SHOWN.add(notice)
                show_notice(notice)
        return scorer

    def scores(self, trainer) -> dict:
        """FID/KID of ``fid_samples`` model samples against as many real images (``None`` when the features are unavailable).

        For a folder of your own the row also names the features (``fid_features``): they
        depend on the folder and on whether Inception's weights are on this machine.
        """
        scorer = self.scorer(trainer)
        if scorer is None:
            return {"fid": None, "kid": None, "kid_std": None}
        scores = scorer.score(trainer.sample_for_eval(trainer.config.fid_samples))
        if trainer.config.data_spec is not None:
            scores["fid_features"] = scorer.features
        return scores


def step_size_image(trainer, x: torch.Tensor | None = None) -> torch.Tensor:
    """The sampler's ``γ/ε`` per pixel at images ``x`` (default: the latest negative samples), averaged over batch and channels: ``(H, W)``."""
    from anila_core.images.evaluation import step_size_image as per_pixel

    if not trainer.config.is_image:
        raise ValueError("step_size_image: only for image runs (the 2-D map is plots.plot_step_size_map)")
    x = trainer.samples if x is None else x.to(trainer.device)
    if x is None:
        raise ValueError("x: no negative samples yet; train first or pass images")
    model = trainer.eval_model()
    was_training = model.training
    model.eval()  # a look must not change the model: spectral norm's power iteration runs in training mode only
    try:
        return per_pixel(trainer.sampler, trainer.eval_energy, x)
    finally:
        model.train(was_training)
