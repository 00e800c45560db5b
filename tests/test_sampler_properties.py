"""Property-based tests (hypothesis) of the samplers' validation and of invariants that hold for every valid input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anila_core.samplers import NORMS, AniLA, Langevin

finite_positive = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False, allow_infinity=False)
not_positive = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(math.nan), st.just(-math.inf))
SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(step=st.one_of(not_positive, st.just(math.inf)))
def test_any_step_size_that_is_not_finite_and_positive_is_refused(step):
    with pytest.raises(ValueError, match="step_size"):
        Langevin(step)


@SETTINGS
@given(b=not_positive)
def test_any_threshold_that_is_not_positive_is_refused(b):
    with pytest.raises(ValueError, match="b: expected a number > 0"):
        AniLA(0.1, b=b)


@SETTINGS
@given(tau=st.one_of(st.floats(max_value=-1e-12, allow_nan=False), st.just(math.nan), st.just(math.inf)))
def test_any_negative_or_non_finite_noise_scale_is_refused(tau):
    with pytest.raises(ValueError, match="noise_scale"):
        Langevin(0.1, noise_scale=tau)


@SETTINGS
@given(norm=st.text(min_size=0, max_size=12).filter(lambda s: s not in NORMS))
def test_any_unknown_norm_is_refused(norm):
    with pytest.raises(ValueError, match="norm"):
        AniLA(0.1, b=1.0, norm=norm)


@SETTINGS
@given(n=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.booleans()))
def test_any_step_count_below_one_or_not_an_integer_is_refused(n):
    with pytest.raises(ValueError, match="n_steps"):
        Langevin(0.1).sample(lambda x: x.square().sum(1), torch.zeros(2, 2), n)


@SETTINGS
@given(
    step=finite_positive,
    b=finite_positive,
    norm=st.sampled_from(NORMS),
    grads=st.lists(st.floats(min_value=-1e4, max_value=1e4, allow_nan=False), min_size=6, max_size=6),
)
def test_anila_steps_are_never_longer_than_langevin_and_the_drift_is_capped(step, b, norm, grads):
    g = torch.tensor(grads, dtype=torch.float64).view(1, 3, 2)  # a (N, C, d) batch, so "pixel" has channels
    gamma = AniLA(step, b=b, norm=norm).step_sizes(g)
    assert gamma.shape == g.shape
    assert (gamma > 0).all() and (gamma <= step * (1 + 1e-12)).all()
    if norm == "coordinate":
        # |γ/2 · g| ≤ ε·b/2 per coordinate
        assert ((gamma * g).abs() / 2 <= step * b / 2 * (1 + 1e-9)).all()


@SETTINGS
@given(
    step=finite_positive,
    b=finite_positive,
    x=st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=4, max_size=4),
)
def test_zero_noise_never_increases_a_convex_quadratic_energy(step, b, x):
    """With τ = 0 and a step below the stability limit (ε ≤ 2 for E = ½‖x‖²), AniLA is a descent method."""
    step = min(step, 2.0)
    x0 = torch.tensor(x, dtype=torch.float64).view(2, 2)
    energy = lambda z: 0.5 * z.square().sum(1)  # noqa: E731
    out = AniLA(step, b=b, noise_scale=0.0).sample(energy, x0, 3)
    assert (energy(out) <= energy(x0) + 1e-9).all()
