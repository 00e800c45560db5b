"""The samplers: Langevin, AniLA and pSGLD (each a step-size map in the shared Euler–Maruyama move) and HMC, all on one
recipe.

Every sampler follows it: ``state = sampler.init(energy_fn, x0)`` evaluates the start,
``state, info = sampler.step(energy_fn, state, noise, u)`` makes one transition and says what it
did (:class:`~anila_core.sampling.kernel.StepInfo`), ``state = sampler.run(energy_fn, state,
n_steps, generator=g)`` is the loop over ``step``, and ``sampler.sample(energy_fn, x0, n_steps)``
is ``run(init(x0)).x``. A Langevin-type step is the sampler's step sizes ``γ = ε·a(g)``, the
shared move of :mod:`anila_core.sampling.kernel` and, with ``metropolis=True``, the shared
Metropolis test; HMC's is a leapfrog trajectory and the same test. The compiled path
(:mod:`anila_core.sampling.compiled`) compiles that same ``step``. Running ``n`` then ``m``
steps from a state equals running ``n + m`` steps, bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch

from anila_core.sampling import compile_rule, compiled
from anila_core.sampling.kernel import (
    ChainWatch,
    EnergyFn,
    NonFiniteChainError,
    SamplerState,
    StepInfo,
    Trace,
    check_bool,
    check_energy_fn,
    check_generator,
    check_n_steps,
    check_positions,
    energy_and_grad,
    euler_maruyama_move,
    finite_chains,
    finite_positive,
    log_proposal_density,
    metropolis_test,
    positive_or_inf,
)

__all__ = ["Sampler", "LangevinSampler", "Langevin", "AniLA", "PSGLD", "NORMS", "ANILA_VARIANTS"]

NORMS = ("coordinate", "pixel", "sample")
ANILA_VARIANTS = ("full", "noise_only")


class Sampler:
    """The shared recipe (``init``, ``step``, ``run``, ``sample``); a subclass supplies ``step`` and its chain state."""

    name = "sampler"
    #: whether every transition ends in the Metropolis test (then ``run`` draws its uniform, and rejected proposals keep
    #: chains finite)
    metropolis: bool = False
    #: with the compiled path on CUDA, replay each transition as a CUDA graph
    #: (``torch.compile(mode="reduce-overhead")``)
    fast_cuda_graphs: bool = False
    #: the names of the per-chain tensors this sampler carries in ``state.extra`` (a state must come from this sampler)
    state_keys: tuple[str, ...] = ()
    #: transitions per call of :meth:`steps` in ``run`` (one with a trace): the compiled path compiles that many steps
    #: as one graph, so Python, the compiled call's guards and the watch's eager operations are paid once per call
    steps_per_call: int = 8

    def init_extra(self, grad: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sampler's own per-chain state at a fresh start whose gradient is ``grad`` (none for memoryless
        samplers)."""
        return {}

    def small_step_log_weight(self, energy: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, bool, str]:
        """``(log w, exact, note)``: the unnormalised log density the chain approaches as ε → 0, at points with these
        energies and gradients (:mod:`anila_core.sampling.small_step`)."""
        raise ValueError(f"{self.name}: no small-step density as a function of x is known for this sampler")

    def step(
        self,
        energy_fn: EnergyFn,
        state: SamplerState,
        noise: torch.Tensor,
        u: torch.Tensor | None = None,
        *,
        evaluate: bool = True,
    ) -> tuple[SamplerState, StepInfo]:
        """One transition from ``state`` (evaluated), given standard normal ``noise`` of ``x``'s shape and ``u``.

        ``u`` is one uniform per chain for a Metropolis sampler (``None`` otherwise). Returns the
        new state and the step's :class:`StepInfo`. No randomness inside: the same arguments give
        the same step, eagerly or compiled. ``evaluate=False`` (unadjusted samplers only) makes
        the move alone and returns a state without energy and gradient (the last step of a run
        that needs neither). ``run`` checks its arguments once; ``step`` trusts them.
        """
        raise NotImplementedError

    def _check_draws(self, u, evaluate: bool) -> None:
        if self.metropolis and u is None:
            raise ValueError(
                f"u: {self.name}'s step ends in the Metropolis test and needs one uniform per chain, got None"
            )
        if self.metropolis and not evaluate:
            raise ValueError(f"evaluate: {self.name}'s Metropolis test needs the energy at its proposal; expected True")

    def steps(
        self, energy_fn: EnergyFn, state: SamplerState, watch: ChainWatch, noises: tuple, us: tuple
    ) -> tuple[SamplerState, ChainWatch, StepInfo | None]:
        """``len(noises)`` calls of :meth:`step` in a row, each followed by the watch: one call of the compiled path.

        ``noises[i]`` and ``us[i]`` are step ``i``'s draws. Returns the new state, the watch after
        the last step and the last step's :class:`StepInfo` (what a trace records of a one-step call).
        """
        info = None
        for noise, u in zip(noises, us):
            state, info = self.step(energy_fn, state, noise, u)
            watch = watch.after(info)
        return state, watch, info

    def _draws(self, n: int, x: torch.Tensor, generator: torch.Generator | None) -> tuple[tuple, tuple]:
        """The draws of ``n`` steps, taken step by step as ever (noise, then ``u`` for Metropolis): the same chain
        whatever the length of a call."""
        noises, us = [], []
        for _ in range(n):
            noises.append(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
            u = torch.rand(len(x), generator=generator, device=x.device, dtype=x.dtype) if self.metropolis else None
            us.append(u)
        return tuple(noises), tuple(us)

    # -- the recipe: init, run, sample

    def init(self, energy_fn: EnergyFn, x0: torch.Tensor, *, allow_nonfinite: bool = False) -> SamplerState:
        """The state of chains starting at ``x0``: their energies, gradients and the sampler's own state, fresh.

        A start whose energy or gradient is not finite raises :class:`NonFiniteChainError` with
        ``step = 0`` (``allow_nonfinite=True`` accepts it, for panels that count diverged chains).
        """
        check_energy_fn(energy_fn)
        x = check_positions(x0)
        energy, grad = energy_and_grad(energy_fn, x)
        if not allow_nonfinite:
            _refuse_nonfinite_start(self.name, energy, grad)
        return SamplerState(x, energy, grad, self.init_extra(grad))

    def run(
        self,
        energy_fn: EnergyFn,
        state: SamplerState,
        n_steps: int,
        generator: torch.Generator | None = None,
        trace: Trace | None = None,
        *,
        fast: bool | str = "auto",
        evaluate_final: bool = True,
        allow_nonfinite: bool = False,
    ) -> SamplerState:
        """Advance ``state`` by ``n_steps`` calls of :meth:`step` and return the new state (positions detached).

        The steps go ``steps_per_call`` at a time through :meth:`steps` (one at a time with a
        trace; the last few in one shorter call), which changes nothing in the chain: each step is the same
        :meth:`step` on the same draws. Per step it draws, from ``generator``, the standard
        normal ``noise`` and then (Metropolis samplers only) the uniform ``u``, nothing else.
        ``fast``: ``True`` runs the steps compiled (:mod:`anila_core.sampling.compiled`; the same
        chain up to rounding, falling back to eager with a warning where compiling fails),
        ``False`` eagerly, ``"auto"`` (default) as :func:`~anila_core.sampling.compile_rule.compiles`
        decides for a call of ``n_steps``.
        ``evaluate_final=False`` skips the energy and gradient at the last positions of an
        unadjusted chain (nothing but a continuation needs them; the next ``run`` computes them).
        An unadjusted chain whose energy or gradient turns NaN or infinite raises
        :class:`NonFiniteChainError` at the end of the call (checked once, so the loop never waits
        on the device); with ``allow_nonfinite=True`` such chains are returned as they are.
        """
        n_steps = check_n_steps(n_steps)
        check_energy_fn(energy_fn)
        state = self._checked_state(energy_fn, state, generator, allow_nonfinite)
        steps, context = self.steps, contextlib.nullcontext()
        if compile_rule.compiles(fast, energy_fn, state.x.device, n_steps * state.x.shape[0]):
            steps, context = compiled.compiled_steps(self, energy_fn, state.x)
        # the gradient at the last positions is only needed to continue or to trace the chain
        move_last = not (evaluate_final or self.metropolis or trace is not None)
        evaluated, per_call = n_steps - move_last, 1 if trace is not None else self.steps_per_call
        watch = ChainWatch.start(state.x)
        if trace is not None:
            trace.record_start(state)
        t = 0
        with context:
            while t < evaluated:
                # whole calls of per_call steps, then the rest in one call (two compiles per run length), not one
                # at a time: a compiled call's first step costs more (a one-step call: 1.5x a step of eight)
                n = min(per_call, evaluated - t)
                noises, us = self._draws(n, state.x, generator)
                state, watch, info = steps(energy_fn, state, watch, noises, us)
                t += n
                if trace is not None:  # a trace's call is one step long
                    trace.record_step(t, state, info)
            if move_last:
                noises, us = self._draws(1, state.x, generator)
                state, info = self.step(energy_fn, state, noises[0], us[0], evaluate=False)
                watch = watch.after(info)
        # Metropolis chains reject non-finite proposals, and allow_nonfinite returns such chains as they are
        if not (self.metropolis or allow_nonfinite):
            watch.check(self.name, n_steps)
        return SamplerState(state.x.detach(), state.energy, state.grad, state.extra)

    def _checked_state(self, energy_fn: EnergyFn, state, generator, allow_nonfinite: bool) -> SamplerState:
        """``state`` checked to be this sampler's, with its positions detached and its energy and gradient evaluated."""
        if not isinstance(state, SamplerState):
            raise ValueError(
                f"state: expected a SamplerState from sampler.init(energy_fn, x0), got {type(state).__name__}"
            )
        if set(state.extra) != set(self.state_keys):  # another sampler's state (pSGLD's has "v", Langevin's nothing)
            raise ValueError(
                f"state: carries {sorted(state.extra) or 'no per-chain state'}, but {self.name}'s "
                f"chains carry {list(self.state_keys) or 'none'}; expected a state from this sampler's "
                "own init() or run()"
            )
        x = check_positions(state.x, "state.x")
        check_generator(generator, x)
        if state.evaluated:
            return SamplerState(x, state.energy, state.grad, dict(state.extra))
        energy, grad = energy_and_grad(energy_fn, x)
        if not allow_nonfinite:
            _refuse_nonfinite_start(self.name, energy, grad)
        return SamplerState(x, energy, grad, dict(state.extra))

    def sample(
        self,
        energy_fn: EnergyFn,
        x0: torch.Tensor,
        n_steps: int,
        generator: torch.Generator | None = None,
        trace: Trace | None = None,
        *,
        fast: bool | str = "auto",
        allow_nonfinite: bool = False,
    ) -> torch.Tensor:
        """The positions after ``n_steps`` transitions from ``x0``: ``run(init(x0), n_steps).x``.

        It skips the gradient at the last positions, which nothing here uses. With
        ``metropolis=True`` each transition is a proposal accepted with the MALA probability,
        which makes the chain exact for ``exp(-E)``. ``fast`` and ``allow_nonfinite`` as in :meth:`run`.
        """
        state = self.init(energy_fn, x0, allow_nonfinite=allow_nonfinite)
        return self.run(
            energy_fn,
            state,
            n_steps,
            generator,
            trace,
            fast=fast,
            evaluate_final=False,
            allow_nonfinite=allow_nonfinite,
        ).x

    def with_cuda_graphs(self) -> "Sampler":
        """A copy of this sampler whose compiled path, on CUDA, replays each transition as a CUDA graph."""
        graphed = copy.copy(self)
        graphed.fast_cuda_graphs = True
        return graphed

    # -- description

    def settings(self) -> dict:
        """The sampler's name and hyperparameters, as plain values (also the compiled path's cache key)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k != "sampler")
        return f"{type(self).__name__}({args})"


def _refuse_nonfinite_start(name: str, energy: torch.Tensor, grad: torch.Tensor) -> None:
    finite = finite_chains(energy, grad)
    if not bool(finite.all()):
        raise NonFiniteChainError(name, 0, int((~finite).sum()), len(finite))


class LangevinSampler(Sampler):
    """A Langevin-type sampler: its step-size map (:meth:`step_sizes`, or :meth:`step_map` with memory) in the shared
    Euler–Maruyama move, and the Metropolis test when asked."""

    def __init__(self, step_size: float, noise_scale: float = 1.0, metropolis: bool = False):
        self.step_size = finite_positive("step_size", step_size)
        if isinstance(noise_scale, bool):
            raise ValueError(
                f"noise_scale: expected a finite number >= 0, got {noise_scale!r} (a boolean, not a number)"
            )
        try:
            noise_scale = float(noise_scale)
        except (TypeError, ValueError):
            raise ValueError(f"noise_scale: expected a finite number >= 0, got {noise_scale!r}") from None
        if not math.isfinite(noise_scale) or noise_scale < 0:
            raise ValueError(f"noise_scale: expected a finite number >= 0, got {noise_scale!r}")
        self.noise_scale = noise_scale
        if metropolis and noise_scale == 0:
            raise ValueError("metropolis: needs noise_scale > 0 (a deterministic proposal has no density to correct)")
        self.metropolis = check_bool("metropolis", metropolis)

    def step_sizes(self, grad: torch.Tensor) -> torch.Tensor:
        """Per-coordinate step sizes γ for the gradient ``grad`` (same shape)."""
        raise NotImplementedError

    def step_map(self, grad: torch.Tensor, extra: dict[str, torch.Tensor]):
        """``(γ for the drift, γ for the noise, new extra)`` at gradient ``grad``; samplers with memory or a split map
        override it."""
        gamma = self.step_sizes(grad)
        return gamma, gamma, extra

    def move(self, x: torch.Tensor, grad: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The unadjusted move from a fresh start, ``x − γ/2·grad + τ·sqrt(γ)·noise``; no randomness inside."""
        drift_gamma, noise_gamma, _ = self.step_map(grad, self.init_extra(grad))
        return euler_maruyama_move(x, grad, drift_gamma, noise_gamma, noise, self.noise_scale)

    def shrunk_share(self, gamma: torch.Tensor) -> torch.Tensor | None:
        """The share of step sizes ``gamma`` shrunk below ε (``None`` for samplers that never shrink a step)."""
        return None

    def step(self, energy_fn, state, noise, u=None, *, evaluate=True):
        """Step sizes, the shared move, the energy and gradient at the proposal, and the Metropolis test when on."""
        self._check_draws(u, evaluate)
        x, grad = state.x, state.grad
        drift_gamma, noise_gamma, extra = self.step_map(grad, state.extra)
        clipped = self.shrunk_share(noise_gamma)
        proposal = euler_maruyama_move(x, grad, drift_gamma, noise_gamma, noise, self.noise_scale)
        if not evaluate:
            finite = torch.isfinite(proposal).flatten(1).all(1)
            return SamplerState(proposal, None, None, extra), StepInfo(None, clipped, finite)
        prop_energy, prop_grad = energy_and_grad(energy_fn, proposal)
        if not self.metropolis:
            info = StepInfo(None, clipped, finite_chains(prop_energy, prop_grad))
            return SamplerState(proposal, prop_energy, prop_grad, extra), info
        # the reverse move's step sizes; only memoryless samplers offer the test, so ``extra`` plays no part
        prop_drift, prop_noise, _ = self.step_map(prop_grad, extra)
        log_q_forward = log_proposal_density(proposal, x, grad, drift_gamma, noise_gamma, self.noise_scale)
        log_q_backward = log_proposal_density(x, proposal, prop_grad, prop_drift, prop_noise, self.noise_scale)
        x, energy, grad, accepted = metropolis_test(
            x, state.energy, grad, proposal, prop_energy, prop_grad, log_q_forward, log_q_backward, u
        )
        return SamplerState(x, energy, grad, extra), StepInfo(accepted, clipped, finite_chains(energy, grad))

    def small_step_log_weight(self, energy, grad):
        if self.metropolis:
            return -energy, True, "Metropolis-adjusted: exact for exp(-E)"
        drift_gamma, noise_gamma, _ = self.step_map(grad, self.init_extra(grad))
        if not torch.equal(drift_gamma, noise_gamma):
            raise ValueError(
                f"{self.name}: no small-step density is derived for a map that scales drift and noise differently"
            )
        log_a = (noise_gamma / self.step_size).log().flatten(1)
        if self.one_step_size_per_sample:
            return (
                -energy / self.noise_scale**2 - log_a[:, 0],
                True,
                "exp(-E/τ²)/a with one step size per sample: exact",
            )
        return (
            -energy / self.noise_scale**2 - log_a.sum(1),
            False,
            "exp(-E/τ²)/∏ a_i with per-coordinate steps: exact for separable energies, else an approximation",
        )

    @property
    def one_step_size_per_sample(self) -> bool:
        """Whether the map gives all coordinates of a sample one step size (then the small-step density is exact for any
        energy)."""
        return True

    def settings(self) -> dict:
        return {
            "sampler": self.name,
            "step_size": self.step_size,
            "noise_scale": self.noise_scale,
            "metropolis": self.metropolis,
        }


class Langevin(LangevinSampler):
    """Unadjusted Langevin (ULA / SGLD): ``a(g) = 1``; Metropolis-adjusted (MALA) with ``metropolis=True``."""

    name = "langevin"

    def step_sizes(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, self.step_size)


class AniLA(LangevinSampler):
    """Anisotropic Langevin: ``a(g) = b / max(b, |g|)``, so steep coordinates take shorter steps.

    ``norm`` fixes what ``|g|`` means: ``"coordinate"`` (elementwise, the paper's formula),
    ``"pixel"`` (L2 over the channel dimension 1 of image batches ``(N, C, H, W)``; a flat
    batch ``(N, d)`` has one channel per coordinate, so it equals ``"coordinate"``) or
    ``"sample"`` (L2 over all of a sample's dimensions). ``variant="noise_only"`` is a variant
    the paper's draft does not have: the anisotropic step scales the noise and the drift keeps
    the full ``ε`` — tested for comparison, never the default.
    """

    name = "anila"

    def __init__(
        self,
        step_size: float,
        b: float,
        noise_scale: float = 1.0,
        norm: str = "coordinate",
        metropolis: bool = False,
        variant: str = "full",
    ):
        super().__init__(step_size, noise_scale, metropolis)
        b = positive_or_inf("b", b)
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        if variant not in ANILA_VARIANTS:
            raise ValueError(f"variant: expected one of {ANILA_VARIANTS}, got {variant!r}")
        self.b = b
        self.norm = norm
        self.variant = variant

    def gradient_size(self, grad: torch.Tensor) -> torch.Tensor:
        """``|g|`` under the chosen norm, broadcastable to ``grad``."""
        if self.norm == "coordinate" or (self.norm == "pixel" and grad.ndim < 3):
            return grad.abs()
        if self.norm == "pixel":
            # written out: on CPU, vector_norm over the channel dimension of an (N, C, H, W)
            # gradient runs a strided reduction ~60× slower than these three elementwise ops
            return grad.square().sum(dim=1, keepdim=True).sqrt()
        return torch.linalg.vector_norm(grad.flatten(1), dim=1).view(-1, *([1] * (grad.ndim - 1)))

    def step_sizes(self, grad: torch.Tensor) -> torch.Tensor:
        if math.isinf(self.b):  # b / max(b, |g|) is 1 for every finite gradient
            return torch.full_like(grad, self.step_size)
        ratio = self.b / self.gradient_size(grad).clamp_min(self.b)
        return (self.step_size * ratio).expand_as(grad)

    def step_map(self, grad, extra):
        gamma = self.step_sizes(grad)
        if self.variant == "noise_only":
            return torch.full_like(grad, self.step_size), gamma, extra
        return gamma, gamma, extra

    def shrunk_share(self, gamma):
        return (gamma < self.step_size).float().mean()

    def clipped_share(self, grad: torch.Tensor) -> torch.Tensor:
        """The share of coordinates whose step is shrunk below ε at ``grad`` (``|g| > b``), as a step's info reports."""
        return self.shrunk_share(self.step_sizes(grad))

    @property
    def one_step_size_per_sample(self) -> bool:
        return self.norm == "sample" or math.isinf(self.b)

    def settings(self) -> dict:
        return {**super().settings(), "b": self.b, "norm": self.norm, "variant": self.variant}


class PSGLD(LangevinSampler):
    """Preconditioned SGLD (Li et al. 2016): ``V ← αV + (1−α)g²``, ``γ = ε / (λ + sqrt(V))``.

    ``V`` is kept per chain and coordinate in the state (``state.extra["v"]``), so it carries
    over when a chain is continued, and starts at ``g²`` of the first state (a bias-corrected
    start; RMSprop's ``V = 0`` would make the first steps ``1/sqrt(1−α)`` times too long). The
    preconditioner depends on the chain's history, so no Metropolis test is offered.
    """

    name = "psgld"
    state_keys = ("v",)

    def __init__(self, step_size: float, alpha: float = 0.99, damping: float = 1e-5, noise_scale: float = 1.0):
        super().__init__(step_size, noise_scale, metropolis=False)
        try:
            if isinstance(alpha, bool):
                raise TypeError
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}") from None
        if not (0.0 <= alpha < 1.0):
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}")
        self.alpha = alpha
        self.damping = finite_positive("damping", damping)

    def step_sizes(self, grad: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """γ after folding ``grad`` into the running average ``v`` (``None``: the first step, ``V = g²``)."""
        v = grad.square() if v is None else self._fold(v, grad)
        return self.step_size / (self.damping + v.sqrt())

    def _fold(self, v: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return self.alpha * v + (1.0 - self.alpha) * grad.square()

    def init_extra(self, grad: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"v": grad.square()}

    def step_map(self, grad, extra):
        v = self._fold(extra["v"], grad)
        gamma = self.step_size / (self.damping + v.sqrt())
        return gamma, gamma, {"v": v}

    def small_step_log_weight(self, energy, grad):
        raise ValueError(
            "psgld: its step sizes depend on the chain's history, so its small-step law is not a function of x"
        )

    def settings(self) -> dict:
        return {**super().settings(), "alpha": self.alpha, "damping": self.damping}
