"""Image datasets: tiny CIFAR-10 and Flowers102 in the official formats through torchvision's loaders, the digits, and
the errors."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from anila_core.images.datasets import (
    DatasetChecksumError,
    DatasetNotFoundError,
    ImageDataset,
    load_dataset,
    resolve_data_root,
)
from image_fixtures import CIFAR10_FILES, flower_colour, md5, write_tiny_cifar10, write_tiny_flowers102


N_PER_BATCH = 4
N_FLOWERS = 12


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_tiny_cifar10(root, n_per_batch=N_PER_BATCH)
    return root


@pytest.fixture
def flowers_root(tmp_path):
    write_tiny_flowers102(tmp_path, n=N_FLOWERS)
    return tmp_path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("ANILA_DATA", raising=False)
    monkeypatch.delenv("ANILA_DATA_VERIFY", raising=False)


# --- digits ---------------------------------------------------------------------------------------


def test_digits_shapes_range_and_split():
    train, test, full = (load_dataset("digits", split=s) for s in ("train", "test", "all"))
    assert len(full) == 1797 and len(train) + len(test) == 1797
    assert train.shape == (1, 8, 8) and train.name == "digits"
    images = full.images
    assert images.dtype == torch.float32 and images.shape == (1797, 1, 8, 8)
    assert images.min() == -1.0 and images.max() == 1.0  # ink values 0 and 16 both occur
    # stratified held-out set: every digit present in proportion
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    assert abs(len(test) / 1797 - 0.2) < 0.01
    # the two splits are disjoint: together they hold each image exactly as often as the full set
    pair = lambda ds: sorted(map(tuple, torch.cat([ds.images.flatten(1), ds.labels[:, None].float()], 1).tolist()))  # noqa: E731
    assert sorted(pair(train) + pair(test)) == pair(full)


def test_digits_resize_to_16():
    ds = load_dataset("digits", size=16)
    assert ds.shape == (1, 16, 16)
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0


def test_batches_are_deterministic_and_come_from_the_data():
    ds = load_dataset("digits")
    a = ds.batch(32, torch.Generator().manual_seed(3))
    b = ds.batch(32, torch.Generator().manual_seed(3))
    c = ds.batch(32, torch.Generator().manual_seed(4))
    assert a.shape == (32, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    images, labels = ds.batch(32, torch.Generator().manual_seed(3), return_labels=True)
    assert torch.equal(images, a) and labels.shape == (32,)
    # each batch image is a dataset image with its own label, drawn without repeats
    flat = ds.images.flatten(1)
    idx = [int((flat == img.flatten()).all(1).nonzero()[0]) for img in images]
    assert len(set(idx)) == 32 and torch.equal(ds.labels[idx], labels)
    assert torch.equal(ds.sample(32, torch.Generator().manual_seed(3)), a)
    with pytest.raises(ValueError, match="n: expected an integer in"):
        ds.batch(len(ds) + 1)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="name: unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split: expected one of"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="size: expected one of"):
        load_dataset("cifar10", size=28)
    with pytest.raises(ValueError, match="labels: expected shape"):
        ImageDataset("x", torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.long), 16.0)


# --- data root --------------------------------------------------------------------------------------


def test_data_root_precedence(monkeypatch, tmp_path):
    assert resolve_data_root() == Path("data")
    monkeypatch.setenv("ANILA_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"


def test_anila_data_points_the_loader_at_the_files(monkeypatch, cifar_root, tmp_path):
    monkeypatch.setenv("ANILA_DATA", str(cifar_root))
    assert len(load_dataset("cifar10", verify=False)) == 5 * N_PER_BATCH
    # an explicit data_root wins over the environment
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path)):
        load_dataset("cifar10", data_root=tmp_path, verify=False)


# --- CIFAR-10 ---------------------------------------------------------------------------------------


def _written_cifar(root):
    """The pixels and labels the fixture wrote, decoded independently of torchvision."""
    data, labels = [], []
    for name in CIFAR10_FILES[:5]:
        with open(Path(root) / "cifar-10-batches-py" / name, "rb") as f:
            entry = pickle.load(f)
        data.append(entry["data"])
        labels += entry["labels"]
    return torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32), torch.tensor(labels)


def test_cifar10_loads_through_torchvision(cifar_root):
    ds = load_dataset("cifar10", data_root=cifar_root, verify=False)
    raw, labels = _written_cifar(cifar_root)
    assert ds.name == "cifar10" and ds.shape == (3, 32, 32) and len(ds) == 5 * N_PER_BATCH
    images = ds.images
    assert images.dtype == torch.float32 and images.min() == -1.0 and images.max() == 1.0
    # channel order and scaling survive the trip: [-1, 1] maps back to the bytes on disk
    assert torch.equal(((images + 1) * 127.5).round().to(torch.uint8), raw)
    assert torch.equal(ds.labels, labels)
    assert ds.classes[0] == "airplane"
    assert len(load_dataset("cifar10", data_root=cifar_root, split="test", verify=False)) == N_PER_BATCH
    assert len(load_dataset("cifar10", data_root=cifar_root, split="all", verify=False)) == 6 * N_PER_BATCH


def test_cifar10_resize_to_64(cifar_root):
    ds = load_dataset("cifar10", data_root=cifar_root, size=64, verify=False)
    assert ds.shape == (3, 64, 64)
    x = ds.images
    assert x.min() >= -1 and x.max() <= 1
    # resizing keeps each image's mean colour
    small = load_dataset("cifar10", data_root=cifar_root, verify=False).images
    assert torch.allclose(x.mean((2, 3)), small.mean((2, 3)), atol=0.02)


def test_cifar10_checksums_are_checked_by_default(cifar_root):
    with pytest.raises(DatasetChecksumError, match="data_batch_1.*MD5 mismatch.*verify=False"):
        load_dataset("cifar10", data_root=cifar_root)


def test_cifar10_verified_path_with_matching_checksums(cifar_root, monkeypatch):
    # torchvision's own integrity check, run against the sums of the tiny files
    from torchvision.datasets import CIFAR10

    folder = cifar_root / "cifar-10-batches-py"
    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5(folder / f)] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5(folder / f)] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    assert len(load_dataset("cifar10", data_root=cifar_root)) == 5 * N_PER_BATCH


def test_anila_data_verify_env(monkeypatch, cifar_root):
    monkeypatch.setenv("ANILA_DATA_VERIFY", "0")
    assert len(load_dataset("cifar10", data_root=cifar_root)) == 5 * N_PER_BATCH
    monkeypatch.setenv("ANILA_DATA_VERIFY", "maybe")
    with pytest.raises(ValueError, match="ANILA_DATA_VERIFY"):
        load_dataset("cifar10", data_root=cifar_root)


def test_missing_cifar10_names_the_folder_and_the_remedy(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_root=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "cifar-10-python.tar.gz" in msg and "ANILA_DATA" in msg and "download=True" in msg
    # an empty folder is the same error, not a silent empty dataset
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds none of the dataset files"):
        load_dataset("cifar10", data_root=tmp_path)


def test_partial_cifar10_lists_missing_files(tmp_path):
    folder = write_tiny_cifar10(tmp_path, n_per_batch=2)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_3"):
        load_dataset("cifar10", data_root=tmp_path, verify=False)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="download into .* failed \\(no route to host\\)"):
        load_dataset("cifar10", data_root=tmp_path, download=True)


# --- Flowers102 -------------------------------------------------------------------------------------


def test_flowers_load_resize_and_splits(flowers_root):
    third = N_FLOWERS // 3
    ds = load_dataset("flowers", data_root=flowers_root, verify=False)
    assert ds.name == "flowers" and ds.shape == (3, 32, 32) and len(ds) == third
    images = ds.images
    assert images.dtype == torch.float32 and images.min() >= -1 and images.max() <= 1
    assert images.min() < -0.97 and images.max() > 0.97  # the black and the white flower
    # labels are 0-based versions of imagelabels.mat for the ids in setid.mat's trnid
    assert ds.labels.tolist() == [i % 102 for i in range(third)]
    big = load_dataset("flowers", data_root=flowers_root, size=64, verify=False)
    assert big.shape == (3, 64, 64)
    for loaded in (ds, big):
        # centre crop: each image is its solid central colour; the complement bands (a fifth of the
        # width on each side) are cut away, up to a two-pixel seam that resampling blends
        expected = torch.tensor([flower_colour(i) for i in range(1, third + 1)], dtype=torch.float32) / 127.5 - 1
        x = loaded.images[..., 2:-2, 2:-2]
        assert (x - expected[:, :, None, None]).abs().max() < 0.06
    assert len(load_dataset("flowers", data_root=flowers_root, split="val", verify=False)) == third
    everything = load_dataset("flowers", data_root=flowers_root, split="all", verify=False)
    assert len(everything) == N_FLOWERS and everything.labels.tolist() == [i % 102 for i in range(N_FLOWERS)]


def test_flowers_checksums_are_checked_by_default(flowers_root):
    with pytest.raises(DatasetChecksumError, match="imagelabels.mat"):
        load_dataset("flowers", data_root=flowers_root)


def test_flowers_cache_is_reused_until_a_file_changes(flowers_root, monkeypatch):
    from torchvision.datasets import Flowers102

    first = load_dataset("flowers", data_root=flowers_root, verify=False)
    assert (flowers_root / "cache" / "flowers102-train-32px.pt").is_file()

    def no_decoding(self, idx):
        raise AssertionError("images decoded again although the cache is valid")

    monkeypatch.setattr(Flowers102, "__getitem__", no_decoding)
    second = load_dataset("flowers", data_root=flowers_root, verify=False)
    assert torch.equal(first.data, second.data) and torch.equal(first.labels, second.labels)
    # a changed image invalidates the cache
    image = flowers_root / "flowers-102" / "jpg" / "image_00001.jpg"
    image.write_bytes(image.read_bytes())
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("flowers", data_root=flowers_root, verify=False)


def test_missing_flowers_names_the_folder_and_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("flowers", data_root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "flowers-102") in msg
    assert "jpg/image_00001.jpg" in msg and "imagelabels.mat" in msg and "setid.mat" in msg
    # label files present but no images: still an error, naming the jpg folder
    folder = write_tiny_flowers102(tmp_path, n=6)
    for image in (folder / "jpg").iterdir():
        image.unlink()
    with pytest.raises(DatasetNotFoundError, match=f"no images in {folder / 'jpg'}"):
        load_dataset("flowers", data_root=tmp_path, verify=False)


def test_flowers_image_listed_but_missing(flowers_root):
    (flowers_root / "flowers-102" / "jpg" / "image_00002.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="image_00002.jpg"):
        load_dataset("flowers", data_root=flowers_root, verify=False)
