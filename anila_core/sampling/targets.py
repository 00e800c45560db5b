"""Known densities with exact log-densities and exact samplers: the ground truth for every test and plot."""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["Target", "Rings", "GaussianMixture", "Gaussian", "make_target", "TARGETS"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_batch(x: torch.Tensor, dim: int, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a tensor of shape (N, {dim}), got {shape}")


class Target:
    """A normalised density on R^d. ``energy = -log_prob``, so ``exp(-energy)`` integrates to one."""

    name: str = "target"
    dim: int = 2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """Energy ``E(x) = -log p(x)`` per sample, shape ``(N,)``."""
        return -self.log_prob(x)

    __call__ = energy

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Rings(Target):
    """Concentric rings (Nijkamp et al.'s toy): radii ``radii``, radial sd ``sd``, uniform angle, equal weights.

    The radial law of ring k is a normal N(k, sd²) truncated to r > 0, so the density
    ``Σ_k w_k · N(r; k, sd²) / (Φ(k/sd) · 2π r)`` is exactly normalised (the truncation
    changes nothing visible for the default radii, but keeps ``log_prob`` honest).
    """

    name = "rings"
    dim = 2

    def __init__(self, radii: Sequence[float] = (1.0, 2.0, 3.0, 4.0), sd: float = 0.15):
        radii = [float(r) for r in radii]
        if not radii or any(not math.isfinite(r) or r <= 0 for r in radii):
            raise ValueError(f"radii: expected a non-empty list of finite numbers > 0, got {radii}")
        if not math.isfinite(sd) or sd <= 0:
            raise ValueError(f"sd: expected a finite number > 0, got {sd}")
        self.radii = torch.tensor(radii, dtype=torch.float64)
        self.sd = float(sd)
        # log of the truncation mass Φ(k/sd) of each radial normal on r > 0
        self._log_mass = torch.special.log_ndtr(self.radii / self.sd)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, 2, "x")
        radii = self.radii.to(x.device, x.dtype)
        log_mass = self._log_mass.to(x.device, x.dtype)
        # clamp keeps r = 0 (a null set) from producing inf and NaN gradients
        r = torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)
        z = (r[:, None] - radii[None, :]) / self.sd
        log_radial = -0.5 * z**2 - math.log(self.sd) - 0.5 * _LOG_2PI - log_mass
        log_w = -math.log(len(radii))
        return torch.logsumexp(log_radial + log_w, dim=1) - torch.log(2.0 * math.pi * r)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        n = _check_n(n)
        device = generator.device if generator is not None else torch.device("cpu")
        k = torch.randint(len(self.radii), (n,), generator=generator, device=device)
        r = self.radii.to(device)[k] + self.sd * torch.randn(n, generator=generator, device=device, dtype=torch.float64)
        # rejection of r <= 0 is exact for the truncated law; it essentially never loops
        while (bad := r <= 0).any():
            r[bad] = self.radii.to(device)[k[bad]] + self.sd * torch.randn(
                int(bad.sum()), generator=generator, device=device, dtype=torch.float64
            )
        theta = 2.0 * math.pi * torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1).float()

    def __repr__(self) -> str:
        return f"Rings(radii={self.radii.tolist()}, sd={self.sd})"


class GaussianMixture(Target):
    """Equal-weight mixture of isotropic Gaussians; by default 8 modes on a circle of radius 3."""

    name = "gmm"
    dim = 2

    def __init__(self, n_modes: int = 8, radius: float = 3.0, sd: float = 0.3, means: torch.Tensor | None = None):
        if means is None:
            if int(n_modes) < 1:
                raise ValueError(f"n_modes: expected an integer >= 1, got {n_modes}")
            angles = 2.0 * math.pi * torch.arange(int(n_modes), dtype=torch.float64) / int(n_modes)
            means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2 or means.shape[0] < 1:
            raise ValueError(f"means: expected shape (n_modes, d), got {tuple(means.shape)}")
        if not math.isfinite(sd) or sd <= 0:
            raise ValueError(f"sd: expected a finite number > 0, got {sd}")
        self.means = means
        self.sd = float(sd)
        self.dim = means.shape[1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.dim, "x")
        means = self.means.to(x.device, x.dtype)
        sq = ((x[:, None, :] - means[None, :, :]) ** 2).sum(-1)
        log_comp = -0.5 * sq / self.sd**2 - self.dim * (math.log(self.sd) + 0.5 * _LOG_2PI)
        return torch.logsumexp(log_comp, dim=1) - math.log(len(means))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        n = _check_n(n)
        device = generator.device if generator is not None else torch.device("cpu")
        k = torch.randint(len(self.means), (n,), generator=generator, device=device)
        eps = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        return (self.means.to(device)[k] + self.sd * eps).float()

    def __repr__(self) -> str:
        return f"GaussianMixture(n_modes={len(self.means)}, sd={self.sd})"


class Gaussian(Target):
    """Diagonal Gaussian N(mean, diag(scales²)) in any dimension; ``Gaussian([0.1, 10.0])`` is ill-conditioned."""

    name = "gaussian"

    def __init__(self, scales: Sequence[float] = (1.0, 1.0), mean: Sequence[float] | None = None):
        scales_t = torch.as_tensor(scales, dtype=torch.float64).flatten()
        if scales_t.numel() < 1 or not torch.isfinite(scales_t).all() or (scales_t <= 0).any():
            raise ValueError(f"scales: expected a non-empty list of finite numbers > 0, got {list(scales)}")
        mean_t = torch.zeros_like(scales_t) if mean is None else torch.as_tensor(mean, dtype=torch.float64).flatten()
        if mean_t.shape != scales_t.shape or not torch.isfinite(mean_t).all():
            raise ValueError(f"mean: expected {scales_t.numel()} finite numbers, got {mean}")
        self.scales = scales_t
        self.mean = mean_t
        self.dim = scales_t.numel()

    @property
    def variance(self) -> torch.Tensor:
        return self.scales**2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x, self.dim, "x")
        mean, scales = self.mean.to(x.device, x.dtype), self.scales.to(x.device, x.dtype)
        z = (x - mean) / scales
        return -0.5 * (z**2).sum(1) - torch.log(scales).sum() - 0.5 * self.dim * _LOG_2PI

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        n = _check_n(n)
        device = generator.device if generator is not None else torch.device("cpu")
        eps = torch.randn(n, self.dim, generator=generator, device=device, dtype=torch.float64)
        return (self.mean.to(device) + self.scales.to(device) * eps).float()

    def __repr__(self) -> str:
        return f"Gaussian(scales={self.scales.tolist()})"


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n!r}")
    return n


TARGETS = {
    "rings": Rings,
    "gmm": GaussianMixture,
    "gaussian": lambda: Gaussian([1.0, 1.0]),
    "ill_gaussian": lambda: Gaussian([0.1, 10.0]),
}


def make_target(name: str) -> Target:
    """Build a target by name: one of ``TARGETS``."""
    if name not in TARGETS:
        raise ValueError(f"target: unknown name {name!r}; expected one of {sorted(TARGETS)}")
    target = TARGETS[name]()
    target.name = name  # so a target built by name can say which entry it is
    return target
