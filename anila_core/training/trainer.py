"""Algorithm 1 of the paper: maximum-likelihood EBM training with MCMC negatives, in one readable loop.

For t = 1..T: run K sampler transitions from the chains, draw a data batch, and take an Adam
step on ``mean E(data) − mean E(samples)`` (the Monte Carlo estimate of the negative
log-likelihood's gradient). Any sampler from :mod:`anila_core.sampling.samplers` plugs in unchanged.
The data are a 2-D target (an MLP energy) or an image dataset (a ConvNet energy); under
``torchrun`` each process runs its own chains and DistributedDataParallel averages the
parameter gradients (see :mod:`anila_core.training.distributed`).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from anila_core import __version__

from anila_core.training import distributed
from anila_core.device import resolve_device
from anila_core.training.config import TrainConfig
from anila_core.sampling.compiled import use_fast_path
from anila_core.sampling.global_moves import independence_moves
from anila_core.sampling.distances import grid_kl, grid_log_probs, grid_tv, mmd
from anila_core.nets import MLPEnergy
from anila_core.sampling.kernel import SamplerState, Trace
from anila_core.sampling.registry import sampler_from_config
from anila_core.sampling.samplers import Sampler
from anila_core.training.sources import CHAIN_STREAM, DATA_STREAM, TRAIN_SPLITS, ImageSource, TargetSource, stream_seed
from anila_core.sampling.targets import make_target

__all__ = ["Trainer", "TrainingDiverged", "build_sampler", "build_energy", "train"]

CHECKPOINT_FORMAT = 1
#: notices already printed in this process: a notebook training two samplers says each once
_NOTICES_SHOWN: set[str] = set()


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite or exploding quantity; the message says when, what and where to resume from.

    ``iteration`` and ``cause`` hold the when and the what on their own (``None`` when unknown).
    """

    def __init__(self, message: str, iteration: int | None = None, cause: str | None = None):
        super().__init__(message)
        self.iteration, self.cause = iteration, cause


def build_sampler(config: TrainConfig) -> Sampler:
    """The sampler a configuration names, with its hyperparameters (:func:`~anila_core.sampling.registry.sampler_from_config`)."""
    return sampler_from_config(config)


def build_energy(config: TrainConfig, data_shape: tuple[int, ...]) -> torch.nn.Module:
    """The energy network: an MLP for points ``(d,)``, the ConvNet of :mod:`anila_core.images.convnets` for images ``(C, H, W)``."""
    if config.is_image:
        from anila_core.images.convnets import make_convnet

        return make_convnet(data_shape, config.conv_width, config.conv_activation, config.spectral_norm)
    return MLPEnergy(data_shape[0], config.width, config.depth, config.activation)


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
        self.has_sampler_state = torch.zeros(config.buffer_size, dtype=torch.bool, device=device) if self.buffer is not None else None
        self._index: torch.Tensor | None = None
        self._kept: torch.Tensor | None = None

    def noise(self, n: int) -> torch.Tensor:
        c = self.config
        if c.init == "uniform":
            u = torch.rand((n, *self.shape), generator=self.gen, device=self.device)
            return (2 * u - 1) * c.init_scale
        return c.init_scale * torch.randn((n, *self.shape), generator=self.gen, device=self.device)

    def start(self, n: int) -> torch.Tensor:
        """Starting points for ``n`` chains; remembers which buffer slots they came from and which were restarted."""
        if self.buffer is None:
            return self.noise(n)
        self._index = torch.randint(len(self.buffer), (n,), generator=self.gen, device=self.device)
        x = self.buffer[self._index].clone()
        restart = torch.rand(n, generator=self.gen, device=self.device) < self.config.reinit
        self._kept = ~restart & self.has_sampler_state[self._index]
        return torch.where(restart.view(-1, *[1] * len(self.shape)), self.noise(n), x)

    def sampler_start(self, sampler: Sampler, energy_fn, x0: torch.Tensor) -> SamplerState:
        """The sampler's state at ``x0``: evaluated afresh (the energy changed since the last iteration), with each buffer chain's own sampler state carried over."""
        state = sampler.init(energy_fn, x0, allow_nonfinite=True)
        if self.buffer is not None and self.sampler_state:
            kept = self._kept
            state.extra = {k: torch.where(kept.view(-1, *[1] * (v.ndim - 1)), self.sampler_state[k][self._index], v)
                           for k, v in state.extra.items()}
        return state

    def finish(self, x: torch.Tensor, sampler_state: dict[str, torch.Tensor]) -> None:
        """Put the chains back into their buffer slots, with their sampler state."""
        if self.buffer is None:
            return
        self.buffer[self._index] = x
        for key, value in sampler_state.items():
            if key not in self.sampler_state:
                self.sampler_state[key] = torch.zeros((len(self.buffer), *value.shape[1:]), dtype=value.dtype, device=self.device)
            self.sampler_state[key][self._index] = value
        if sampler_state:
            self.has_sampler_state[self._index] = True


class Trainer:
    """One training run: model, sampler, chains, optimiser, and the state a checkpoint needs to resume exactly.

    Under torchrun every rank builds the same trainer (same model initialisation; DDP also
    broadcasts rank 0's parameters) with its own chain and data streams; only rank 0
    evaluates. ``trainer.dist`` says which rank this is.
    """

    def __init__(self, config: TrainConfig, progress: bool = True):
        self.config = config.validate()
        if self.config.lr_decay_iters == 0:
            # fixed when the run starts, so that a resumed, longer run keeps the same schedule
            self.config = self.config.replace(lr_decay_iters=self.config.iters)
        c = self.config
        self.dist = distributed.current()
        self.device = distributed.device_for_rank(resolve_device(c.device), self.dist)
        self.progress = progress and self.dist.is_main
        if c.is_image:
            from anila_core.images.datasets import load_dataset

            self.target = None
            self.dataset = load_dataset(c.dataset, c.data_root or None, c.image_size or None, split=TRAIN_SPLITS[c.dataset])
            self.data_shape = self.dataset.shape
        else:
            self.target = make_target(c.target)
            self.dataset = None
            self.data_shape = (self.target.dim,)
        torch.manual_seed(c.seed)  # the model's initialisation: the same on every rank
        self.model = build_energy(c, self.data_shape).to(self.device)
        self.channels_last = c.channels_last and c.is_image
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if c.ema > 0 else None
        self.sampler = build_sampler(c)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        self.gen = torch.Generator(device=self.device).manual_seed(stream_seed(c.seed, self.dist.rank, CHAIN_STREAM))
        if c.is_image:
            self.source = ImageSource(self.dataset, stream_seed(c.seed, self.dist.rank, DATA_STREAM), self.device)
        else:
            self.source = TargetSource(self.target, self.gen)
        self.chains = Chains(c, self.data_shape, self.device, self.gen)
        self._setup_forward()
        self.iteration = 0
        self.wall_s = 0.0
        self.history: list[dict] = []
        self.last_checkpoint: tuple[int, Path] | None = None
        # --on-divergence rollback: the learning rate's factor (halved at each rollback), what
        # happened, and the last good state kept in memory (taken at each checkpoint)
        self.lr_factor = 1.0
        self.rollbacks: list[dict] = []
        self._good_state: dict | None = None
        self.samples: torch.Tensor | None = None  # the latest negative samples
        self._scorer = None  # built at the first FID evaluation (loads a feature network)
        self._scorer_unavailable: str | None = None

    def _setup_forward(self) -> None:
        """The networks the loss and the sampler call: DDP, compile and bf16 autocast are wrappers around one module."""
        c = self.config
        self.amp = c.amp == "bf16" and self.device.type == "cuda"
        if c.amp == "bf16" and not self.amp and self.dist.is_main:
            print(f"notice: --amp bf16 applies on CUDA only; this run on {self.device} computes in float32", file=sys.stderr)
        # bf16 energies are too coarse for a Metropolis test's energy differences: sample in float32 then
        self.amp_sampler = self.amp and not c.metropolis
        train_net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        sample_net = self.model  # the sampler needs no gradient sync: the bare module, never DDP
        if c.compile:
            train_net = torch.compile(train_net)
            sample_net = train_net if not self.dist.enabled else torch.compile(self.model)
        self._train_net, self._sample_net = train_net, sample_net
        # One forward over data and samples together: DDP expects one forward per backward,
        # and spectral norm's power iteration then runs once per step. The 2-D loop keeps its
        # two forwards, so its results are bit for bit those of earlier versions.
        self._joint_forward = c.is_image or self.dist.enabled
        # compiled sampling transitions (anila_core.sampling.compiled), by default only where the run amortises the compile
        self.fast = use_fast_path(c.fast, c.iters * c.n_steps, self.device, c.is_image, c.compile)

    # ------------------------------------------------------------------ the loop

    def _forward(self, net, x: torch.Tensor, amp: bool) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return net(x).float()
        return net(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) as the sampler sees it (bf16 autocast with ``--amp bf16`` on CUDA; the result is float32)."""
        return self._forward(self._sample_net, x, self.amp_sampler)

    def eval_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of the evaluation model (the EMA when on), with the sampler's precision."""
        model = self.eval_model()
        net = self._sample_net if model is self.model else model
        return self._forward(net, x, self.amp_sampler)

    def learning_rate(self, iteration: int) -> float:
        c = self.config
        if c.lr_schedule == "constant":
            return c.lr * self.lr_factor
        progress = min(iteration / c.lr_decay_iters, 1.0)
        return c.lr * (c.lr_min + (1 - c.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))) * self.lr_factor

    def data_batch(self, n: int) -> torch.Tensor:
        x = self.source.sample(n, self.device)
        if self.config.data_noise > 0:
            x = x + self.config.data_noise * torch.randn(x.shape, generator=self.gen, device=self.device)
        return x

    def train_step(self, trace: Trace | None = None) -> dict:
        """One iteration of Algorithm 1; returns the scalars worth logging."""
        c = self.config
        x0 = self.chains.start(c.batch_size)
        if c.global_moves:
            x0, global_accept = independence_moves(self.energy, x0, c.global_moves, c.init_scale, self.gen)
        state = self.chains.sampler_start(self.sampler, self.energy, x0)
        # allow_nonfinite: non-finite chains are the divergence guard's to catch, with the run's policy (stop or roll back);
        # evaluate_final=False: the next iteration's energy differs, so the last gradient would be thrown away
        state = self.sampler.run(self.energy, state, c.n_steps, generator=self.gen, trace=trace, fast=self.fast,
                                 evaluate_final=False, allow_nonfinite=True)
        x_neg = state.x
        if c.clamp > 0:
            x_neg = x_neg.clamp(-c.clamp, c.clamp)
        self.chains.finish(x_neg, state.extra)
        self.samples = x_neg
        x_pos = self.data_batch(c.batch_size)

        if self._joint_forward:
            e_pos, e_neg = self._forward(self._train_net, torch.cat([x_pos, x_neg]), self.amp).split([len(x_pos), len(x_neg)])
        else:
            e_pos, e_neg = self._forward(self._train_net, x_pos, self.amp), self._forward(self._train_net, x_neg, self.amp)
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
        if c.global_moves:
            stats["global_accept"] = global_accept
        samples_finite = torch.isfinite(x_neg).all()
        if self.dist.enabled:
            stats, samples_finite = self._reduce_stats(stats, samples_finite)
        self._guard(stats, samples_finite)
        return stats

    def _reduce_stats(self, stats: dict, samples_finite: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Average the logged scalars over the ranks, so every rank's guard takes the same decision (none stops alone)."""
        keys = list(stats)
        packed = torch.stack([stats[k].float() for k in keys] + [(~samples_finite).float()])
        distributed.all_reduce_sum(packed)
        world = self.dist.world_size
        return {k: packed[i] / world for i, k in enumerate(keys)}, packed[-1] == 0

    def _guard(self, stats: dict, samples_finite: torch.Tensor) -> None:
        """Stop at the first non-finite or exploding quantity; never continue silently."""
        gap = stats["energy_data"] - stats["energy_samples"]
        checks = [
            (torch.isfinite(stats["loss"]), "the loss is not finite"),
            (torch.isfinite(stats["energy_data"]), "the energy of the data is not finite"),
            (torch.isfinite(stats["energy_samples"]), "the energy of the samples is not finite"),
            (samples_finite, "the negative samples are not finite"),
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
        raise TrainingDiverged(f"training diverged at iteration {self.iteration}: {what}; {where}", self.iteration, what)

    # ------------------------------------------------------------------ evaluation

    def eval_model(self) -> torch.nn.Module:
        return self.ema_model if self.ema_model is not None else self.model

    def is_fid_point(self, iteration: int, end: int) -> bool:
        """Whether the evaluation after ``iteration`` computes FID/KID: every ``fid_every`` iterations and at the end."""
        c = self.config
        if not c.is_image:
            return False
        if iteration == end:
            return True
        every = c.fid_every or c.eval_every
        return iteration % every == 0

    def _is_eval_point(self, iteration: int, end: int) -> bool:
        if not self.dist.is_main:
            return False  # rank 0 evaluates; the others go on and wait for it at the next all-reduce
        c = self.config
        return iteration % c.eval_every == 0 or iteration == end or self.is_fid_point(iteration, end)

    @torch.no_grad()
    def evaluate(self, stats: dict, trace: Trace | None, fid: bool | None = None) -> dict:
        """A row of diagnostics: energies and their gap, chain statistics, and the data's own distances.

        2-D targets: exact density distances (grid TV and KL) and the MMD to exact samples.
        Images: FID/KID (and the digits' class coverage) when ``fid`` (default: at
        ``fid_every`` iterations and at the end).
        """
        c = self.config
        model = self.eval_model().eval()
        row = {
            "iter": self.iteration,
            "wall_s": round(self.wall_s, 3),
            "lr": self.learning_rate(self.iteration - 1),
            "loss": float(stats["loss"]),
            "energy_data": float(stats["energy_data"]),
            "energy_samples": float(stats["energy_samples"]),
            "energy_gap": float(stats["energy_data"] - stats["energy_samples"]),
        }
        if c.is_image:
            if fid is None:
                fid = self.is_fid_point(self.iteration, c.iters)
            if fid:
                row.update(self.image_scores())
        else:
            log_p = grid_log_probs(model, device=self.device)
            target_lp = grid_log_probs(self.target.energy)
            samples = self.sample_for_eval()
            exact = self.target.sample(len(samples), generator=torch.Generator().manual_seed(c.seed + 1))
            row.update(grid_tv=grid_tv(log_p, target_lp), grid_kl=grid_kl(log_p, target_lp), mmd=mmd(samples, exact))
        if "global_accept" in stats:
            row["global_accept"] = float(stats["global_accept"])
        if trace is not None:
            row["grad_norm"] = float(sum(trace.mean_grad_norm) / len(trace.mean_grad_norm))
            if c.is_image:
                # per-coordinate scale of |∇E|: what AniLA's threshold b is compared with
                row["grad_rms"] = row["grad_norm"] / math.sqrt(math.prod(self.data_shape))
            if trace.clipped_share:
                row["clipped_share"] = float(sum(trace.clipped_share) / len(trace.clipped_share))
            if trace.acceptance_rate:
                row["acceptance"] = float(sum(trace.acceptance_rate) / len(trace.acceptance_rate))
        self.model.train()
        return row

    def sample_for_eval(self, n: int | None = None) -> torch.Tensor:
        """Model samples for the metrics (CPU): the buffer's chains, or fresh short-run chains from noise.

        ``n`` defaults to ``eval_samples`` for 2-D targets and ``fid_samples`` for images.
        Fresh chains use a generator seeded ``seed + 2``: the same start and noise at every
        evaluation, so a metric's curve shows the model changing, not the draw.
        """
        c = self.config
        n = n or (c.fid_samples if c.is_image else c.eval_samples)
        if self.chains.buffer is not None:
            return self.chains.buffer[:n].detach().cpu()
        gen = torch.Generator(device=self.device).manual_seed(c.seed + 2)
        chains = Chains(c, self.data_shape, self.device, gen)
        if not c.is_image:
            return self.sampler.sample(self.eval_model(), chains.noise(n), c.n_steps, generator=gen, allow_nonfinite=True).cpu()
        was_training = self.eval_model().training
        self.eval_model().eval()
        out = []
        for start in range(0, n, c.batch_size):  # in training-sized batches: memory stays that of training
            x = self.sampler.sample(self.eval_energy, chains.noise(min(c.batch_size, n - start)), c.n_steps, generator=gen, allow_nonfinite=True)
            out.append((x.clamp(-c.clamp, c.clamp) if c.clamp > 0 else x).float().cpu())
        self.eval_model().train(was_training)
        return torch.cat(out)

    def scorer(self):
        """The FID/KID scorer of this run's dataset, built once; ``None`` (after one printed notice) when Inception is unavailable."""
        from anila_core.images.evaluation import make_scorer
        from anila_core.images.metrics import InceptionUnavailableError

        if self._scorer is None and self._scorer_unavailable is None:
            real = self.source.reference(self.config.fid_samples, seed=self.config.seed + 3)
            try:
                # enable_grad: the digits classifier trains on first use, and evaluation runs under no_grad
                with torch.enable_grad():
                    self._scorer = make_scorer(self.config.dataset, real, self.device, self.config.data_root or None)
            except InceptionUnavailableError as err:
                self._scorer_unavailable = str(err)
                notice = (f"notice: FID/KID for {self.config.dataset} are not computed (training goes on; the metrics rows "
                          f"and final.json say \"fid\": null). Why: {err}")
                if self.dist.is_main and notice not in _NOTICES_SHOWN:
                    _NOTICES_SHOWN.add(notice)
                    print(notice, file=sys.stderr, flush=True)
        return self._scorer

    def image_scores(self) -> dict:
        """FID/KID of ``fid_samples`` model samples against as many real images (``None`` when the features are unavailable)."""
        scorer = self.scorer()
        if scorer is None:
            return {"fid": None, "kid": None, "kid_std": None}
        return scorer.score(self.sample_for_eval(self.config.fid_samples))

    def step_size_image(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler's ``γ/ε`` per pixel at images ``x`` (default: the latest negative samples), averaged over batch and channels: ``(H, W)``."""
        from anila_core.images.evaluation import step_size_image

        if not self.config.is_image:
            raise ValueError("step_size_image: only for image runs (the 2-D map is plots.plot_step_size_map)")
        x = self.samples if x is None else x.to(self.device)
        if x is None:
            raise ValueError("x: no negative samples yet; train first or pass images")
        model = self.eval_model()
        was_training = model.training
        model.eval()  # a look must not change the model: spectral norm's power iteration runs in training mode only
        try:
            return step_size_image(self.sampler, self.eval_energy, x)
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------ running

    def run(self, iters: int | None = None, callback: Callable[["Trainer", dict], None] | None = None,
            on_checkpoint: Callable[["Trainer"], None] | None = None,
            on_rollback: Callable[["Trainer", dict], None] | None = None) -> list[dict]:
        """Train until iteration ``iters`` (default: the config's), evaluating every ``eval_every`` iterations.

        ``callback(trainer, row)`` runs after each evaluation (live plots in a notebook);
        ``on_checkpoint(trainer)`` every ``checkpoint_every`` iterations (the run directory),
        on every rank: saving a distributed run gathers every rank's chain state.

        A divergence raises :class:`TrainingDiverged`, or with ``on_divergence="rollback"``
        restores the last good state (a copy in memory of the state at the last checkpoint, or
        at the start of this call), halves the learning rate, records it in ``rollbacks``, calls
        ``on_rollback(trainer, record)`` and goes on; past ``max_rollbacks`` it raises.
        """
        c = self.config
        end = c.iters if iters is None else iters
        rollback = c.on_divergence == "rollback"
        if rollback:
            self.check_parameters()
            self._good_state = self._snapshot()
        desc = f"{c.sampler} on {c.data_name}"
        bar = tqdm(total=end, initial=self.iteration, desc=desc, disable=not self.progress, leave=False)
        try:
            while self.iteration < end:
                try:
                    self._run_iteration(end, bar, callback, on_checkpoint, rollback)
                except TrainingDiverged as err:
                    if not rollback:
                        raise
                    record = self._roll_back(err)
                    bar.n = self.iteration
                    bar.refresh()
                    if on_rollback is not None:
                        on_rollback(self, record)
        finally:
            bar.close()
        return self.history

    def _run_iteration(self, end: int, bar, callback, on_checkpoint, keep_good_state: bool) -> None:
        c = self.config
        evaluating = self._is_eval_point(self.iteration + 1, end)
        trace = Trace() if evaluating else None
        start = time.perf_counter()
        stats = self.train_step(trace)
        self.wall_s += time.perf_counter() - start
        bar.update(1)
        if evaluating:
            row = self.evaluate(stats, trace, fid=self.is_fid_point(self.iteration, end))
            self.history.append(row)
            if c.is_image:
                bar.set_postfix(gap=f"{row['energy_gap']:.2f}", **({"fid": f"{row['fid']:.1f}"} if row.get("fid") is not None else {}))
            else:
                bar.set_postfix(tv=f"{row['grid_tv']:.3f}", gap=f"{row['energy_gap']:.2f}")
            if callback is not None:
                callback(self, row)
        if self.iteration % c.checkpoint_every == 0 or self.iteration == end:
            if on_checkpoint is not None:
                on_checkpoint(self)
            if keep_good_state:
                self.check_parameters()
                self._good_state = self._snapshot()

    # ------------------------------------------------------------------ rollback

    def _snapshot(self) -> dict:
        """A copy of this rank's state that a rollback returns to (nothing is gathered across ranks)."""
        return copy.deepcopy({
            "iteration": self.iteration,
            "history": len(self.history),
            "model": self.model.state_dict(),
            "ema_model": None if self.ema_model is None else self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "chains": self._chain_state(),
        })

    def _restore(self, good: dict) -> None:
        good = copy.deepcopy(good)  # the kept state stays intact for a later rollback
        self.model.load_state_dict(good["model"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(good["ema_model"])
        self.optimizer.load_state_dict(good["optimizer"])
        self._load_chain_state(good["chains"])
        self.iteration = good["iteration"]
        del self.history[good["history"]:]

    def _roll_back(self, err: TrainingDiverged) -> dict:
        """Return to the last good state with half the learning rate; raise ``err`` (extended) past ``max_rollbacks``."""
        c = self.config
        if len(self.rollbacks) >= c.max_rollbacks or self._good_state is None:
            raise TrainingDiverged(f"{err}; gave up after {len(self.rollbacks)} rollback(s) (max_rollbacks = {c.max_rollbacks}; "
                                   f"the learning rate was {self.lr_factor:g} × lr)", err.iteration, err.cause) from None
        self._restore(self._good_state)
        self.lr_factor *= 0.5
        record = {"iter": err.iteration, "cause": err.cause or str(err), "restored_iter": self.iteration,
                  "lr_factor": self.lr_factor, "lr": self.learning_rate(self.iteration)}
        self.rollbacks.append(record)
        if self.dist.is_main:
            print(f"warning: rollback at iteration {record['iter']}: {record['cause']}; back to the state of iteration "
                  f"{self.iteration}, learning rate now {record['lr']:.3g} (rollback {len(self.rollbacks)} of at most "
                  f"{c.max_rollbacks})", file=sys.stderr, flush=True)
        return record

    # ------------------------------------------------------------------ state

    def _chain_state(self) -> dict:
        """What differs between ranks: chain and data streams, the replay buffer, the global RNG."""
        return {
            "buffer": None if self.chains.buffer is None else self.chains.buffer.detach().cpu(),
            "sampler_state": self._buffer_sampler_state(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "source": self.source.state_dict(),
        }

    def _buffer_sampler_state(self) -> dict | None:
        """The buffer chains' sampler state (pSGLD's ``v``) and which slots hold one, on the CPU; ``None`` without a buffer."""
        if self.chains.buffer is None:
            return None
        return {"state": {k: v.detach().cpu() for k, v in self.chains.sampler_state.items()},
                "has_state": self.chains.has_sampler_state.detach().cpu()}

    def _load_chain_state(self, chains: dict) -> None:
        """The inverse of :meth:`_chain_state`."""
        if self.chains.buffer is not None:
            self.chains.buffer = chains["buffer"].to(self.device)
            saved = chains.get("sampler_state") or {"state": {}, "has_state": torch.zeros(len(self.chains.buffer), dtype=torch.bool)}
            self.chains.sampler_state = {k: v.to(self.device) for k, v in saved["state"].items()}
            self.chains.has_sampler_state = saved["has_state"].to(self.device)
        self.gen.set_state(chains["generator"])
        torch.set_rng_state(chains["torch_rng"])
        self.source.load_state_dict(chains.get("source") or {})

    def state_dict(self) -> dict:
        """Everything needed to resume exactly. Under torchrun every rank must call it (it gathers the ranks' chain states)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "anila_core_version": __version__,
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "wall_s": self.wall_s,
            "model": self.model.state_dict(),
            "ema_model": None if self.ema_model is None else self.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.chains.buffer,
            "sampler_state": self._buffer_sampler_state(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "lr_factor": self.lr_factor,
            "rollbacks": self.rollbacks,
        }
        if self.config.is_image:
            state["source"] = self.source.state_dict()
        if self.dist.enabled:
            state["ranks"] = distributed.gather_objects(self._chain_state())
        return state

    def load_state_dict(self, state: dict) -> None:
        fmt = state.get("format")
        if fmt is None:
            raise ValueError(f"checkpoint: has no format number, so no anila_core Trainer wrote it; expected an anila_core "
                             f"checkpoint of format {CHECKPOINT_FORMAT}")
        if fmt != CHECKPOINT_FORMAT:
            writer = state.get("anila_core_version")
            by = f" (written by anila_core {writer})" if writer else ""
            raise ValueError(f"checkpoint: format {fmt!r}{by} cannot be read by anila_core {__version__}, "
                             f"which reads format {CHECKPOINT_FORMAT}; resume it with the version that wrote it")
        for name, model in (("model", self.model), ("ema_model", self.ema_model)):
            if model is None:
                continue
            mismatch = _state_mismatch(model, state.get(name))
            if mismatch:
                raise ValueError(f"checkpoint: its {'EMA ' if name == 'ema_model' else ''}model does not match this configuration's "
                                 f"architecture: {mismatch}; expected a checkpoint written with the same network settings")
            try:
                model.load_state_dict(state[name])
            except RuntimeError as err:
                raise ValueError(f"checkpoint: its model does not match this configuration's architecture ({err})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        mine = self._own_chain_state(state)
        if mine is not None:
            self._load_chain_state(mine)
        self.iteration = int(state["iteration"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])
        self.lr_factor = float(state.get("lr_factor", 1.0))
        self.rollbacks = list(state.get("rollbacks", []))

    def _own_chain_state(self, state: dict) -> dict | None:
        """This rank's chain state in a checkpoint; ``None`` (fresh chains, with a notice) when it was saved with fewer ranks."""
        ranks = state.get("ranks")
        if ranks is not None and self.dist.rank < len(ranks):
            return ranks[self.dist.rank]
        if self.dist.rank == 0:
            return {"buffer": state["buffer"], "sampler_state": state.get("sampler_state"), "generator": state["generator"],
                    "torch_rng": state["torch_rng"], "source": state.get("source")}
        print(f"notice: rank {self.dist.rank}: the checkpoint holds chain states for {len(ranks or [None])} rank(s); "
              "this rank starts fresh chains, so the resumed run is not bit-identical to an uninterrupted one", file=sys.stderr)
        return None


def _state_mismatch(model: torch.nn.Module, saved) -> str:
    """How a saved ``state_dict`` differs from ``model``'s in names and shapes ('' when it fits)."""
    if not isinstance(saved, dict):
        return f"the checkpoint holds no weights for it (got {type(saved).__name__})"
    mine = model.state_dict()
    problems = []
    for key in list(mine) + [k for k in saved if k not in mine]:
        if key not in saved:
            problems.append(f"{key} is missing from the checkpoint")
        elif key not in mine:
            problems.append(f"the checkpoint's {key} has no place in this network")
        elif isinstance(saved[key], torch.Tensor) and tuple(saved[key].shape) != tuple(mine[key].shape):
            problems.append(f"{key} has shape {tuple(saved[key].shape)} in the checkpoint, {tuple(mine[key].shape)} in this configuration")
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def train(config: TrainConfig, callback=None, progress: bool = True) -> Trainer:
    """Train in memory (no files) and return the trainer; see :mod:`anila_core.training.runs` for run directories."""
    trainer = Trainer(config, progress=progress)
    trainer.run(callback=callback)
    return trainer
