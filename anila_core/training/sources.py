"""Where a training run's data points come from: a 2-D target's sampler or an image dataset, behind one small interface
(points of a file: :mod:`anila_core.training.file_sources`)."""

from __future__ import annotations

import hashlib

import torch

from anila_core.images.datasets import ImageDataset
from anila_core.training.file_sources import DrawnBatches, draw_indices
from anila_core.sampling.targets import Target

__all__ = [
    "TargetSource",
    "ImageSource",
    "reference_images",
    "TRAIN_SPLITS",
    "stream_seed",
    "CHAIN_STREAM",
    "DATA_STREAM",
]

#: the split each dataset trains on: Flowers' official train split holds only 1020 of 8189
#: images, and a generative model has no use for a held-out set during training
TRAIN_SPLITS = {"digits": "train", "cifar10": "train", "flowers": "all"}

CHAIN_STREAM, DATA_STREAM = 0, 1


def stream_seed(seed: int, rank: int = 0, stream: int = CHAIN_STREAM) -> int:
    """The seed of one random stream of one process: ``seed`` itself for rank 0's chains.

    Other (rank, stream) pairs get a hash of all three, cut to 32 bits because a CPU
    generator (Mersenne Twister) ignores higher bits; so ranks and streams never share a
    seed by construction, while rank 0's chain stream keeps the plain seed, which makes a
    one-process run the same whether or not torchrun launched it.
    """
    if rank == 0 and stream == CHAIN_STREAM:
        return seed
    digest = hashlib.sha256(f"anila-stream:{seed}:{rank}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class TargetSource:
    """Data points of a known 2-D target, drawn with the trainer's own generator (the rings loop's original stream)."""

    def __init__(self, target: Target, generator: torch.Generator):
        self.target, self.gen = target, generator
        self.shape = (target.dim,)

    def sample(self, n: int, device: torch.device) -> torch.Tensor:
        return self.target.sample(n, generator=self.gen).to(device)

    def state_dict(self) -> dict:
        return {}  # its generator is the trainer's, which the checkpoint saves

    def load_state_dict(self, state: dict) -> None:
        pass


def reference_images(images: ImageDataset, n: int, seed: int) -> torch.Tensor:
    """A fixed set of ``min(n, len)`` distinct real images (CPU) for FID/KID, independent of the training stream."""
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[: min(n, len(images))]
    return images.to_float(images.data[index])


class ImageSource(DrawnBatches):
    """Random batches of an :class:`ImageDataset`, in ``[-1, 1]``, kept on the training device.

    The raw images (uint8 for photos) are copied to ``device`` once, so a batch costs one
    index and one conversion there instead of a host-to-device copy per iteration. Indices
    come from a CPU generator of the source's own, saved with the checkpoint. A batch larger
    than the dataset (the tiny datasets of the tests) is drawn in rounds of distinct images.
    """

    def __init__(self, dataset: ImageDataset, seed: int, device: torch.device):
        super().__init__(seed)
        self.dataset = dataset
        self.shape = dataset.shape
        self.raw = dataset.data.to(device)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        index = draw_indices(n, len(self), self.gen).to(self.raw.device)
        x = self.dataset.to_float(self.raw[index])
        return x if device is None else x.to(device)
