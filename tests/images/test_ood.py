"""Out-of-distribution scoring (anila_core.images.ood) and the generation helpers (anila_core.images.generation)."""

import math

import pytest
import torch

from anila_core.images import generation, ood
from anila_core.sampling.samplers import AniLA, Langevin


# --------------------------------------------------------------------------- AUROC


def test_auroc_counts_pairs_on_fixed_inputs():
    # pairs (out > in): 2 > 1; 4 > 1, 3; 5 > 1, 3 → 5 of the 2·3 = 6 pairs
    assert ood.auroc([1.0, 3.0], [2.0, 4.0, 5.0]) == pytest.approx(5 / 6)
    # a tie counts one half: out 2 against in {1, 2}: 1 + 0.5
    assert ood.auroc([1.0, 2.0], [2.0]) == pytest.approx(0.75)


def test_auroc_is_half_for_identical_sets_and_one_or_zero_when_separated():
    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    assert ood.auroc(x, x) == pytest.approx(0.5)
    assert ood.auroc(x, x + 100) == 1.0
    assert ood.auroc(x + 100, x) == 0.0


def test_auroc_agrees_with_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 6, (300,), generator=gen).double()  # many ties
    b = torch.randint(1, 8, (170,), generator=gen).double()
    labels = [0] * len(a) + [1] * len(b)
    assert ood.auroc(a, b) == pytest.approx(roc_auc_score(labels, torch.cat([a, b]).numpy()), abs=1e-12)


@pytest.mark.parametrize("bad", [[], [1.0, math.nan]])
def test_auroc_refuses_empty_or_non_finite_scores(bad):
    with pytest.raises(ValueError, match="out_scores"):
        ood.auroc([1.0, 2.0], bad)


# --------------------------------------------------------------------------- outlier sets


def test_energy_scores_batches_give_the_same_numbers():
    x = torch.rand(37, 1, 8, 8) * 2 - 1

    def energy(images):
        return images.square().sum(dim=(1, 2, 3))

    assert torch.allclose(ood.energy_scores(energy, x, batch_size=5), energy(x).double())


def test_shift_and_flip_move_the_pixels_as_said():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    shifted = ood.shift_images(x, 1, background=-1.0)
    assert torch.equal(shifted[0, 0, 1:, 1:], x[0, 0, :-1, :-1])
    assert (shifted[0, 0, 0] == -1).all() and (shifted[0, 0, :, 0] == -1).all()
    assert torch.equal(ood.flip_images(x)[0, 0, 0], x[0, 0, -1])
    with pytest.raises(ValueError, match="pixels"):
        ood.shift_images(x, 4)


def test_photo_patches_are_grey_images_in_range_and_not_constant():
    patches = ood.photo_patches(10, side=8, seed=0)
    assert patches.shape == (10, 1, 8, 8)
    assert patches.min() >= -1 and patches.max() <= 1
    assert (patches.flatten(1).std(1) > 0.1).all()
    assert torch.equal(patches, ood.photo_patches(10, side=8, seed=0))


def test_a_quadratic_energy_around_the_data_flags_the_outliers():
    # E = distance to the data's mean image: a crude model that must rank noise as unlike the data
    from anila_core.images.datasets import load_dataset

    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    mean = train.images.mean(0, keepdim=True)

    def energy(images):
        return (images - mean).square().sum(dim=(1, 2, 3))

    held_out = test.images[:200]
    scores = ood.ood_aurocs(energy, held_out, ood.outlier_sets(held_out))
    assert set(scores) == {
        "uniform noise",
        "digits upside down",
        "digits shifted by 2 pixels",
        "photo patches (scikit-learn)",
    }
    assert scores["uniform noise"] > 0.95
    assert all(0.0 <= v <= 1.0 for v in scores.values())


# --------------------------------------------------------------------------- generation


def _well(images):
    """A quadratic well at 0.5 for every pixel: Langevin's drift pulls each pixel there."""
    return (images - 0.5).square().sum(dim=(1, 2, 3)) * 50


def test_chain_snapshots_continue_one_trajectory():
    sampler = Langevin(0.01, noise_scale=0.0)  # noiseless: a gradient descent, so the path is checkable
    snaps = generation.chain_snapshots(_well, sampler, (1, 4, 4), 3, steps=[0, 5, 10], seed=0)
    assert sorted(snaps) == [0, 5, 10]
    assert (snaps[0] - 0.5).abs().mean() > (snaps[5] - 0.5).abs().mean() > (snaps[10] - 0.5).abs().mean()
    again = generation.chain_snapshots(_well, sampler, (1, 4, 4), 3, steps=[10], seed=0)
    assert torch.allclose(again[10], snaps[10], atol=1e-6)  # 0 → 5 → 10 is the same chain as 0 → 10


def test_inpaint_keeps_the_known_pixels_and_samples_the_missing_ones():
    images = torch.full((2, 1, 4, 4), -1.0)
    mask = generation.half_mask((1, 4, 4), "bottom")
    out = generation.inpaint(_well, AniLA(0.01, 100.0, noise_scale=0.0), images, mask, n_steps=200, seed=0)
    assert torch.equal(out[:, :, :2], images[:, :, :2])  # the top half is what was seen
    assert torch.allclose(out[:, :, 2:], torch.full((2, 1, 2, 4), 0.5), atol=1e-3)  # the bottom half went to the well
    # from a given start and with no steps' worth of movement the hidden pixels stay at that start
    guess = torch.full((2, 1, 4, 4), 0.25)
    kept = generation.inpaint(_well, Langevin(1e-12, noise_scale=0.0), images, mask, n_steps=1, start=guess)
    assert torch.allclose(kept[:, :, 2:], guess[:, :, 2:]) and torch.equal(kept[:, :, :2], images[:, :, :2])
    with pytest.raises(ValueError, match="part"):
        generation.half_mask((1, 4, 4), "middle")


def test_auroc_interval_brackets_the_estimate_and_is_a_point_when_separated():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(150, generator=gen), torch.randn(150, generator=gen) + 1.0
    low, high = ood.auroc_interval(a, b, n_boot=100)
    assert low <= ood.auroc(a, b) <= high and high - low < 0.2
    assert ood.auroc_interval(a, a + 100, n_boot=20) == (1.0, 1.0)
    # more images of the same kinds: a narrower interval
    a4, b4 = torch.randn(2400, generator=gen), torch.randn(2400, generator=gen) + 1.0
    low4, high4 = ood.auroc_interval(a4, b4, n_boot=100)
    assert high4 - low4 < (high - low) / 2
