"""Where each iteration's chains start (fresh noise or a replay buffer), and the per-rank chain state a checkpoint restores."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import torch

from anila_core.training.config import TrainConfig

__all__ = ["Chains", "ChainState", "own_chain_state"]


class Chains:
    """Where each iteration's chains start: fresh noise (short-run) or a replay buffer of persistent chains."""

    def __init__(self, config: TrainConfig, shape: tuple[int, ...], device: torch.device, generator: torch.Generator):
        self.config, self.shape, self.device, self.gen = config, shape, device, generator
        self.buffer = self.noise(config.buffer_size) if config.chains == "buffer" else None
        self._index: torch.Tensor | None = None

    def noise(self, n: int) -> torch.Tensor:
        """``n`` starting points drawn from the configured initial distribution (uniform or Gaussian, times ``init_scale``)."""
        c = self.config
        if c.init == "uniform":
            u = torch.rand((n, *self.shape), generator=self.gen, device=self.device)
            return (2 * u - 1) * c.init_scale
        return c.init_scale * torch.randn((n, *self.shape), generator=self.gen, device=self.device)

    def start(self, n: int) -> torch.Tensor:
        """Starting points for ``n`` chains; remembers which buffer slots they came from."""
        if self.buffer is None:
            return self.noise(n)
        self._index = torch.randint(len(self.buffer), (n,), generator=self.gen, device=self.device)
        x = self.buffer[self._index].clone()
        restart = torch.rand(n, generator=self.gen, device=self.device) < self.config.reinit
        return torch.where(restart.view(-1, *[1] * len(self.shape)), self.noise(n), x)

    def finish(self, x: torch.Tensor) -> None:
        """Write the chains' end points back to the buffer slots :meth:`start` drew them from."""
        if self.buffer is not None:
            self.buffer[self._index] = x

    def state(self, source) -> ChainState:
        """This rank's chain state: the buffer, the chain generator, the global RNG and ``source``'s data stream."""
        return ChainState(buffer=None if self.buffer is None else self.buffer.detach().cpu(), generator=self.gen.get_state(),
                          torch_rng=torch.get_rng_state(), source=source.state_dict())

    def load_state(self, state: ChainState, source) -> None:
        """The inverse of :meth:`state`."""
        if self.buffer is not None:
            self.buffer = state.buffer.to(self.device)
        self.gen.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)
        source.load_state_dict(state.source or {})


@dataclass
class ChainState:
    """What differs between ranks and must come back for an exact resume; its fields are the checkpoint's keys.

    A checkpoint holds rank 0's fields at its top level and, under torchrun, every rank's as
    ``ranks``; both are written and read through :meth:`to_dict` and :meth:`from_dict`, so a
    new field (say, per-chain sampler state) is added here and nowhere else.
    """

    buffer: torch.Tensor | None  # the replay buffer ``(buffer_size, *data_shape)``; None for short-run chains
    generator: torch.Tensor  # the chain generator's state (chains, sampler noise, 2-D data)
    torch_rng: torch.Tensor  # the global CPU RNG's state
    source: dict | None  # the data source's own stream (image batches); {} for 2-D targets

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict) -> ChainState:
        return cls(**{f.name: state.get(f.name) for f in fields(cls)})

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def own_chain_state(state: dict, rank: int) -> ChainState | None:
    """Rank ``rank``'s chain state in a checkpoint; ``None`` (fresh chains, with a notice) when it was saved with fewer ranks."""
    ranks = state.get("ranks")
    if ranks is not None and rank < len(ranks):
        return ChainState.from_dict(ranks[rank])
    if rank == 0:
        return ChainState.from_dict(state)
    print(f"notice: rank {rank}: the checkpoint holds chain states for {len(ranks or [None])} rank(s); "
          "this rank starts fresh chains, so the resumed run is not bit-identical to an uninterrupted one", file=sys.stderr)
    return None
