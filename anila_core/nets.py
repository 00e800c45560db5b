"""Energy networks: an MLP for 2-D points (ConvNets for images live beside it as the project grows)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPEnergy", "ACTIVATIONS", "make_activation"]

ACTIVATIONS = {
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown name {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLPEnergy(nn.Module):
    """``E(x)`` for points in R^d: ``depth`` hidden layers of ``width`` units, one energy per sample.

    Smooth activations (SiLU, ELU, softplus) are the default because the samplers follow
    ``∇_x E``: a ReLU network has a piecewise-constant gradient that Langevin chains feel as
    kinks.
    """

    def __init__(self, in_dim: int = 2, width: int = 128, depth: int = 3, activation: str = "silu"):
        super().__init__()
        for name, value, low in (("in_dim", in_dim, 1), ("width", width, 1), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [width] * depth
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected points of shape (N, {self.in_dim}) for this energy, got {tuple(x.shape)}")
        return self.net(x).squeeze(-1)
