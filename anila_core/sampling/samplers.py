"""Langevin-type MCMC samplers (Langevin, AniLA, pSGLD) sharing one Euler–Maruyama transition and an optional Metropolis test.

Convention: ``energy_fn`` returns one energy per sample, ``p(x) ∝ exp(-E(x))``,
``g = ∇_x E``. One transition is

    γ  = ε · a(g)
    x' = x − (γ/2) ⊙ g + τ · sqrt(γ) ⊙ ξ,   ξ ~ N(0, I)

and the samplers differ only in the step-size map ``a``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

__all__ = [
    "Sampler",
    "Langevin",
    "AniLA",
    "PSGLD",
    "Trace",
    "energy_and_grad",
    "check_energies",
    "make_sampler",
    "SAMPLERS",
    "NORMS",
]

EnergyFn = Callable[[torch.Tensor], torch.Tensor]
NORMS = ("coordinate", "pixel", "sample")
ANILA_VARIANTS = ("full", "noise_only")


# --------------------------------------------------------------------------- validation


def _finite_positive(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return value


def _check_n_steps(n_steps: int) -> int:
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps: expected an integer >= 1, got {n_steps!r}")
    return n_steps


def _check_x0(x0: torch.Tensor) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor):
        raise ValueError(f"x0: expected a torch.Tensor of shape (N, ...), got {type(x0).__name__}")
    if not x0.is_floating_point():
        raise ValueError(f"x0: expected a floating-point tensor, got dtype {x0.dtype}")
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0: expected shape (N, ...) with N >= 1 and at least one data dimension, got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0: expected finite values, got NaN or inf")
    return x0.detach()


def _check_generator(generator: torch.Generator | None, x: torch.Tensor) -> None:
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(f"generator: lives on {generator.device} but x0 is on {x.device}; create it with torch.Generator(device=x0.device)")


# --------------------------------------------------------------------------- energy and gradient


def check_energies(energy, x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``energy`` is a tensor of one energy per sample of ``x``."""
    if not isinstance(energy, torch.Tensor) or energy.shape != (x.shape[0],):
        got = tuple(energy.shape) if isinstance(energy, torch.Tensor) else type(energy).__name__
        raise ValueError(f"energy_fn: expected energies of shape ({x.shape[0]},), one per sample, got {got}")


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
            raise ValueError("energy_fn: its energies do not depend on x (no gradient reaches x); expected a differentiable "
                             "function of x, computed with torch operations")
        (grad,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), grad.detach()


# --------------------------------------------------------------------------- trace


class Trace:
    """What a chain did, for plots and teaching; pass one to ``Sampler.sample(trace=...)``.

    Recorded at every step t = 0..n_steps (t = 0 is the start): mean energy, mean gradient
    norm per sample, and positions at the steps listed in ``positions_at``; per transition
    t = 1..n_steps: the acceptance rate (Metropolis) and the share of coordinates whose step
    was shrunk below ε (AniLA's ``|g| > b``). Values are kept as tensors until read, so
    tracing adds no device synchronisation inside the loop.
    """

    def __init__(self, positions_at: Iterable[int] = ()):
        self.positions_at = sorted({int(t) for t in positions_at})
        self.positions: dict[int, torch.Tensor] = {}
        self._energy: list[torch.Tensor] = []
        self._grad_norm: list[torch.Tensor] = []
        self._accept: list[torch.Tensor] = []
        self._clipped: list[torch.Tensor] = []

    def _record_state(self, t: int, x: torch.Tensor, energy: torch.Tensor, grad: torch.Tensor) -> None:
        self._energy.append(energy.mean())
        self._grad_norm.append(torch.linalg.vector_norm(grad.flatten(1), dim=1).mean())
        if t in self.positions_at:
            self.positions[t] = x.detach().cpu().clone()

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


# --------------------------------------------------------------------------- samplers


class Sampler:
    """One Euler–Maruyama recipe; subclasses supply the per-coordinate step sizes ``γ``."""

    name = "sampler"
    #: default of ``sample(fast=None)``: run each transition compiled (:mod:`anila_core.sampling.compiled`); set per instance
    fast: bool = False
    #: with the fast path on CUDA, replay each transition as a CUDA graph (``torch.compile(mode="reduce-overhead")``)
    fast_cuda_graphs: bool = False

    def __init__(self, step_size: float, noise_scale: float = 1.0, metropolis: bool = False):
        self.step_size = _finite_positive("step_size", step_size)
        try:
            noise_scale = float(noise_scale)
        except (TypeError, ValueError):
            raise ValueError(f"noise_scale: expected a finite number >= 0, got {noise_scale!r}") from None
        if not math.isfinite(noise_scale) or noise_scale < 0:
            raise ValueError(f"noise_scale: expected a finite number >= 0, got {noise_scale!r}")
        self.noise_scale = noise_scale
        if metropolis and noise_scale == 0:
            raise ValueError("metropolis: needs noise_scale > 0 (a deterministic proposal has no density to correct)")
        self.metropolis = bool(metropolis)

    # -- the part that differs between samplers
    def step_sizes(self, grad: torch.Tensor) -> torch.Tensor:
        """Per-coordinate step sizes γ for the gradient ``grad`` (same shape)."""
        raise NotImplementedError

    def _init_state(self, grad: torch.Tensor):
        return None

    def _step_sizes_with_state(self, grad: torch.Tensor, state):
        """(γ for the drift, γ for the noise, new state); samplers with memory override this."""
        gamma = self.step_sizes(grad)
        return gamma, gamma, state

    # -- the shared transition
    def _move(self, x, grad, drift_gamma, noise_gamma, noise):
        return x - 0.5 * drift_gamma * grad + self.noise_scale * noise_gamma.sqrt() * noise

    def step(self, x: torch.Tensor, grad: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The unadjusted transition ``x − γ/2·grad + τ·sqrt(γ)·noise``; no randomness inside."""
        drift_gamma, noise_gamma, _ = self._step_sizes_with_state(grad, self._init_state(grad))
        return self._move(x, grad, drift_gamma, noise_gamma, noise)

    def _log_proposal(self, to, frm, grad, drift_gamma, noise_gamma) -> torch.Tensor:
        """log q(to | frm) up to a constant that cancels, summed per sample."""
        mean = frm - 0.5 * drift_gamma * grad
        var = self.noise_scale**2 * noise_gamma
        return -0.5 * ((to - mean) ** 2 / var + var.log()).flatten(1).sum(1)

    def sample(
        self,
        energy_fn: EnergyFn,
        x0: torch.Tensor,
        n_steps: int,
        generator: torch.Generator | None = None,
        trace: Trace | None = None,
        *,
        fast: bool | None = None,
    ) -> torch.Tensor:
        """Run ``n_steps`` transitions from ``x0`` and return the final states, detached.

        With ``metropolis=True`` each transition is a proposal accepted with the MALA
        probability, which makes the chain exact for ``exp(-E)``. ``fast=True`` (default:
        the sampler's ``fast`` attribute) compiles each transition with ``torch.compile``
        (:func:`anila_core.sampling.compiled.sample_fast`): the same chain up to rounding, faster once
        compiled; it falls back to this eager loop, with a warning, where compiling fails.
        """
        if fast or (fast is None and self.fast):
            from anila_core.sampling.compiled import sample_fast  # imported here: fast.py builds on this module

            return sample_fast(self, energy_fn, x0, n_steps, generator=generator, trace=trace, cuda_graphs=self.fast_cuda_graphs)
        n_steps = _check_n_steps(n_steps)
        x = _check_x0(x0)
        _check_generator(generator, x)
        energy, grad = energy_and_grad(energy_fn, x)
        state = self._init_state(grad)
        if trace is not None:
            trace._record_state(0, x, energy, grad)
        for t in range(1, n_steps + 1):
            drift_gamma, noise_gamma, state = self._step_sizes_with_state(grad, state)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            proposal = self._move(x, grad, drift_gamma, noise_gamma, noise)
            if trace is not None and hasattr(self, "b"):
                trace._clipped.append((noise_gamma < self.step_size).float().mean())
            if self.metropolis:
                x, energy, grad, accepted = self._metropolis(
                    energy_fn, x, energy, grad, drift_gamma, noise_gamma, proposal, generator
                )
                if trace is not None:
                    trace._accept.append(accepted.float().mean())
            else:
                x = proposal
                # the gradient at the final state is only needed when someone looks at it
                if t < n_steps or trace is not None:
                    energy, grad = energy_and_grad(energy_fn, x)
            if trace is not None:
                trace._record_state(t, x, energy, grad)
        return x

    def _metropolis(self, energy_fn, x, energy, grad, drift_gamma, noise_gamma, proposal, generator):
        prop_energy, prop_grad = energy_and_grad(energy_fn, proposal)
        prop_drift, prop_noise, _ = self._step_sizes_with_state(prop_grad, None)
        log_alpha = (
            energy
            - prop_energy
            + self._log_proposal(x, proposal, prop_grad, prop_drift, prop_noise)
            - self._log_proposal(proposal, x, grad, drift_gamma, noise_gamma)
        )
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        accepted = u.log() < log_alpha  # NaN compares False: a broken proposal is rejected
        mask = accepted.view(-1, *([1] * (x.ndim - 1)))
        x = torch.where(mask, proposal, x)
        energy = torch.where(accepted, prop_energy, energy)
        grad = torch.where(mask, prop_grad, grad)
        return x, energy, grad, accepted

    def _describe(self) -> dict:
        return {"sampler": self.name, "step_size": self.step_size, "noise_scale": self.noise_scale, "metropolis": self.metropolis}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._describe().items() if k != "sampler")
        return f"{type(self).__name__}({args})"


class Langevin(Sampler):
    """Unadjusted Langevin (ULA / SGLD): ``a(g) = 1``; Metropolis-adjusted (MALA) with ``metropolis=True``."""

    name = "langevin"

    def step_sizes(self, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, self.step_size)


class AniLA(Sampler):
    """Anisotropic Langevin: ``a(g) = b / max(b, |g|)``, so steep coordinates take shorter steps.

    ``norm`` fixes what ``|g|`` means: ``"coordinate"`` (elementwise, the paper's formula),
    ``"pixel"`` (L2 over the channel dimension 1 of image batches ``(N, C, H, W)``; a flat
    batch ``(N, d)`` has one channel per coordinate, so it equals ``"coordinate"``) or
    ``"sample"`` (L2 over all of a sample's dimensions). ``variant="noise_only"`` is the form
    in the authors' image code: the anisotropic step scales the noise and the drift keeps the
    full ``ε`` — shown for comparison, never the default.
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
        try:
            b = float(b)
        except (TypeError, ValueError):
            raise ValueError(f"b: expected a number > 0 (inf allowed), got {b!r}") from None
        if math.isnan(b) or b <= 0:
            raise ValueError(f"b: expected a number > 0 (inf allowed), got {b!r}")
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

    def _step_sizes_with_state(self, grad, state):
        gamma = self.step_sizes(grad)
        if self.variant == "noise_only":
            return torch.full_like(grad, self.step_size), gamma, state
        return gamma, gamma, state

    def _describe(self) -> dict:
        return {**super()._describe(), "b": self.b, "norm": self.norm, "variant": self.variant}


class PSGLD(Sampler):
    """Preconditioned SGLD (Li et al. 2016): ``V ← αV + (1−α)g²``, ``γ = ε / (λ + sqrt(V))``.

    ``V`` is kept per chain and coordinate during one ``sample`` call and starts at ``g²`` of
    the first state (a bias-corrected start; RMSprop's ``V = 0`` would make the first steps
    ``1/sqrt(1−α)`` times too long). The preconditioner depends on the chain's history, so
    no Metropolis test is offered.
    """

    name = "psgld"

    def __init__(self, step_size: float, alpha: float = 0.99, damping: float = 1e-5, noise_scale: float = 1.0):
        super().__init__(step_size, noise_scale, metropolis=False)
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}") from None
        if not (0.0 <= alpha < 1.0):
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}")
        self.alpha = alpha
        self.damping = _finite_positive("damping", damping)

    def step_sizes(self, grad: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """γ after folding ``grad`` into the running average ``v`` (``None``: the first step)."""
        v = self._update(v, grad)
        return self.step_size / (self.damping + v.sqrt())

    def _update(self, v, grad):
        return grad.square() if v is None else self.alpha * v + (1.0 - self.alpha) * grad.square()

    def _step_sizes_with_state(self, grad, state):
        v = self._update(state, grad)
        gamma = self.step_size / (self.damping + v.sqrt())
        return gamma, gamma, v

    def _describe(self) -> dict:
        return {**super()._describe(), "alpha": self.alpha, "damping": self.damping}


SAMPLERS = {"langevin": Langevin, "anila": AniLA, "psgld": PSGLD}


def make_sampler(name: str, **kwargs) -> Sampler:
    """Build a sampler by name (``langevin``, ``anila``, ``psgld``) from keyword hyperparameters."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; expected one of {sorted(SAMPLERS)}")
    import inspect

    accepted = [p for p in inspect.signature(SAMPLERS[name].__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown hyperparameter(s) {unknown}; expected some of {accepted}")
    if "step_size" not in kwargs:
        raise ValueError(f"{name}: step_size is required; expected some of {accepted}")
    return SAMPLERS[name](**kwargs)
