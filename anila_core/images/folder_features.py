"""Features for FID/KID on a folder of your own: Inception's where its weights are here, else a small classifier trained
on the folder's classes, else fixed random projections fitted to the folder.

Only Inception's numbers are comparable with published FIDs. The other two are measured on
the folder itself, seeded, so they compare runs on the same folder (and are named in every
row and table: ``fid_features``). A classifier needs labels, so it is used for folders with
one subfolder per class (two classes at least); a flat folder gets the random projections.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from anila_core.images.datasets import ImageDataset
from anila_core.images.digits_classifier import ClassifierFeatures
from anila_core.images.evaluation import ImageScorer
from anila_core.images.metrics import InceptionFeatures, torch_fidelity_available, inception_weights_path

__all__ = [
    "FolderClassifier",
    "train_folder_classifier",
    "RandomProjectionFeatures",
    "make_folder_scorer",
    "inception_missing",
]

NUM_FEATURES = 64
#: classifiers trained in this process, by the hash of their folder's images: the runs of a comparison or a sweep share
#: one
_TRAINED: OrderedDict[str, "FolderClassifier"] = OrderedDict()
_KEEP = 4


class FolderClassifier(nn.Module):
    """Logits over a folder's classes for images ``(N, C, S, S)`` in ``[-1, 1]``, any side S >= 8: two convolutions,
    pooled to 4×4."""

    def __init__(self, channels: int, n_classes: int, width: int = 16, num_features: int = NUM_FEATURES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # one size of features for every side
            nn.Flatten(),
            nn.Linear(2 * width * 16, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, n_classes)
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.num_features = num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer over ``feature_scale`` (root mean square 1 on the training images, the range KID's
        kernel expects)."""
        return self.body(x) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@torch.enable_grad()  # callers may sit inside torch.no_grad() (evaluation code)
def train_folder_classifier(
    dataset: ImageDataset, steps: int = 300, batch_size: int = 64, lr: float = 3e-3, seed: int = 0
) -> FolderClassifier:
    """A :class:`FolderClassifier` trained with Adam on ``dataset``'s images and labels, seeded; the caller's random
    state is untouched.

    A fixed number of steps (not epochs) keeps the cost the same for a folder of 40 or 40 000
    images. As for the digits' judge, the inputs get a little Gaussian noise: samples are
    never as clean as the files, and a judge that breaks down on slight noise would report
    missing modes that are there.
    """
    x, y = dataset.images, dataset.labels
    n_classes = len(dataset.classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FolderClassifier(x.shape[1], n_classes)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            idx = torch.randint(len(x), (min(batch_size, len(x)),))
            loss = F.cross_entropy(model(x[idx] + 0.1 * torch.randn_like(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        rms = torch.cat([model.body(part) for part in x.split(512)]).square().mean().sqrt().item()
        model.feature_scale.fill_(rms if rms > 0 else 1.0)
    return model


class RandomProjectionFeatures(nn.Module):
    """The pixels less the folder's mean image, times a fixed Gaussian matrix (seeded), scaled to root mean square 1 on
    the folder."""

    def __init__(self, images: torch.Tensor, num_features: int = NUM_FEATURES, seed: int = 0):
        super().__init__()
        flat = images.detach().float().flatten(1)
        weights = torch.randn(flat.shape[1], num_features, generator=torch.Generator().manual_seed(seed)) / math.sqrt(
            flat.shape[1]
        )
        self.register_buffer("mean", flat.mean(0))
        self.register_buffer("weights", weights)
        projected = (flat - self.mean) @ weights
        rms = float(projected.square().mean().sqrt())
        self.register_buffer("scale", torch.tensor(rms if rms > 0 else 1.0))
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.flatten(1) - self.mean) @ self.weights) / self.scale


def inception_missing() -> str | None:
    """Why Inception's features cannot be built here (torch-fidelity or the weights file missing), ``None`` when they
    can."""
    problems = []
    if not torch_fidelity_available():
        problems.append("torch-fidelity is not installed")
    if not inception_weights_path().is_file():
        problems.append(f"no weights file at {inception_weights_path()}")
    return " and ".join(problems) or None


def _classifier(train: ImageDataset, fingerprint: str | None) -> FolderClassifier:
    """The folder's classifier: trained once per process and folder (training is seeded, so a second one would be the
    same)."""
    if fingerprint is None:
        return train_folder_classifier(train)
    if fingerprint not in _TRAINED:
        _TRAINED[fingerprint] = train_folder_classifier(train)
        while len(_TRAINED) > _KEEP:
            _TRAINED.popitem(last=False)
    _TRAINED.move_to_end(fingerprint)
    return _TRAINED[fingerprint]


def make_folder_scorer(
    train: ImageDataset, real: torch.Tensor, device: torch.device | str = "cpu", fingerprint: str | None = None
) -> tuple[ImageScorer, str | None]:
    """The FID/KID scorer of a folder's samples against the held-out images ``real``, and why Inception was not used
    (``None`` when it was).

    ``fingerprint``: a hash of the folder's images; runs of the same folder in one process then share its classifier.
    """
    why = inception_missing()
    if why is None:
        return ImageScorer(real, InceptionFeatures().to(device), "inception"), None
    if len(train.classes) >= 2:
        classifier = _classifier(train, fingerprint)  # tiny: it stays on the CPU, where the real images are
        return ImageScorer(
            real, ClassifierFeatures(classifier), f"a classifier trained on {train.name} ({len(train.classes)} classes)"
        ), why
    return ImageScorer(real, RandomProjectionFeatures(train.images), f"random projections of {train.name}"), why
