"""The offline stand-in of notebook 04: colour patches of scikit-learn's photos, written once, read back by the folder
loader as two classes."""

import torch

from anila_core.images.folder import load_image_folder
from anila_core.images.standin import STANDIN_NAME, photo_standin_images, write_photo_standin


def test_patches_are_colour_seeded_and_from_both_photos():
    images, labels, names = photo_standin_images(8, side=16, seed=3)
    again, _, _ = photo_standin_images(8, side=16, seed=3)
    other, _, _ = photo_standin_images(8, side=16, seed=4)
    assert images.shape == (8, 3, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(images, again) and not torch.equal(images, other)
    assert names == ["china", "flower"] and labels.tolist() == [0, 1] * 4
    # colour, not grey: the channels differ within a patch
    assert (images[:, 0].float() - images[:, 2].float()).abs().mean() > 5


def test_written_folder_loads_as_two_classes_and_is_reused(tmp_path):
    folder = write_photo_standin(tmp_path, n=20, side=16, seed=0)
    assert folder.name == STANDIN_NAME and len(list(folder.glob("*/*.png"))) == 20
    loaded = load_image_folder(folder, image_size=0, held_out_share=0.2, split_seed=0)
    assert loaded.classes == ("china", "flower") and loaded.train.shape == (3, 16, 16)
    assert len(loaded.train) + len(loaded.held_out) == 20
    written = {p: p.stat().st_mtime_ns for p in folder.glob("*/*.png")}
    write_photo_standin(tmp_path, n=20, side=16, seed=0)  # same arguments: the files are not rewritten
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/*.png")} == written
    write_photo_standin(tmp_path, n=10, side=16, seed=0)  # other arguments: written afresh, no stale file left
    assert len(list(folder.glob("*/*.png"))) == 10
