"""Tests of the sampler kernel: init, step and its info, run; continuation, registry, non-finite energies, imports."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import anila_core
from anila_core.sampling.kernel import NonFiniteChainError, SamplerState, StepInfo, Trace
from anila_core.sampling.registry import SAMPLERS, applicable, make_sampler, sampler_from_config
from anila_core.sampling.hmc import HMC
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin
from anila_core.training.presets import preset

PACKAGE = Path(anila_core.__file__).parent


def quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.square().flatten(1).sum(1)


def ill_conditioned(x: torch.Tensor) -> torch.Tensor:
    """Gaussian with variances (0.1, 10) per coordinate pair, on image-shaped or flat batches."""
    flat = x.flatten(1)
    scale = torch.tensor([10.0, 0.1], dtype=x.dtype).repeat(flat.shape[1] // 2)
    return 0.5 * (scale * flat.square()).sum(1)


EVERY_SAMPLER = {
    "langevin": Langevin(0.05),
    "mala": Langevin(0.05, metropolis=True),
    "anila-coordinate": AniLA(0.05, b=1.0),
    "anila-pixel": AniLA(0.05, b=1.0, norm="pixel"),
    "anila-sample": AniLA(0.05, b=1.0, norm="sample"),
    "anila-noise-only": AniLA(0.05, b=1.0, variant="noise_only"),
    "anila-mh": AniLA(0.05, b=1.0, metropolis=True),
    "psgld": PSGLD(0.01),
}
X0 = 2.0 * torch.randn(32, 2, 2, 2, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- the state API


@pytest.mark.parametrize("name", list(EVERY_SAMPLER))
def test_n_then_m_steps_equal_n_plus_m_steps_bit_for_bit(name):
    sampler = EVERY_SAMPLER[name]
    state = sampler.init(ill_conditioned, X0)
    whole = sampler.run(ill_conditioned, state, 40, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    first = sampler.run(ill_conditioned, state, 15, generator=gen)
    parts = sampler.run(ill_conditioned, first, 25, generator=gen)
    assert not torch.equal(first.x, whole.x)  # the chains moved between the two calls
    assert torch.equal(parts.x, whole.x)
    assert torch.equal(parts.energy, whole.energy) and torch.equal(parts.grad, whole.grad)
    assert parts.extra.keys() == whole.extra.keys() and all(
        torch.equal(parts.extra[k], whole.extra[k]) for k in whole.extra
    )


@pytest.mark.parametrize("name", [*EVERY_SAMPLER, "hmc"])
def test_run_is_the_loop_over_step_and_every_step_says_what_it_did(name):
    """``step(energy_fn, state, noise, u)`` with run's draws (ξ, then u for Metropolis) is run's chain, bit for bit."""
    sampler = EVERY_SAMPLER.get(name) or HMC(0.05, n_leapfrog=2)
    state = sampler.init(ill_conditioned, X0)
    ran = sampler.run(ill_conditioned, state, 5, generator=torch.Generator().manual_seed(3), fast=False)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        grad = state.grad
        noise = torch.randn(X0.shape, generator=gen)
        u = torch.rand(len(X0), generator=gen) if sampler.metropolis else None
        state, info = sampler.step(ill_conditioned, state, noise, u)
        assert isinstance(info, StepInfo) and info.finite.shape == (len(X0),) and bool(info.finite.all())
        assert (info.accepted is not None) == sampler.metropolis
        if isinstance(sampler, AniLA):  # the clipped share comes from the step: the share of |g| > b at its start
            assert torch.equal(info.clipped, sampler.clipped_share(grad))
        else:
            assert info.clipped is None
    assert torch.equal(state.x, ran.x) and torch.equal(state.grad, ran.grad)
    if sampler.metropolis:
        with pytest.raises(ValueError, match="u: .* needs one uniform per chain"):
            sampler.step(ill_conditioned, state, torch.zeros_like(X0))


@pytest.mark.parametrize("name", ["langevin", "psgld"])
def test_a_state_without_its_final_gradient_continues_exactly(name):
    sampler = EVERY_SAMPLER[name]
    state = sampler.init(ill_conditioned, X0)
    whole = sampler.run(ill_conditioned, state, 30, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    first = sampler.run(ill_conditioned, state, 10, generator=gen, evaluate_final=False)
    assert not first.evaluated and first.energy is None
    assert torch.equal(sampler.run(ill_conditioned, first, 20, generator=gen).x, whole.x)


def test_psgld_keeps_its_running_average_across_calls():
    """The defect this API fixes: pSGLD's V was dropped at the end of every call, so 20 + 20 steps differed from 40."""
    sampler = PSGLD(0.01, alpha=0.9)
    state = sampler.init(ill_conditioned, X0)
    assert torch.equal(state.extra["v"], state.grad.square())  # the bias-corrected start V = g²
    gen = torch.Generator().manual_seed(1)
    after = sampler.run(ill_conditioned, sampler.run(ill_conditioned, state, 20, generator=gen), 20, generator=gen)
    whole = sampler.run(ill_conditioned, state, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(after.x, whole.x)
    restarted = sampler.run(
        ill_conditioned,
        sampler.init(
            ill_conditioned,
            sampler.run(ill_conditioned, state, 20, generator=(g := torch.Generator().manual_seed(1))).x,
        ),
        20,
        generator=g,
    )
    assert not torch.equal(restarted.x, whole.x)  # a fresh V is a different chain: the running average matters


@pytest.mark.parametrize("name", list(EVERY_SAMPLER))
def test_sample_is_run_from_init(name):
    sampler = EVERY_SAMPLER[name]
    x = sampler.sample(ill_conditioned, X0, 12, generator=torch.Generator().manual_seed(4))
    state = sampler.run(
        ill_conditioned, sampler.init(ill_conditioned, X0), 12, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(x, state.x)


def test_init_evaluates_the_start_and_run_checks_its_state():
    state = Langevin(0.1).init(quadratic, torch.full((3, 2), 2.0))
    assert isinstance(state, SamplerState) and state.evaluated and state.extra == {}
    torch.testing.assert_close(state.energy, torch.full((3,), 4.0))
    torch.testing.assert_close(state.grad, torch.full((3, 2), 2.0))
    with pytest.raises(ValueError, match="state: expected a SamplerState"):
        Langevin(0.1).run(quadratic, torch.zeros(3, 2), 5)
    with pytest.raises(ValueError, match="n_steps"):
        Langevin(0.1).run(quadratic, state, 0)


def test_a_traced_run_records_every_step_and_its_own_start():
    sampler = AniLA(0.1, b=1.0)
    trace = Trace(positions_at=[0, 6])
    state = sampler.run(
        quadratic, sampler.init(quadratic, X0), 6, generator=torch.Generator().manual_seed(0), trace=trace
    )
    assert len(trace.mean_energy) == 7 and len(trace.clipped_share) == 6 and trace.acceptance_rate == []
    assert torch.equal(trace.positions[6], state.x)
    assert trace.mean_energy[-1] == pytest.approx(float(state.energy.mean()), rel=1e-6)


# --------------------------------------------------------------------------- non-finite energies


def nan_beyond(radius: float):
    """``½|x|² − sqrt(r² − |x|²)``: NaN, with a NaN gradient, beyond the radius, so a chain that leaves is NaN for
    good."""

    def energy(x):
        return quadratic(x) - (radius**2 - x.flatten(1).square().sum(1)).sqrt()

    return energy


def box_energy(x):
    """½|x|² inside the box |x_i| < 1.5, +inf outside it."""
    inside = (x.abs() < 1.5).flatten(1).all(1)
    return quadratic(x) + torch.where(inside, 0.0, math.inf)


@pytest.mark.parametrize("name", list(EVERY_SAMPLER))
def test_a_non_finite_start_is_an_error_for_every_sampler(name):
    sampler = EVERY_SAMPLER[name]
    with pytest.raises(
        NonFiniteChainError, match=r"NaN or infinite at the start \(step 0\) in 32 of 32 chains"
    ) as info:
        sampler.init(lambda x: quadratic(x) * math.nan, X0)
    assert info.value.step == 0 and info.value.share == 1.0
    bad = X0.clone()
    bad[3, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match=r"x0: expected finite values, got NaN or inf in 1 of 32 chains"):
        sampler.sample(quadratic, bad, 5)


@pytest.mark.parametrize("name", ["langevin", "anila-coordinate", "psgld"])
def test_an_unadjusted_chain_that_turns_non_finite_stops_with_the_step_share_and_remedies(name):
    sampler = EVERY_SAMPLER[name]
    x0 = torch.full((20, 2), 0.5)
    with pytest.raises(NonFiniteChainError) as info:
        sampler.sample(nan_beyond(0.9), x0, 200, generator=torch.Generator().manual_seed(0))
    err = info.value
    assert err.step >= 1 and 0 < err.share <= 1
    assert (
        err.step >= 1
        and f"first at step {err.step}" in str(err)
        and "were hit by step 200" in str(err)
        and "a smaller step_size" in str(err)
        and "metropolis=True" in str(err)
    )
    # the same chain with the check off returns the NaN states it reached, as the panels want
    x = sampler.sample(nan_beyond(0.9), x0, 200, generator=torch.Generator().manual_seed(0), allow_nonfinite=True)
    assert 0 < int((~torch.isfinite(x).all(1)).sum()) == round(err.share * 20)


def wall_at(position: float):
    """``−2·x₀`` up to ``x₀ = position``, NaN beyond: with ε = 1 and no noise a chain from 0 moves by 1 a step, so it
    turns NaN at step ``ceil(position)`` exactly."""

    def energy(x):
        return torch.where(x[:, 0] < position, -2.0 * x[:, 0], torch.nan)

    return energy


@pytest.mark.parametrize("fast", [False, True])
def test_the_watch_names_the_first_bad_step_whatever_the_steps_per_call(fast):
    """Steps run several per call (``steps_per_call``): the watch still names the very step a chain turned non-finite,
    inside a call or at its end, compiled or not."""

    def with_calls_of(n):
        return type(f"Langevin{n}", (Langevin,), {"steps_per_call": n})(step_size=1.0, noise_scale=0.0)

    samplers = [Langevin(step_size=1.0, noise_scale=0.0)] + ([] if fast else [with_calls_of(1), with_calls_of(3)])
    for sampler in samplers:
        for position, first_bad in ((10.5, 11), (7.5, 8), (15.5, 16)):  # inside the second call of 8, at a call's end
            with pytest.raises(NonFiniteChainError) as info:
                sampler.run(wall_at(position), sampler.init(wall_at(position), torch.zeros(16, 2)), 20, fast=fast)
            assert info.value.step == first_bad and info.value.share == 1.0, (sampler.steps_per_call, position)


def test_a_target_that_is_infinite_outside_a_box_stops_ula_but_not_mala():
    x0 = torch.zeros(200, 2)
    with pytest.raises(NonFiniteChainError, match="became NaN or infinite"):
        Langevin(0.5).sample(box_energy, x0, 50, generator=torch.Generator().manual_seed(0))
    trace = Trace()
    x = Langevin(0.5, metropolis=True).sample(
        box_energy, x0, 50, generator=torch.Generator().manual_seed(0), trace=trace
    )
    assert bool((x.abs() < 1.5).all()), "a Metropolis chain rejects every proposal of infinite energy"
    assert 0 < min(trace.acceptance_rate) and max(trace.acceptance_rate) < 1


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64])
def test_energies_of_integer_or_complex_dtype_are_refused(dtype):
    with pytest.raises(ValueError, match=f"energy_fn: expected real floating-point energies, got dtype {dtype}"):
        Langevin(0.1).sample(lambda x: torch.zeros(len(x), dtype=dtype), X0, 2)


# --------------------------------------------------------------------------- the registry


def test_every_registered_sampler_builds_from_a_config_with_its_settings():
    for name, entry in SAMPLERS.items():
        config = preset("smoke", name, step_size=0.02, noise_scale=0.5, b=3.0, psgld_alpha=0.9)
        sampler = sampler_from_config(config)
        assert type(sampler) is entry.cls and sampler.step_size == 0.02
        assert getattr(sampler, "noise_scale", 0.5) == 0.5  # every sampler that has a noise scale takes the config's
    assert sampler_from_config(preset("smoke", "hmc", hmc_leapfrog=7)).n_leapfrog == 7
    assert sampler_from_config(preset("smoke", "anila", b=3.0, norm="sample")).settings()["norm"] == "sample"
    assert sampler_from_config(preset("smoke", "psgld", psgld_alpha=0.9)).alpha == 0.9
    assert sampler_from_config(preset("smoke", "langevin", metropolis=True)).metropolis
    with pytest.raises(ValueError, match="metropolis: not available for psgld"):
        preset("smoke", "psgld", metropolis=True)


def test_the_registry_refuses_unknown_names_instead_of_falling_through():
    with pytest.raises(
        ValueError, match=r"sampler: unknown name 'ghmc'; expected one of \['anila', 'hmc', 'langevin', 'psgld'\]"
    ):
        make_sampler("ghmc", step_size=0.1)

    class Config:
        sampler = "ghost"

    with pytest.raises(ValueError, match="unknown name 'ghost'"):
        sampler_from_config(Config())
    assert applicable("langevin", {"step_size": 0.1, "b": 3.0}) == {"step_size": 0.1}


# --------------------------------------------------------------------------- the import graph


def _imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Module → [(imported anila_core module, names taken from it)], every import statement, nested ones included."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("anila_core",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anila_core"):
                assert node.level == 0, f"{module}: relative import of {node.module}; the package imports by full name"
                edges.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                edges += [(a.name, []) for a in node.names if a.name.startswith("anila_core")]
        graph[module] = edges
    return graph


def test_no_module_imports_a_private_name_from_another():
    private = [
        (m, target, n)
        for m, edges in _imports().items()
        for target, names in edges
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert private == []


def test_the_package_has_no_import_cycle():
    graph = _imports()
    modules = set(graph)

    def resolve(target, names):
        # ``from anila_core.sampling import compiled`` imports the module anila_core.sampling.compiled
        found = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
        return found or ([target] if target in modules else [])

    edges = {m: {t for target, names in e for t in resolve(target, names) if t != m} for m, e in graph.items()}
    # a package's __init__ importing its own modules is how packages work, not a cycle
    edges = {m: {t for t in ts if not m == t.rsplit(".", 1)[0]} for m, ts in edges.items()}
    for m in edges:
        edges[m].discard("anila_core")  # the top-level package only re-exports
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            assert state.get(t) != 1, "import cycle: " + " -> ".join(path + [t])
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
