"""Algorithm 1 of the paper: maximum-likelihood EBM training with MCMC negatives, in one readable loop.

For t = 1..T: run K sampler transitions from the chains, draw a data batch, and take an Adam
step on ``mean E(data) − mean E(samples)`` (the Monte Carlo estimate of the negative
log-likelihood's gradient). Any sampler from :mod:`anila_core.samplers` plugs in unchanged.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .budget import resolve_device
from .config import TrainConfig
from .metrics import grid_kl, grid_log_probs, grid_tv, mmd
from .nets import MLPEnergy
from .samplers import AniLA, Langevin, PSGLD, Sampler, Trace
from .targets import make_target

__all__ = ["Trainer", "TrainingDiverged", "build_sampler", "train"]

CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite or exploding quantity; the message says when, what and where to resume from."""


def build_sampler(config: TrainConfig) -> Sampler:
    """The sampler a configuration names, with its hyperparameters."""
    common = dict(step_size=config.step_size, noise_scale=config.noise_scale)
    if config.sampler == "langevin":
        return Langevin(metropolis=config.metropolis, **common)
    if config.sampler == "anila":
        return AniLA(b=config.b, norm=config.norm, variant=config.variant, metropolis=config.metropolis, **common)
    return PSGLD(alpha=config.psgld_alpha, damping=config.psgld_damping, **common)


class Chains:
    """Where each iteration's chains start: fresh noise (short-run) or a replay buffer of persistent chains."""

    def __init__(self, config: TrainConfig, shape: tuple[int, ...], device: torch.device, generator: torch.Generator):
        self.config, self.shape, self.device, self.gen = config, shape, device, generator
        self.buffer = self.noise(config.buffer_size) if config.chains == "buffer" else None
        self._index: torch.Tensor | None = None

    def noise(self, n: int) -> torch.Tensor:
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
        if self.buffer is not None:
            self.buffer[self._index] = x


class Trainer:
    """One training run: model, sampler, chains, optimiser, and the state a checkpoint needs to resume exactly."""

    def __init__(self, config: TrainConfig, progress: bool = True):
        self.config = config.validate()
        if self.config.lr_decay_iters == 0:
            # fixed when the run starts, so that a resumed, longer run keeps the same schedule
            self.config = self.config.replace(lr_decay_iters=self.config.iters)
        c = self.config
        self.device = resolve_device(c.device)
        self.progress = progress
        torch.manual_seed(c.seed)
        self.target = make_target(c.target)
        self.model = MLPEnergy(self.target.dim, c.width, c.depth, c.activation).to(self.device)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if c.ema > 0 else None
        self.sampler = build_sampler(c)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        self.gen = torch.Generator(device=self.device).manual_seed(c.seed)
        self.chains = Chains(c, (self.target.dim,), self.device, self.gen)
        self.iteration = 0
        self.wall_s = 0.0
        self.history: list[dict] = []
        self.last_checkpoint: tuple[int, Path] | None = None
        self.samples: torch.Tensor | None = None  # the latest negative samples

    # ------------------------------------------------------------------ the loop

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def learning_rate(self, iteration: int) -> float:
        c = self.config
        if c.lr_schedule == "constant":
            return c.lr
        progress = min(iteration / c.lr_decay_iters, 1.0)
        return c.lr * (c.lr_min + (1 - c.lr_min) * 0.5 * (1 + math.cos(math.pi * progress)))

    def data_batch(self, n: int) -> torch.Tensor:
        x = self.target.sample(n, generator=self.gen).to(self.device)
        if self.config.data_noise > 0:
            x = x + self.config.data_noise * torch.randn(x.shape, generator=self.gen, device=self.device)
        return x

    def train_step(self, trace: Trace | None = None) -> dict:
        """One iteration of Algorithm 1; returns the scalars worth logging."""
        c = self.config
        x0 = self.chains.start(c.batch_size)
        x_neg = self.sampler.sample(self.energy, x0, c.n_steps, generator=self.gen, trace=trace)
        if c.clamp > 0:
            x_neg = x_neg.clamp(-c.clamp, c.clamp)
        self.chains.finish(x_neg)
        self.samples = x_neg
        x_pos = self.data_batch(c.batch_size)

        e_pos, e_neg = self.model(x_pos), self.model(x_neg)
        loss = e_pos.mean() - e_neg.mean()
        if c.energy_reg > 0:
            loss = loss + c.energy_reg * (e_pos.square().mean() + e_neg.square().mean())
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.iteration += 1
        if self.ema_model is not None:
            with torch.no_grad():
                for p_ema, p in zip(self.ema_model.parameters(), self.model.parameters()):
                    p_ema.lerp_(p, 1 - c.ema)
        stats = {
            "loss": loss.detach(),
            "energy_data": e_pos.detach().mean(),
            "energy_samples": e_neg.detach().mean(),
        }
        self._guard(stats, x_neg)
        return stats

    def _guard(self, stats: dict, x_neg: torch.Tensor) -> None:
        """Stop at the first non-finite or exploding quantity; never continue silently."""
        gap = stats["energy_data"] - stats["energy_samples"]
        checks = [
            (torch.isfinite(stats["loss"]), "the loss is not finite"),
            (torch.isfinite(stats["energy_data"]), "the energy of the data is not finite"),
            (torch.isfinite(stats["energy_samples"]), "the energy of the samples is not finite"),
            (torch.isfinite(x_neg).all(), "the negative samples are not finite"),
            (torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all(), "the parameters are not finite"),
            (gap.abs() <= self.config.max_energy_gap, f"the energy gap |E(data) − E(samples)| = {float(gap.abs()):.3g} exceeds max_energy_gap = {self.config.max_energy_gap:g}"),
        ]
        for ok, what in checks:
            if not bool(ok):
                self._diverged(what)

    def check_parameters(self) -> None:
        """Raise :class:`TrainingDiverged` if any parameter is NaN or infinite."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._diverged("the parameters are not finite")

    def _diverged(self, what: str) -> None:
        if self.last_checkpoint is None:
            where = "no checkpoint was written yet"
        else:
            where = f"the last good checkpoint is {self.last_checkpoint[1]} (iteration {self.last_checkpoint[0]})"
        raise TrainingDiverged(f"training diverged at iteration {self.iteration}: {what}; {where}")

    # ------------------------------------------------------------------ evaluation

    def eval_model(self) -> torch.nn.Module:
        return self.ema_model if self.ema_model is not None else self.model

    @torch.no_grad()
    def evaluate(self, stats: dict, trace: Trace | None) -> dict:
        """A row of diagnostics: energies and their gap, chain statistics, exact density distances."""
        c = self.config
        model = self.eval_model().eval()
        log_p = grid_log_probs(model, device=self.device)
        target_lp = grid_log_probs(self.target.energy)
        samples = self.sample_for_eval()
        exact = self.target.sample(len(samples), generator=torch.Generator().manual_seed(c.seed + 1))
        row = {
            "iter": self.iteration,
            "wall_s": round(self.wall_s, 3),
            "lr": self.learning_rate(self.iteration - 1),
            "loss": float(stats["loss"]),
            "energy_data": float(stats["energy_data"]),
            "energy_samples": float(stats["energy_samples"]),
            "energy_gap": float(stats["energy_data"] - stats["energy_samples"]),
            "grid_tv": grid_tv(log_p, target_lp),
            "grid_kl": grid_kl(log_p, target_lp),
            "mmd": mmd(samples, exact),
        }
        if trace is not None:
            row["grad_norm"] = float(sum(trace.mean_grad_norm) / len(trace.mean_grad_norm))
            if trace.clipped_share:
                row["clipped_share"] = float(sum(trace.clipped_share) / len(trace.clipped_share))
            if trace.acceptance_rate:
                row["acceptance"] = float(sum(trace.acceptance_rate) / len(trace.acceptance_rate))
        self.model.train()
        return row

    def sample_for_eval(self) -> torch.Tensor:
        """Model samples for the MMD: the buffer's chains, or fresh short-run chains."""
        n = self.config.eval_samples
        if self.chains.buffer is not None:
            return self.chains.buffer[:n].detach().cpu()
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed + 2)
        x0 = Chains(self.config, (self.target.dim,), self.device, gen).noise(n)
        return self.sampler.sample(self.eval_model(), x0, self.config.n_steps, generator=gen).cpu()

    # ------------------------------------------------------------------ running

    def run(self, iters: int | None = None, callback: Callable[["Trainer", dict], None] | None = None,
            on_checkpoint: Callable[["Trainer"], None] | None = None) -> list[dict]:
        """Train until iteration ``iters`` (default: the config's), evaluating every ``eval_every`` iterations.

        ``callback(trainer, row)`` runs after each evaluation (live plots in a notebook);
        ``on_checkpoint(trainer)`` every ``checkpoint_every`` iterations (the run directory).
        """
        c = self.config
        end = c.iters if iters is None else iters
        bar = tqdm(total=end, initial=self.iteration, desc=f"{c.sampler} on {c.target}", disable=not self.progress, leave=False)
        try:
            while self.iteration < end:
                evaluating = (self.iteration + 1) % c.eval_every == 0 or self.iteration + 1 == end
                trace = Trace() if evaluating else None
                start = time.perf_counter()
                stats = self.train_step(trace)
                self.wall_s += time.perf_counter() - start
                bar.update(1)
                if evaluating:
                    row = self.evaluate(stats, trace)
                    self.history.append(row)
                    bar.set_postfix(tv=f"{row['grid_tv']:.3f}", gap=f"{row['energy_gap']:.2f}")
                    if callback is not None:
                        callback(self, row)
                if on_checkpoint is not None and (self.iteration % c.checkpoint_every == 0 or self.iteration == end):
                    on_checkpoint(self)
        finally:
            bar.close()
        return self.history

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "wall_s": self.wall_s,
            "model": self.model.state_dict(),
            "ema_model": None if self.ema_model is None else self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.chains.buffer,
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint: format {state.get('format')!r} is not the supported format {CHECKPOINT_FORMAT}")
        try:
            self.model.load_state_dict(state["model"])
            if self.ema_model is not None:
                self.ema_model.load_state_dict(state["ema_model"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint: its model does not match this configuration's architecture ({err})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.chains.buffer is not None:
            self.chains.buffer = state["buffer"].to(self.device)
        self.gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.iteration = int(state["iteration"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])


def train(config: TrainConfig, callback=None, progress: bool = True) -> Trainer:
    """Train in memory (no files) and return the trainer; see :mod:`anila_core.runs` for run directories."""
    trainer = Trainer(config, progress=progress)
    trainer.run(callback=callback)
    return trainer
