"""What every sampler shares: state, step info, energy gradient, move, test, watch, trace and input checks.

Convention: ``energy_fn`` returns one energy per sample, ``p(x) ∝ exp(-E(x))``, and
``g = ∇_x E``. A Langevin-type transition is

    γ  = ε · a(g)                               the sampler's step-size map
    x' = x − (γ/2) ⊙ g + τ · sqrt(γ) ⊙ ξ,       ξ ~ N(0, I)     (the move)

optionally followed by the Metropolis test, which accepts ``x'`` with probability
``min(1, exp(E(x) − E(x')) · q(x | x') / q(x' | x))`` for the Gaussian proposal density ``q``
of the move. The samplers (:mod:`anila_core.sampling.samplers`) differ only in ``a``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

import torch

__all__ = [
    "ArgumentTypeError",
    "check_bool",
    "check_energy_fn",
    "MAX_N_STEPS",
    "EnergyFn",
    "SamplerState",
    "StepInfo",
    "ChainWatch",
    "Trace",
    "NonFiniteChainError",
    "energy_and_grad",
    "check_energies",
    "euler_maruyama_move",
    "log_proposal_density",
    "metropolis_test",
    "check_n_steps",
    "check_positions",
    "check_generator",
    "finite_positive",
    "positive_or_inf",
]

#: an energy: a batch ``(N, ...)`` in, one energy per sample ``(N,)`` out (a module, a method, a function)
EnergyFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- input checks


#: the largest magnitude of a sampler setting: the chains are float32 (at most 3.4e38) and settings multiply gradients
MAX_SETTING = 1e30
#: the most transitions one call may run: each is a gradient of every chain, so more never finishes
MAX_N_STEPS = 10_000_000


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a string for a boolean, a boolean for a number): a ``TypeError`` that is also a
    ``ValueError``, as the package's other refusals."""


def _not_a_bool(name: str, value, expected: str) -> None:
    """``ArgumentTypeError`` naming ``name`` when ``value`` is a bool where a number is expected (``True`` is not
    1.0)."""
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name}: expected {expected}, got {value!r} (a boolean, not a number)")


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool (``"false"`` is not: it would count as true), else ``ArgumentTypeError`` naming
    ``name``."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":  # numpy's booleans too
        return bool(value)
    raise ArgumentTypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")


def check_energy_fn(energy_fn) -> None:
    """``ArgumentTypeError`` unless ``energy_fn`` can be called (a function or a torch.nn.Module)."""
    if not callable(energy_fn):
        raise ArgumentTypeError(
            f"energy_fn: expected a callable mapping x (N, ...) to energies (N,), such as a torch.nn.Module, "
            f"got {type(energy_fn).__name__}"
        )


def finite_positive(name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it is finite, > 0 and at most ``MAX_SETTING``."""
    _not_a_bool(name, value, "a finite number > 0")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    if value > MAX_SETTING:
        raise ValueError(
            f"{name}: expected at most {MAX_SETTING:g}, got {value!r}; the chains are float32 (at most 3.4e38) and "
            "this setting multiplies gradients, so larger values overflow"
        )
    return value


def positive_or_inf(name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it is > 0 (``inf`` allowed: AniLA's ``b = inf`` is
    Langevin)."""
    _not_a_bool(name, value, "a number > 0 (inf allowed)")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number > 0 (inf allowed), got {value!r}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name}: expected a number > 0 (inf allowed), got {value!r}")
    if MAX_SETTING < value < math.inf:
        raise ValueError(
            f"{name}: expected at most {MAX_SETTING:g} or inf, got {value!r}; the chains are float32 (at most 3.4e38)"
        )
    return value


def check_n_steps(n_steps: int) -> int:
    """``n_steps`` if it is an integer ≥ 1, else ``ValueError``."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps: expected an integer >= 1, got {n_steps!r}")
    if n_steps > MAX_N_STEPS:
        raise ValueError(
            f"n_steps: expected at most {MAX_N_STEPS:,}, got {n_steps:.3g}; each transition is a gradient of every "
            "chain, so more steps never finish: run them in several calls of run() if you need them"
        )
    return n_steps


def check_positions(x: torch.Tensor, name: str = "x0") -> torch.Tensor:
    """``x`` detached, if it is a finite floating-point batch ``(N, ...)``; else ``ValueError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (N, ...), got {type(x).__name__}")
    if x.device.type == "meta":
        raise ValueError(
            f"{name}: is on the meta device, which holds shapes but no values; expected a tensor on cpu or cuda"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name}: expected shape (N, ...) with N >= 1 and at least one data dimension, got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x.flatten(1)).all(1)).sum())
        raise ValueError(f"{name}: expected finite values, got NaN or inf in {bad} of {x.shape[0]} chains")
    return x.detach()


def check_generator(generator: torch.Generator | None, x: torch.Tensor) -> None:
    """``ValueError`` unless ``generator`` is ``None`` or a ``torch.Generator`` on ``x``'s device type."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(
            f"generator: expected a torch.Generator (torch.Generator(device=x0.device).manual_seed(seed)) "
            f"or None, got {generator!r} ({type(generator).__name__})"
        )
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(
            f"generator: lives on {generator.device} but x0 is on {x.device}; create it with "
            "torch.Generator(device=x0.device)"
        )


# --------------------------------------------------------------------------- energy and gradient


def check_energies(energy, x: torch.Tensor) -> None:
    """``ValueError`` unless ``energy`` is a real floating-point tensor of one energy per sample of ``x``."""
    if not isinstance(energy, torch.Tensor) or energy.shape != (x.shape[0],):
        got = tuple(energy.shape) if isinstance(energy, torch.Tensor) else type(energy).__name__
        raise ValueError(f"energy_fn: expected energies of shape ({x.shape[0]},), one per sample, got {got}")
    if not energy.is_floating_point():
        raise ValueError(
            f"energy_fn: expected real floating-point energies, got dtype {energy.dtype}; return E(x) as a float tensor"
        )


def energy_and_grad(energy_fn: EnergyFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies ``(N,)`` and input gradients ``∇_x Σ E`` at ``x``, both detached.

    Only the input's gradient is asked of autograd, so nothing accumulates in a network's
    ``.grad`` and no graph survives the call: sampling memory is flat in the number of steps.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        energy = energy_fn(x)
        check_energies(energy, x)
        if not energy.requires_grad:
            raise ValueError(
                "energy_fn: its energies do not depend on x (no gradient reaches x); expected a differentiable "
                "function of x, computed with torch operations"
            )
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), grad.detach()


# --------------------------------------------------------------------------- state


@dataclass
class SamplerState:
    """A batch of chains: positions ``x`` ``(N, ...)``, their energies ``(N,)`` and gradients ``∇_x E``, and the
    sampler's own per-chain tensors.

    ``extra`` holds what a sampler carries from one transition to the next besides the
    position (pSGLD's running average ``"v"``; empty for memoryless samplers), each tensor with
    the chains along its first dimension. ``energy`` and ``grad`` are ``None`` when a run was
    asked to skip them at its last positions (``run(..., evaluate_final=False)``); the next
    ``run`` then computes them first, so continuing such a state is still exact.
    """

    x: torch.Tensor
    energy: torch.Tensor | None
    grad: torch.Tensor | None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def evaluated(self) -> bool:
        """Whether ``energy`` and ``grad`` are known at ``x``."""
        return self.energy is not None and self.grad is not None


class StepInfo(NamedTuple):
    """What one step did, returned by every sampler's ``step`` beside the new state (tensors: no wait on the device).

    ``accepted``: per chain, whether the Metropolis test took the proposal (``None`` for a
    sampler without the test). ``clipped``: the share of coordinates whose step was shrunk
    below ε (``None`` for a sampler that never shrinks it). ``finite``: per chain, whether its
    new energy and gradient (or, in a step asked not to evaluate them, its position) are finite.
    """

    accepted: torch.Tensor | None
    clipped: torch.Tensor | None
    finite: torch.Tensor


class ChainWatch(NamedTuple):
    """A run's watch of non-finite chains: ``ok`` marks chains finite so far, ``steps_ok`` counts steps where all were.

    Kept as tensors, so the loop never waits on the device; ``steps_ok`` stops growing at the
    first bad step, which :meth:`check` names once, at the end of the run.
    """

    ok: torch.Tensor
    steps_ok: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor) -> "ChainWatch":
        """The watch of the chains at ``x``, all finite (a start is checked when it is evaluated)."""
        ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return cls(ok, torch.zeros((), dtype=torch.long, device=x.device))

    def after(self, info: StepInfo) -> "ChainWatch":
        """The watch after a step whose info is ``info``."""
        ok = self.ok & info.finite
        return ChainWatch(ok, self.steps_ok + ok.all())

    def check(self, sampler: str, n_steps: int) -> None:
        """:class:`NonFiniteChainError` naming the first bad step, if a chain turned non-finite in ``n_steps``."""
        if not bool(self.ok.all()):
            raise NonFiniteChainError(sampler, int(self.steps_ok) + 1, int((~self.ok).sum()), len(self.ok), n_steps)


# --------------------------------------------------------------------------- the move and the test


def euler_maruyama_move(
    x: torch.Tensor,
    grad: torch.Tensor,
    drift_gamma: torch.Tensor,
    noise_gamma: torch.Tensor,
    noise: torch.Tensor,
    noise_scale: float,
) -> torch.Tensor:
    """``x − (γ_drift/2)·grad + τ·sqrt(γ_noise)·noise``: the one move of every Langevin-type sampler (no randomness
    inside)."""
    return x - 0.5 * drift_gamma * grad + noise_scale * noise_gamma.sqrt() * noise


def log_proposal_density(
    to: torch.Tensor,
    frm: torch.Tensor,
    grad: torch.Tensor,
    drift_gamma: torch.Tensor,
    noise_gamma: torch.Tensor,
    noise_scale: float,
) -> torch.Tensor:
    """``log q(to | frm)`` of the move from ``frm`` (whose gradient is ``grad``), per sample, up to a constant that
    cancels."""
    mean = frm - 0.5 * drift_gamma * grad
    var = noise_scale**2 * noise_gamma
    return -0.5 * ((to - mean) ** 2 / var + var.log()).flatten(1).sum(1)


def metropolis_test(x, energy, grad, proposal, prop_energy, prop_grad, log_q_forward, log_q_backward, u):
    """Accept each chain's proposal where ``log u < E(x) − E(x') + log q(x|x') − log q(x'|x)``.

    A NaN ratio compares False, so a proposal with a non-finite energy or gradient is rejected.
    Returns the new positions, energies and gradients and the boolean acceptance per chain.
    """
    log_alpha = energy - prop_energy + log_q_backward - log_q_forward
    accepted = u.log() < log_alpha
    mask = accepted.view(-1, *([1] * (x.ndim - 1)))
    return (
        torch.where(mask, proposal, x),
        torch.where(accepted, prop_energy, energy),
        torch.where(mask, prop_grad, grad),
        accepted,
    )


def finite_chains(energy: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per chain: whether its energy and every coordinate of its gradient are finite."""
    return torch.isfinite(energy) & torch.isfinite(grad).flatten(1).all(1)


# --------------------------------------------------------------------------- trace


class Trace:
    """What a chain did, for plots and teaching; pass one to ``Sampler.run(trace=...)`` or
    ``Sampler.sample(trace=...)``.

    Recorded at every step t = 0..n_steps (t = 0 is the start): mean energy, mean gradient
    norm per sample, and positions at the steps listed in ``positions_at``; per transition
    t = 1..n_steps: the acceptance rate (Metropolis) and the share of coordinates whose step
    was shrunk below ε (AniLA's ``|g| > b``). Values are kept as tensors until read, so
    tracing adds no device synchronisation inside the loop.
    """

    def __init__(self, positions_at: Iterable[int] = ()):
        try:
            steps = list(positions_at)
        except TypeError:
            raise ArgumentTypeError(
                f"positions_at: expected an iterable of step indices, got {type(positions_at).__name__}"
            ) from None
        for t in steps:
            if (
                isinstance(t, bool)
                or not isinstance(t, int)
                and not (isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point())
            ):
                raise ArgumentTypeError(f"positions_at: expected integer step indices, got {t!r} ({type(t).__name__})")
            if int(t) < 0:
                raise ValueError(
                    f"positions_at: expected step indices >= 0 (0 is the start, n_steps the end), got {int(t)}"
                )
        self.positions_at = sorted({int(t) for t in steps})
        self.positions: dict[int, torch.Tensor] = {}
        self._energy: list[torch.Tensor] = []
        self._grad_norm: list[torch.Tensor] = []
        self._accept: list[torch.Tensor] = []
        self._clipped: list[torch.Tensor] = []

    def record_start(self, state: SamplerState) -> None:
        """Note the chains at the start of a run (step 0)."""
        self._record_state(0, state)

    def record_step(self, t: int, state: SamplerState, info: StepInfo) -> None:
        """Note step ``t``: what its info says (acceptance, clipped share) and the chains it reached."""
        if info.accepted is not None:
            self._accept.append(info.accepted.float().mean())
        if info.clipped is not None:
            self._clipped.append(info.clipped)
        self._record_state(t, state)

    def _record_state(self, t: int, state: SamplerState) -> None:
        self._energy.append(state.energy.mean())
        self._grad_norm.append(torch.linalg.vector_norm(state.grad.flatten(1), dim=1).mean())
        if t in self.positions_at:
            self.positions[t] = state.x.detach().cpu().clone()

    @staticmethod
    def _floats(values: list[torch.Tensor]) -> list[float]:
        return torch.stack(values).tolist() if values else []

    @property
    def mean_energy(self) -> list[float]:
        return self._floats(self._energy)

    @property
    def mean_grad_norm(self) -> list[float]:
        return self._floats(self._grad_norm)

    @property
    def acceptance_rate(self) -> list[float]:
        return self._floats(self._accept)

    @property
    def clipped_share(self) -> list[float]:
        return self._floats(self._clipped)

    def as_dict(self) -> dict:
        return {
            "mean_energy": self.mean_energy,
            "mean_grad_norm": self.mean_grad_norm,
            "acceptance_rate": self.acceptance_rate,
            "clipped_share": self.clipped_share,
        }


# --------------------------------------------------------------------------- non-finite chains


class NonFiniteChainError(FloatingPointError):
    """A chain reached (or started at) a point where the energy or its gradient is NaN or infinite.

    ``step`` is the first transition (1-based, within the ``run`` call) at which it happened,
    0 for the start, and ``share`` the fraction of chains hit by the end of the call (``last_step``).
    """

    def __init__(self, sampler: str, step: int, n_bad: int, n_chains: int, last_step: int = 0):
        self.step, self.share = step, n_bad / n_chains
        hit = f"{n_bad} of {n_chains} chains ({100 * self.share:.3g} %)"
        if step == 0:
            what = (
                f"at the start (step 0) in {hit}; {sampler} needs a start where the energy is finite (or "
                "allow_nonfinite=True to run such chains anyway)"
            )
        else:
            what = (
                f"first at step {step}, and {hit} were hit by step {last_step}; an unadjusted chain cannot recover "
                "from that. "
                "Remedies: a smaller step_size, metropolis=True (the Metropolis test rejects such proposals), or an "
                "energy "
                "that is finite where the chains go"
            )
        super().__init__(f"{sampler}: the energy or its gradient became NaN or infinite {what}")
