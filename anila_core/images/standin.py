"""An offline stand-in for colour photographs: square patches of scikit-learn's two bundled photographs, written as a
folder of PNGs.

Notebook 04 trains on CIFAR-10 or Oxford Flowers when their files are on disk. On a fresh
machine they are not, and the loaders never download; the notebook then runs every section
on this stand-in instead, small and clearly named as such, so that each figure of the real
run still appears. It is *not* CIFAR-10 or Flowers: 2 source pictures (a temple in China and
a flower), cut into many overlapping crops, so a model can learn their colours and textures
in minutes, and a sample grid says at a glance whether it did.

The folder has one subfolder per photograph, so the folder loader gives two classes and FID/KID
use a small classifier trained on them when Inception's weights are not here
(:mod:`anila_core.images.folder_features`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["STANDIN_NAME", "STANDIN_TITLE", "photo_standin_images", "write_photo_standin"]

#: the folder's name, which the training runs and their tables show as the dataset
STANDIN_NAME = "photo-patches-standin"
#: how every title names it
STANDIN_TITLE = "stand-in: patches of scikit-learn's 2 sample photos"


def photo_standin_images(
    n: int, side: int = 16, seed: int = 0, crop: tuple[int, int] = (48, 160)
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` colour patches ``(n, 3, side, side)`` as uint8, their photo index ``(n,)`` and the photos' names.

    Each patch is a random square crop (side drawn from ``crop``, in photo pixels) of one of
    the two photographs, taken in turn, and averaged down to ``side × side``: a crop several
    times the output side keeps whole shapes (a roof, a petal) rather than a few pixels of one.
    """
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [Path(f).stem for f in bunch.filenames]  # china, flower
    photos = [torch.tensor(img).permute(2, 0, 1).float() for img in bunch.images]  # (3, H, W) in [0, 255]
    gen = torch.Generator().manual_seed(seed)
    out, labels = [], []
    for i in range(n):
        k = i % len(photos)
        photo = photos[k]
        size = int(torch.randint(crop[0], crop[1] + 1, (1,), generator=gen))
        top = int(torch.randint(0, photo.shape[1] - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, photo.shape[2] - size + 1, (1,), generator=gen))
        patch = F.adaptive_avg_pool2d(photo[:, top : top + size, left : left + size][None], side)[0]
        out.append(patch.round().clamp(0, 255).to(torch.uint8))
        labels.append(k)
    return torch.stack(out), torch.tensor(labels), names


def write_photo_standin(parent: str | Path, n: int = 512, side: int = 16, seed: int = 0) -> Path:
    """Write ``n`` patches as PNGs under ``<parent>/photo-patches-standin/<photo>/``; returns that folder.

    The same arguments always write the same pixels (seeded), and a folder already written with
    them is reused as it is, so a notebook run again does not rewrite it.
    """
    from PIL import Image

    folder = Path(parent) / STANDIN_NAME
    stamp = folder / ".written"
    key = f"n={n} side={side} seed={seed}"
    if stamp.is_file() and stamp.read_text() == key:
        return folder
    images, labels, names = photo_standin_images(n, side, seed)
    for name in names:
        sub = folder / name
        sub.mkdir(parents=True, exist_ok=True)
        for old in sub.glob("*.png"):  # a folder written with other arguments: start clean
            old.unlink()
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / names[int(label)] / f"{i:05d}.png")
    stamp.write_text(key)
    return folder
