"""Image EBMs: presets per dataset, one training step each, clamping, FID/KID rows, the CLI's run folder, clear errors,
exact resume."""

import json
import subprocess
import sys

import pytest
import torch

import anila_core.images.metrics as image_metrics
import anila_core.training.kinds.images as image_kind_module
from anila_core.cli import main
from anila_core.training.config import TrainConfig
from anila_core.training.presets import IMAGE_PRESETS, PRESETS, preset
from anila_core.fileio import read_jsonl
from anila_core.images.evaluation import ImageScorer, make_scorer, sample_from_noise, step_size_image
from anila_core.training.kinds import IMAGE_RUN_FILES, data_kind
from anila_core.training.runs import CHECKPOINT, Run
from anila_core.sampling.samplers import AniLA, Langevin
from anila_core.training.sources import ImageSource, reference_images, stream_seed
from anila_core.training.trainer import Trainer
from digits_judge import digits_data_root
from image_fixtures import write_tiny_cifar10, write_tiny_flowers102
from cli_commands import digits_argv

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    monkeypatch.delenv("ANILA_DATA", raising=False)
    monkeypatch.setenv("ANILA_DATA_VERIFY", "0")  # the tiny datasets' checksums differ from the release on purpose


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One data root with the digits classifier, tiny CIFAR-10 and tiny Flowers102."""
    root = digits_data_root(tmp_path_factory.getbasetemp())
    write_tiny_cifar10(root, n_per_batch=8)
    write_tiny_flowers102(root, n=24)
    return root


def tiny(dataset, sampler="anila", data_root=None, **kw):
    """The smoke preset, on the CPU, reading ``data_root``."""
    return preset("smoke", sampler, dataset=dataset, device="cpu", data_root=str(data_root or ""), **kw)


# --------------------------------------------------------------------------- presets and one step


@pytest.mark.parametrize("dataset", ["digits", "cifar10", "flowers"])
@pytest.mark.parametrize("name", sorted(IMAGE_PRESETS))
def test_one_training_iteration_per_image_preset(data_root, name, dataset):
    cfg = preset(name, "anila", dataset=dataset, device="cpu", data_root=str(data_root))
    assert cfg.is_image and cfg.init == "uniform" and cfg.init_scale == 1.0 and cfg.clamp == 1.0
    # smoke-sized: the preset's sampler and chain settings, a tiny network and batch, a few steps
    small = cfg.replace(conv_width=4, batch_size=8, n_steps=2, image_size=8, buffer_size=16, amp="off")
    trainer = Trainer(small, progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    stats = trainer.train_step()
    assert all(torch.isfinite(v) for v in stats.values())
    assert float(stats["loss"]) == pytest.approx(float(stats["energy_data"] - stats["energy_samples"]), abs=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    channels = 1 if dataset == "digits" else 3
    assert trainer.samples.shape == (8, channels, 8, 8)
    assert trainer.samples.abs().max() <= 1.0


def test_presets_follow_the_paper_where_it_is_specific():
    for dataset in ("cifar10", "flowers"):
        for sampler in ("langevin", "anila"):
            cfg = preset("paper", sampler, dataset=dataset)
            assert (cfg.iters, cfg.chains, cfg.init, cfg.lr, cfg.noise_scale) == (
                100_000,
                "short_run",
                "uniform",
                1e-4,
                0.01,
            )
            assert 50 <= cfg.n_steps <= 150 and cfg.image_size in (0, 32)
    anila = preset("paper", "anila", dataset="cifar10")
    assert anila.b == pytest.approx(2e-4)
    # the same preset name gives the 2-D setting without a dataset, unchanged
    assert (
        preset("paper", "anila").dataset == ""
        and preset("paper", "anila").to_dict()
        == TrainConfig()
        .replace(**{**PRESETS["paper"][0], "sampler": "anila", **PRESETS["paper"][1]["anila"]})
        .validate()
        .to_dict()
    )


def test_preset_names_are_checked_per_kind():
    with pytest.raises(ValueError, match="preset: unknown name 'gpu' for 2-D targets.*exists for images"):
        preset("gpu", "anila")
    with pytest.raises(ValueError, match="preset: unknown name 'cpu_long' for dataset 'digits'"):
        preset("cpu_long", "anila", dataset="digits")
    with pytest.raises(ValueError, match="dataset"):
        preset("cpu", "anila", dataset="mnist")


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(dataset="mnist"), "dataset"),
        (dict(dataset="digits", image_size=32), "image_size"),
        (dict(image_size=-1), "image_size"),
        (dict(conv_width=0), "conv_width"),
        (dict(fid_samples=1), "fid_samples"),
        (dict(fid_every=-5), "fid_every"),
        (dict(amp="fp16"), "amp"),
        (dict(spectral_norm="yes"), "spectral_norm"),
    ],
)
def test_bad_image_config_values_are_named(change, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig().replace(**change).validate()


# --------------------------------------------------------------------------- data, clamping, step sizes


def test_image_source_draws_distinct_images_per_round_and_a_fixed_reference(data_root):
    from anila_core.images.datasets import load_dataset

    ds = load_dataset("cifar10", data_root=data_root)  # 40 training images
    source = ImageSource(ds, seed=5, device=torch.device("cpu"))
    x = source.sample(100)  # more than the dataset: rounds of distinct images
    assert x.shape == (100, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    flat = ds.images.flatten(1)
    index = torch.cdist(x.flatten(1), flat).argmin(1)
    assert len(set(index[:40].tolist())) == 40  # the first round is a permutation
    torch.testing.assert_close(reference_images(ds, 10, seed=1), reference_images(ds, 10, seed=1))
    assert len(reference_images(ds, 1000, seed=1)) == len(ds)
    # a different stream per rank and stream, rank 0's chains keep the plain seed
    assert stream_seed(7) == 7 and len({stream_seed(7, r, s) for r in range(4) for s in range(2)}) == 8


def test_clamping_keeps_negative_samples_in_the_data_range(data_root):
    # a step size that throws unclamped chains far outside [-1, 1]
    loud = dict(step_size=4.0, noise_scale=1.0, n_steps=3)
    clamped = Trainer(tiny("digits", "langevin", data_root, **loud), progress=False)
    clamped.train_step()
    assert clamped.samples.abs().max() <= 1.0 and (clamped.samples.abs() == 1.0).any()
    assert clamped.sample_for_eval(32).abs().max() <= 1.0
    free = Trainer(tiny("digits", "langevin", data_root, clamp=0.0, **loud), progress=False)
    free.train_step()
    assert free.samples.abs().max() > 1.5  # so the clamp above did real work


def test_step_size_image_is_one_for_langevin_and_shrinks_where_the_gradient_exceeds_b(data_root):
    trainer = Trainer(tiny("cifar10", "anila", data_root, b=1e-3), progress=False)
    trainer.train_step()
    ratio = trainer.step_size_image()
    assert ratio.shape == (32, 32) and (ratio > 0).all() and (ratio <= 1).all() and ratio.min() < 1
    energy, x = trainer.eval_energy, trainer.samples
    torch.testing.assert_close(step_size_image(AniLA(1.0, float("inf")), energy, x), torch.ones(32, 32))
    torch.testing.assert_close(step_size_image(Langevin(1.0), energy, x), torch.ones(32, 32))
    # one channel: the "pixel" norm (over channels) is the "coordinate" norm exactly: sqrt(g²) is |g| in IEEE arithmetic
    # (sqrt is correctly rounded on every ISA), and where g² underflows both are clamped to b
    digits = Trainer(tiny("digits", "anila", data_root), progress=False)
    digits.train_step()
    e, xd = digits.eval_energy, digits.samples
    torch.testing.assert_close(
        step_size_image(AniLA(1.0, 0.01, norm="pixel"), e, xd),
        step_size_image(AniLA(1.0, 0.01, norm="coordinate"), e, xd),
        rtol=0,
        atol=0,
    )
    # three channels: the pixel norm shrinks at least as much as any single channel's
    assert (step_size_image(AniLA(1.0, 1e-3, norm="pixel"), energy, x) <= ratio + 1e-6).all()


def test_sample_from_noise_is_seeded_clamped_and_batched(data_root):
    trainer = Trainer(tiny("digits", "anila", data_root), progress=False)
    args = (trainer.eval_energy, Langevin(1.0, noise_scale=0.01), (1, 8, 8), 10, 3)
    a = sample_from_noise(*args, seed=4, batch_size=4)
    torch.testing.assert_close(a, sample_from_noise(*args, seed=4, batch_size=4), rtol=0, atol=0)
    assert a.shape == (10, 1, 8, 8) and a.abs().max() <= 1
    assert not torch.equal(a, sample_from_noise(*args, seed=5, batch_size=4))


# --------------------------------------------------------------------------- evaluation rows


def test_digits_rows_hold_fid_kid_and_coverage_at_fid_points(data_root):
    trainer = Trainer(
        tiny("digits", "anila", data_root, iters=6, eval_every=2, fid_every=4, fid_samples=50), progress=False
    )
    trainer.run()
    by_iter = {r["iter"]: r for r in trainer.history}
    assert sorted(by_iter) == [2, 4, 6]
    for it in (4, 6):  # every fid_every iterations and at the end
        row = by_iter[it]
        for key in ("fid", "kid", "kid_std", "coverage", "class_entropy"):
            assert isinstance(row[key], float) and row[key] == row[key], key
        assert row["fid"] >= 0 and 0 <= row["coverage"] <= 1 and len(row["class_histogram"]) == 10
    assert "fid" not in by_iter[2]
    for row in trainer.history:
        for key in ("loss", "energy_data", "energy_samples", "energy_gap", "grad_norm", "grad_rms", "clipped_share"):
            assert isinstance(row[key], float), key
    final = trainer.summary()
    assert final["fid"] == by_iter[6]["fid"] and final["coverage"] == by_iter[6]["coverage"]
    assert (
        final["best_fid"] == min(by_iter[4]["fid"], by_iter[6]["fid"]) and final["fid_features"] == "digits classifier"
    )


def test_image_scorer_gives_the_numbers_of_fid_kid(data_root):
    from anila_core.images.datasets import load_dataset
    from anila_core.images.digits_classifier import digits_feature_extractor

    ds = load_dataset("digits")
    real, fake = (
        ds.images[:200],
        (ds.images[200:300] + 0.3 * torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(0))).clamp(-1, 1),
    )
    scorer = make_scorer("digits", real, data_root=str(data_root))
    mine = scorer.score(fake)
    ref = image_metrics.fid_kid(real, fake, digits_feature_extractor(scorer.classifier), kid_subset_size=1000)
    assert mine["fid"] == pytest.approx(ref["fid"], rel=1e-6)
    assert mine["kid"] == pytest.approx(ref["kid_mean"], rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="fake"):
        scorer.score(fake[:1])
    assert isinstance(scorer, ImageScorer)


def test_without_inception_the_run_goes_on_with_fid_null_and_one_notice(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(image_metrics, "torch_fidelity_available", lambda: False)
    monkeypatch.setattr(image_kind_module, "_NOTICES_SHOWN", set())  # as in a fresh process
    out = tmp_path / "cifar"
    run = Run(out, tiny("cifar10", "anila", data_root, eval_every=2, fid_every=2, iters=4), progress=False)
    final = run.train()
    err = capsys.readouterr().err
    assert err.count("notice: FID/KID for cifar10 are not computed") == 1  # at two FID evaluations
    assert "torch-fidelity" in err and image_metrics.INCEPTION_WEIGHTS_FILE in err
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["fid"] for r in rows] == [None, None] and final["fid"] is None and final["kid"] is None
    assert json.loads((out / "final.json").read_text())["fid"] is None
    for name in data_kind(run.config).expected_files():
        assert (out / name).is_file(), name
    assert not (out / "fid.png").exists()  # no curve to draw


# --------------------------------------------------------------------------- the command line


def test_cli_digits_smoke_writes_every_expected_file(data_root, tmp_path):
    out = tmp_path / "run"
    assert main(digits_argv("train", data_root, "--sampler", "anila", "--device", "cpu", out=out)) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "digits" and config["sampler"] == "anila" and config["clamp"] == 1.0
    names = set(data_kind(TrainConfig.from_dict(config)).expected_files()) | {"fid.png"}
    assert names >= set(IMAGE_RUN_FILES) | {"step_sizes.png"}
    for name in names:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG, name
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["iter"] for r in rows] == [3, 6] and rows[-1]["fid"] is not None
    final = json.loads((out / "final.json").read_text())
    for key in ("iters", "wall_s", "sampler", "fid", "kid", "coverage", "dataset"):
        assert final[key] is not None, key
    assert final["iters"] == 6 and final["fid"] == rows[-1]["fid"] and final["coverage"] == rows[-1]["coverage"]
    state = torch.load(out / CHECKPOINT, weights_only=False)
    assert state["iteration"] == 6 and "source" in state and "ranks" not in state


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "anila_core", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_a_missing_dataset_is_one_clear_error_with_exit_code_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    # as a user sees it: a separate process, one line on stderr, no traceback
    result = run_cli("train", "--dataset", "cifar10", "--data-root", str(empty), "--preset", "smoke", "--out", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: CIFAR-10: folder") and str(empty) in result.stderr
    assert "ANILA_DATA" in result.stderr  # it says how to point the loader elsewhere
    assert not out.exists()  # no empty run folder left behind
    # Flowers through the same entry point, in this process
    assert (
        main(["train", "--dataset", "flowers", "--data-root", str(empty), "--preset", "smoke", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: Flowers102: folder") and "flowers-102" in err and not out.exists()


def test_a_compare_whose_runs_all_diverged_writes_its_table_and_no_figure(data_root, tmp_path, capsys):
    """A gap bound no energy meets: both runs stop at their first step; the table says so and no sample grid is
    claimed."""
    out = tmp_path / "cmp"
    gap = "--max-energy-gap", "1e-9"
    assert main(digits_argv("compare", data_root, "--jobs", "1", "--device", "cpu", "--iters", "4", *gap, out=out)) == 0
    assert "| langevin | diverged at iteration 1 |" in (out / "comparison.md").read_text()
    assert not (out / "comparison.png").exists()
    assert "figure: none (no run trained" in capsys.readouterr().out


def test_compare_on_images_writes_the_side_by_side_grids_and_an_fid_table(data_root, tmp_path):
    out = tmp_path / "cmp"
    assert main(digits_argv("compare", data_root, "--jobs", "1", "--device", "cpu", out=out)) == 0
    for name in ("comparison.png", "fid.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    table = (out / "comparison.md").read_text()
    assert "| langevin |" in table and "| anila |" in table and "digits classifier" in table
    for sampler in ("langevin", "anila"):
        assert json.loads((out / sampler / "final.json").read_text())["fid"] is not None


def test_target_and_dataset_together_are_refused(tmp_path, capsys):
    assert (
        main(["train", "--dataset", "digits", "--target", "gmm", "--preset", "smoke", "--out", str(tmp_path / "r")])
        == 2
    )
    assert "--target and --dataset: choose one" in capsys.readouterr().err


# --------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize(
    "extra", [dict(chains="short_run"), dict(chains="buffer", buffer_size=40, spectral_norm=True, ema=0.9)]
)
def test_resume_of_an_image_run_continues_exactly(data_root, tmp_path, extra):
    """2N iterations straight equal N iterations, a restart from the checkpoint, and N more: bit for bit on CPU."""
    n = 4
    cfg = tiny("digits", "anila", data_root, eval_every=2, fid_every=8, checkpoint_every=n, fid_samples=32, **extra)
    straight = Run(tmp_path / "straight", cfg.replace(iters=2 * n), progress=False)
    straight.train()
    Run(tmp_path / "split", cfg.replace(iters=n), progress=False).train()
    resumed = Run(tmp_path / "split", resume=True, iters=2 * n, progress=False)
    assert resumed.trainer.iteration == n
    resumed.train()
    for a, b in zip(straight.trainer.model.state_dict().values(), resumed.trainer.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(straight.trainer.samples, resumed.trainer.samples)
    # the split run's first half ended at iteration n, where it also scored FID; the rest is identical
    drop = {"wall_s", "fid", "kid", "kid_std", "coverage", "class_entropy", "class_histogram"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "split" / "metrics.jsonl")) == strip(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )
