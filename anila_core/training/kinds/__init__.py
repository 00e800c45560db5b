"""One object per kind of data a run learns (a known 2-D target, points of a file, images), built once from its
configuration."""

from __future__ import annotations

from anila_core.training.kinds.base import CHECKPOINT, DIVERGED_RUN_FILES, DataKind
from anila_core.training.kinds.images import IMAGE_RUN_FILES, ImageData
from anila_core.training.kinds.points import POINTS_2D_FIGURES, POINTS_RUN_FILES, PointsData
from anila_core.training.kinds.target import RUN_FILES, TargetData

__all__ = [
    "data_kind",
    "DataKind",
    "TargetData",
    "PointsData",
    "ImageData",
    "CHECKPOINT",
    "RUN_FILES",
    "IMAGE_RUN_FILES",
    "POINTS_RUN_FILES",
    "KNOWN_RUN_FILES",
    "DIVERGED_RUN_FILES",
]

#: every name a run writes in its folder, whatever its data
KNOWN_RUN_FILES = frozenset(
    RUN_FILES
    + IMAGE_RUN_FILES
    + POINTS_RUN_FILES
    + POINTS_2D_FIGURES
    + ("fid.png", "step_sizes.png", "projections.png")
)


def data_kind(config) -> DataKind:
    """The kind of data ``config`` learns: points of a file, images (a dataset or a folder), else its 2-D target."""
    if config.is_points:
        return PointsData(config)
    if config.is_image:
        return ImageData(config)
    return TargetData(config)
