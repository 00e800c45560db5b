"""Data and energies of your own: --dataset images:FOLDER and points:FILE, --energy module.path:Name, their metrics,
runs and refusals.

The tests write their own data (folders of small PNGs, .csv/.npy/.txt files of points) in a
temporary folder and train at the smoke preset. The energies below are imported by name
(``test_own_data:QuadraticEnergy``), as a user's module would be: pytest puts this folder on
the Python path.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import anila_core.images.folder_features as folder_features
from anila_core.cli import main
from anila_core.fileio import read_jsonl
from anila_core.images.folder import load_image_folder
from anila_core.sampling.distances import grid_tv, mmd
from anila_core.sampling.sample_distances import kde_grid_log_probs, scaled_mmd, sliced_wasserstein, wasserstein_1d
from anila_core.training.config import TrainConfig
from anila_core.training.presets import preset
from anila_core.training.file_sources import HELD_OUT_SHARE, load_file_data, parse_data_spec
from anila_core.training.points_file import read_points
from anila_core.training.kinds import data_kind
from anila_core.training.runs import CHECKPOINT, Run
from anila_core.training.run_loading import load_trainer
from anila_core.training.trainer import Trainer
from cli_commands import smoke_argv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# --------------------------------------------------------------------------- energies of your own, imported by name


class QuadraticEnergy(nn.Module):
    """``E(x) = ½ |W x + c|²``: a learnable Gaussian, built for points of shape ``data_shape``."""

    def __init__(self, data_shape):
        super().__init__()
        d = math.prod(data_shape)
        self.linear = nn.Linear(d, d)

    def forward(self, x):
        return 0.5 * self.linear(x.flatten(1)).square().sum(1)


def small_mlp():
    """A factory without arguments: an MLP for 2-D points."""
    return nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1), nn.Flatten(0))


class ColumnEnergy(nn.Module):
    """Returns ``(N, 1)``: one column, not one energy per sample."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x):
        return self.linear(x)


class DetachedEnergy(nn.Module):
    """Computes its energies without autograd: not differentiable in x."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, x):
        with torch.no_grad():
            return self.linear(x).squeeze(1)


class ConstantInXEnergy(nn.Module):
    """Depends on its weights only: no gradient reaches x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.w.expand(len(x)) * 1.0


class NeedsWidth(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(2, width)


class NoWeights(nn.Module):
    def forward(self, x):
        return x.square().sum(1)


# --------------------------------------------------------------------------- data written by the tests


def write_class_folder(root: Path, classes=("circle", "square"), per_class=12, side=8) -> dict[str, list[np.ndarray]]:
    """One subfolder per class of grey PNGs, each image a distinct pattern; returns the pixels written per class."""
    rng = np.random.default_rng(0)
    written = {}
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        written[name] = []
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
            pixels[0, 0] = k * 200  # the class shows in a pixel, so labels can be checked against contents
            Image.fromarray(pixels, "L").save(root / name / f"{i:03d}.png")
            written[name].append(pixels)
    return written


def write_flat_folder(root: Path, n=12, grey_every=0) -> None:
    """Colour PNGs of two sizes directly in ``root`` (and grey ones every ``grey_every``-th, when set)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        h, w = (12, 12) if i % 2 else (16, 10)
        if grey_every and i % grey_every == 0:
            Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8), "L").save(root / f"img{i:02d}.png")
        else:
            Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB").save(root / f"img{i:02d}.png")


def two_moons(n=240, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, math.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], 1) + 0.05 * rng.normal(size=(n, 2))


@pytest.fixture(autouse=True)
def _no_inception(monkeypatch):
    """Machine-independent features: as on a machine without Inception's weights (the fallbacks are what is tested)."""
    monkeypatch.setattr(folder_features, "inception_missing", lambda: "hidden by the test")


@pytest.fixture
def class_folder(tmp_path):
    write_class_folder(tmp_path / "shapes")
    return tmp_path / "shapes"


@pytest.fixture
def moons_csv(tmp_path):
    path = tmp_path / "moons.csv"
    np.savetxt(path, two_moons(), delimiter=",", header="x,y", comments="")
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def train_on_moons(capsys, moons_csv, out) -> int:
    """The exit code of a smoke run of 10 iterations on the moons points into ``out``."""
    return cli(capsys, *smoke_argv("train", "--dataset", f"points:{moons_csv}", "--iters", "10", out=out))[0]


def assert_refused(capsys, args, expected: str, out_dir: Path | None = None) -> None:
    """The command ends with exit 2 and one ``error:`` line that holds ``expected``; nothing is written to
    ``out_dir``."""
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err
    if out_dir is not None:
        assert not out_dir.exists() or not any(out_dir.iterdir())


# =========================================================================== the sample distances


def test_sliced_wasserstein_of_identical_sets_is_zero_and_of_shifted_1d_sets_the_shift():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-12)  # order does not matter
    a = torch.randn(200, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = torch.randn(77, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for p in (1, 2):
        assert sliced_wasserstein(a, a + 1.5, p=p) == pytest.approx(1.5, abs=1e-12)
        assert sliced_wasserstein(b, b - 0.25, p=p) == pytest.approx(0.25, abs=1e-12)


def test_sliced_wasserstein_of_a_shift_in_d_dimensions_is_its_length_over_root_d():
    x = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    v = torch.tensor([3.0, 0.0, 0.0, 4.0])  # |v| = 5: E_θ (θ·v)² = |v|² / D for unit θ uniform on the sphere
    value = sliced_wasserstein(x, x + v, n_directions=4000)
    assert value == pytest.approx(5 / 2, rel=0.03)


def test_wasserstein_1d_is_exact_for_sets_of_different_sizes():
    # quantiles of {0, 1}: 0 on (0, 1/2], 1 after; of {0, 0, 3}: 0 on (0, 2/3], 3 after
    a, b = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[3.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(wasserstein_1d(a, b, p=1)) == pytest.approx(1 / 6 * 1 + 1 / 3 * 2)
    assert float(wasserstein_1d(a, b, p=2)) == pytest.approx(1 / 6 * 1 + 1 / 3 * 4)


def test_kde_on_the_grid_is_normalised_peaks_at_the_points_and_compares_with_grid_tv():
    points = torch.tensor([[1.0, -2.0]]).repeat(50, 1) + 0.1 * torch.randn(
        50, 2, generator=torch.Generator().manual_seed(0)
    )
    log_p = kde_grid_log_probs(points, extent=4.6, size=100)
    assert log_p.shape == (100, 100) and float(log_p.exp().sum()) == pytest.approx(1.0)
    row, col = divmod(int(log_p.argmax()), 100)  # rows are y, columns x, cells of width 0.092 from -4.6
    assert abs(-4.6 + 0.092 * (col + 0.5) - 1.0) < 0.2 and abs(-4.6 + 0.092 * (row + 0.5) + 2.0) < 0.2
    assert grid_tv(log_p, log_p, size=100) == 0.0
    far = kde_grid_log_probs(-points, extent=4.6, size=100)
    assert grid_tv(log_p, far, size=100) > 0.99


def test_scaled_mmd_is_the_rings_mmd_in_two_dimensions():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randn(90, 2, generator=torch.Generator().manual_seed(1)) + 0.5
    assert scaled_mmd(x, y) == pytest.approx(mmd(x, y))


# =========================================================================== points from a file


def test_points_are_read_from_csv_txt_and_npy_alike(tmp_path):
    data = two_moons(40)
    np.savetxt(tmp_path / "p.csv", data, delimiter=",", header="x,y", comments="")
    np.savetxt(tmp_path / "p.txt", data)  # whitespace, no header
    (tmp_path / "c.txt").write_text("# a comment\n" + "\n".join(f"{a}, {b}" for a, b in data) + "\n\n")
    np.save(tmp_path / "p.npy", data)
    for name in ("p.csv", "p.txt", "c.txt", "p.npy"):
        assert np.allclose(read_points(tmp_path / name), data, rtol=0, atol=1e-15), name


def test_a_point_set_is_split_by_a_fixed_seed_and_standardised_keeping_its_shape(moons_csv):
    points = load_file_data(parse_data_spec(f"points:{moons_csv}"))
    raw = read_points(moons_csv)
    assert (
        points.dim == 2
        and len(points.held_out) == round(HELD_OUT_SHARE * len(raw))
        and len(points.train) + len(points.held_out) == len(raw)
    )
    back = torch.cat(
        [points.to_file_units(points.train.double()), points.to_file_units(points.held_out.double())]
    ).numpy()
    distances = torch.cdist(torch.from_numpy(raw), torch.from_numpy(back))  # the same points, none lost or added
    assert (
        len(back) == len(raw)
        and bool((distances.min(0).values < 1e-5).all())
        and bool((distances.min(1).values < 1e-5).all())
    )
    assert torch.allclose(points.train.mean(0), torch.zeros(2), atol=1e-5)
    assert float(points.train.var(0, unbiased=False).mean()) == pytest.approx(1.0, rel=1e-4)  # one scale for both axes
    train_in_file_units = points.to_file_units(points.train.double()).numpy()
    assert points.scale == pytest.approx(float(np.sqrt(train_in_file_units.var(0).mean())), rel=1e-5)
    again = load_file_data(parse_data_spec(f"points:{moons_csv}"), standardize=False)
    assert again.scale == 1.0 and again.mean == (0.0, 0.0)
    assert torch.equal(
        again.held_out,
        torch.from_numpy(raw).float()[
            torch.randperm(len(raw), generator=torch.Generator().manual_seed(0))[: len(again.held_out)]
        ],
    )


def test_a_2d_points_run_writes_the_rings_figures_and_sample_metrics(tmp_path, capsys, moons_csv):
    out = tmp_path / "run"
    code, stdout, _ = cli(
        capsys, *smoke_argv("train", "--dataset", f"points:{moons_csv}", "--sampler", "anila", out=out)
    )
    assert code == 0
    assert (
        "points:" in stdout and "192 points in 2 dimensions, 48 held out" in stdout and "sliced Wasserstein" in stdout
    )
    config = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert set(data_kind(config).expected_files()) == {p.name for p in out.iterdir()} - {".lock"}
    assert {"data_density.png", "learned_density.png", "samples.png", "training.png"} <= {p.name for p in out.iterdir()}
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [10, 20, 30]
    for row in rows:
        assert row["sliced_wasserstein"] > 0 and 0 <= row["kde_grid_tv"] <= 1 and math.isfinite(row["mmd"])
        assert "grid_tv" not in row  # no exact density: never called the rings' grid TV
    final = json.loads((out / "final.json").read_text())
    assert (
        final["dim"] == 2
        and final["n_held_out"] == 48
        and final["sliced_wasserstein"] == rows[-1]["sliced_wasserstein"]
    )
    assert final["best_sliced_wasserstein"] == min(r["sliced_wasserstein"] for r in rows)
    assert final["units"]["standardized"] is True and len(final["units"]["mean"]) == 2


def test_points_in_more_dimensions_are_drawn_on_projections(tmp_path):
    path = tmp_path / "blobs.npy"
    np.save(path, np.random.default_rng(0).normal(size=(120, 5)).astype(np.float32))
    run = Run(
        tmp_path / "run", preset("smoke", "langevin", dataset=f"points:{path}", device="cpu", iters=10), progress=False
    )
    final = run.train()
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"projections.png", "samples.png", "training.png"} <= names and "learned_density.png" not in names
    assert final["dim"] == 5 and "kde_grid_tv" not in final and final["mmd"] == run.trainer.history[-1]["mmd"]


def test_compare_and_resume_on_points(tmp_path, capsys, moons_csv):
    out = tmp_path / "cmp"
    args = smoke_argv(
        "compare",
        "--dataset",
        f"points:{moons_csv}",
        *"--samplers langevin anila hmc --iters 10 --jobs 1".split(),
        out=out,
    )
    code, stdout, _ = cli(capsys, *args)
    assert code == 0
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    table = (out / "comparison.md").read_text()
    for sampler in ("langevin", "anila", "hmc"):
        assert f"| {sampler} |" in table
        assert json.loads((out / sampler / "final.json").read_text())["sampler"] == sampler
    assert "sliced Wasserstein" in table and "held-out points" in table and "L=5" in table
    code, stdout, _ = cli(capsys, *args, "--resume")
    assert code == 0 and "finished earlier with these settings, kept" in stdout


def test_a_points_run_resumes_exactly(tmp_path, moons_csv):
    cfg = preset("smoke", "anila", dataset=f"points:{moons_csv}", device="cpu", checkpoint_every=10)
    straight = Run(tmp_path / "straight", cfg.replace(iters=20), progress=False)
    straight.train()
    Run(tmp_path / "split", cfg.replace(iters=10), progress=False).train()
    resumed = Run(tmp_path / "split", resume=True, iters=20, progress=False)
    assert resumed.trainer.iteration == 10
    resumed.train()
    for a, b in zip(straight.trainer.model.parameters(), resumed.trainer.model.parameters()):
        assert torch.equal(a, b)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == strip(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )


def test_a_run_whose_points_changed_is_not_resumed_on_other_data(tmp_path, capsys, moons_csv):
    out = tmp_path / "run"
    assert train_on_moons(capsys, moons_csv, out) == 0
    np.savetxt(moons_csv, two_moons(seed=1), delimiter=",", header="x,y", comments="")
    assert_refused(
        capsys, ["train", "--resume", "--out", out, "--iters", "20"], "changed since the run was trained on them"
    )
    assert json.loads((out / "final.json").read_text())["iters"] == 10


def test_a_sweep_on_points_ranks_by_sliced_wasserstein(tmp_path, capsys, moons_csv):
    out = tmp_path / "sweep"
    flags = "--energy test_own_data:small_mlp --samplers langevin anila --iters 10 --jobs 1".split()
    code, stdout, _ = cli(capsys, *smoke_argv("sweep", "--dataset", f"points:{moons_csv}", *flags, out=out))
    assert code == 0 and "best sliced_wasserstein" in stdout
    report = (out / "sweep.md").read_text()
    assert "final sliced Wasserstein" in report and "held-out points" in report
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["base"]["energy"] == "test_own_data:small_mlp"  # every cell trained the network of your own
    cells = summary["cells"]
    assert len(cells) == 2 and all(c["final"]["sliced_wasserstein"] > 0 and "kde_grid_tv" in c["final"] for c in cells)


@pytest.mark.parametrize(
    "name, write, expected",
    [
        (
            "flat.npy",
            lambda p: np.save(p, np.arange(10.0)),
            "is a 1-D array of 10 values; expected a 2-D array of shape (N, D)",
        ),
        ("column.npy", lambda p: np.save(p, np.zeros((8, 1))), "has 1 column(s); expected D >= 2 columns"),
        ("cube.npy", lambda p: np.save(p, np.zeros((4, 2, 2))), "is an array of shape (4, 2, 2); expected a 2-D array"),
        (
            "objects.npy",
            lambda p: np.save(p, np.array([{"a": 1}, None], dtype=object)),
            "holds Python objects, which are never loaded",
        ),
        (
            "nan.csv",
            lambda p: p.write_text("x,y\n" + "".join(f"{i},{'nan' if i in (2, 7) else i}\n" for i in range(20))),
            "has 2 row(s) of 20 with NaN, infinite or missing values (lines 4, 9); expected a finite number",
        ),
        (
            "missing.csv",
            lambda p: p.write_text("1,2\n3,\n5,6\n7,8\n9,10\n"),
            "has 1 row(s) of 5 with NaN, infinite or missing values (lines 2)",
        ),
        (
            "ragged.csv",
            lambda p: p.write_text("x,y\n1,2\n3,4\n5,6,7\n"),
            "has 3 values on line 4 and 2 on line 2; expected the same number",
        ),
        ("words.txt", lambda p: p.write_text("1 2\n3 4\n5 six\n"), "has 'six' on line 3, which is not a number"),
        ("few.csv", lambda p: p.write_text("1,2\n3,4\n5,6\n"), "holds 3 point(s); expected at least 4"),
        ("points.json", lambda p: p.write_text("[[1, 2]]"), "has the suffix '.json'; expected one of .npy, .csv, .txt"),
        ("absent.csv", lambda p: None, "does not exist; expected the path of a .npy, .csv or .txt file"),
        (
            "a_folder",
            lambda p: p.mkdir(),
            "is a folder; expected a file of points (for a folder of images: images:FOLDER)",
        ),
    ],
)
def test_a_bad_points_file_is_one_clear_line(tmp_path, capsys, name, write, expected):
    path = tmp_path / name
    write(path)
    out = tmp_path / "run"
    assert_refused(
        capsys,
        smoke_argv("train", "--dataset", f"points:{path}", "--out", out),
        f"dataset: points:{path} {expected}",
        out,
    )


def test_a_points_spec_without_a_file_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"dataset: 'points:' names no file; expected points:FILE"):
        preset("smoke", dataset="points:")
    with pytest.raises(
        ValueError, match=r"dataset: expected one of \['digits', 'cifar10', 'flowers'\], 'images:FOLDER', 'points:FILE'"
    ):
        TrainConfig(dataset="moons").validate()


# =========================================================================== images from a folder


def test_a_class_folder_is_read_with_its_labels_pixels_and_a_stratified_split(tmp_path):
    written = write_class_folder(tmp_path / "shapes", per_class=10)
    data = load_image_folder(tmp_path / "shapes", 0, HELD_OUT_SHARE, 0)
    assert data.classes == ("circle", "square")
    assert data.train.shape == (1, 8, 8) and data.train.data.dtype == torch.uint8
    assert len(data.held_out) == 4 and sorted(data.held_out.labels.tolist()) == [0, 0, 1, 1]  # 20 % of each class
    everything = torch.cat([data.train.data, data.held_out.data])[:, 0].numpy()
    labels = torch.cat([data.train.labels, data.held_out.labels]).tolist()
    for image, label in zip(everything, labels):  # every image comes back unchanged, under its own class
        name = data.classes[label]
        assert any(np.array_equal(image, w) for w in written[name])
    assert len({im.tobytes() for im in everything}) == 20
    again = load_image_folder(tmp_path / "shapes", 0, HELD_OUT_SHARE, 0)
    assert torch.equal(again.held_out.data, data.held_out.data) and again.fingerprint == data.fingerprint


def test_a_flat_folder_of_mixed_sizes_is_resized_and_keeps_colour(tmp_path):
    write_flat_folder(tmp_path / "photos", grey_every=4)
    data = load_image_folder(tmp_path / "photos", 8, HELD_OUT_SHARE, 0)
    assert data.classes == () and data.train.shape == (3, 8, 8)  # one colour file makes every image RGB
    assert len(data.train) + len(data.held_out) == 12 and len(data.held_out) == 2
    grey = load_image_folder(tmp_path / "photos", 16, HELD_OUT_SHARE, 0)
    assert grey.train.shape == (3, 16, 16)


def test_grey_images_stay_one_channel_and_are_repeated_when_mixed_with_colour(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8), "L").save(root / f"g{i}.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8), "RGB").save(root / "colour.png")
    data = load_image_folder(root, 0, HELD_OUT_SHARE, 0)
    images = torch.cat([data.train.data, data.held_out.data])
    assert images.shape[1:] == (3, 8, 8)
    assert all(torch.equal(im[0], im[1]) and torch.equal(im[1], im[2]) for im in images)


def test_a_class_folder_trains_compares_and_resumes_with_features_named_as_the_folders(tmp_path, capsys, class_folder):
    out = tmp_path / "cmp"
    args = smoke_argv(
        "compare", "--dataset", f"images:{class_folder}", *"--samplers langevin anila --jobs 1".split(), out=out
    )
    code, _, err = cli(capsys, *args)
    assert code == 0
    assert (
        "Inception's features are unavailable here" in err
        and "a classifier trained on images-shapes (2 classes)" in err
    )
    table = (out / "comparison.md").read_text()
    assert "a classifier trained on images-shapes (2 classes) features, not Inception's" in table
    for sampler in ("langevin", "anila"):
        run = out / sampler
        final = json.loads((run / "final.json").read_text())
        assert (
            final["image_shape"] == [1, 8, 8]
            and final["fid_features"] == "a classifier trained on images-shapes (2 classes)"
        )
        assert final["fid"] is not None and final["fid"] >= 0
        rows = read_jsonl(run / "metrics.jsonl")
        assert all(r["fid_features"] == final["fid_features"] for r in rows if "fid" in r)
        assert {"samples.png", "training.png", "fid.png"} <= {p.name for p in run.iterdir()}
    assert (out / "anila" / "step_sizes.png").is_file()
    # resumed for more iterations: the same folder, the same features
    code, stdout, _ = cli(capsys, "train", "--resume", "--out", out / "langevin", "--iters", "9", "--no-progress")
    assert code == 0 and "resuming" in stdout
    assert [r["iter"] for r in read_jsonl(out / "langevin" / "metrics.jsonl")] == [3, 6, 9]


def test_a_folder_run_resumes_exactly(tmp_path, class_folder):
    cfg = preset("smoke", "anila", dataset=f"images:{class_folder}", device="cpu", checkpoint_every=3, fid_every=3)
    straight = Run(tmp_path / "straight", cfg.replace(iters=6), progress=False)
    straight.train()
    Run(tmp_path / "split", cfg.replace(iters=3), progress=False).train()
    resumed = Run(tmp_path / "split", resume=True, iters=6, progress=False)
    resumed.train()
    for a, b in zip(straight.trainer.model.state_dict().values(), resumed.trainer.model.state_dict().values()):
        assert torch.equal(a, b)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    # the FID of both halves too: the folder's classifier is trained the same, seeded, in the resumed process
    assert strip(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == strip(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )


@pytest.mark.parametrize("kind", ["flat folder", "npy points"])
def test_compare_then_resume_a_compared_run(tmp_path, capsys, kind):
    """The layouts not compared above: a flat folder of colour images (resized), and a .npy of points in 3-D."""
    if kind == "flat folder":
        write_flat_folder(tmp_path / "photos")
        data, extra, iters = f"images:{tmp_path / 'photos'}", ["--image-size", "8"], 6
    else:
        np.save(tmp_path / "blobs.npy", np.random.default_rng(0).normal(size=(100, 3)))
        data, extra, iters = f"points:{tmp_path / 'blobs.npy'}", [], 10
    out = tmp_path / "cmp"
    code, _, _ = cli(
        capsys, *smoke_argv("compare", "--dataset", data, *extra, "--iters", iters, "--jobs", "1", out=out)
    )
    assert code == 0 and (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "| langevin |" in (out / "comparison.md").read_text() and "| anila |" in (out / "comparison.md").read_text()
    code, stdout, _ = cli(capsys, "train", "--resume", "--out", out / "anila", "--iters", 2 * iters, "--no-progress")
    assert code == 0 and f"resuming {out / 'anila'} at iteration {iters} of {2 * iters}" in stdout
    final = json.loads((out / "anila" / "final.json").read_text())
    assert final["iters"] == 2 * iters and final["config"]["dataset"] == data
    if kind == "flat folder":
        assert final["image_shape"] == [3, 8, 8] and final["fid_features"] == "random projections of images-photos"
    else:
        assert final["dim"] == 3 and (out / "anila" / "projections.png").is_file()


def test_a_relative_path_is_recorded_absolute_so_a_run_resumes_from_anywhere(tmp_path, capsys, moons_csv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, *smoke_argv("train", "--dataset", "points:moons.csv", "--iters", "10", out="run"))[0] == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == f"points:{moons_csv}"
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the run finds its data by the path it recorded
    assert cli(capsys, "train", "--resume", "--out", tmp_path / "run", "--iters", "20", "--no-progress")[0] == 0
    monkeypatch.chdir(tmp_path)  # the first command line again, plus --resume: its relative path names the same file
    assert (
        cli(
            capsys,
            "train",
            "--resume",
            "--preset",
            "smoke",
            "--dataset",
            "points:moons.csv",
            "--iters",
            "30",
            "--out",
            "run",
            "--no-progress",
        )[0]
        == 0
    )
    assert load_trainer(tmp_path / "run", progress=False).iteration == 30


def test_a_flat_folder_is_scored_on_random_projections(tmp_path, capsys):
    write_flat_folder(tmp_path / "photos")
    out = tmp_path / "run"
    code, stdout, _ = cli(
        capsys, *smoke_argv("train", "--dataset", f"images:{tmp_path / 'photos'}", "--image-size", "8", out=out)
    )
    assert code == 0 and "on random projections of images-photos features" in stdout
    final = json.loads((out / "final.json").read_text())
    assert final["image_shape"] == [3, 8, 8] and final["fid_features"] == "random projections of images-photos"


def test_a_sweep_on_a_folder_names_its_features(tmp_path, capsys, class_folder):
    out = tmp_path / "sweep"
    flags = "--samplers langevin --step-size 1 --jobs 2".split()  # one cell: in this process, one thread
    code, _, _ = cli(capsys, *smoke_argv("sweep", "--dataset", f"images:{class_folder}", *flags, out=out))
    assert code == 0
    report = (out / "sweep.md").read_text()
    assert "FID and KID on the features of a classifier trained on images-shapes (2 classes), not Inception's" in report


def _garbage(root: Path, n=3):
    root.mkdir()
    for i in range(n):
        (root / f"broken{i}.png").write_bytes(b"not an image at all" * (i + 1))


def _truncated(root: Path):
    write_class_folder(root, per_class=3)
    good = (root / "circle" / "000.png").read_bytes()
    (root / "circle" / "001.png").write_bytes(good[: len(good) // 2])


@pytest.mark.parametrize(
    "make, image_size, expected",
    [
        (lambda r: r.mkdir(), 0, "holds no image files; expected image files (.jpg, .jpeg, .png"),
        (
            lambda r: (r.mkdir(), (r / "notes.txt").write_text("hi")),
            0,
            "holds no image files (it holds 1 other file(s): notes.txt)",
        ),
        (_garbage, 0, "has 3 file(s) of 3 that cannot be read as images (broken0.png: cannot identify image file"),
        (_truncated, 0, "has 1 file(s) of 6 that cannot be read as images (circle/001.png:"),
        (
            lambda r: (write_class_folder(r, per_class=2), (r / "empty").mkdir()),
            0,
            "has class folder(s) with no image files: empty",
        ),
        (
            lambda r: (write_class_folder(r, per_class=2), Image.new("L", (8, 8)).save(r / "loose.png")),
            0,
            "holds both image files (loose.png, ...) and subfolders (circle, ...)",
        ),
        (
            lambda r: write_flat_folder(r),
            0,
            "holds images of 2 sizes (10×16, 12×12); expected image_size set to the side",
        ),
        (
            lambda r: (r.mkdir(), *[Image.new("L", (28, 28)).save(r / f"{i}.png") for i in range(4)]),
            0,
            "holds 28×28 images (0.png, ...); expected image_size set to the side they are resized to (8, 16, 32, 64)",
        ),
        (
            lambda r: (r.mkdir(), *[Image.new("L", (8, 8)).save(r / f"{i}.png") for i in range(3)]),
            0,
            "holds 3 image(s); expected at least 4",
        ),
        (lambda r: None, 0, "does not exist; expected a folder of images"),
        (
            lambda r: r.write_text("1,2\n"),
            0,
            "is a file; expected a folder of images (for a file of points: points:FILE)",
        ),
    ],
)
def test_a_bad_image_folder_is_one_clear_line(tmp_path, capsys, make, image_size, expected):
    root = tmp_path / "folder"
    make(root)
    out = tmp_path / "run"
    args = smoke_argv("train", "--dataset", f"images:{root}", "--out", out)
    assert_refused(
        capsys,
        args + (["--image-size", str(image_size)] if image_size else []),
        f"dataset: images:{root} {expected}",
        out,
    )


def test_mixed_sizes_are_fine_once_a_size_is_given_and_a_size_the_convnet_lacks_is_refused(tmp_path, capsys):
    write_flat_folder(tmp_path / "photos")
    assert load_image_folder(tmp_path / "photos", 32, HELD_OUT_SHARE, 0).train.shape == (3, 32, 32)
    assert_refused(
        capsys,
        smoke_argv("train", "--dataset", f"images:{tmp_path / 'photos'}", "--image-size", "12"),
        "image_size: expected 0 (the dataset's own) or one of (8, 16, 32, 64)",
    )


# =========================================================================== energies of your own


def test_an_energy_named_on_the_command_line_trains_and_resumes(tmp_path, capsys, moons_csv):
    out = tmp_path / "run"
    base = smoke_argv("train", "--dataset", f"points:{moons_csv}", "--energy", "test_own_data:QuadraticEnergy", out=out)
    assert cli(capsys, *base, "--iters", "10")[0] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["energy"] == "test_own_data:QuadraticEnergy"
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert set(state["model"]) == {"linear.weight", "linear.bias"}  # the network of your own, not the MLP
    code, stdout, _ = cli(
        capsys, *base, "--iters", "20", "--resume"
    )  # rebuilt from config.json, its weights from the checkpoint
    assert code == 0 and "resuming" in stdout
    trainer = load_trainer(
        out, progress=False, energy="test_own_data:QuadraticEnergy"
    )  # loading imports only what is named
    assert isinstance(trainer.model, QuadraticEnergy) and trainer.iteration == 20
    assert not torch.equal(trainer.model.linear.weight, state["model"]["linear.weight"])


def test_an_energy_factory_trains_in_compare(tmp_path, capsys, moons_csv):
    out = tmp_path / "cmp"
    code, _, _ = cli(
        capsys,
        *smoke_argv(
            "compare",
            "--dataset",
            f"points:{moons_csv}",
            *"--energy test_own_data:small_mlp --iters 10 --jobs 1".split(),
            out=out,
        ),
    )
    assert code == 0
    for sampler in ("langevin", "anila"):
        state = torch.load(out / sampler / CHECKPOINT, weights_only=True)
        assert set(state["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_an_energy_of_your_own_trains_on_images_too(tmp_path, class_folder):
    cfg = preset(
        "smoke",
        "langevin",
        dataset=f"images:{class_folder}",
        energy="test_own_data:QuadraticEnergy",
        device="cpu",
        iters=3,
    )
    trainer = Trainer(cfg, progress=False)
    assert trainer.model.linear.in_features == 64  # built for data_shape (1, 8, 8)
    trainer.run()
    assert trainer.iteration == 3 and trainer.history[-1]["fid"] is not None


def test_an_energy_given_in_memory_trains_in_place_and_says_how_to_resume(tmp_path, moons_csv):
    module = QuadraticEnergy((2,))
    before = module.linear.weight.detach().clone()
    cfg = preset("smoke", "anila", dataset=f"points:{moons_csv}", device="cpu", iters=10)
    run = Run(tmp_path / "run", cfg, energy=module, progress=False)
    run.train()
    assert run.trainer.model is module and not torch.equal(module.linear.weight, before)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["energy"] == "in-memory:test_own_data.QuadraticEnergy"
    with pytest.raises(
        ValueError,
        match=r"this run trained a module given in memory \(test_own_data.QuadraticEnergy, from the "
        r"Python API\).*Run\(out, resume=True, energy=module\)",
    ):
        Run(tmp_path / "run", resume=True, iters=20, progress=False)
    with pytest.raises(
        ValueError, match="this run trained a test_own_data.QuadraticEnergy, got a test_own_data.ColumnEnergy"
    ):
        Run(tmp_path / "run", resume=True, iters=20, energy=ColumnEnergy(), progress=False)
    again = QuadraticEnergy((2,))
    resumed = Run(tmp_path / "run", resume=True, iters=20, energy=again, progress=False)
    assert torch.equal(
        again.linear.weight, module.linear.weight
    )  # the checkpoint's weights, loaded into the module passed
    resumed.train()
    assert resumed.trainer.iteration == 20


def test_a_module_in_the_run_folder_is_never_imported_on_resume(tmp_path, capsys, moons_csv, monkeypatch):
    out = tmp_path / "run"
    assert train_on_moons(capsys, moons_csv, out) == 0
    (out / "planted_energy_module.py").write_text("raise SystemExit('planted code ran')\n")
    config = json.loads((out / "config.json").read_text())
    config["energy"] = "planted_energy_module:Net"
    (out / "config.json").write_text(json.dumps(config))
    monkeypatch.syspath_prepend(str(out))  # as when the command runs from inside the folder
    assert_refused(
        capsys,
        ["train", "--resume", "--out", out, "--iters", "20"],
        "inside the run folder; loading a run never runs code",
    )


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "no_such_module_anywhere:Net",
            "energy: cannot import 'no_such_module_anywhere': Python finds no module of that name",
        ),
        ("test_own_data:Missing", "energy: 'test_own_data' has no 'Missing' (it defines "),
        (
            "test_own_data:ColumnEnergy",
            "energy: test_own_data:ColumnEnergy returned shape (4, 1) for 4 samples; expected (4,): one energy "
            "per sample (squeeze its last dimension)",
        ),
        (
            "test_own_data:DetachedEnergy",
            "energy: test_own_data:DetachedEnergy is not differentiable in its input: its energies carry no gradient",
        ),
        (
            "test_own_data:ConstantInXEnergy",
            "energy: test_own_data:ConstantInXEnergy is not differentiable in its input: no gradient reaches x",
        ),
        ("test_own_data:NeedsWidth", "energy: test_own_data:NeedsWidth cannot be built: it needs width"),
        ("test_own_data:NoWeights", "energy: test_own_data:NoWeights has no parameters"),
        ("test_own_data:HERE", "energy: test_own_data:HERE is a PosixPath"),
        ("not a spec", "energy: 'not a spec' is not a spec of the form module.path:Name"),
    ],
)
def test_a_bad_energy_is_one_clear_line(tmp_path, capsys, moons_csv, spec, expected):
    out = tmp_path / "run"
    assert_refused(
        capsys,
        smoke_argv("train", "--dataset", f"points:{moons_csv}", "--energy", spec, "--out", out),
        expected,
        out,
    )


def test_the_command_line_imports_an_energy_from_the_python_path(tmp_path, moons_csv):
    """A subprocess, as a user runs it: the module is found through PYTHONPATH, and a wrong shape ends with one error
    line."""
    (tmp_path / "my_energies.py").write_text(
        "import torch\n\n\nclass Gaussian(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.log_scale = torch.nn.Parameter(torch.zeros(2))\n\n    def forward(self, x):\n"
        "        return 0.5 * (x * torch.exp(-self.log_scale)).square().sum(1) + self.log_scale.sum()\n\n\n"
        "class Wrong(Gaussian):\n    def forward(self, x):\n        return super().forward(x)[:, None]\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    command = [
        sys.executable,
        "-m",
        "anila_core",
        *smoke_argv("train", "--dataset", f"points:{moons_csv}", "--iters", "10", "--no-progress"),
    ]

    def train_with(energy: str, folder: str) -> subprocess.CompletedProcess:
        argv = command + ["--energy", energy, "--out", str(tmp_path / folder)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)

    done = train_with("my_energies:Gaussian", "ok")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "ok" / "final.json").read_text())["config"]["energy"] == "my_energies:Gaussian"
    wrong = train_with("my_energies:Wrong", "bad")
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines() == [
        "error: energy: my_energies:Wrong returned shape (4, 1) for 4 samples; expected (4,): one energy per sample "
        "(squeeze its last "
        "dimension)"
    ]
    assert not (tmp_path / "bad").exists()
