"""Out-of-distribution detection by energy: score images with a trained E, and the AUROC of telling held-out data from
other images.

An energy model assigns every input a number, and ``E(x)`` low means "looks like the
data". Thresholding it is the simplest detector of inputs unlike the training set: an image
is flagged when its energy is high. How well that separates two sets, whatever the
threshold, is the area under the ROC curve (AUROC): the probability that a randomly chosen
outlier gets a higher energy than a randomly chosen in-distribution image (ties count one
half). 1 separates perfectly, 0.5 is chance, below 0.5 the energy ranks the outliers as *more*
data-like than the data.

The outlier sets here are built from what the digits' own package ships (no download):
uniform noise, the digits flipped upside down or shifted, and patches of scikit-learn's two
sample photographs turned into 8×8 grey images.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

__all__ = [
    "auroc",
    "auroc_interval",
    "energy_scores",
    "noise_images",
    "flip_images",
    "shift_images",
    "photo_patches",
    "outlier_sets",
    "ood_aurocs",
]


def _scores(name: str, values) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"{name}: expected at least one score, got none")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: expected finite scores, got {int((~torch.isfinite(t)).sum())} NaN or infinite")
    return t


def auroc(in_scores, out_scores) -> float:
    """The area under the ROC curve of flagging ``out_scores`` as outliers by a high score: P(out > in) + ½ P(out = in).

    Computed from ranks (the Mann–Whitney U statistic divided by ``n_in · n_out``), with tied
    scores given their average rank so that ties count one half. Exact, O(n log n).
    """
    a, b = _scores("in_scores", in_scores), _scores("out_scores", out_scores)
    both = torch.cat([a, b])
    order = torch.argsort(both, stable=True)
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=torch.float64)
    # tied values share the mean of the ranks they occupy
    _, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, ranks)
    ranks = (sums / counts)[inverse]
    u = float(ranks[len(a) :].sum()) - len(b) * (len(b) + 1) / 2
    return u / (len(a) * len(b))


def auroc_interval(in_scores, out_scores, n_boot: int = 200, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of :func:`auroc`: both sets resampled with replacement ``n_boot`` times, the central
    ``level`` share.

    Two AUROCs whose intervals overlap are not told apart by these sets; it says how much
    the number would move with other images of the same kinds.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    a, b = _scores("in_scores", in_scores), _scores("out_scores", out_scores)
    gen = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [
            auroc(
                a[torch.randint(len(a), (len(a),), generator=gen)], b[torch.randint(len(b), (len(b),), generator=gen)]
            )
            for _ in range(n_boot)
        ],
        dtype=torch.float64,
    )
    tail = (1 - level) / 2
    return float(values.quantile(tail)), float(values.quantile(1 - tail))


@torch.no_grad()
def energy_scores(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``E(x)`` of every image (``(N, C, H, W)`` in ``[-1, 1]``), in batches, as a CPU float64 tensor ``(N,)``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"images: expected a non-empty tensor (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}"
        )
    out = []
    for chunk in images.split(batch_size):
        if device is not None:
            chunk = chunk.to(device)
        out.append(energy_fn(chunk.float()).detach().double().flatten().cpu())
    return torch.cat(out)


def noise_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """``n`` images of independent uniform noise on ``[-1, 1]`` (where the training chains start)."""
    gen = torch.Generator().manual_seed(seed)
    return 2 * torch.rand((n, *shape), generator=gen) - 1


def flip_images(images: torch.Tensor) -> torch.Tensor:
    """The images upside down: the same pixel values and ink, in an arrangement the data never has."""
    return images.flip(-2)


def shift_images(images: torch.Tensor, pixels: int = 2, background: float = -1.0) -> torch.Tensor:
    """The images moved ``pixels`` to the right and down, the freed border filled with ``background`` (the digits'
    black)."""
    if isinstance(pixels, bool) or not isinstance(pixels, int) or not 0 < pixels < min(images.shape[-2:]):
        raise ValueError(f"pixels: expected an integer between 1 and the image side − 1, got {pixels!r}")
    out = torch.full_like(images, background)
    out[..., pixels:, pixels:] = images[..., :-pixels, :-pixels]
    return out


def photo_patches(n: int, side: int = 8, seed: int = 0, crop: tuple[int, int] = (32, 128)) -> torch.Tensor:
    """``n`` grey ``side × side`` images cut from scikit-learn's two sample photographs (shipped with the package).

    Each is a random square crop, its side drawn from ``crop`` (in photo pixels), averaged
    down to ``side × side`` and scaled to ``[-1, 1]`` by its own minimum and maximum, as the
    digits span that range: what differs from a digit is the picture, not the contrast.
    """
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(img.astype("float32")).mean(-1) for img in load_sample_images().images]  # (H, W) grey
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        size = int(torch.randint(crop[0], crop[1] + 1, (1,), generator=gen))
        top = int(torch.randint(0, photo.shape[0] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, photo.shape[1] - size + 1, (1,), generator=gen))
        patch = F.adaptive_avg_pool2d(photo[top : top + size, left : left + size][None, None], side)[0]
        low, high = patch.min(), patch.max()
        out.append(2 * (patch - low) / (high - low).clamp_min(1e-6) - 1)
    return torch.stack(out)


def outlier_sets(held_out: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The outlier sets the course scores, each as many images as ``held_out`` (grey ``(N, 1, H, W)`` digits in ``[-1,
    1]``)."""
    n, shape = len(held_out), tuple(held_out.shape[1:])
    return {
        "uniform noise": noise_images(n, shape, seed),
        "digits upside down": flip_images(held_out),
        "digits shifted by 2 pixels": shift_images(held_out, 2),
        "photo patches (scikit-learn)": photo_patches(n, shape[-1], seed),
    }


def ood_aurocs(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    held_out: torch.Tensor,
    outliers: Mapping[str, torch.Tensor],
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """AUROC of flagging each set of ``outliers`` against the ``held_out`` images by high energy: name → AUROC."""
    reference = energy_scores(energy_fn, held_out, device=device)
    return {
        name: auroc(reference, energy_scores(energy_fn, images, device=device)) for name, images in outliers.items()
    }
