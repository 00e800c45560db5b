"""ConvNet energies for square images of 8, 16, 32 or 64 pixels: the "vanilla ConvNet" of short-run EBM papers.

Layout for an ``S``-pixel image: a 3×3 convolution to ``width`` channels, then stride-2 4×4
convolutions that halve the side and double the channels (capped at ``8·width``) until the side
is 4, then a 4×4 convolution to one number: the energy, shape ``(N,)``. For 32 pixels and
``width = n_f`` that is 3→n_f→2n_f→4n_f→8n_f→1, the network of the short-run MCMC papers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anila_core.nets import ACTIVATIONS, make_activation

__all__ = ["ConvEnergy", "make_convnet", "IMAGE_SIZES"]

IMAGE_SIZES = (8, 16, 32, 64)
_MAX_WIDTH_FACTOR = 8  # past 8·width the 64-px net grows to tens of millions of weights for little gain


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


class ConvEnergy(nn.Module):
    """``E(x)`` for images ``(N, C, S, S)`` in ``[-1, 1]``: one energy per image.

    ``activation``: any name of :data:`anila_core.nets.ACTIVATIONS`; the default
    ``"leaky_relu"`` (slope 0.2) is the published choice. Smooth ones (``"silu"``, ``"elu"``)
    give Langevin chains a continuous ``∇_x E``.
    ``spectral_norm``: divide every convolution's weight by its largest singular value (of the
    weight reshaped to ``(out, in·k·k)``, estimated by one power iteration per training-mode
    forward pass). It bounds how sharp the energy can get, which keeps short-run chains stable
    at the cost of slower learning.
    """

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        width: int = 64,
        activation: str = "leaky_relu",
        spectral_norm: bool = False,
    ):
        super().__init__()
        if isinstance(image_size, bool) or image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size: expected one of {IMAGE_SIZES}, got {image_size!r}")
        _check_int("in_channels", in_channels, 1)
        _check_int("width", width, 1)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: unknown name {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if not isinstance(spectral_norm, bool):
            raise ValueError(f"spectral_norm: expected True or False, got {spectral_norm!r}")

        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [wrap(nn.Conv2d(in_channels, width, 3, 1, 1)), make_activation(activation)]
        channels = width
        for i in range(int(math.log2(image_size // 4))):
            out = width * min(2 ** (i + 1), _MAX_WIDTH_FACTOR)
            layers += [wrap(nn.Conv2d(channels, out, 4, 2, 1)), make_activation(activation)]
            channels = out
        layers.append(wrap(nn.Conv2d(channels, 1, 4, 1, 0)))  # 4×4 feature map -> 1×1: the energy
        self.net = nn.Sequential(*layers)
        self.image_shape = (in_channels, image_size, image_size)
        self.width, self.activation, self.spectral_norm = width, activation, spectral_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x: expected shape (N, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        return self.net(x).view(len(x))

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, width={self.width}, spectral_norm={self.spectral_norm}"


def make_convnet(
    image_shape: tuple[int, int, int],
    width: int = 64,
    activation: str = "leaky_relu",
    spectral_norm: bool = False,
) -> ConvEnergy:
    """The ConvNet energy for images of ``image_shape = (C, H, W)`` with ``H == W`` in :data:`IMAGE_SIZES`."""
    try:
        c, h, w = image_shape
    except (TypeError, ValueError):
        raise ValueError(f"image_shape: expected (channels, height, width), got {image_shape!r}") from None
    if h != w:
        raise ValueError(f"image_shape: expected square images (height == width), got {tuple(image_shape)}")
    return ConvEnergy(image_size=h, in_channels=c, width=width, activation=activation, spectral_norm=spectral_norm)
