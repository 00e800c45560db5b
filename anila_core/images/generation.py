"""What a trained image energy does besides being scored: a long chain from noise watched step by step, and inpainting a
masked image by sampling its missing pixels."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from anila_core.sampling.samplers import Sampler

__all__ = ["chain_snapshots", "inpaint", "half_mask"]


def _steps(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return value


def chain_snapshots(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    sampler: Sampler,
    shape: tuple[int, int, int],
    n: int,
    steps: Sequence[int],
    seed: int = 0,
    clamp: float = 1.0,
    device: torch.device | str = "cpu",
) -> dict[int, torch.Tensor]:
    """The same ``n`` chains from uniform noise on ``[-1, 1]``, seen after each of ``steps`` transitions: step → images
    (CPU).

    One chain per image runs on, snapshot to snapshot (``sampler.run`` continues its state),
    so the pictures show one trajectory, not fresh draws. The positions are clamped to
    ``[-clamp, clamp]`` at each snapshot (0: never), as training clamps its chains after
    their ``K`` steps: without it a long chain may walk out of the data's range, where the
    energy was never trained.
    """
    wanted = sorted({_steps("steps", s) for s in steps})
    if not wanted:
        raise ValueError("steps: expected at least one step count")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = 2 * torch.rand((n, *shape), generator=gen, device=device) - 1
    out, done = {}, 0
    for target in wanted:
        if target > done:
            state = sampler.init(energy_fn, x, allow_nonfinite=True)
            x = sampler.run(
                energy_fn, state, target - done, generator=gen, evaluate_final=False, allow_nonfinite=True
            ).x
            if clamp > 0:
                x = x.clamp(-clamp, clamp)
            done = target
        out[target] = x.detach().cpu().clone()
    return out


def half_mask(shape: tuple[int, int, int], part: str = "bottom") -> torch.Tensor:
    """A boolean mask ``shape`` that is True on the missing half of an image: ``bottom``, ``top``, ``left`` or
    ``right``."""
    c, h, w = shape
    mask = torch.zeros(shape, dtype=torch.bool)
    halves = {
        "bottom": (slice(h // 2, h), slice(None)),
        "top": (slice(0, h // 2), slice(None)),
        "left": (slice(None), slice(0, w // 2)),
        "right": (slice(None), slice(w // 2, w)),
    }
    if part not in halves:
        raise ValueError(f"part: expected one of {list(halves)}, got {part!r}")
    mask[(slice(None), *halves[part])] = True
    return mask


def inpaint(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    sampler: Sampler,
    images: torch.Tensor,
    mask: torch.Tensor,
    n_steps: int,
    seed: int = 0,
    clamp: float = 1.0,
    device: torch.device | str = "cpu",
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill the pixels where ``mask`` is True by sampling them from the energy, the other pixels held at ``images``'
    values.

    The sampler runs on ``x ↦ E(known pixels of images, x at the missing ones)``: the known
    pixels then have zero gradient and are overwritten in the result, so the chain moves
    only the missing ones, conditioned on what is seen. They start from uniform noise on
    ``[-1, 1]`` (as the training chains did), or from ``start`` (images of the same shape,
    e.g. a first guess to refine). Returns CPU images with the known pixels exact and the
    missing ones sampled (clamped to ``[-clamp, clamp]``; 0: not clamped).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images: expected (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    if mask.shape != images.shape[1:] and mask.shape != images.shape:
        raise ValueError(
            f"mask: expected the shape of one image {tuple(images.shape[1:])} or of all, got {tuple(mask.shape)}"
        )
    device = torch.device(device)
    known = images.to(device).float()
    missing = mask.to(device).expand_as(known)

    def conditional(x: torch.Tensor) -> torch.Tensor:
        return energy_fn(torch.where(missing, x, known))

    gen = torch.Generator(device=device).manual_seed(seed)
    first = (
        2 * torch.rand(known.shape, generator=gen, device=device) - 1
        if start is None
        else start.to(device).float().expand_as(known)
    )
    x = sampler.sample(conditional, torch.where(missing, first, known), n_steps, generator=gen, allow_nonfinite=True)
    if clamp > 0:
        x = x.clamp(-clamp, clamp)
    return torch.where(missing, x, known).detach().cpu()
