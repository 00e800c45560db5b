"""FID/KID with custom and digits features, the Inception error, and the digits classifier (accuracy, cache,
coverage)."""

import math
import shutil

import pytest
import torch
from torch import nn

import anila_core.images.digits_classifier as dc
from anila_core.images.datasets import load_dataset
from anila_core.images.metrics import (
    INCEPTION_WEIGHTS_FILE,
    InceptionUnavailableError,
    torch_fidelity_available,
    extract_features,
    fid_kid,
)


class TinyFeatures(nn.Module):
    """A fixed random projection of the pixels: enough to tell two image laws apart."""

    def __init__(self, dim_in=3 * 8 * 8, dim_out=16, with_num_features=True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        with torch.no_grad():
            self.proj.weight.copy_(
                torch.randn(dim_out, dim_in, generator=torch.Generator().manual_seed(0)) / dim_in**0.5
            )
            self.proj.bias.zero_()
        if with_num_features:
            self.num_features = dim_out

    def forward(self, x):
        return self.proj(x.flatten(1))


def _images(n, seed, shift=0.0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, 3, 8, 8, generator=g) + shift).clamp(-1, 1)


# --- fid_kid with a custom extractor -----------------------------------------------------------------


@pytest.mark.parametrize("with_num_features", [True, False])
def test_a_set_against_itself_is_zero(with_num_features):
    x = _images(300, 0)
    out = fid_kid(x, x, TinyFeatures(with_num_features=with_num_features), kid_subsets=20)
    assert set(out) == {"fid", "kid_mean", "kid_std"}
    assert out["fid"] == pytest.approx(0.0, abs=1e-8)
    # KID's estimator is unbiased for independent sets; a set paired with itself gives exactly
    # 2/(m-1)·(mean of all k(x_i, x_j) − mean of k(x_i, x_i)): slightly negative, O(1/m)
    f = extract_features(x, TinyFeatures())
    k = (f @ f.T / f.shape[1] + 1) ** 3
    expected = 2 / (len(x) - 1) * (k.mean() - k.diagonal().mean())
    assert out["kid_mean"] == pytest.approx(float(expected), rel=1e-9)
    assert -0.05 < out["kid_mean"] <= 0 and out["kid_std"] == pytest.approx(0.0, abs=1e-9)


def test_different_sets_score_higher_and_same_law_scores_low():
    fx = TinyFeatures()
    a, b, far = _images(300, 0), _images(300, 1), _images(300, 2, shift=0.6)
    same = fid_kid(a, b, fx, kid_subsets=20, kid_subset_size=200)
    diff = fid_kid(a, far, fx, kid_subsets=20, kid_subset_size=200)
    # FID of two samples of one law is biased upward (here ≈ 0.4): the shifted law must stand far above it
    assert diff["fid"] > 10 * same["fid"]
    assert diff["kid_mean"] > 10 * max(abs(same["kid_mean"]), 3 * same["kid_std"])
    assert diff["kid_std"] >= 0


def test_kid_is_seeded_and_leaves_global_rng_alone():
    fx = TinyFeatures()
    a, b = _images(200, 0), _images(200, 1, shift=0.2)
    state = torch.get_rng_state()
    r1 = fid_kid(a, b, fx, kid_subsets=10, kid_subset_size=50, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    r2 = fid_kid(a, b, fx, kid_subsets=10, kid_subset_size=50, seed=1)
    r3 = fid_kid(a, b, fx, kid_subsets=10, kid_subset_size=50, seed=2)
    assert r1 == r2 and r1["kid_mean"] != r3["kid_mean"] and r1["fid"] == r3["fid"]


def test_samples_outside_the_data_range_are_clamped():
    fx = TinyFeatures()
    a = _images(100, 0)
    assert fid_kid(a, a * 5, fx, kid_subsets=5) == fid_kid(a, (a * 5).clamp(-1, 1), fx, kid_subsets=5)


def test_bad_inputs_name_the_argument():
    fx = TinyFeatures()
    with pytest.raises(ValueError, match="fake: expected images of shape \\(3, 8, 8\\)"):
        fid_kid(_images(10, 0), torch.zeros(10, 3, 16, 16), fx)
    with pytest.raises(ValueError, match="real: expected at least 2 images"):
        fid_kid(_images(1, 0), _images(10, 0), fx)
    with pytest.raises(ValueError, match="real: expected images of shape \\(N, C, H, W\\)"):
        fid_kid(torch.zeros(10, 64), _images(10, 0), fx)
    with pytest.raises(ValueError, match="fake: holds NaN"):
        fid_kid(_images(10, 0), torch.full((10, 3, 8, 8), float("nan")), fx)
    with pytest.raises(ValueError, match="feature_extractor: expected None, 'digits' or an nn.Module"):
        fid_kid(_images(10, 0), _images(10, 1), "inception")
    with pytest.raises(ValueError, match="kid_subset_size: expected an integer >= 2"):
        fid_kid(_images(10, 0), _images(10, 1), fx, kid_subset_size=1)


def test_missing_inception_says_where_the_weights_go(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InceptionUnavailableError) as info:
        fid_kid(_images(4, 0), _images(4, 1))
    msg = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE) in msg
    assert "weights_path" in msg and "feature_extractor" in msg
    if not torch_fidelity_available():
        assert "torch-fidelity" in msg


# --- the digits classifier ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digits_classifier.pt"
    dc.load_digits_classifier(path)  # trains (a few seconds) and caches
    return path


@pytest.fixture(scope="module")
def classifier(classifier_file):
    return dc.load_digits_classifier(classifier_file)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", split="train"), load_dataset("digits", split="test")


def test_classifier_accuracy_on_held_out_digits(classifier, digits):
    _, test = digits
    accuracy = float((classifier.predict(test.images) == test.labels).float().mean())
    print(f"digits classifier held-out accuracy: {accuracy:.4f} (trained in {classifier.info['train_seconds']:.1f} s)")
    assert accuracy >= 0.9
    assert classifier.info["test_accuracy"] == pytest.approx(accuracy)


def test_cache_is_read_not_retrained(classifier_file, classifier, digits, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a cached classifier exists")

    monkeypatch.setattr(dc, "train_digits_classifier", no_training)
    again = dc.load_digits_classifier(classifier_file)
    assert again.info["loaded_from"] == str(classifier_file)
    x = digits[1].images
    assert torch.equal(again.features(x), classifier.features(x))


def test_unreadable_cache_is_retrained_with_a_warning(tmp_path, monkeypatch):
    quick = dc.train_digits_classifier
    monkeypatch.setattr(dc, "train_digits_classifier", lambda: quick(epochs=1))
    path = tmp_path / "digits_classifier.pt"
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="cannot use the cached digits classifier"):
        model = dc.load_digits_classifier(path)
    assert "loaded_from" not in model.info
    assert dc.load_digits_classifier(path).info["loaded_from"] == str(path)  # the rewrite is readable


def test_default_path_is_under_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ANILA_DATA", str(tmp_path))
    assert dc.default_classifier_path() == tmp_path / "cache" / "digits_classifier.pt"


def test_fid_train_vs_test_is_small_next_to_noise(classifier_file, digits, tmp_path, monkeypatch):
    # feature_extractor="digits" finds the cached classifier under the data root
    (tmp_path / "cache").mkdir()
    shutil.copy(classifier_file, tmp_path / "cache" / "digits_classifier.pt")
    monkeypatch.setenv("ANILA_DATA", str(tmp_path))
    monkeypatch.setattr(dc, "train_digits_classifier", lambda *a, **k: pytest.fail("retrained"))
    train, test = digits
    noise = torch.rand(len(test), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real = fid_kid(train.images, test.images, "digits", kid_subsets=20)
    fake = fid_kid(noise, test.images, "digits", kid_subsets=20)
    print(f"digits FID train/test {real['fid']:.3f}, noise/test {fake['fid']:.3f}")
    assert fake["fid"] > 20 * real["fid"]
    assert fake["kid_mean"] > 20 * max(real["kid_mean"], real["kid_std"])


def test_coverage_of_real_digits_is_full(classifier, digits):
    _, test = digits
    out = dc.class_coverage(test.images, classifier)
    assert out["coverage"] == 1.0
    assert sum(out["histogram"]) == pytest.approx(1.0) and sum(out["counts"]) == len(test)
    assert out["entropy"] == pytest.approx(math.log(10), abs=0.02)
    # a collapsed generator: only sevens
    sevens = test.images[test.labels == 7]
    collapsed = dc.class_coverage(sevens, classifier)
    assert collapsed["coverage"] == pytest.approx(0.1) and collapsed["entropy"] < 0.2
    assert collapsed["histogram"][7] > 0.9


def test_classifier_reads_16px_digits(classifier):
    big = load_dataset("digits", size=16, split="test")
    accuracy = float((classifier.predict(big.images) == big.labels).float().mean())
    assert accuracy >= 0.9


def test_coverage_validates_input(classifier):
    with pytest.raises(ValueError, match="samples: expected grey images"):
        dc.class_coverage(torch.zeros(5, 3, 8, 8), classifier)
    with pytest.raises(ValueError, match="min_share"):
        dc.class_coverage(torch.zeros(5, 1, 8, 8), classifier, min_share=0)
