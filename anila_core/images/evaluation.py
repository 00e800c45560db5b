"""Judging an image EBM: FID/KID against fixed real images (features extracted once), digit coverage, and AniLA's
per-pixel step sizes.

Which features: the digits get the small digits classifier (:mod:`anila_core.images.digits_classifier`),
CIFAR-10 and Flowers the standard Inception network (:mod:`anila_core.images.metrics`), which
needs torch-fidelity and a weights file; :func:`make_scorer` raises
:class:`~anila_core.images.metrics.InceptionUnavailableError` with the reason and where the
file goes when they are missing. Numbers from different features are different numbers.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from anila_core.images.metrics import InceptionFeatures, extract_features
from anila_core.sampling.kernel import energy_and_grad
from anila_core.sampling.samplers import Sampler

__all__ = ["ImageScorer", "make_scorer", "FEATURES", "step_size_image", "sample_from_noise"]

#: dataset → the features its FID/KID are computed on
FEATURES = {"digits": "digits classifier", "cifar10": "inception", "flowers": "inception"}


class _Given(nn.Module):
    """Hands torchmetrics features that were already extracted (torchmetrics wants a module with ``num_features``)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class ImageScorer:
    """FID and KID of model samples against one fixed set of real images, whose features are extracted once.

    ``extractor`` maps images in ``[-1, 1]`` to ``(N, D)`` features; ``classifier`` (digits
    only) adds the class coverage of the samples. ``score`` gives the same numbers as
    :func:`anila_core.images.metrics.fid_kid` on the same images and extractor.
    """

    def __init__(
        self,
        real: torch.Tensor,
        extractor: nn.Module,
        features: str,
        classifier: nn.Module | None = None,
        batch_size: int = 200,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ):
        if not isinstance(real, torch.Tensor) or real.ndim != 4 or len(real) < 2:
            raise ValueError(
                "real: expected at least 2 images of shape (N, C, H, W), got "
                f"{getattr(real, 'shape', type(real).__name__)}"
            )
        self.extractor, self.features, self.classifier = extractor, features, classifier
        self.batch_size, self.kid_subsets, self.kid_subset_size, self.seed = (
            batch_size,
            kid_subsets,
            kid_subset_size,
            seed,
        )
        self.n_real = len(real)
        self.real_features = extract_features(real.float().clamp(-1, 1), extractor, batch_size)

    def score(self, fake: torch.Tensor) -> dict:
        """``fid``, ``kid`` (the mean over subsets), ``kid_std``, and for the digits ``coverage``, ``class_entropy``,
        ``class_histogram``."""
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        if not isinstance(fake, torch.Tensor) or fake.ndim != 4 or len(fake) < 2:
            raise ValueError(
                "fake: expected at least 2 images of shape (N, C, H, W), got "
                f"{getattr(fake, 'shape', type(fake).__name__)}"
            )
        fake = fake.detach().float().nan_to_num(0.0).clamp(-1, 1)
        f_fake = extract_features(fake, self.extractor, self.batch_size)
        given = _Given(self.real_features.shape[1])
        # sync_on_compute=False: under torchrun only rank 0 scores, and torchmetrics would
        # otherwise wait for the other ranks to join a gather that they never call
        fid = FrechetInceptionDistance(feature=given, sync_on_compute=False)
        fid.update(self.real_features, real=True)
        fid.update(f_fake, real=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            kid = KernelInceptionDistance(
                feature=given,
                subsets=self.kid_subsets,
                sync_on_compute=False,
                subset_size=min(self.kid_subset_size, self.n_real, len(fake)),
            )
        kid.update(self.real_features, real=True)
        kid.update(f_fake, real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # KID draws its subsets from the global generator
            kid_mean, kid_std = kid.compute()
        out = {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
        if self.classifier is not None:
            from anila_core.images.digits_classifier import class_coverage

            cov = class_coverage(fake.cpu(), self.classifier)
            out.update(coverage=cov["coverage"], class_entropy=cov["entropy"], class_histogram=cov["histogram"])
        return out


def make_scorer(
    dataset: str, real: torch.Tensor, device: torch.device | str = "cpu", data_root: str | None = None
) -> ImageScorer:
    """The scorer for ``dataset``'s samples: digits-classifier features (and coverage) or Inception features.

    Raises :class:`~anila_core.images.metrics.InceptionUnavailableError` for CIFAR-10 and
    Flowers when torch-fidelity or the Inception weights are missing (nothing is downloaded).
    """
    if dataset not in FEATURES:
        raise ValueError(f"dataset: expected one of {list(FEATURES)}, got {dataset!r}")
    if dataset == "digits":
        from anila_core.images.digits_classifier import ClassifierFeatures, load_digits_classifier

        classifier = load_digits_classifier(data_root=data_root)
        # the classifier stays on the CPU: it is tiny, and class_coverage feeds it CPU tensors
        return ImageScorer(real, ClassifierFeatures(classifier), FEATURES[dataset], classifier=classifier)
    extractor = InceptionFeatures().to(device)
    return ImageScorer(real, extractor, FEATURES[dataset])


def step_size_image(
    sampler: Sampler, energy_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """AniLA's relative step ``γ/ε`` at each pixel of the images ``x``, averaged over the batch and the channels: ``(H,
    W)`` on the CPU.

    1 means the full step ε (``|g| ≤ b``); small values show where the energy is steep and the
    sampler shrinks its steps. Langevin gives 1 everywhere.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x: expected images of shape (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
    _, grad = energy_and_grad(energy_fn, x)
    return (sampler.step_sizes(grad) / sampler.step_size).mean(dim=(0, 1)).float().cpu()


def sample_from_noise(
    energy_fn,
    sampler: Sampler,
    shape: tuple[int, int, int],
    n: int,
    n_steps: int,
    seed: int = 0,
    clamp: float = 1.0,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    trace=None,
) -> torch.Tensor:
    """``n`` images from ``n_steps`` of ``sampler`` started at uniform noise on ``[-1, 1]``, clamped to ``[-clamp,
    clamp]`` (0: no clamp).

    Short-run sampling as in training; one generator seeded ``seed`` draws the start and the
    noise, so the same seed gives the same images for any sampler settings' first draw.
    ``batch_size`` bounds memory (default: all at once). Returns a CPU tensor ``(n, *shape)``.
    """
    for name, value in (("n", n), ("n_steps", n_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    step = batch_size or n
    for start in range(0, n, step):
        k = min(step, n - start)
        x0 = 2 * torch.rand((k, *shape), generator=gen, device=device) - 1
        x = sampler.sample(energy_fn, x0, n_steps, generator=gen, trace=trace)
        out.append((x.clamp(-clamp, clamp) if clamp > 0 else x).cpu())
    return torch.cat(out)
