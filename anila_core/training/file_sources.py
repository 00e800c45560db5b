"""Data of your own (``images:FOLDER``, ``points:FILE``): the spec, loading once per version of its files, batches.

A relative path is taken from the working directory and recorded absolute (``config.json``
then names the same files wherever the run is resumed or loaded from).

Both kinds hold out a seeded share of their data for evaluation (the same share and seed
for every run, so runs on one file are compared on the same held-out points). A loaded
dataset is kept in memory for this process, keyed by the path and the files' sizes and
modification times: the trainer, the memory check and the checkpoint check of one run read
the files once, and an edited file is read again.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "DrawnBatches",
    "DataSpec",
    "parse_data_spec",
    "absolute_data_spec",
    "FILE_KINDS",
    "HELD_OUT_SHARE",
    "SPLIT_SEED",
    "load_file_data",
    "PointsSource",
    "draw_indices",
]

#: the prefixes of ``--dataset`` that name data of your own
FILE_KINDS = ("images", "points")
#: share of a folder's images (stratified by class) or of a file's points held out for evaluation
HELD_OUT_SHARE = 0.2
#: seed of that split: fixed, so every run on the same data holds out the same points
SPLIT_SEED = 0
_CACHE_SIZE = 4
_cache: OrderedDict = OrderedDict()


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``images:FOLDER`` or ``points:FILE``: the kind, the path as given (relative to the working directory)
    and the text."""

    kind: str
    path: Path
    text: str

    @property
    def absolute(self) -> str:
        """The spec with an absolute path: what a run records, so that it finds its data from any working directory."""
        return f"{self.kind}:{os.path.abspath(self.path)}"

    @property
    def name(self) -> str:
        """A short name that fits in a folder name: ``points-moons`` for ``points:data/moons.csv``."""
        stem = self.path.stem if self.kind == "points" else (self.path.name or self.path.resolve().name)
        return f"{self.kind}-{stem}"


def absolute_data_spec(dataset: str) -> str:
    """``dataset`` with the path of a spec made absolute (relative to the working directory); any other value
    unchanged."""
    spec = parse_data_spec(dataset) if isinstance(dataset, str) else None
    return spec.absolute if spec is not None else dataset


def parse_data_spec(dataset: str) -> DataSpec | None:
    """The spec in ``dataset`` (``None`` for ``""`` and the built-in names); ``ValueError`` for a prefix without a
    path."""
    kind, sep, path = dataset.partition(":")
    if not sep or kind not in FILE_KINDS:
        return None
    if not path.strip():
        raise ValueError(
            f"dataset: {dataset!r} names no {'folder' if kind == 'images' else 'file'}; expected "
            f"{'images:FOLDER' if kind == 'images' else 'points:FILE'}, e.g. "
            f"{'images:data/my_photos' if kind == 'images' else 'points:data/moons.csv'}"
        )
    return DataSpec(kind, Path(path).expanduser(), dataset)


def _signature(path: Path) -> str:
    """Changes when a file under ``path`` is added, removed, resized or rewritten (names, sizes and modification
    times)."""
    h = hashlib.sha1()
    if path.is_file():
        st = path.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    elif path.is_dir():
        for folder, dirs, files in os.walk(path, followlinks=True):
            dirs.sort()
            for name in sorted(files):
                try:
                    st = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                h.update(
                    f"{os.path.relpath(os.path.join(folder, name), path)}:{st.st_size}:{st.st_mtime_ns}\n".encode()
                )
    return h.hexdigest()


def load_file_data(spec: DataSpec, image_size: int = 0, standardize: bool = True):
    """The data ``spec`` names: a :class:`~anila_core.images.folder.FolderImages` or a
    :class:`~anila_core.training.points_file.PointSet`.

    Every problem with the files is one ``ValueError`` that starts with ``dataset:`` and the
    spec, then says what was found and what was expected.
    """
    key = (spec.kind, str(spec.path.resolve()), image_size, standardize, _signature(spec.path))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    try:
        if spec.kind == "images":
            from anila_core.images.folder import load_image_folder

            data = load_image_folder(spec.path, image_size, HELD_OUT_SHARE, SPLIT_SEED, name=spec.name)
        else:
            from anila_core.training.points_file import make_point_set, read_points

            data = make_point_set(spec.text, read_points(spec.path), standardize, HELD_OUT_SHARE, SPLIT_SEED)
    except ValueError as err:
        raise ValueError(f"dataset: {spec.text} {err}") from None
    _cache[key] = data
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return data


def draw_indices(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``size`` items, distinct within each round of ``size`` (a batch larger than the data takes
    several rounds)."""
    parts, left = [], n
    while left > 0:
        k = min(left, size)
        parts.append(torch.randperm(size, generator=generator)[:k])
        left -= k
    return torch.cat(parts)


class DrawnBatches:
    """A data source whose batches are drawn by a CPU generator of its own, seeded once and saved with the checkpoint
    (so a resumed run draws the batches it would have drawn)."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if state and "generator" in state:
            self.gen.set_state(state["generator"])


class PointsSource(DrawnBatches):
    """Random batches of a point set's training points, kept on the training device."""

    def __init__(self, points, seed: int, device: torch.device):
        super().__init__(seed)
        self.points = points
        self.shape = (points.dim,)
        self.train = points.train.to(device)

    def __len__(self) -> int:
        return len(self.points)

    def sample(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        x = self.train[draw_indices(n, len(self.train), self.gen).to(self.train.device)]
        return x if device is None else x.to(device)
