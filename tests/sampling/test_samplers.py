"""Unit tests of the samplers: exact formulas on fixed tensors, limiting cases, determinism, validation, memory."""

import math

import pytest
import torch

from anila_core.sampling.kernel import Trace, energy_and_grad
from anila_core.sampling.registry import make_sampler
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin


def quadratic(x):
    """E(x) = ½‖x‖², so ∇E = x."""
    return 0.5 * x.flatten(1).square().sum(1)


# --------------------------------------------------------------------------- exact formulas

X = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
G = torch.tensor([[3.0, -0.5], [-4.0, 0.25]])
XI = torch.tensor([[0.1, -0.2], [0.3, 0.4]])


def test_langevin_step_formula():
    s = Langevin(step_size=0.1, noise_scale=0.5)
    expected = X - 0.05 * G + 0.5 * math.sqrt(0.1) * XI
    # two float32 formulas of the same move, summed in another order (and fused or not, by the vector ISA):
    # the values are at most 2.1, where one rounding step (ulp) is 2.4e-7, so they agree to a few of them
    torch.testing.assert_close(s.move(X, G, XI), expected, rtol=0, atol=1e-6)
    assert torch.equal(s.step_sizes(G), torch.full_like(G, 0.1))


def test_anila_coordinate_step_sizes_and_step():
    s = AniLA(step_size=0.1, b=1.0, norm="coordinate")
    # |g| = [[3, .5], [4, .25]] -> a = b / max(b, |g|) = [[1/3, 1], [1/4, 1]]
    gamma = torch.tensor([[0.1 / 3, 0.1], [0.1 / 4, 0.1]])
    torch.testing.assert_close(s.step_sizes(G), gamma)
    expected = X - 0.5 * gamma * G + gamma.sqrt() * XI
    torch.testing.assert_close(s.move(X, G, XI), expected)
    # the drift of a clipped coordinate is capped at ε·b/2
    drift = (0.5 * gamma * G).abs()
    assert (drift <= 0.1 * 1.0 / 2 + 1e-7).all()


def test_anila_sample_norm_shares_one_step_per_sample():
    s = AniLA(step_size=0.2, b=2.0, norm="sample")
    norms = torch.tensor([math.hypot(3.0, 0.5), math.hypot(4.0, 0.25)])
    expected = (0.2 * 2.0 / norms.clamp_min(2.0))[:, None].expand(2, 2)
    torch.testing.assert_close(s.step_sizes(G), expected)


def test_anila_pixel_norm_on_images_uses_the_channel_dimension():
    g = torch.zeros(1, 3, 2, 2)
    g[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])  # pixel norm 5
    g[0, :, 1, 1] = torch.tensor([0.1, 0.1, 0.1])  # pixel norm 0.17 < b
    s = AniLA(step_size=0.1, b=1.0, norm="pixel")
    gamma = s.step_sizes(g)
    assert gamma.shape == g.shape
    torch.testing.assert_close(gamma[0, :, 0, 0], torch.full((3,), 0.1 / 5))
    torch.testing.assert_close(gamma[0, :, 1, 1], torch.full((3,), 0.1))
    torch.testing.assert_close(gamma[0, :, 0, 1], torch.full((3,), 0.1))
    # on a flat batch every coordinate is its own one-channel pixel
    torch.testing.assert_close(s.step_sizes(G), AniLA(0.1, 1.0, norm="coordinate").step_sizes(G))


def test_anila_noise_only_variant_keeps_the_full_drift():
    s = AniLA(step_size=0.1, b=1.0, variant="noise_only")
    gamma = AniLA(step_size=0.1, b=1.0).step_sizes(G)
    expected = X - 0.05 * G + gamma.sqrt() * XI
    torch.testing.assert_close(s.move(X, G, XI), expected)


def test_psgld_step_sizes_formula():
    s = PSGLD(step_size=0.1, alpha=0.9, damping=1e-3)
    torch.testing.assert_close(s.step_sizes(G), 0.1 / (1e-3 + G.abs()))
    v = torch.ones_like(G)
    torch.testing.assert_close(s.step_sizes(G, v), 0.1 / (1e-3 + (0.9 + 0.1 * G.square()).sqrt()))


# --------------------------------------------------------------------------- limiting cases


@pytest.mark.parametrize("norm", ["coordinate", "pixel", "sample"])
@pytest.mark.parametrize("metropolis", [False, True])
def test_anila_with_infinite_b_is_langevin_bit_for_bit(norm, metropolis):
    x0 = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    a = AniLA(0.05, b=math.inf, norm=norm, metropolis=metropolis).sample(
        quadratic, x0, 20, generator=torch.Generator().manual_seed(7)
    )
    b = Langevin(0.05, metropolis=metropolis).sample(quadratic, x0, 20, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)  # b = inf makes AniLA's step map Langevin's very operation (full_like), so one code path


def test_anila_with_huge_b_never_clips_and_matches_langevin():
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    a = AniLA(0.05, b=1e30).sample(quadratic, x0, 10, generator=torch.Generator().manual_seed(3))
    b = Langevin(0.05).sample(quadratic, x0, 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # b / max(b, |g|) is exactly 1 when b > |g|: ε·1 is ε in any float arithmetic


@pytest.mark.parametrize("sampler", [Langevin(0.2, noise_scale=0), AniLA(0.2, b=0.5, noise_scale=0)])
def test_zero_noise_is_gradient_descent(sampler):
    x = torch.tensor([[2.0, -1.0], [0.3, 4.0]])
    out = sampler.sample(quadratic, x, 5)
    expected = x.clone()
    for _ in range(5):
        g = expected  # ∇E = x for the quadratic
        expected = expected - 0.5 * sampler.step_sizes(g) * g
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "sampler",
    [Langevin(0.1), AniLA(0.1, 1.0), Langevin(0.1, metropolis=True), AniLA(0.1, 1.0, metropolis=True), PSGLD(0.1)],
    ids=repr,
)
def test_same_seed_same_chain_different_seed_different_chain(sampler):
    x0 = torch.zeros(16, 2)
    a = sampler.sample(quadratic, x0, 15, generator=torch.Generator().manual_seed(11))
    b = sampler.sample(quadratic, x0, 15, generator=torch.Generator().manual_seed(11))
    c = sampler.sample(quadratic, x0, 15, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_metropolis_rejects_everything_when_the_proposal_is_absurd():
    # a step of 1e6 on E = ½x² proposes points with astronomically higher energy
    x0 = torch.full((50, 1), 0.5)
    trace = Trace()
    out = Langevin(1e6, metropolis=True).sample(
        quadratic, x0, 3, generator=torch.Generator().manual_seed(0), trace=trace
    )
    assert torch.equal(out, x0)
    assert trace.acceptance_rate == [0.0, 0.0, 0.0]


# --------------------------------------------------------------------------- trace


def test_trace_records_what_was_asked():
    x0 = torch.full((100, 2), 3.0)
    trace = Trace(positions_at=[0, 5, 10])
    out = AniLA(0.1, b=1.0, metropolis=True).sample(
        quadratic, x0, 10, generator=torch.Generator().manual_seed(0), trace=trace
    )
    assert sorted(trace.positions) == [0, 5, 10]
    assert torch.equal(trace.positions[0], x0)
    assert torch.equal(trace.positions[10], out)
    assert len(trace.mean_energy) == 11 and len(trace.mean_grad_norm) == 11
    assert trace.mean_energy[0] == pytest.approx(9.0)  # ½(3² + 3²)
    assert trace.mean_grad_norm[0] == pytest.approx(math.hypot(3, 3), rel=1e-6)
    assert len(trace.acceptance_rate) == 10 and all(0 <= a <= 1 for a in trace.acceptance_rate)
    # at x = (3, 3) every |g| = 3 > b = 1, so every coordinate is clipped at the first step
    assert trace.clipped_share[0] == 1.0


def test_trace_is_optional_and_leaves_the_chain_unchanged():
    x0 = torch.randn(20, 2, generator=torch.Generator().manual_seed(5))
    with_trace = AniLA(0.1, 1.0).sample(quadratic, x0, 8, generator=torch.Generator().manual_seed(2), trace=Trace())
    without = AniLA(0.1, 1.0).sample(quadratic, x0, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(with_trace, without)


# --------------------------------------------------------------------------- networks and memory


def test_sampling_never_touches_parameter_gradients_and_returns_detached():
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
    energy = lambda x: net(x).squeeze(1)  # noqa: E731
    out = AniLA(0.01, 1.0, metropolis=True).sample(energy, torch.randn(8, 2), 5)
    assert not out.requires_grad and out.grad_fn is None
    assert all(p.grad is None for p in net.parameters())


def test_sampling_works_inside_no_grad():
    with torch.no_grad():
        out = Langevin(0.01).sample(quadratic, torch.ones(4, 2), 3)
    assert out.shape == (4, 2)


def test_no_graph_survives_the_call():
    """No autograd graph outlives sampling, however many steps ran: memory is flat in n_steps."""
    import gc
    import warnings

    def live_graph_tensors():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance on some torch module objects warns
            return [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.grad_fn is not None]

    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))
    energy = lambda x: net(x).squeeze(1)  # noqa: E731
    # held, so that graphs other tests left behind cannot be freed meanwhile and hide a new one in the count
    before = live_graph_tensors()
    outs = [AniLA(0.01, 1.0).sample(energy, torch.randn(64, 2), n, trace=Trace()) for n in (2, 50)]
    assert len(live_graph_tensors()) == len(before)
    assert all(o.grad_fn is None for o in outs)


def test_energy_and_grad_matches_the_analytic_gradient():
    x = torch.randn(5, 3)
    e, g = energy_and_grad(quadratic, x)
    torch.testing.assert_close(e, 0.5 * x.square().sum(1))
    torch.testing.assert_close(g, x)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: Langevin(0.0), "step_size"),
        (lambda: Langevin(-1.0), "step_size"),
        (lambda: Langevin(math.nan), "step_size"),
        (lambda: Langevin(math.inf), "step_size"),
        (lambda: Langevin("big"), "step_size"),
        (lambda: Langevin(0.1, noise_scale=-0.1), "noise_scale"),
        (lambda: Langevin(0.1, noise_scale=math.inf), "noise_scale"),
        (lambda: Langevin(0.1, noise_scale=0.0, metropolis=True), "metropolis"),
        (lambda: AniLA(0.1, b=0.0), "b"),
        (lambda: AniLA(0.1, b=-2.0), "b"),
        (lambda: AniLA(0.1, b=math.nan), "b"),
        (lambda: AniLA(0.1, b=1.0, norm="l1"), "norm"),
        (lambda: AniLA(0.1, b=1.0, variant="drift_only"), "variant"),
        (lambda: PSGLD(0.1, alpha=1.0), "alpha"),
        (lambda: PSGLD(0.1, damping=0.0), "damping"),
        (lambda: make_sampler("ghmc", step_size=0.1), "sampler"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_parameter(build, name):
    with pytest.raises(ValueError, match=name):
        build()


@pytest.mark.parametrize(
    "x0, n_steps, name",
    [
        (torch.tensor([[0.0, math.nan]]), 1, "x0"),
        (torch.tensor([[math.inf, 0.0]]), 1, "x0"),
        (torch.zeros(3, dtype=torch.long).view(1, 3), 1, "x0"),
        (torch.zeros(3), 1, "x0"),
        ([[0.0, 0.0]], 1, "x0"),
        (torch.zeros(2, 2), 0, "n_steps"),
        (torch.zeros(2, 2), 2.5, "n_steps"),
    ],
)
def test_bad_sampling_arguments_raise_naming_the_argument(x0, n_steps, name):
    with pytest.raises(ValueError, match=name):
        Langevin(0.1).sample(quadratic, x0, n_steps)


def test_energy_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"energy_fn: expected energies of shape \(4,\)"):
        Langevin(0.1).sample(lambda x: x.sum(1, keepdim=True), torch.zeros(4, 2), 2)
