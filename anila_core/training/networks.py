"""The energy network and the views of it that training and sampling call: DDP, torch.compile, bf16 autocast,
channels-last."""

from __future__ import annotations

import sys

import torch

from anila_core.sampling.compiled import cpu_codegen_options
from anila_core.training import distributed
from anila_core.training.config import TrainConfig

__all__ = ["build_energy", "Networks"]


def build_energy(
    config: TrainConfig, data_shape: tuple[int, ...], energy: torch.nn.Module | None = None
) -> torch.nn.Module:
    """The energy network: ``energy`` when given (a module of your own, in memory), the one ``config.energy`` names
    (:mod:`anila_core.training.user_energy`), else the built-in one of the data's kind (an MLP for points ``(d,)``,
    the ConvNet of :mod:`anila_core.images.convnets` for images ``(C, H, W)``)."""
    if energy is not None:
        return energy
    if config.energy:
        from anila_core.training.user_energy import load_energy

        return load_energy(config.energy, data_shape)
    from anila_core.training.kinds import data_kind

    return data_kind(config).network(data_shape)


class Networks:
    """One energy module seen two ways: the training view (DDP, compile) and the sampling view (never DDP), with their
    precision.

    Wrapping changes how a forward runs, never which parameters it uses: both views share
    ``model``'s parameters. ``eval_model`` is the module evaluations sample (the EMA when on,
    else ``model``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eval_model: torch.nn.Module,
        config: TrainConfig,
        device: torch.device,
        dist: distributed.DistInfo,
        channels_last: bool,
        joint_forward: bool,
    ):
        self.model, self.eval_model = model, eval_model
        self.amp = config.amp == "bf16" and device.type == "cuda"
        if config.amp == "bf16" and not self.amp and dist.is_main:
            print(f"notice: amp='bf16' applies on CUDA only; this run on {device} computes in float32", file=sys.stderr)
        # bf16 energies are too coarse for a Metropolis test's energy differences: sample in float32 then
        self.amp_sampler = self.amp and not config.metropolis
        self.channels_last = channels_last
        train_net = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        sample_net = model  # the sampler needs no gradient sync: the bare module, never DDP
        if config.compile:
            # on a CPU, the vector width this process's ISA picks, so that inductor's disk cache never serves one
            # ISA's code to another (anila_core.sampling.compiled.cpu_codegen_options)
            how = {"options": cpu_codegen_options()} if device.type == "cpu" else {}
            train_net = torch.compile(train_net, **how)
            sample_net = train_net if not dist.enabled else torch.compile(model, **how)
        self.train_net, self.sample_net = train_net, sample_net
        # One forward over data and samples together where the data's kind asks for it (see DataKind.joint_forward), and
        # under DDP, which expects one forward per backward
        self.joint_forward = joint_forward or dist.enabled

    def forward(self, net, x: torch.Tensor, amp: bool) -> torch.Tensor:
        """``net(x)`` in the run's memory layout, under bf16 autocast when ``amp`` (the result is float32)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return net(x).float()
        return net(x)

    def sample_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of the trained model as the sampler sees it (bf16 autocast with ``--amp bf16`` on CUDA; float32 out)."""
        return self.forward(self.sample_net, x, self.amp_sampler)

    def eval_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of the evaluation model, with the sampler's precision (a method: compiled sampling caches by owner)."""
        net = self.sample_net if self.eval_model is self.model else self.eval_model
        return self.forward(net, x, self.amp_sampler)

    def training_energies(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The energies of the data and of the samples, through the training view (with gradients)."""
        if self.joint_forward:
            both = self.forward(self.train_net, torch.cat([x_pos, x_neg]), self.amp)
            return both.split([len(x_pos), len(x_neg)])
        return self.forward(self.train_net, x_pos, self.amp), self.forward(self.train_net, x_neg, self.amp)
