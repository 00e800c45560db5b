"""A small digits classifier: the feature extractor for FID/KID on 8×8 digits and a judge of mode coverage.

Inception features mean little for 8×8 grey digits (and need weights that cannot be downloaded
offline), so the digits get their own judge: a two-convolution network trained in seconds on
the ``train`` split of :func:`anila_core.images.datasets.load_dataset("digits")` and checked on its
held-out ``test`` split. It is trained once and cached (atomically) under the data root, at
``<data root>/cache/digits_classifier.pt``; later loads read the file.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from anila_core.images.datasets import load_dataset, resolve_data_root
from anila_core.fileio import atomic_torch_save

__all__ = [
    "DigitsClassifier",
    "ClassifierFeatures",
    "train_digits_classifier",
    "load_digits_classifier",
    "default_classifier_path",
    "digits_feature_extractor",
    "class_coverage",
]

# Bump when the architecture or the training recipe changes, so old cache files are retrained.
CACHE_FORMAT = 1
NUM_CLASSES = 10


class DigitsClassifier(nn.Module):
    """Logits over the ten digits for images ``(N, 1, H, W)`` in ``[-1, 1]``; inputs other than 8×8 are average-pooled
    to 8×8."""

    def __init__(self, width: int = 16, num_features: int = 64):
        super().__init__()
        for name, value in (("width", width), ("num_features", num_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),  # 8×8 -> 4×4
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * 16, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, NUM_CLASSES)
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.config = {"width": width, "num_features": num_features}
        self.num_features = num_features
        self.info: dict = {}

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x: expected grey images of shape (N, 1, H, W), got {tuple(x.shape)}")
        if x.shape[-2:] != (8, 8):
            x = F.adaptive_avg_pool2d(x, 8)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer divided by ``feature_scale``, ``(N, num_features)``: what FID and KID compare.

        The scale makes the features' root mean square 1 on the training digits, the range
        KID's polynomial kernel ``(f·g / D + 1)³`` is built for (Inception features live there too).
        """
        return self.body(self._pooled(x)) / self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self._pooled(x)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Predicted digit per image, ``(N,)`` int64."""
        device = next(self.parameters()).device
        return torch.cat([self(chunk.to(device)).argmax(1).cpu() for chunk in x.split(batch_size)])


class ClassifierFeatures(nn.Module):
    """A classifier's penultimate features (its ``features`` method) as a feature extractor for
    :func:`anila_core.images.metrics.fid_kid`.

    Used for the digits classifier and for the one ``images:FOLDER`` runs train on their folder.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


@torch.enable_grad()  # callers may sit inside torch.no_grad() (evaluation code)
def train_digits_classifier(
    epochs: int = 20, batch_size: int = 128, lr: float = 3e-3, seed: int = 0, width: int = 16, num_features: int = 64
) -> DigitsClassifier:
    """Train on the digits' ``train`` split with Adam; ``.info`` records held-out accuracy and seconds taken.

    Training adds small Gaussian noise to the inputs: generated samples are never as clean as
    the scans, and a judge that breaks down on slight noise would report modes that are there
    as missing.
    """
    start = time.perf_counter()
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    x, y = train.images, train.labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # weights and batch order reproducible, the caller's global RNG untouched
        model = DigitsClassifier(width, num_features)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * math.ceil(len(x) / batch_size))
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(batch_size):
                inputs = x[idx] + 0.1 * torch.randn_like(x[idx])
                loss = F.cross_entropy(model(inputs), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    with torch.no_grad():
        model.feature_scale.fill_(model.body(x).square().mean().sqrt().item())
    accuracy = float((model.predict(test.images) == test.labels).float().mean())
    model.info = {
        "test_accuracy": accuracy,
        "train_seconds": time.perf_counter() - start,
        "epochs": epochs,
        "seed": seed,
        "n_train": len(train),
        "n_test": len(test),
    }
    return model


def default_classifier_path(data_root: str | Path | None = None) -> Path:
    """``<data root>/cache/digits_classifier.pt``."""
    return resolve_data_root(data_root) / "cache" / "digits_classifier.pt"


def load_digits_classifier(
    path: str | Path | None = None, data_root: str | Path | None = None, retrain: bool = False
) -> DigitsClassifier:
    """The cached classifier at ``path`` (default :func:`default_classifier_path`), trained and saved first if absent.

    A file from another version of this module, or one that cannot be read, is replaced by a
    fresh training run (with a warning), never trusted.
    """
    path = Path(path) if path is not None else default_classifier_path(data_root)
    if path.is_file() and not retrain:
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, expected {CACHE_FORMAT}")
            model = DigitsClassifier(**saved["config"])
            model.load_state_dict(saved["state_dict"])
            model.info = dict(saved["info"], loaded_from=str(path))
            return model.eval()
        except Exception as e:  # any unreadable cache is rebuilt: it holds nothing that cannot be retrained
            warnings.warn(f"{path}: cannot use the cached digits classifier ({e}); training a new one", stacklevel=2)
    model = train_digits_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(
        path, {"format": CACHE_FORMAT, "config": model.config, "state_dict": model.state_dict(), "info": model.info}
    )
    return model


def digits_feature_extractor(classifier: DigitsClassifier | None = None, **load_kwargs) -> ClassifierFeatures:
    """Penultimate features of ``classifier`` (default: the cached one, loaded with ``load_kwargs``)."""
    return ClassifierFeatures(classifier if classifier is not None else load_digits_classifier(**load_kwargs))


def class_coverage(samples: torch.Tensor, classifier: DigitsClassifier | None = None, min_share: float = 0.02) -> dict:
    """How generated digits spread over the ten classes, as the classifier sees them.

    Returns ``histogram`` (share of samples per predicted digit, sums to 1), ``counts``,
    ``coverage`` (fraction of the ten digits that get at least ``min_share`` of the samples;
    the default 2 % is a fifth of a fair share, so only a nearly absent mode counts as missed)
    and ``entropy`` of the histogram in nats (``log 10 ≈ 2.303`` when uniform, 0 when collapsed).
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 1 or len(samples) == 0:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"samples: expected grey images of shape (N, 1, H, W) with N >= 1, got {shape}")
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share: expected a number in (0, 1], got {min_share!r}")
    classifier = classifier if classifier is not None else load_digits_classifier()
    predicted = classifier.predict(samples.detach().float().clamp(-1, 1))
    counts = torch.bincount(predicted, minlength=NUM_CLASSES)
    p = counts.double() / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {
        "histogram": p.tolist(),
        "counts": counts.tolist(),
        "coverage": float((p >= min_share).double().mean()),
        "entropy": entropy,
    }
