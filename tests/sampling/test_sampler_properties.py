"""Property-based tests (hypothesis) of the samplers' validation and of invariants that hold for every valid input."""

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anila_core.sampling.registry import SAMPLERS, make_sampler
from anila_core.sampling.samplers import NORMS, PSGLD, AniLA, Langevin

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


# --------------------------------------------------------------------------- inputs of sample(): x0 and the energy

ANY_SAMPLER = st.sampled_from([Langevin(0.1), AniLA(0.1, b=1.0), PSGLD(0.1), Langevin(0.1, metropolis=True)])
QUADRATIC = lambda z: 0.5 * z.square().flatten(1).sum(1)  # noqa: E731


@SETTINGS
@given(
    sampler=ANY_SAMPLER,
    dtype=st.sampled_from(
        [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.complex64]
    ),
)
def test_any_x0_that_is_not_real_floating_point_is_refused(sampler, dtype):
    with pytest.raises(ValueError, match=f"x0: expected a floating-point tensor, got dtype {dtype}"):
        sampler.sample(QUADRATIC, torch.zeros(3, 2, dtype=dtype), 2)


@SETTINGS
@given(
    sampler=ANY_SAMPLER,
    shape=st.one_of(
        st.lists(st.integers(1, 4), max_size=1),
        st.lists(st.integers(1, 4), min_size=1, max_size=3).map(lambda s: [0] + s),
    ),
)
def test_any_x0_without_a_sample_and_a_data_dimension_is_refused(sampler, shape):
    with pytest.raises(ValueError, match=r"x0: expected shape \(N, \.\.\.\) with N >= 1"):
        sampler.sample(QUADRATIC, torch.zeros(shape), 2)


@SETTINGS
@given(
    sampler=ANY_SAMPLER,
    n=st.integers(1, 5),
    d=st.integers(1, 4),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
    data=st.data(),
)
def test_any_x0_with_a_non_finite_value_is_refused(sampler, n, d, bad, data):
    x0 = torch.zeros(n, d)
    x0[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, d - 1))] = bad
    with pytest.raises(ValueError, match="x0: expected finite values"):
        sampler.sample(QUADRATIC, x0, 2)


@SETTINGS
@given(sampler=ANY_SAMPLER, shape=st.lists(st.integers(1, 4), max_size=3).map(tuple).filter(lambda s: s != (3,)))
def test_any_energy_that_is_not_one_value_per_sample_is_refused(sampler, shape):
    energy = lambda z: z.square().sum() * torch.ones(shape)  # noqa: E731
    with pytest.raises(
        ValueError, match=r"energy_fn: expected energies of shape \(3,\), one per sample, got " + re.escape(str(shape))
    ):
        sampler.sample(energy, torch.ones(3, 2), 2)


@SETTINGS
@given(sampler=ANY_SAMPLER, value=st.one_of(st.floats(allow_nan=False), st.none(), st.text(max_size=3)))
def test_any_energy_that_is_not_a_tensor_is_refused(sampler, value):
    with pytest.raises(ValueError, match="energy_fn: expected energies of shape"):
        sampler.sample(lambda z: value, torch.ones(3, 2), 2)


MAKERS = {
    "langevin": lambda eps: Langevin(eps),
    "anila": lambda eps: AniLA(eps, b=1.0),
    "psgld": lambda eps: PSGLD(eps),
    "mala": lambda eps: Langevin(eps, metropolis=True),
}


@SETTINGS
@given(
    kind=st.sampled_from(sorted(MAKERS)),
    step=st.floats(min_value=1e-4, max_value=1.0),
    x=st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=6, max_size=6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_any_valid_x0_gives_finite_samples_of_its_shape_and_dtype(kind, step, x, dtype):
    x0 = torch.tensor(x, dtype=dtype).view(3, 2)
    out = MAKERS[kind](step).sample(QUADRATIC, x0, 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == x0.shape and out.dtype == dtype and torch.isfinite(out).all()


# --------------------------------------------------------------------------- pSGLD and building samplers by name


@SETTINGS
@given(alpha=st.one_of(st.floats(max_value=-1e-12, allow_nan=False), st.floats(min_value=1.0), st.just(math.nan)))
def test_any_psgld_decay_outside_zero_one_is_refused(alpha):
    with pytest.raises(ValueError, match=r"alpha: expected a number in \[0, 1\)"):
        PSGLD(0.1, alpha=alpha)


@SETTINGS
@given(damping=st.one_of(not_positive, st.just(math.inf)))
def test_any_psgld_damping_that_is_not_finite_and_positive_is_refused(damping):
    with pytest.raises(ValueError, match="damping: expected a finite number > 0"):
        PSGLD(0.1, damping=damping)


@SETTINGS
@given(name=st.text(max_size=12).filter(lambda s: s not in SAMPLERS))
def test_any_unknown_sampler_name_is_refused(name):
    with pytest.raises(ValueError, match="sampler: unknown name"):
        make_sampler(name, step_size=0.1)


@SETTINGS
@given(name=st.sampled_from(sorted(SAMPLERS)), key=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_any_unknown_hyperparameter_is_refused_by_name(name, key):
    accepted = {"step_size", "noise_scale", "metropolis", "b", "norm", "variant", "alpha", "damping"}
    if key in accepted:
        return
    with pytest.raises(ValueError, match=f"unknown hyperparameter\\(s\\) \\['{key}'\\]"):
        make_sampler(name, step_size=0.1, **{key: 1.0})
