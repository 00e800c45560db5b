"""Image datasets for image EBMs — scikit-learn's 8×8 digits, CIFAR-10 and Oxford Flowers 102 — under one data root.

Every dataset comes back as an :class:`ImageDataset`: images ``(N, C, H, W)`` scaled to
``[-1, 1]`` (kept in memory as their raw integer values and converted per batch), integer
labels, and ``.batch(n, generator)`` for reproducible random batches.

Where files live: ``data_root`` argument, else ``$ANILA_DATA``, else ``data`` (relative to the
working directory). CIFAR-10 and Flowers102 are read by torchvision's own dataset classes,
which compare MD5 sums with the official release (every CIFAR-10 batch; the two Flowers label
files); nothing is downloaded unless ``download=True``. A missing dataset raises :class:`DatasetNotFoundError` (a
``FileNotFoundError``) that names the folder expected and how to fill it from another machine;
``data/README.md`` says the same at more length. No loader ever substitutes other data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from anila_core.fileio import atomic_torch_save

__all__ = [
    "DATASETS",
    "SIZES",
    "DEFAULT_SIZES",
    "CHANNELS",
    "DatasetNotFoundError",
    "DatasetChecksumError",
    "ImageDataset",
    "load_dataset",
    "resolve_data_root",
]

DATASETS = ("digits", "cifar10", "flowers")
#: Image sides each dataset can be resized to (the ConvNet energies exist for these sizes).
SIZES = {"digits": (8, 16), "cifar10": (8, 16, 32, 64), "flowers": (8, 16, 32, 64)}
DEFAULT_SIZES = {"digits": 8, "cifar10": 32, "flowers": 32}
#: Colour channels of each dataset's images (known without reading a file: a checkpoint is checked against it).
CHANNELS = {"digits": 1, "cifar10": 3, "flowers": 3}
SPLITS = {
    "digits": ("train", "test", "all"),
    "cifar10": ("train", "test", "all"),
    "flowers": ("train", "val", "test", "all"),
}

# Held-out share of the digits (stratified per class, fixed seed): the classifier's test set.
_DIGITS_TEST_SHARE = 0.2
_DIGITS_SPLIT_SEED = 0
# Flowers are decoded from JPEG and resized once, then kept here; bump when the preprocessing changes.
_FLOWERS_CACHE_FORMAT = 1


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under the data root (or a download failed); the message says where they go."""


class DatasetChecksumError(ValueError):
    """The dataset's files are present but differ from the official release (MD5 mismatch)."""


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else ``$ANILA_DATA``, else ``data`` relative to the working directory."""
    if data_root is not None:
        return Path(data_root).expanduser()
    return Path(os.environ.get("ANILA_DATA") or "data").expanduser()


def _resolve_verify(verify: bool | None) -> bool:
    if verify is not None:
        return bool(verify)
    value = os.environ.get("ANILA_DATA_VERIFY", "1").strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes"):
        raise ValueError(f"ANILA_DATA_VERIFY: expected 1 (check MD5 sums, the default) or 0, got {value!r}")
    return value in ("1", "true", "yes")


@dataclass(eq=False)  # tensors have no single truth value: compare datasets by identity
class ImageDataset:
    """Images held in memory as raw values in ``[0, data_max]``; every accessor returns float32 in ``[-1, 1]``.

    Raw storage keeps CIFAR-10 at 150 MB (uint8) instead of 600 MB (float32); the conversion
    costs microseconds per batch.
    """

    name: str
    data: torch.Tensor  # (N, C, H, W), uint8 for photos, float32 for resized digits
    labels: torch.Tensor  # (N,) int64
    data_max: float  # raw value that maps to +1 (255 for photos, 16 for digits)
    classes: list[str] = field(default_factory=list)
    split: str = "train"

    def __post_init__(self):
        if not isinstance(self.data, torch.Tensor) or self.data.dtype == torch.bool or self.data.is_complex():
            got = self.data.dtype if isinstance(self.data, torch.Tensor) else type(self.data).__name__
            raise ValueError(f"data: expected a real-valued torch.Tensor (uint8 or float), got {got}")
        if not isinstance(self.data_max, (int, float)) or not 0 < self.data_max < float("inf"):
            raise ValueError(
                f"data_max: expected a finite number > 0 (the raw value that maps to +1), got {self.data_max!r}"
            )
        if self.data.is_floating_point() and not torch.isfinite(self.data).all():
            bad = int((~torch.isfinite(self.data)).sum())
            raise ValueError(f"data: expected finite values, got {bad} NaN or infinite value(s) in {self.name}")
        if self.data.ndim != 4:
            raise ValueError(f"data: expected shape (N, C, H, W), got {tuple(self.data.shape)}")
        if self.labels.shape != (len(self.data),):
            raise ValueError(f"labels: expected shape ({len(self.data)},), got {tuple(self.labels.shape)}")
        if len(self.data) == 0:
            raise ValueError(f"{self.name}: the {self.split!r} split holds no images")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return len(self.data)

    def to_float(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw values to float32 in ``[-1, 1]``."""
        return raw.float() * (2.0 / self.data_max) - 1.0

    @property
    def images(self) -> torch.Tensor:
        """All images as float32 in ``[-1, 1]``: a new tensor of ``N·C·H·W`` floats on every access."""
        return self.to_float(self.data)

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` for an int, slice or index tensor, images in ``[-1, 1]``."""
        return self.to_float(self.data[index]), self.labels[index]

    def batch(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        return_labels: bool = False,
    ):
        """``n`` distinct images drawn at random, ``(n, C, H, W)`` in ``[-1, 1]``; also their labels if asked.

        The draw depends only on ``generator`` (a CPU generator), so a seeded generator gives
        the same batches on every machine.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self):
            raise ValueError(
                f"n: expected an integer in [1, {len(self)}] (the size of {self.name}/{self.split}), got {n!r}"
            )
        index = torch.randperm(len(self), generator=generator)[:n]
        images = self.to_float(self.data[index])
        if device is not None:
            images = images.to(device)
        if return_labels:
            labels = self.labels[index]
            return images, (labels.to(device) if device is not None else labels)
        return images

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Same as :meth:`batch`: the name the training loop uses for a source of data points."""
        return self.batch(n, generator)

    def __repr__(self) -> str:
        c, h, w = self.shape
        return f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, shape=({c}, {h}, {w}))"


def load_dataset(
    name: str,
    data_root: str | os.PathLike | None = None,
    size: int | None = None,
    split: str = "train",
    download: bool = False,
    verify: bool | None = None,
) -> ImageDataset:
    """Load ``name`` (``"digits"``, ``"cifar10"`` or ``"flowers"``) as an in-memory :class:`ImageDataset`.

    ``size``: side of the square images (``None``: 8 for digits, 32 otherwise; see ``SIZES``).
    ``split``: ``"train"``, ``"test"``, ``"all"``, and ``"val"`` for Flowers (whose official
    ``train`` split holds only 1020 images; ``"all"`` gives all 8189).
    ``download``: let torchvision fetch the files (needs internet); off by default.
    ``verify``: compare files with the official MD5 sums (default on; ``$ANILA_DATA_VERIFY=0``
    turns it off, for the tiny synthetic datasets tests write in the official formats).
    """
    if name not in DATASETS:
        raise ValueError(f"name: unknown dataset {name!r}; expected one of {DATASETS}")
    if split not in SPLITS[name]:
        raise ValueError(f"split: expected one of {SPLITS[name]} for {name}, got {split!r}")
    size = DEFAULT_SIZES[name] if size is None else size
    if isinstance(size, bool) or size not in SIZES[name]:
        raise ValueError(f"size: expected one of {SIZES[name]} for {name}, got {size!r}")
    if name == "digits":
        return _load_digits(size, split)
    root = resolve_data_root(data_root)
    verify = _resolve_verify(verify)
    if name == "cifar10":
        return _load_cifar10(root, size, split, download, verify)
    return _load_flowers(root, size, split, download, verify)


# --- digits -------------------------------------------------------------------------------------


def _load_digits(size: int, split: str) -> ImageDataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()  # bundled with scikit-learn: no download, no data root
    data = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if size != 8:
        # bilinear upsampling keeps the raw 0..16 scale, so [-1, 1] still means blank..full ink
        data = F.interpolate(data, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 16)
    if split != "all":
        test = _stratified_test_mask(labels, _DIGITS_TEST_SHARE, _DIGITS_SPLIT_SEED)
        keep = test if split == "test" else ~test
        data, labels = data[keep], labels[keep]
    return ImageDataset("digits", data.contiguous(), labels, 16.0, [str(d) for d in range(10)], split)


def _stratified_test_mask(labels: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """A fixed held-out set with every class in proportion, so test accuracy and coverage see all ten digits."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        mask[idx[: round(share * len(idx))]] = True
    return mask


# --- CIFAR-10 ------------------------------------------------------------------------------------

_CIFAR_HELP = (
    "To put CIFAR-10 there from a machine with internet: either download "
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it with "
    "`tar -xzf cifar-10-python.tar.gz -C <data root>`, or run "
    "`python -c \"import torchvision; torchvision.datasets.CIFAR10('data', download=True)\"` there; "
    "then copy the folder cifar-10-batches-py/ into {root} on this machine "
    "(or set ANILA_DATA / --data-root to the folder that holds it). "
    "With internet here, load_dataset('cifar10', download=True) fetches it."
)


def _cifar_classes(verify: bool):
    from torchvision.datasets import CIFAR10

    if verify:
        return CIFAR10

    class UncheckedCIFAR10(CIFAR10):
        # torchvision's check_integrity(path, md5=None) checks only that the file exists
        train_list = [[f, None] for f, _ in CIFAR10.train_list]
        test_list = [[f, None] for f, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return UncheckedCIFAR10


def _load_cifar10(root: Path, size: int, split: str, download: bool, verify: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    expected = [f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    if not download:
        _require_files("CIFAR-10", folder, expected, _CIFAR_HELP.format(root=root))
    cls = _cifar_classes(verify)
    parts = []
    for train in {"train": (True,), "test": (False,), "all": (True, False)}[split]:
        ds = _construct(
            lambda: cls(str(root), train=train, download=download),
            "CIFAR-10",
            folder,
            _CIFAR_HELP.format(root=root),
            download,
            checksums={f: md5 for f, md5 in CIFAR10.train_list + CIFAR10.test_list}
            | {CIFAR10.meta["filename"]: CIFAR10.meta["md5"]},
        )
        parts.append((torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.as_tensor(ds.targets, dtype=torch.int64)))
        classes = list(ds.classes)
    data = torch.cat([p[0] for p in parts]).contiguous()
    labels = torch.cat([p[1] for p in parts])
    if size != 32:
        data = _resize_uint8(data, size)
    return ImageDataset("cifar10", data, labels, 255.0, classes, split)


def _resize_uint8(data: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Antialiased resize of uint8 images, in chunks so that the float copy stays small."""
    out = []
    for part in data.split(chunk):
        x = F.interpolate(part.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


# --- Oxford Flowers 102 --------------------------------------------------------------------------

_FLOWERS_HELP = (
    "To put Flowers102 there from a machine with internet: download "
    "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz, imagelabels.mat and setid.mat "
    "from the same address, and arrange them as {root}/flowers-102/jpg/image_00001.jpg ... image_08189.jpg, "
    "{root}/flowers-102/imagelabels.mat and {root}/flowers-102/setid.mat "
    "(`mkdir -p flowers-102 && tar -xzf 102flowers.tgz -C flowers-102` makes the jpg/ folder); or run "
    "`python -c \"import torchvision; torchvision.datasets.Flowers102('data', download=True)\"` there and copy "
    "data/flowers-102/ (or set ANILA_DATA / --data-root to the folder that holds flowers-102/). "
    "With internet here, load_dataset('flowers', download=True) fetches it."
)


def _flowers_classes(verify: bool):
    from torchvision.datasets import Flowers102

    if verify:
        return Flowers102

    class UncheckedFlowers102(Flowers102):
        # md5=None makes torchvision's check_integrity a presence check
        _file_dict = {k: (f, None if k != "image" else md5) for k, (f, md5) in Flowers102._file_dict.items()}

    return UncheckedFlowers102


def _load_flowers(root: Path, size: int, split: str, download: bool, verify: bool) -> ImageDataset:
    from torchvision.datasets import Flowers102
    from torchvision import transforms as T

    base = root / "flowers-102"
    help_text = _FLOWERS_HELP.format(root=root)
    mats = [Flowers102._file_dict["label"][0], Flowers102._file_dict["setid"][0]]
    if not download:
        _require_files("Flowers102", base, mats, help_text)
        jpg = base / "jpg"
        if not jpg.is_dir() or next(jpg.glob("image_*.jpg"), None) is None:
            raise DatasetNotFoundError(f"Flowers102: no images in {jpg} (expected image_00001.jpg ...). {help_text}")

    # shorter side to `size`, then the central square: flowers sit near the centre of the photos
    transform = T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size), T.PILToTensor()])
    cls = _flowers_classes(verify)
    splits = ("train", "val", "test") if split == "all" else (split,)
    datasets = [
        _construct(
            lambda s=s: cls(str(root), split=s, download=download, transform=transform),
            "Flowers102",
            base,
            help_text,
            download,
            checksums={f: md5 for k, (f, md5) in Flowers102._file_dict.items() if k != "image"},
        )
        for s in splits
    ]

    cache = root / "cache" / f"flowers102-{split}-{size}px.pt"
    signature = _folder_signature(base)
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
        except Exception:  # a torn or foreign file: rebuild it rather than fail
            saved = None
        if saved is not None and saved.get("format") == _FLOWERS_CACHE_FORMAT and saved.get("signature") == signature:
            return ImageDataset("flowers", saved["data"], saved["labels"], 255.0, list(Flowers102.classes), split)

    images, labels = [], []
    for ds in datasets:
        for i in range(len(ds)):
            try:
                image, label = ds[i]
            except FileNotFoundError as e:
                raise DatasetNotFoundError(
                    f"Flowers102: {e.filename or e} is listed in setid.mat but missing. {help_text}"
                ) from e
            images.append(image)
            labels.append(label)
    data = torch.stack(images)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(
            cache, {"format": _FLOWERS_CACHE_FORMAT, "signature": signature, "data": data, "labels": labels}
        )
    except OSError:
        pass  # a read-only data root only costs the decoding again next time
    return ImageDataset("flowers", data, labels, 255.0, list(Flowers102.classes), split)


def _folder_signature(base: Path) -> str:
    """A hash of every file's name, size and modification time: changes when any image or label file does."""
    h = hashlib.sha1()
    for folder in (base, base / "jpg"):
        with os.scandir(folder) as entries:
            for entry in sorted((e for e in entries if e.is_file()), key=lambda e: e.name):
                st = entry.stat()
                h.update(f"{folder.name}/{entry.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# --- shared checks -------------------------------------------------------------------------------


def _require_files(title: str, folder: Path, names: Sequence[str], help_text: str) -> None:
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{title}: folder {folder} does not exist. {help_text}")
    missing = [n for n in names if not (folder / n).is_file()]
    if len(missing) == len(names):
        raise DatasetNotFoundError(
            f"{title}: folder {folder} holds none of the dataset files ({', '.join(names)}). {help_text}"
        )
    if missing:
        raise DatasetNotFoundError(f"{title}: folder {folder} lacks {', '.join(missing)}. {help_text}")


def _construct(make: Callable, title: str, folder: Path, help_text: str, download: bool, checksums: dict):
    """Build a torchvision dataset, turning its generic RuntimeError into one that says what is wrong and where."""
    from torchvision.datasets.utils import check_integrity

    try:
        return make()
    except (OSError, RuntimeError) as e:
        if download and not isinstance(e, DatasetNotFoundError):
            raise DatasetNotFoundError(f"{title}: download into {folder.parent} failed ({e}). {help_text}") from e
        if isinstance(e, FileNotFoundError):
            raise DatasetNotFoundError(f"{title}: {e}. {help_text}") from e
        bad = [n for n, md5 in checksums.items() if md5 is not None and not check_integrity(str(folder / n), md5)]
        if not bad:
            raise
        raise DatasetChecksumError(
            f"{title}: {', '.join(str(folder / n) for n in bad)} differ from the official release (MD5 mismatch): "
            "copy them again from the original archive. Files that are meant to differ (the tiny datasets "
            "tests write) load with verify=False or ANILA_DATA_VERIFY=0."
        ) from e
