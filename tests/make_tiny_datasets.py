"""Write tiny CIFAR-10 and Flowers102 datasets (official file layout, synthetic pixels) into a folder: ``python
tests/make_tiny_datasets.py DIR``.

Notebook 04 runs in CI on these, at the smoke budget, with ``ANILA_DATA=DIR`` and
``ANILA_DATA_VERIFY=0`` (the files' checksums differ from the official release on purpose).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # image_fixtures beside this file, from any working directory

from image_fixtures import write_tiny_cifar10, write_tiny_flowers102  # noqa: E402

#: enough images for the smoke presets' batches and a non-degenerate FID covariance
CIFAR_PER_BATCH = 8
FLOWERS_IMAGES = 24


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="data root to write cifar-10-batches-py/ and flowers-102/ into")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    cifar = write_tiny_cifar10(args.folder, n_per_batch=CIFAR_PER_BATCH)
    flowers = write_tiny_flowers102(args.folder, n=FLOWERS_IMAGES)
    print(f"wrote {cifar} and {flowers}")
    print(f"use: ANILA_DATA={args.folder.resolve()} ANILA_DATA_VERIFY=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
