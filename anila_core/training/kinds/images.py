"""Images (a built-in dataset or a folder of your own): a ConvNet energy, batched evaluation chains, FID/KID, sample
grids."""

from __future__ import annotations

import math

import torch

from anila_core.notices import notice as show_notice
from anila_core.training.kinds.base import RUN_RECORDS, DataKind
from anila_core.training.sources import TRAIN_SPLITS, ImageSource, reference_images

__all__ = ["ImageData", "ImageScoring", "IMAGE_RUN_FILES"]

#: what every image run writes; ``fid.png`` joins when FID was computed, ``step_sizes.png`` for AniLA
IMAGE_RUN_FILES = RUN_RECORDS + ("samples.png", "training.png")
#: notices already printed in this process: a notebook training two samplers says each once
_NOTICES_SHOWN: set[str] = set()


class ImageData(DataKind):
    """Images in ``[-1, 1]``: a built-in dataset (its training split) or a folder of your own (with held-out images for
    FID)."""

    name = "images"
    quality_metric = "fid"
    joint_forward = True

    def __init__(self, config):
        super().__init__(config)
        self.spec = config.data_spec
        self.dataset = self.held_out = None  # read by load()
        self._fingerprint: str | None = None
        self.scoring = ImageScoring(self)

    def shape(self) -> tuple[int, ...]:
        c = self.config
        if self.spec is not None:  # the side and channels the folder's images share
            return tuple(self._read_folder().train.shape)
        from anila_core.images.datasets import CHANNELS, DEFAULT_SIZES

        side = c.image_size or DEFAULT_SIZES[c.dataset]
        return (CHANNELS[c.dataset], side, side)

    def load(self) -> None:
        c = self.config
        if self.spec is not None:
            data = self._read_folder()
            self.dataset, self.held_out, self._fingerprint = data.train, data.held_out, data.fingerprint
        else:
            from anila_core.images.datasets import load_dataset

            self.dataset = load_dataset(
                c.dataset, c.data_root or None, c.image_size or None, split=TRAIN_SPLITS[c.dataset]
            )

    def _read_folder(self):
        """A folder's training and held-out images (read once per version of its files, see :func:`load_file_data`)."""
        from anila_core.training.file_sources import load_file_data

        return load_file_data(self.spec, self.config.image_size, self.config.standardize)

    def source(self, rank_seed: int, device: torch.device, chain_generator: torch.Generator):
        return ImageSource(self.dataset, rank_seed, device)

    def probe_points(self) -> torch.Tensor:
        return self.dataset.to_float(self.dataset.data[:4])

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    def reference(self, n: int, seed: int) -> torch.Tensor:
        """Fixed real images for FID/KID: the held-out ones of a folder, else the training images."""
        return reference_images(self.held_out if self.held_out is not None else self.dataset, n, seed)

    def describe(self) -> str:
        return f"{self.config.dataset} ({'×'.join(map(str, self.shape()))})"

    def check(self) -> None:
        from anila_core.images.convnets import IMAGE_SIZES
        from anila_core.images.datasets import SIZES

        c = self.config
        sizes = IMAGE_SIZES if self.spec is not None else SIZES.get(c.dataset)
        if c.image_size != 0 and c.image_size not in sizes:
            raise ValueError(
                f"image_size: expected 0 (the dataset's own) or one of {sizes} for {c.dataset}, got {c.image_size!r}"
            )

    def network(self, shape: tuple[int, ...]) -> torch.nn.Module:
        from anila_core.images.convnets import make_convnet

        c = self.config
        return make_convnet(shape, c.conv_width, c.conv_activation, c.spectral_norm)

    def channels_last(self) -> bool:
        return self.config.channels_last

    def memory_needs(self, shape: tuple[int, ...]) -> dict[str, tuple[int, str]]:
        c = self.config
        if c.energy:  # a network of your own: its sizes are not the configuration's, so none of its terms is certain
            return {}
        side = shape[-1]
        return {
            "--batch-size": (
                c.batch_size * c.conv_width * side * side * 4,
                f"first convolution's output: "
                "batch_size "
                f"{c.batch_size} × conv_width {c.conv_width} × {side}×{side} × 4 bytes",
            ),
            "--conv-width": (
                4 * 9 * c.conv_width * c.conv_width * 4,
                f"weights: conv_width {c.conv_width}² × 3×3 × 4 copies × 4 bytes",
            ),
        }

    # ------------------------------------------------------------------ evaluation

    def is_fid_point(self, iteration: int, end: int) -> bool:
        """Every ``fid_every`` iterations (0: every evaluation) and at the end."""
        return iteration == end or iteration % (self.config.fid_every or self.config.eval_every) == 0

    def eval_sample_count(self) -> int:
        return self.config.fid_samples

    def _fresh_samples(self, parts, state, chains, n, gen) -> torch.Tensor:
        """Chains in training-sized batches (memory stays that of training), in eval mode, clamped as in training."""
        c = self.config
        model = state.eval_model()
        was_training = model.training
        model.eval()
        out = []
        for start in range(0, n, c.batch_size):
            x = parts.sampler.sample(
                parts.nets.eval_energy,
                chains.noise(min(c.batch_size, n - start)),
                c.n_steps,
                generator=gen,
                allow_nonfinite=True,
            )
            out.append((x.clamp(-c.clamp, c.clamp) if c.clamp > 0 else x).float().cpu())
        model.train(was_training)
        return torch.cat(out)

    def metrics(self, parts, state, fid) -> dict:
        """FID/KID (and the digits' class coverage) when ``fid`` (default: at FID points)."""
        if fid is None:
            fid = self.is_fid_point(state.iteration, self.config.iters)
        return self.scoring.scores(parts, state) if fid else {}

    def chain_statistics(self, trace, shape) -> dict:
        row = super().chain_statistics(trace, shape)
        # per-coordinate scale of |∇E|: what AniLA's threshold b is compared with
        row["grad_rms"] = row["grad_norm"] / math.sqrt(math.prod(shape))
        return row

    def step_size_image(self, parts, state, x: torch.Tensor | None) -> torch.Tensor:
        """The sampler's ``γ/ε`` per pixel at images ``x`` (default: the latest negatives), as an (H, W) mean."""
        from anila_core.images.evaluation import step_size_image as per_pixel

        x = state.samples if x is None else x.to(parts.device)
        if x is None:
            raise ValueError("x: no negative samples yet; train first or pass images")
        model = state.eval_model()
        was_training = model.training
        model.eval()  # a look must not change the model: spectral norm's power iteration runs in training mode only
        try:
            return per_pixel(parts.sampler, parts.nets.eval_energy, x)
        finally:
            model.train(was_training)

    def progress(self, row: dict) -> dict:
        shown = {"gap": f"{row['energy_gap']:.2f}"}
        if row.get("fid") is not None:
            shown["fid"] = f"{row['fid']:.1f}"
        return shown

    # ------------------------------------------------------------------ what a run leaves

    def summary(self, state, shape) -> dict:
        """The last FID/KID, the best FID and when, coverage for digits.

        ``fid`` and ``kid`` are ``None`` when the run could not compute them (Inception
        unavailable); ``fid_features`` names the features the numbers come from.
        """
        from anila_core.images.evaluation import FEATURES

        c, last = self.config, state.history[-1]
        last_scored = next((r for r in reversed(state.history) if "fid" in r), {})
        # a folder's rows name their features, which may change when a run resumes elsewhere: the best is among the last
        # ones'
        features = last_scored.get("fid_features") or FEATURES.get(c.dataset)
        scored = [r for r in state.history if r.get("fid") is not None and r.get("fid_features", features) == features]
        best = min(scored, key=lambda r: r["fid"]) if scored else None
        final = {
            "sampler": c.sampler,
            "dataset": c.dataset,
            "image_shape": list(shape),
            "seed": c.seed,
            "iters": state.iteration,
            "wall_s": round(state.wall_s, 2),
            "fid": last_scored.get("fid"),
            "kid": last_scored.get("kid"),
            "kid_std": last_scored.get("kid_std"),
            "fid_iter": last_scored.get("iter"),
            "fid_features": features if last_scored.get("fid") is not None else None,
            "fid_samples": c.fid_samples,
            "best_fid": None if best is None else best["fid"],
            "best_fid_iter": None if best is None else best["iter"],
            "energy_gap": last["energy_gap"],
            "rollbacks": state.rollbacks,
            "config": c.to_dict(),
        }
        if c.dataset == "digits":
            final.update(
                coverage=last_scored.get("coverage"),
                class_entropy=last_scored.get("class_entropy"),
                class_histogram=last_scored.get("class_histogram"),
            )
        if "clipped_share" in last:
            final["clipped_share"] = last["clipped_share"]
        return final

    def result_line(self, final: dict) -> str:
        if final["fid"] is None:
            scores = "FID/KID not computed (see the notice above)"
        else:
            scores = f"FID {final['fid']:.4g}, KID {final['kid']:.3g} on {final['fid_features']} features"
            if final.get("coverage") is not None:
                scores += f", class coverage {final['coverage']:.0%}"
            scores += f"; best FID {final['best_fid']:.4g} at iteration {final['best_fid_iter']}"
        return f"{scores}, {final['wall_s']:.0f} s"

    def expected_files(self) -> tuple[str, ...]:
        return IMAGE_RUN_FILES + (("step_sizes.png",) if self.config.sampler == "anila" else ())

    def save_figures(self, trainer, out) -> None:
        from anila_core.ui.report import save_image_run_figures

        save_image_run_figures(trainer, out)


class ImageScoring:
    """FID/KID of a run's samples against its images; the scorer (a feature network) is built at the first use.

    ``unavailable`` says why there is no scorer (Inception's weights or torch-fidelity missing), ``None`` otherwise.
    """

    def __init__(self, kind: ImageData):
        self.kind = kind
        self._scorer = None
        self.unavailable: str | None = None

    def scorer(self, parts):
        """The FID/KID scorer of the run's images, built once; ``None`` (after one printed notice) when Inception is
        unavailable."""
        from anila_core.images.evaluation import make_scorer
        from anila_core.images.metrics import InceptionUnavailableError

        c = self.kind.config
        if self._scorer is None and self.unavailable is None and self.kind.spec is not None:
            self._scorer = self._folder_scorer(parts)
        if self._scorer is None and self.unavailable is None:
            real = self.kind.reference(c.fid_samples, seed=c.seed + 3)
            try:
                # enable_grad: the digits classifier trains on first use, and evaluation runs under no_grad
                with torch.enable_grad():
                    self._scorer = make_scorer(c.dataset, real, parts.device, c.data_root or None)
            except InceptionUnavailableError as err:
                self.unavailable = str(err)
                _notice_once(
                    parts,
                    f"notice: FID/KID for {c.dataset} are not computed (training goes on; the metrics "
                    "rows "
                    f"and final.json say \"fid\": null). Why: {err}",
                )
        return self._scorer

    def _folder_scorer(self, parts):
        """A folder's scorer: Inception's features when here, else features made from the folder (named in each row)."""
        from anila_core.images.folder_features import make_folder_scorer

        c = self.kind.config
        real = self.kind.reference(c.fid_samples, seed=c.seed + 3)
        with torch.enable_grad():  # a classifier of the folder trains on first use, and evaluation runs under no_grad
            scorer, why = make_folder_scorer(self.kind.dataset, real, parts.device, self.kind.fingerprint)
        if why is not None:
            _notice_once(
                parts,
                f"notice: Inception's features are unavailable here ({why}), so FID/KID for "
                f"{c.dataset} are "
                f"computed on {scorer.features} (each metrics row names them in fid_features): "
                "comparable "
                "between runs on this folder, not with Inception FIDs",
            )
        return scorer

    def scores(self, parts, state) -> dict:
        """FID/KID of ``fid_samples`` model samples against as many real images (``None`` when the features are
        unavailable).

        For a folder of your own the row also names the features (``fid_features``): they
        depend on the folder and on whether Inception's weights are on this machine.
        """
        scorer = self.scorer(parts)
        if scorer is None:
            return {"fid": None, "kid": None, "kid_std": None}
        scores = scorer.score(self.kind.sample_for_eval(parts, state, self.kind.config.fid_samples))
        if self.kind.spec is not None:
            scores["fid_features"] = scorer.features
        return scores


def _notice_once(parts, notice: str) -> None:
    """Print ``notice`` on the main process, once per process."""
    if parts.dist.is_main and notice not in _NOTICES_SHOWN:
        _NOTICES_SHOWN.add(notice)
        show_notice(notice)
