"""FID and KID between two image sets, computed by torchmetrics on features from Inception or any small network.

Images follow the project's convention: float tensors ``(N, C, H, W)`` in ``[-1, 1]`` (samples
are clamped to that range first, as they would be when saved as pictures). Features are
extracted once, in batches, and the same features feed both metrics.

The standard Inception network (``feature_extractor=None``) needs the ``torch-fidelity``
package and the file ``weights-inception-2015-12-05-6726825d.pth`` in torch hub's checkpoint
folder (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``);
nothing is downloaded unless ``download_weights=True``. For the 8×8 digits use
``feature_extractor="digits"``: the penultimate layer of :mod:`anila_core.images.digits_classifier`.
FID and KID from different feature extractors are different numbers: compare like with like,
and at equal sample counts (FID is biased upward for small sets).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "fid_kid",
    "extract_features",
    "InceptionFeatures",
    "InceptionUnavailableError",
    "inception_weights_path",
    "INCEPTION_WEIGHTS_FILE",
    "torch_fidelity_available",
    "INCEPTION_WEIGHTS_URL",
]

# The file torch-fidelity's Inception loads through torch.hub.load_state_dict_from_url, which keeps it
# in torch hub's checkpoint folder under the URL's file name.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS_FILE}"


class InceptionUnavailableError(RuntimeError):
    """The Inception feature extractor cannot be built here: torch-fidelity is missing or its weights are absent."""


def inception_weights_path() -> Path:
    """Where the Inception weights are looked for: ``torch.hub.get_dir()/checkpoints/<file>`` (honours
    ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


def torch_fidelity_available() -> bool:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return False
    return True


class InceptionFeatures(nn.Module):
    """The 2048-d pool features of the FID Inception-v3, for images in ``[-1, 1]`` (one channel is repeated to three).

    ``weights_path``: the weights file (default :func:`inception_weights_path`).
    ``download``: fetch the weights into torch hub's folder when absent (needs internet).
    """

    num_features = 2048

    def __init__(self, weights_path: str | Path | None = None, download: bool = False):
        super().__init__()
        path = Path(weights_path).expanduser() if weights_path is not None else inception_weights_path()
        problems = []
        if not torch_fidelity_available():
            problems.append(
                "the package torch-fidelity is not installed (torchmetrics builds its Inception from it): "
                "install it with `pip install torch-fidelity` where a package index is reachable"
            )
        if not path.is_file() and not (download and weights_path is None):
            problems.append(
                f"the Inception weights file {path} does not exist (nothing is downloaded unless "
                "download_weights=True; "
                f"offline, download {INCEPTION_WEIGHTS_URL} on a machine with internet and copy it to "
                f"{inception_weights_path()}, torch hub's checkpoint folder, which $TORCH_HOME moves, "
                "or pass weights_path=<file>)"
            )
        if problems:
            raise InceptionUnavailableError(
                "FID/KID with Inception features are unavailable: "
                + "; and ".join(problems)
                + ". Without them, pass a feature_extractor (for the digits: feature_extractor='digits')."
            )
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:
            self.inception = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=[str(self.num_features)],
                feature_extractor_weights_path=str(path) if path.is_file() else None,
            )
        except OSError as e:  # the download failed: offline, or the address moved
            raise InceptionUnavailableError(
                f"could not download the Inception weights ({e}); copy {INCEPTION_WEIGHTS_URL} to {path} by hand"
            ) from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the network expects uint8 RGB, as in the reference TensorFlow implementation
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.inception(x)


class _Precomputed(nn.Module):
    """Hands torchmetrics features that were already extracted, so each image passes the network once."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def extract_features(images: torch.Tensor, feature_extractor: nn.Module, batch_size: int = 200) -> torch.Tensor:
    """Features ``(N, D)`` (float64) of images in ``[-1, 1]``, computed in batches with the extractor in eval mode."""
    was_training = feature_extractor.training
    feature_extractor.eval()
    try:
        device = next((p.device for p in feature_extractor.parameters()), images.device)
        out = [
            feature_extractor(chunk.to(device)).reshape(len(chunk), -1).double().cpu()
            for chunk in images.split(batch_size)
        ]
    finally:
        feature_extractor.train(was_training)
    return torch.cat(out)


def _check_images(name: str, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected images of shape (N, C, H, W), got {shape}")
    if len(x) < 2:
        raise ValueError(f"{name}: expected at least 2 images, got {len(x)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: holds NaN or infinite values")
    return x.detach().float().clamp(-1, 1)


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature_extractor: nn.Module | str | None = None,
    *,
    batch_size: int = 200,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    weights_path: str | Path | None = None,
    download_weights: bool = False,
) -> dict[str, float]:
    """FID and KID between ``real`` and ``fake`` images: ``{"fid", "kid_mean", "kid_std"}`` (0 for equal sets).

    ``feature_extractor``: ``None`` for Inception (see the module docstring), ``"digits"`` for
    the digits classifier, or any module mapping images in ``[-1, 1]`` to ``(N, D)`` features.
    KID averages the unbiased polynomial-kernel MMD² over ``kid_subsets`` random subsets of
    ``min(kid_subset_size, N_real, N_fake)`` images; ``seed`` fixes those subsets without
    touching the global random state.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _check_images("real", real), _check_images("fake", fake)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"fake: expected images of shape {tuple(real.shape[1:])} like real, got {tuple(fake.shape[1:])}"
        )
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("kid_subsets", kid_subsets, 1),
        ("kid_subset_size", kid_subset_size, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")

    if feature_extractor is None:
        feature_extractor = InceptionFeatures(weights_path, download=download_weights)
    elif isinstance(feature_extractor, str) and feature_extractor == "digits":
        from anila_core.images.digits_classifier import digits_feature_extractor

        feature_extractor = digits_feature_extractor()
    elif not isinstance(feature_extractor, nn.Module):
        raise ValueError(f"feature_extractor: expected None, 'digits' or an nn.Module, got {feature_extractor!r}")

    f_real = extract_features(real, feature_extractor, batch_size)
    f_fake = extract_features(fake, feature_extractor, batch_size)
    identity = _Precomputed(f_real.shape[1])

    # the features are already complete on this process: never wait for other ranks
    fid = FrechetInceptionDistance(feature=identity, sync_on_compute=False)
    fid.update(f_real, real=True)
    fid.update(f_fake, real=False)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*will save all extracted features.*"
        )  # we hand it few, small features
        kid = KernelInceptionDistance(
            feature=identity,
            subsets=kid_subsets,
            subset_size=min(kid_subset_size, len(f_real), len(f_fake)),
            sync_on_compute=False,
        )
    kid.update(f_real, real=True)
    kid.update(f_fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # KID draws its subsets from the global generator
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}
