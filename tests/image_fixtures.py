"""Tiny CIFAR-10 and Flowers102 datasets written in the exact on-disk formats torchvision reads, for tests and notebook
CI.

The files have the official names and layout but synthetic content, so their MD5 sums differ
from the official release: load them with ``verify=False`` (or ``ANILA_DATA_VERIFY=0``), or
patch torchvision's checksum tables with :func:`md5` of the written files.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

__all__ = ["write_tiny_cifar10", "write_tiny_flowers102", "flower_colour", "md5", "CIFAR10_FILES"]

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def write_tiny_cifar10(root: str | Path, n_per_batch: int = 4, seed: int = 0) -> Path:
    """Write ``<root>/cifar-10-batches-py/`` with five training batches, a test batch and ``batches.meta``.

    Each batch is a pickled dict with ``data`` (uint8, ``(n, 3072)``, channel-major rows as in
    the official files), ``labels``, ``batch_label`` and ``filenames``. Returns the folder.
    """
    if n_per_batch < 1:
        raise ValueError(f"n_per_batch: expected an integer >= 1, got {n_per_batch!r}")
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for b, name in enumerate(CIFAR10_FILES):
        labels = [int((b * n_per_batch + i) % 10) for i in range(n_per_batch)]
        # full-range pixels so the scaled images reach both ends of [-1, 1]
        data = rng.integers(0, 256, size=(n_per_batch, 3 * 32 * 32), dtype=np.uint8)
        data[0, 0], data[0, 1] = 0, 255
        entry = {
            "batch_label": f"tiny {name}",
            "labels": labels,
            "data": data,
            "filenames": [f"tiny_{b}_{i}.png" for i in range(n_per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def flower_colour(i: int) -> tuple[int, int, int]:
    """The solid RGB colour of the central square of tiny flower ``i`` (1-based): black, white, then a spread of
    hues."""
    if i == 1:
        return (0, 0, 0)
    if i == 2:
        return (255, 255, 255)
    return ((i * 67) % 256, (i * 131 + 50) % 256, (i * 29 + 100) % 256)


def write_tiny_flowers102(root: str | Path, n: int = 12) -> Path:
    """Write ``<root>/flowers-102/`` with ``jpg/image_00001.jpg`` … , ``imagelabels.mat`` and ``setid.mat``.

    Image ``i`` is non-square (odd ids wide, even ids tall): its central square is the solid
    :func:`flower_colour` and the two leftover bands are its complement, so a loader that
    centre-crops returns a solid image and one that squashes or crops elsewhere does not.
    Ids are split in thirds into ``trnid``, ``valid`` and ``tstid``. Returns the folder.
    """
    from PIL import Image
    from scipy.io import savemat

    if n < 6:
        raise ValueError(f"n: expected an integer >= 6 (at least two images per split), got {n!r}")
    folder = Path(root) / "flowers-102"
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        h, w = (48, 80) if i % 2 else (80, 48)
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        colour = np.array(flower_colour(i), dtype=np.uint8)
        pixels = np.empty((h, w, 3), dtype=np.uint8)
        pixels[:] = 255 - colour
        pixels[top : top + side, left : left + side] = colour
        Image.fromarray(pixels).save(folder / "jpg" / f"image_{i:05d}.jpg", quality=95)
    # 1-based labels in 1..102, as in the official file
    savemat(folder / "imagelabels.mat", {"labels": np.array([[(i % 102) + 1 for i in range(n)]], dtype=np.uint8)})
    ids = np.arange(1, n + 1, dtype=np.uint16)
    third = n // 3
    savemat(
        folder / "setid.mat",
        {"trnid": ids[None, :third], "valid": ids[None, third : 2 * third], "tstid": ids[None, 2 * third :]},
    )
    return folder
