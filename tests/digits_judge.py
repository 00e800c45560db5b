"""Test helper: one data root per test session holding the trained digits classifier, so FID/KID on digits costs its
training once."""

from __future__ import annotations

from pathlib import Path

_ROOTS: dict[str, Path] = {}


def digits_data_root(base: Path) -> Path:
    """``base/digits-root`` with ``cache/digits_classifier.pt`` in it, trained (a few seconds) on the first call of the
    session."""
    if "root" not in _ROOTS:
        import torch

        from anila_core.images.digits_classifier import default_classifier_path, load_digits_classifier

        root = Path(base) / "digits-root"
        with torch.enable_grad():
            load_digits_classifier(default_classifier_path(root))
        _ROOTS["root"] = root
    return _ROOTS["root"]
