"""Images from a folder of your own: torchvision's ImageFolder layout (one subfolder per class) or a flat folder,
resized, split into training and held-out images.

The files are found as torchvision's :class:`~torchvision.datasets.ImageFolder` finds them
(its ``make_dataset`` and image extensions), decoded with PIL (torchvision's image backend)
and resized with torchvision's transforms: the shorter side to the chosen size, then the
central square, as for Flowers 102. Grey files stay one channel; when any file is in
colour, every image is RGB (grey ones repeated over the three channels). A file that cannot
be decoded is never skipped: the folder is refused with the names of such files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anila_core.images.convnets import IMAGE_SIZES
from anila_core.images.datasets import ImageDataset

__all__ = ["FolderImages", "FolderScan", "load_image_folder", "scan_image_folder", "MIN_IMAGES"]

#: two images held out for evaluation and two to train on, at the very least
MIN_IMAGES = 4
_LISTED = 3


@dataclass(frozen=True)
class FolderScan:
    """The image files of a folder, their class indices and the class names (``()`` for a flat folder)."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]


@dataclass(eq=False)
class FolderImages:
    """A folder's images split in two :class:`ImageDataset` (uint8, ``data_max`` 255): what training sees and what
    evaluation holds out."""

    train: ImageDataset
    held_out: ImageDataset
    classes: tuple[str, ...]
    fingerprint: str  # a hash of the decoded, resized images and their labels, which a resumed run checks


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in _extensions()


def scan_image_folder(root: str | Path) -> FolderScan:
    """Find the images of ``root``: one subfolder per class (searched as ImageFolder does), or image files directly in
    it.

    Hidden entries (``.ipynb_checkpoints``, ``.DS_Store``) and files that are not images by
    their extension are not data; anything else that does not fit one layout is refused.
    """
    root = Path(root)
    if not root.exists():
        raise ValueError("does not exist; expected a folder of images (relative to the working directory)")
    if not root.is_dir():
        raise ValueError("is a file; expected a folder of images (for a file of points: points:FILE)")
    visible = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    folders = [p for p in visible if p.is_dir()]
    images = _once([p for p in visible if _is_image_name(p) and not p.is_dir() and _regular(p, root)])
    if folders and images:
        raise ValueError(
            f"holds both image files ({images[0].name}, ...) and subfolders ({folders[0].name}, ...); expected one "
            "layout: a subfolder per class (torchvision's ImageFolder) or images directly in the folder"
        )
    if folders:
        class_to_idx = {p.name: i for i, p in enumerate(folders)}
        samples = [(f, class_to_idx[p.name]) for p in folders for f in _images_under(p, root)]
        found = {c for _, c in samples}
        empty = [p.name for p in folders if class_to_idx[p.name] not in found]
        if len(empty) == len(folders):
            raise ValueError(
                f"holds {len(folders)} subfolder(s) but no image files in them; expected image files "
                f"({', '.join(_extensions())}) in one subfolder per class"
            )
        if empty:
            raise ValueError(
                f"has class folder(s) with no image files: {', '.join(empty[:_LISTED])}"
                f"{' ...' if len(empty) > _LISTED else ''}; expected images in every class folder (remove the empty "
                "ones)"
            )
        samples.sort(key=lambda s: (s[1], str(s[0])))
        return FolderScan(tuple(f for f, _ in samples), tuple(c for _, c in samples), tuple(p.name for p in folders))
    if not images:
        others = [p.name for p in visible if p.is_file()]
        found = (
            f" (it holds {len(others)} other file(s): "
            f"{', '.join(others[:_LISTED])}{' ...' if len(others) > _LISTED else ''})"
            if others
            else ""
        )
        raise ValueError(
            f"holds no image files{found}; expected image files ({', '.join(_extensions())}) in the folder or in one "
            "subfolder per class"
        )
    return FolderScan(tuple(images), (0,) * len(images), ())


def _regular(path: Path, root: Path) -> bool:
    """True for a regular file (through links); ``ValueError`` naming a FIFO, socket or device or a broken link with an
    image's name."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        raise ValueError(
            f"has {path.relative_to(root)}, a link to nothing (or a file that cannot be opened); expected image "
            "files: remove it"
        ) from None
    if not stat.S_ISREG(mode):
        from anila_core.fileio import file_kind

        raise ValueError(
            f"has {path.relative_to(root)}, which is {file_kind(mode)}, not a regular file; expected image files"
        )
    return True


def _once(files: list[Path]) -> list[Path]:
    """``files`` without a second path to the same file (two links to one image count once)."""
    seen, kept = set(), []
    for f in files:
        st = f.stat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            kept.append(f)
    return kept


def _images_under(folder: Path, root: Path) -> list[Path]:
    """The image files under a class folder, in sorted order, following links to folders once each.

    torchvision's walk follows a link to a folder every time it meets one, so a class folder
    holding a link to itself was read again at every level (8 images read as 168); here each
    real folder is entered once and each real file counted once. Hidden entries are skipped.
    """
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        st = current.stat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        entries = sorted(p for p in current.iterdir() if not p.name.startswith("."))
        stack.extend(reversed([p for p in entries if p.is_dir()]))
        found.extend(p for p in entries if not p.is_dir() and _is_image_name(p) and _regular(p, root))
    return _once(sorted(found, key=str))


#: PIL modes read as one grey channel; every other mode but "F" is read as RGB
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """The PIL mode and ``(width, height)`` of an image file, from its header alone (nothing is decoded)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.mode, image.size


def _decode(path: Path, colour: bool):
    """The image at ``path`` as a PIL image in mode ``"RGB"`` when ``colour``, else ``"L"``; 16-bit grey is scaled to 8
    bits, alpha dropped."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode == "F":
            raise OSError("floating-point pixels are not read; expected 8- or 16-bit grey or colour images")
        if image.mode.startswith("I"):  # 16- or 32-bit grey: scale its own range to 8 bits rather than clip at 255
            values = np.asarray(image, dtype=np.float64)
            top = 65535.0 if values.max() > 255 else 255.0
            image = Image.fromarray(np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
        return image.convert("RGB" if colour else "L")


def _unreadable(broken: list[str], total: int) -> ValueError:
    return ValueError(
        f"has {len(broken)} file(s) of {total} that cannot be read as images ({'; '.join(broken[:_LISTED])}"
        f"{' ...' if len(broken) > _LISTED else ''}); expected image files that PIL decodes: repair or remove them"
    )


def _problem(path: Path, root: Path, err: Exception) -> str:
    return f"{path.relative_to(root)}: {' '.join(str(err).split())[:80] or type(err).__name__}"


def _own_side(sizes: list[tuple[int, int]], files: tuple[Path, ...]) -> int:
    """The side every image already has, when they share one square size the ConvNet takes; else a ``ValueError`` asking
    for ``image_size``."""
    distinct = sorted(set(sizes))
    sides = ", ".join(str(s) for s in IMAGE_SIZES)
    if len(distinct) > 1:
        shown = ", ".join(f"{w}×{h}" for w, h in distinct[:_LISTED]) + (" ..." if len(distinct) > _LISTED else "")
        raise ValueError(
            f"holds images of {len(distinct)} sizes ({shown}); expected image_size set to the side they are all "
            f"resized to ({sides}); without it the images must share one square size"
        )
    ((w, h),) = distinct
    if w != h or w not in IMAGE_SIZES:
        raise ValueError(
            f"holds {w}×{h} images ({files[0].name}, ...); expected image_size set to the side they are resized to "
            f"({sides}): the ConvNet takes square images of these sides only"
        )
    return w


def _held_out_mask(labels: torch.Tensor, share: float, seed: int) -> torch.Tensor:
    """A seeded held-out set, stratified by class (each class in proportion), of at least two images and leaving at
    least two."""
    n = len(labels)
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, dtype=torch.bool)
    order = torch.randperm(n, generator=gen)
    for c in labels.unique().tolist():
        members = order[labels[order] == c]
        mask[members[: round(share * len(members))]] = True
    # small classes round to nothing: top up from the shuffled order, or give back, to stay within [2, n - 2]
    want = min(max(2, int(mask.sum())), n - 2)
    if int(mask.sum()) < want:
        extra = order[~mask[order]][: want - int(mask.sum())]
        mask[extra] = True
    elif int(mask.sum()) > want:
        mask[order[mask[order]][want:]] = False
    return mask


def load_image_folder(
    root: str | Path, image_size: int, held_out_share: float, split_seed: int, name: str | None = None
) -> FolderImages:
    """Read every image of ``root``, resize it to ``image_size`` (0: the side the images share) and split them.

    Raises a ``ValueError`` (one sentence: what was found, what was expected) for a missing or
    empty folder, a folder of both layouts, an empty class folder, files that cannot be
    decoded, fewer than :data:`MIN_IMAGES` images, or (without ``image_size``) images of
    several sizes or of a side the ConvNet does not take.
    """
    from torchvision import transforms as T

    root = Path(root)
    scan = scan_image_folder(root)
    if image_size not in (0, *IMAGE_SIZES):
        raise ValueError(
            f"cannot be resized to {image_size!r}; expected image_size 0 (the images' own side) or one of {IMAGE_SIZES}"
        )
    headers, broken = [], []
    for path in scan.files:  # first the headers: the channels and the side are known before any image is decoded
        try:
            headers.append(_header(path))
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError or DecompressionBombError for bad files
            broken.append(_problem(path, root, err))
    if broken:
        raise _unreadable(broken, len(scan.files))
    if len(scan.files) < MIN_IMAGES:
        raise ValueError(
            f"holds {len(scan.files)} image(s); expected at least {MIN_IMAGES} (a share is held out for evaluation)"
        )
    side = image_size or _own_side([size for _, size in headers], scan.files)
    colour = any(mode not in _GREY_MODES for mode, _ in headers)
    resize = T.Compose([T.Resize(side, antialias=True), T.CenterCrop(side), T.PILToTensor()])
    tensors = []
    for path in scan.files:
        try:
            tensors.append(resize(_decode(path, colour)))
        except Exception as err:  # a header that reads but pixels that do not: a truncated file
            broken.append(_problem(path, root, err))
    if broken:
        raise _unreadable(broken, len(scan.files))
    data = torch.stack(tensors).contiguous()  # (N, C, side, side) uint8
    labels = torch.tensor(scan.labels, dtype=torch.int64)
    digest = hashlib.sha256(
        data.numpy().tobytes() + labels.numpy().tobytes() + "\n".join(scan.classes).encode()
    ).hexdigest()
    held = _held_out_mask(labels, held_out_share, split_seed)
    title = name or root.name
    classes = list(scan.classes)
    return FolderImages(
        train=ImageDataset(title, data[~held].contiguous(), labels[~held], 255.0, classes, "train"),
        held_out=ImageDataset(title, data[held].contiguous(), labels[held], 255.0, classes, "held_out"),
        classes=scan.classes,
        fingerprint=digest,
    )
