"""Where each iteration's chains start (fresh noise or a replay buffer), and the per-rank chain state a checkpoint
restores."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields

import torch

from anila_core.sampling.kernel import SamplerState
from anila_core.sampling.samplers import Sampler
from anila_core.training.config import TrainConfig

__all__ = ["Chains", "ChainState", "own_chain_state"]


class Chains:
    """Where each iteration's chains start: fresh noise (short-run) or a replay buffer of persistent chains.

    A buffer keeps, besides each chain's position, the sampler's own state of that chain
    (pSGLD's running average ``v``), so a chain drawn again continues where it stopped.
    """

    def __init__(self, config: TrainConfig, shape: tuple[int, ...], device: torch.device, generator: torch.Generator):
        self.config, self.shape, self.device, self.gen = config, shape, device, generator
        self.buffer = self.noise(config.buffer_size) if config.chains == "buffer" else None
        #: per buffer slot: the sampler's state of its chain, and whether a run has set it yet (fresh noise has none)
        self.sampler_state: dict[str, torch.Tensor] = {}
        self.has_sampler_state = (
            torch.zeros(config.buffer_size, dtype=torch.bool, device=device) if self.buffer is not None else None
        )
        self._index: torch.Tensor | None = None
        self._kept: torch.Tensor | None = None

    def noise(self, n: int) -> torch.Tensor:
        """``n`` starting points drawn from the configured initial distribution (uniform or Gaussian, times
        ``init_scale``)."""
        c = self.config
        if c.init == "uniform":
            u = torch.rand((n, *self.shape), generator=self.gen, device=self.device)
            return (2 * u - 1) * c.init_scale
        return c.init_scale * torch.randn((n, *self.shape), generator=self.gen, device=self.device)

    def start(self, n: int) -> torch.Tensor:
        """Starting points for ``n`` chains; remembers which buffer slots they came from and which carry their sampler
        state on."""
        if self.buffer is None:
            return self.noise(n)
        self._index = torch.randint(len(self.buffer), (n,), generator=self.gen, device=self.device)
        x = self.buffer[self._index].clone()
        restart = torch.rand(n, generator=self.gen, device=self.device) < self.config.reinit
        self._kept = ~restart & self.has_sampler_state[self._index]
        return torch.where(restart.view(-1, *[1] * len(self.shape)), self.noise(n), x)

    def sampler_start(self, sampler: Sampler, energy_fn, x0: torch.Tensor) -> SamplerState:
        """The sampler's state at ``x0``: evaluated afresh (the energy changed since the last iteration), each buffer
        chain with its own sampler state."""
        state = sampler.init(energy_fn, x0, allow_nonfinite=True)
        if self.buffer is not None and self.sampler_state:
            kept = self._kept
            carried = {
                k: torch.where(kept.view(-1, *[1] * (v.ndim - 1)), self.sampler_state[k][self._index], v)
                for k, v in state.extra.items()
            }
            state = dataclasses.replace(state, extra=carried)
        return state

    def finish(self, x: torch.Tensor, sampler_state: dict[str, torch.Tensor]) -> None:
        """Write the chains' end points, and their sampler state, back to the buffer slots :meth:`start` drew them
        from."""
        if self.buffer is None:
            return
        self.buffer[self._index] = x
        for key, value in sampler_state.items():
            if key not in self.sampler_state:
                self.sampler_state[key] = torch.zeros(
                    (len(self.buffer), *value.shape[1:]), dtype=value.dtype, device=self.device
                )
            self.sampler_state[key][self._index] = value
        if sampler_state:
            self.has_sampler_state[self._index] = True

    def state(self, source) -> ChainState:
        """This rank's chain state: the buffer, the chain generator, the global RNG and ``source``'s data stream."""
        sampler_state = (
            None
            if self.buffer is None
            else {
                "state": {k: v.detach().cpu() for k, v in self.sampler_state.items()},
                "has_state": self.has_sampler_state.detach().cpu(),
            }
        )
        return ChainState(
            buffer=None if self.buffer is None else self.buffer.detach().cpu(),
            sampler_state=sampler_state,
            generator=self.gen.get_state(),
            torch_rng=torch.get_rng_state(),
            source=source.state_dict(),
        )

    def load_state(self, state: ChainState, source) -> None:
        """The inverse of :meth:`state`."""
        if self.buffer is not None:
            self.buffer = state.buffer.to(self.device)
            # checkpoints written before the buffer kept sampler state have none: every chain starts its afresh
            saved = state.sampler_state or {"state": {}, "has_state": torch.zeros(len(self.buffer), dtype=torch.bool)}
            self.sampler_state = {k: v.to(self.device) for k, v in saved["state"].items()}
            self.has_sampler_state = saved["has_state"].to(self.device)
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
    sampler_state: (
        dict | None
    )  # the buffer chains' sampler state ({"state": {"v": ...}, "has_state": mask}); None without a buffer
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
    """Rank ``rank``'s chain state in a checkpoint; ``None`` (fresh chains, with a notice) when it was saved with fewer
    ranks."""
    ranks = state.get("ranks")
    if ranks is not None and rank < len(ranks):
        return ChainState.from_dict(ranks[rank])
    if rank == 0:
        return ChainState.from_dict(state)
    print(
        f"notice: rank {rank}: the checkpoint holds chain states for {len(ranks or [None])} rank(s); "
        "this rank starts fresh chains, so the resumed run is not bit-identical to an uninterrupted one",
        file=sys.stderr,
    )
    return None
