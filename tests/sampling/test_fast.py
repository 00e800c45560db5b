"""Tests of the compiled path: the same chain as the eager loop, the eager fallback, the cache, the compile rule."""

import warnings

import pytest
import torch

from anila_core.images.convnets import ConvEnergy
from anila_core.sampling import compile_rule as rule
from anila_core.sampling import compiled as fast
from anila_core.training.config import TrainConfig
from anila_core.training.presets import preset
from anila_core.nets import MLPEnergy
from anila_core.sampling.kernel import Trace
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin
from anila_core.training.trainer import Trainer

# The compiled and the eager transition differ only in rounding (fused kernels sum in
# another order), which a few steps of a smooth energy do not amplify past these.
TOL = dict(rtol=1e-4, atol=1e-5)
K = 6


def mlp(seed: int = 0) -> MLPEnergy:
    torch.manual_seed(seed)
    return MLPEnergy(2, 32, 2)


# One network and one start for the tests that compile: transitions of the same shape on the
# same network share nothing, but smaller graphs keep each compile to seconds.
NET = mlp()
X0 = 1.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1))


def both(sampler, energy=NET, x0=X0, n_steps=K, seed=7, trace=False):
    """(eager, fast) results of the same chain: same start, same generator seed."""
    traces = (Trace(positions_at=[0, n_steps]), Trace(positions_at=[0, n_steps])) if trace else (None, None)
    eager = sampler.sample(energy, x0, n_steps, generator=torch.Generator().manual_seed(seed), trace=traces[0])
    quick = sampler.sample(
        energy, x0, n_steps, generator=torch.Generator().manual_seed(seed), trace=traces[1], fast=True
    )
    return eager, quick, traces


# b = 0.04 sits near the median |g| of this network (≈ 0.04 per coordinate, 0.05 per sample): about half the steps
# shrink
SAMPLERS = {
    "langevin": Langevin(step_size=0.05),
    "anila-coordinate": AniLA(step_size=0.05, b=0.04, norm="coordinate"),
    "anila-pixel": AniLA(step_size=0.05, b=0.04, norm="pixel"),
    "anila-sample": AniLA(step_size=0.05, b=0.04, norm="sample"),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_compiled_chain_equals_eager_chain(name):
    eager, quick, _ = both(SAMPLERS[name])
    assert not torch.equal(eager, X0)
    torch.testing.assert_close(quick, eager, **TOL)
    assert not quick.requires_grad


def test_compiled_chain_records_the_same_trace():
    sampler = SAMPLERS["anila-coordinate"]
    _, _, (te, tf) = both(sampler, trace=True)
    assert len(tf.mean_energy) == len(te.mean_energy) == K + 1
    for a, b in [
        (te.mean_energy, tf.mean_energy),
        (te.mean_grad_norm, tf.mean_grad_norm),
        (te.clipped_share, tf.clipped_share),
    ]:
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), **TOL)
    assert 0 < sum(te.clipped_share)  # the threshold bites, so the clipped share is a real check
    torch.testing.assert_close(tf.positions[K], te.positions[K], **TOL)


@pytest.mark.slow
def test_compiled_metropolis_and_psgld_equal_eager():
    mala = AniLA(step_size=0.05, b=0.04, metropolis=True)
    _, _, (te, tf) = both(mala, trace=True)
    eager, quick, _ = both(mala)
    torch.testing.assert_close(quick, eager, **TOL)
    assert te.acceptance_rate == tf.acceptance_rate
    eager, quick, _ = both(PSGLD(step_size=0.005))
    torch.testing.assert_close(
        quick, eager, rtol=1e-4, atol=1e-4
    )  # γ = ε / sqrt(V) magnifies rounding where g is small


def test_compiled_gradient_equals_the_eager_one():
    # the compiled path compiles the eager path's own autograd gradient: one code path, so equal
    # to float32 rounding (fused kernels; one forward and backward of a small MLP: ~1e-7 relative)
    from functools import partial

    from anila_core.sampling.kernel import energy_and_grad

    energy, grad = energy_and_grad(NET, X0)
    with fast.tracing_autograd():
        # the package's CPU options: without them inductor's disk cache serves another ISA's code (see the issue on
        # every CPU), which is what ATEN_CPU_CAPABILITY=default in CI would meet
        compiled = torch.compile(
            partial(energy_and_grad, NET), fullgraph=True, dynamic=False, options=fast.cpu_codegen_options()
        )
        energy_c, grad_c = compiled(X0)
    torch.testing.assert_close(energy_c, energy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_c, grad, rtol=1e-5, atol=1e-6)


def test_cache_reuses_the_compiled_transition_for_the_same_shape():
    sampler = SAMPLERS["langevin"]
    both(sampler)  # compiled by now (or by the test above)
    rows = {r["name"]: dict(r) for r in fast.cache_info()}
    twin = Langevin(step_size=0.05)  # another object, same hyperparameters: the same entry
    twin.sample(NET, X0, K, generator=torch.Generator().manual_seed(0), fast=True)  # K - 1 steps: one call
    after = {r["name"]: r for r in fast.cache_info()}
    assert after.keys() == rows.keys(), "the same (sampler, energy, shape) must not compile again"
    [name] = [n for n in after if after[n]["calls"] != rows[n]["calls"]]
    assert after[name]["calls"] == rows[name]["calls"] + 1
    assert after[name]["compile_s"] > 0 and after[name]["failed"] is None
    # another shape is another entry, and the parameters are read at every call, not frozen in
    entry = fast.step_for(sampler, NET, X0)
    assert fast.step_for(sampler, NET, X0[:32]) is not entry
    assert fast.step_for(Langevin(step_size=0.1), NET, X0) is not entry


def test_compiled_transition_sees_parameter_updates():
    net = mlp(seed=3)
    sampler = SAMPLERS["langevin"]
    both(sampler, energy=net)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)  # what an optimiser step does: in place
    eager, quick, _ = both(sampler, energy=net)
    torch.testing.assert_close(quick, eager, **TOL)


def test_fallback_when_compile_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler on this machine")

    monkeypatch.setattr(torch, "compile", broken)
    net, sampler = mlp(seed=5), Langevin(step_size=0.05)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no compiler.*the same chain as fast=False"):
        eager, quick, _ = both(sampler, energy=net)
    # the fallback is the very transition fast=False runs, on this machine: the same chain bit for bit, as the warning
    # says
    assert torch.equal(quick, eager)
    [row] = [r for r in fast.cache_info() if r["failed"]]
    assert "no compiler" in row["failed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second call is silent, and eager
        again = sampler.sample(net, X0, K, generator=torch.Generator().manual_seed(7), fast=True)
    assert torch.equal(again, eager)
    fast.clear_cache()


def test_fallback_runs_the_eager_transition_of_every_sampler(monkeypatch):
    """A Metropolis chain and pSGLD's history too: the fallback's chain is fast=False's, bit for bit (same path, same
    machine)."""
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no compiler")))
    for sampler in (
        AniLA(step_size=0.05, b=0.04, metropolis=True),
        PSGLD(step_size=0.005),
        AniLA(step_size=0.05, b=0.04, norm="sample"),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            eager, quick, (te, tf) = both(sampler, trace=True)
        assert torch.equal(quick, eager), sampler
        assert te.mean_energy == tf.mean_energy and te.acceptance_rate == tf.acceptance_rate
    fast.clear_cache()


def test_fallback_when_compile_is_unsupported(monkeypatch):
    monkeypatch.setattr(
        fast, "compile_supported", lambda: (False, "torch.compile does not support this Python version")
    )
    sampler = Langevin(step_size=0.05)
    with pytest.warns(RuntimeWarning, match="runs eagerly, the same chain as fast=False"):
        eager, quick, _ = both(sampler, energy=mlp(seed=6))
    assert torch.equal(quick, eager)
    fast.clear_cache()


def test_a_wrong_energy_shape_is_reported_as_itself():
    sampler = Langevin(step_size=0.05)
    with pytest.raises(ValueError, match="energy_fn: expected energies of shape"):
        sampler.sample(lambda x: x.sum(), X0, 2, fast=True)  # one number for the batch, not per sample
    fast.clear_cache()


def test_sample_fast_validates_like_sample():
    with pytest.raises(ValueError, match="n_steps"):
        Langevin(0.1).sample(NET, X0, 0, fast=True)
    with pytest.raises(ValueError, match="x0"):
        Langevin(0.1).sample(NET, X0.long(), 2, fast=True)


def test_auto_compiles_big_calls_only(monkeypatch):
    """``fast="auto"`` (the default) compiles a call of much work, never a small one nor an eager-forced one."""
    called = []
    real = fast.compiled_steps
    monkeypatch.setattr(fast, "compiled_steps", lambda *a, **k: called.append(a[2].shape) or real(*a, **k))
    monkeypatch.setattr(rule, "AUTO_MIN_CHAIN_STEPS", K * len(X0))
    rule.forget_work()
    sampler = SAMPLERS["langevin"]
    sampler.sample(NET, X0, K - 1)  # one step short of the threshold: eager
    assert not called
    sampler.sample(NET, X0, K, fast=False)
    assert not called
    rule.forget_work()
    big = sampler.sample(NET, X0, K, generator=torch.Generator().manual_seed(7))
    assert called == [X0.shape]
    eager = sampler.sample(NET, X0, K, generator=torch.Generator().manual_seed(7), fast=False)
    torch.testing.assert_close(big, eager, **TOL)
    convnet = ConvEnergy(image_size=8, in_channels=1, width=4)  # a ConvNet's transition is all convolution on a CPU
    assert not rule.compiles("auto", convnet, "cpu", 10**9)
    assert not rule.compiles("auto", lambda z: convnet(z), "cpu", 10**9)  # told from the energy, not the batch's shape
    assert rule.compiles("auto", lambda z: NET(z), "cpu", 10**9)  # a lambda over a network is a network energy
    assert not rule.compiles("auto", lambda z: z.square().sum(1), "cpu", 10**9)  # an analytic energy stays eager
    for wrong in ("yes", "on", 1, None):
        with pytest.raises(ValueError, match="fast: expected one of"):
            sampler.sample(NET, X0, 2, fast=wrong)


def test_compiled_runs_continue_exactly():
    """n then m compiled steps from a state equal n + m compiled steps, bit for bit (pSGLD's V, MALA's test included).

    2K = 12 steps run as a compiled call of 8 and one of 4, the halves as one call of 6 each: a step inside a
    longer compiled call is the step of a shorter call, bit for bit (inductor contracts no multiply-add, so a
    fused operation rounds as an unfused one).
    """
    for sampler in (SAMPLERS["langevin"], PSGLD(step_size=0.005), Langevin(step_size=0.05, metropolis=True)):
        state = sampler.init(NET, X0)
        whole = sampler.run(NET, state, 2 * K, generator=torch.Generator().manual_seed(3), fast=True)
        gen = torch.Generator().manual_seed(3)
        half = sampler.run(NET, sampler.run(NET, state, K, generator=gen, fast=True), K, generator=gen, fast=True)
        assert torch.equal(half.x, whole.x) and torch.equal(half.grad, whole.grad)
        assert all(torch.equal(half.extra[k], whole.extra[k]) for k in whole.extra)


# --------------------------------------------------------------------------- training


def test_the_one_compile_rule():
    """One rule for run/sample and for training: the work (chain-steps) against one threshold, and the energy itself."""
    n = rule.AUTO_MIN_CHAIN_STEPS
    rule.forget_work()
    assert not rule.compiles("auto", NET, "cpu", n - 1)
    rule.forget_work()
    assert rule.compiles("auto", NET, "cpu", n)
    convnet = ConvEnergy(image_size=8, in_channels=1, width=4)
    assert not rule.compiles("auto", convnet, "cpu", 10 * n)  # ConvNets gain nothing on a CPU
    assert rule.compiles("auto", convnet, "cuda", 10 * n)
    assert not rule.compiles("auto", NET, "cpu", 10 * n, network_compiled=True)
    assert rule.compiles(True, NET, "cpu", 1) and not rule.compiles(False, NET, "cpu", 10 * n)
    with pytest.raises(ValueError, match="fast: expected one of"):
        rule.compiles("yes", NET, "cpu", 1)


def test_auto_counts_the_work_sampled_with_a_network_across_calls(monkeypatch):
    """Small calls stay eager until the work sampled with the same network, theirs added up, reaches the threshold;
    the count is per network, and a lambda over a network counts towards that network."""
    monkeypatch.setattr(rule, "AUTO_MIN_CHAIN_STEPS", 1000)
    rule.forget_work()
    other = MLPEnergy(2, 8, 1)
    assert [rule.compiles("auto", NET, "cpu", 300) for _ in range(4)] == [False, False, False, True]
    assert not rule.compiles("auto", other, "cpu", 300)  # another network has its own count
    assert rule.compiles("auto", lambda z: NET(z), "cpu", 1)  # the same network, through a lambda
    assert not rule.compiles(False, NET, "cpu", 10**9)  # forcing stays forcing
    rule.forget_work()
    assert rule.compiles("auto", NET, "cpu", 1000, record=False)  # a training run's plan decides alone...
    assert not rule.compiles("auto", NET, "cpu", 300)  # ...and is not counted as work sampled
    rule.forget_work()
    assert not rule.compiles("auto", NET, "cpu", 300)


def test_config_field_and_smoke_runs_stay_eager():
    assert preset("smoke", "anila").fast == "auto"
    for wrong in ("always", "on", 1):
        with pytest.raises(ValueError, match="fast: expected one of"):
            preset("smoke", "anila", fast=wrong)
    # one vocabulary from the command line on; a config.json written with the old words still loads
    assert [rule.parse_fast(t) for t in ("auto", "true", "False")] == ["auto", True, False]
    with pytest.raises(ValueError, match="fast: expected one of auto, true, false"):
        rule.parse_fast("on")
    old = preset("smoke", "anila").to_dict()
    assert TrainConfig.from_dict({**old, "fast": "on"}).fast is True
    assert TrainConfig.from_dict({**old, "fast": "off"}).fast is False
    assert not Trainer(preset("smoke", "anila"), progress=False).fast
    assert Trainer(preset("cpu_long", "anila"), progress=False).fast  # 10 000 iterations × K = 30
    assert Trainer(preset("cpu", "langevin"), progress=False).fast  # the demo and notebook 02: 3000 × 30
    assert not Trainer(preset("sweep", "langevin"), progress=False).fast  # a sweep cell: 800 × 30


def test_training_with_the_fast_path_matches_eager():
    config = preset("smoke", "langevin", iters=3, eval_every=100)
    runs = []
    for mode in (False, True):
        trainer = Trainer(config.replace(fast=mode), progress=False)
        assert trainer.fast is mode
        stats = [trainer.train_step() for _ in range(3)]
        runs.append((stats, trainer.samples, [p.detach().clone() for p in trainer.model.parameters()]))
    (s_off, x_off, p_off), (s_on, x_on, p_on) = runs
    torch.testing.assert_close(x_on, x_off, **TOL)
    for a, b in zip(p_on, p_off):
        torch.testing.assert_close(a, b, **TOL)
    torch.testing.assert_close(s_on[-1]["loss"], s_off[-1]["loss"], **TOL)


def test_a_compiled_chain_leaves_the_weights_layout_alone():
    """Parameters keep their storage, strides and values through a compiled chain, seen from inside the energy too."""
    net = mlp()
    layout = [(p.data_ptr(), p.stride()) for p in net.parameters()]
    values = [p.detach().clone() for p in net.parameters()]
    seen = []

    class Holder:  # the owner of a bound-method energy, as a trainer is
        def __init__(self):
            self.net = net

        def energy(self, z):
            seen.append([(p.data_ptr(), p.stride()) for p in self.net.parameters()])
            return self.net(z)

    holder = Holder()
    for energy in (net, holder.energy, lambda z: holder.net(z)):
        eager, quick, _ = both(SAMPLERS["langevin"], energy=energy)
        torch.testing.assert_close(quick, eager, **TOL)
        assert [(p.data_ptr(), p.stride()) for p in net.parameters()] == layout
        assert all(torch.equal(p, v) for p, v in zip(net.parameters(), values))
    assert seen and all(s == layout for s in seen)  # the eager loop and the compiled trace saw the user's layout


def test_the_networks_of_an_energy_are_found():
    """Module, bound method of a module, closures and globals over one: found; an analytic energy: none (so eager)."""
    from anila_core.sampling.targets import Rings

    net = mlp()
    assert rule.networks_of(net) == [net]
    assert rule.networks_of(net.forward) == [net]  # a bound method of a module
    assert rule.networks_of(lambda z: net(z).squeeze(-1)) == [net]  # a closure cell
    assert rule.networks_of(lambda z: NET(z)) == [NET]  # a global, as in a notebook
    scaled = lambda z: 2.0 * net(z)  # noqa: E731

    def through_a_helper(z):
        return scaled(z) + 1.0

    assert rule.networks_of(through_a_helper) == [net]

    # a bound method's own object: the attributes its code reads (self.net) are searched, no others
    class Holder:
        def __init__(self, network):
            self.net, self.other = network, mlp(1)

        def energy(self, z):
            return self.net(z)

    assert rule.networks_of(Holder(net).energy) == [net]
    # the trainer's energy reads self.nets, an object that is not a network: it names its network to the rule itself
    trainer = Trainer(preset("smoke", "langevin", device="cpu"), progress=False)
    assert rule.networks_of(trainer.energy) == [] and rule.networks_of(lambda z: trainer.energy(z)) == []
    assert rule.compiles("auto", trainer.model, "cpu", 10**9) and not trainer.fast  # the smoke run is short: eager
    target = Rings()
    assert rule.networks_of(target.energy) == []
    assert rule.networks_of(lambda z: target.energy(z) / 2) == []
    assert rule.networks_of(lambda z: torch.sin(z).sum(1)) == []  # torch itself is a global, not a network
    assert not rule.compiles("auto", target.energy, "cpu", 10**9)
