"""Points from a file of your own: an (N, D) array of numbers read from .npy, .csv or .txt, checked, split and put in
the model's units.

Reading never runs code from the file (``np.load(allow_pickle=False)``; text is parsed as
numbers), and a file that is not an ``(N, D)`` array of finite numbers is refused with one
``ValueError`` that says what was found and what was expected. Nothing is dropped or filled
in silently: rows with NaN are refused with their count, not skipped.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anila_core.sampling.distances import GRID_EXTENT

__all__ = ["POINT_SUFFIXES", "MIN_POINTS", "MAX_VALUE", "read_points", "PointSet", "make_point_set"]

POINT_SUFFIXES = (".npy", ".csv", ".txt")
#: two points held out for evaluation and two to train on, at the very least
MIN_POINTS = 4
#: how many offending rows a message lists before it says "and k more"
_LISTED = 5
#: the largest magnitude of a value in a file of points: the samples are float32 in the file's units, and the
#: standardisation squares the values (float64 holds up to 1.8e308), so 1e30 leaves room for both
MAX_VALUE = 1e30


def _listed(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:_LISTED])
    return shown + (f" and {len(numbers) - _LISTED} more" if len(numbers) > _LISTED else "")


def read_points(path: str | Path) -> np.ndarray:
    """The points in ``path`` as a float64 array ``(N, D)``, N >= 4 and D >= 2, every value finite.

    ``.npy``: a numeric array saved with ``np.save``. ``.csv``: numbers separated by commas;
    ``.txt``: by commas or whitespace. In text files a first line that is not numbers is a
    header, ``#`` starts a comment, empty lines are skipped and an empty field is a missing
    value (refused like NaN).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError("is a folder; expected a file of points (for a folder of images: images:FOLDER)")
    if path.suffix.lower() not in POINT_SUFFIXES:
        raise ValueError(f"has the suffix {path.suffix or '(none)'!r}; expected one of {', '.join(POINT_SUFFIXES)}")
    if path.exists() and not path.is_file():  # a FIFO would block the reader forever
        from anila_core.fileio import file_kind

        raise ValueError(
            f"is {file_kind(path.stat().st_mode)}, not a regular file; expected a .npy, .csv or .txt file of points"
        )
    if not path.is_file():
        raise ValueError(
            "does not exist; expected the path of a .npy, .csv or .txt file of points (relative to the working "
            "directory)"
        )
    if path.suffix.lower() == ".npy":
        array, where = _read_npy(path), "rows"
        row_names = None
    else:
        array, row_names = _read_text(path, "," if path.suffix.lower() == ".csv" else None)
        where = "lines"
    _check_shape(array)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        index = np.flatnonzero(bad).tolist()
        # for text files the file's own line numbers, so the rows can be found in an editor; for .npy the row indices
        numbers = [row_names[i] for i in index] if row_names is not None else index
        what = f"{where} {_listed(numbers)}" + (" (counting from 0)" if row_names is None else "")
        raise ValueError(
            f"has {len(index)} row(s) of {len(array)} with NaN, infinite or missing values ({what}); expected a "
            "finite number in every column of every row: remove or fill those rows"
        )
    huge = np.abs(array) > MAX_VALUE
    if huge.any():
        row, column = (int(i) for i in np.argwhere(huge)[0])
        name = f"line {row_names[row]}" if row_names is not None else f"row {row} (counting from 0)"
        raise ValueError(
            f"has {array[row, column]:.6g} in column {column + 1}, {name} ({int(huge.sum())} value(s) beyond "
            f"±{MAX_VALUE:g}); expected values within ±{MAX_VALUE:g}: the model's samples are float32 tensors "
            "(at most 3.4e38) in the file's units, and standardising squares the values: rescale the file"
        )
    return array


def _read_npy(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(
                "holds Python objects, which are never loaded (unpickling them could run code); expected a numeric "
                "array saved with np.save"
            ) from None
        raise ValueError(f"cannot be read as a .npy file ({err}); expected an array saved with np.save") from None
    except (OSError, EOFError) as err:
        raise ValueError(
            f"cannot be read as a .npy file ({type(err).__name__}: {err}); expected an array saved with np.save"
        ) from None
    if not isinstance(loaded, np.ndarray):  # np.load opens a .npz archive whatever the file is called
        loaded.close()
        raise ValueError("is a .npz archive of several arrays; expected one array saved with np.save")
    if loaded.dtype.kind not in "biuf":
        raise ValueError(f"holds values of dtype {loaded.dtype}; expected real numbers (integers or floats)")
    return loaded.astype(np.float64)


def _read_text(path: Path, delimiter: str | None) -> tuple[np.ndarray, list[int]]:
    """The numbers of a text file and the line number of each row; an optional header line before the first row."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise ValueError(
            "is not a text file (it does not decode as UTF-8); expected numbers in text, one point per line"
        ) from None
    rows, numbers, header_seen = [], [], False
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        sep = delimiter if delimiter is not None else ("," if "," in text else None)
        fields = [f.strip() for f in (text.split(sep) if sep else text.split())]
        values, wrong = [], None
        for field in fields:
            if field == "":
                values.append(math.nan)  # a missing value: refused with the NaN rows
                continue
            try:
                values.append(float(field))
            except ValueError:
                wrong = field
                break
        if wrong is not None:
            if not rows and not header_seen:
                header_seen = True  # column names before the first row of numbers
                continue
            kind = "commas" if delimiter == "," else "commas or whitespace"
            raise ValueError(
                f"has {wrong!r} on line {number}, which is not a number; expected numbers separated by {kind}, "
                "one point per line (a header is allowed only as the first line)"
            )
        if rows and len(values) != len(rows[0]):
            raise ValueError(
                f"has {len(values)} values on line {number} and {len(rows[0])} on line {numbers[0]}; expected the "
                "same number of columns on every line (one point per line)"
            )
        rows.append(values)
        numbers.append(number)
    if not rows:
        raise ValueError("holds no rows of numbers; expected one point per line")
    return np.asarray(rows, dtype=np.float64), numbers


def _check_shape(array: np.ndarray) -> None:
    if array.ndim == 1:
        raise ValueError(
            f"is a 1-D array of {len(array)} values; expected a 2-D array of shape (N, D): one row per point, "
            "D >= 2 columns"
        )
    if array.ndim != 2:
        raise ValueError(f"is an array of shape {array.shape}; expected a 2-D array of shape (N, D): one row per point")
    n, d = array.shape
    if d < 2:
        raise ValueError(
            f"has {d} column(s); expected D >= 2 columns, one coordinate each (points in at least two dimensions)"
        )
    if n < MIN_POINTS:
        raise ValueError(f"holds {n} point(s); expected at least {MIN_POINTS} (a share is held out for evaluation)")


@dataclass(eq=False)  # tensors have no single truth value: compare point sets by identity
class PointSet:
    """The points of a file split into training and held-out points, in the model's units ``(x − mean) / scale``.

    ``mean`` and ``scale`` map back: a point of the model is ``mean + scale · z`` in the
    file's units (``mean`` 0 and ``scale`` 1 when the data were not standardised).
    ``window`` is the half-width of the square the 2-D figures and the KDE grid TV cover.
    ``fingerprint`` is a hash of the file's numbers, which a resumed run checks.
    """

    name: str
    train: torch.Tensor  # (N_train, D) float32
    held_out: torch.Tensor  # (N_held_out, D) float32
    mean: tuple[float, ...]
    scale: float
    window: float
    fingerprint: str

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def __len__(self) -> int:
        return len(self.train)

    def to_file_units(self, z: torch.Tensor) -> torch.Tensor:
        """Points of the model (or of this set) in the file's own units."""
        return z * self.scale + torch.tensor(self.mean, dtype=z.dtype, device=z.device)

    def __repr__(self) -> str:
        return f"PointSet({self.name!r}, train={len(self.train)}, held_out={len(self.held_out)}, dim={self.dim})"


def make_point_set(name: str, array: np.ndarray, standardize: bool, held_out_share: float, split_seed: int) -> PointSet:
    """Split ``array`` by a seeded permutation (at least two points on each side) and, with ``standardize``, rescale it.

    Standardising shifts the training points to mean 0 and divides every coordinate by one
    common scale, the root of their mean variance: the shape of the data is kept (a circle
    stays a circle), and the presets' starting noise N(0, 2²) and the ±4.6 window fit it.
    """
    fingerprint = hashlib.sha256(np.ascontiguousarray(array).tobytes() + str(array.shape).encode()).hexdigest()
    n = len(array)
    n_held = min(max(2, round(held_out_share * n)), n - 2)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).numpy()
    train, held = array[order[n_held:]], array[order[:n_held]]
    if standardize:
        spread = train.max(axis=0) - train.min(axis=0)
        if not (spread > 0).any():
            raise ValueError("holds the same point in every training row; expected points that vary")
        mean = train.mean(axis=0)
        with np.errstate(all="ignore"):
            scale = float(np.sqrt(train.var(axis=0).mean()))
            z = (train - mean) / scale
        if not (scale > 0 and math.isfinite(scale) and np.isfinite(z).all() and np.abs(z).max() < 1e6):
            column = int(np.argmax(spread))
            raise ValueError(
                f"has points that vary by at most {spread[column]:.3g} (column {column + 1}, around "
                f"{mean[column]:.6g}): too little for the standardisation to divide by in floating point; expected "
                "points that vary by more than about 1e-150: rescale the file, or train without standardising "
                "(--no-standardize)"
            )
    else:
        mean, scale = np.zeros(array.shape[1]), 1.0
    train_z = torch.from_numpy((train - mean) / scale).float()
    held_z = torch.from_numpy((held - mean) / scale).float()
    # the default window when everything fits in it, else one that holds every training point with a margin
    reach = float(train_z.abs().max())
    window = max(GRID_EXTENT, math.ceil(10 * 1.05 * reach) / 10)
    return PointSet(
        name, train_z.contiguous(), held_z.contiguous(), tuple(float(v) for v in mean), scale, window, fingerprint
    )
