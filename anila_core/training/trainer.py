"""Algorithm 1 of the paper: maximum-likelihood EBM training with MCMC negatives, in one readable loop.

For t = 1..T: run K sampler transitions from the chains, draw a data batch, and take an Adam
step on ``mean E(data) − mean E(samples)`` (the Monte Carlo estimate of the negative
log-likelihood's gradient). Any sampler from :mod:`anila_core.sampling.samplers` plugs in unchanged.
The data are a 2-D target or points of a file (an MLP energy) or images (a ConvNet energy), and
the energy may be a network of your own (:mod:`~anila_core.training.user_energy`); under
``torchrun`` each process runs its own chains and DistributedDataParallel averages the
parameter gradients (see :mod:`anila_core.training.distributed`).

The parts live next door: the chains in :mod:`~anila_core.training.chains`, the networks'
wrappers in :mod:`~anila_core.training.networks`, the diagnostics in
:mod:`~anila_core.training.evaluation`, checkpoints in :mod:`~anila_core.training.state`
and divergence handling in :mod:`~anila_core.training.guard`.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from anila_core.device import resolve_device
from anila_core.processes import torch_threads, training_threads
from anila_core.sampling.compile_rule import compiles
from anila_core.sampling.global_moves import independence_moves
from anila_core.sampling.kernel import Trace
from anila_core.sampling.registry import sampler_from_config
from anila_core.sampling.samplers import Sampler
from anila_core.sampling.targets import make_target
from anila_core.training import distributed, evaluation, state
from anila_core.training.chains import Chains
from anila_core.training.config import TrainConfig
from anila_core.training.guard import Guard, TrainingDiverged, optimizer_overflow, parameters_finite, roll_back, step_problem
from anila_core.training.networks import Networks, build_energy
from anila_core.training.file_sources import PointsSource, load_file_data
from anila_core.training.sources import CHAIN_STREAM, DATA_STREAM, TRAIN_SPLITS, ImageSource, TargetSource, stream_seed
from anila_core.training.user_energy import check_energy, energy_label, given_energy_spec

__all__ = ["Trainer", "build_sampler", "train"]


def build_sampler(config: TrainConfig) -> Sampler:
    """The sampler a configuration names, with its hyperparameters (:func:`~anila_core.sampling.registry.sampler_from_config`)."""
    return sampler_from_config(config)


class Trainer:
    """One training run: model, sampler, chains, optimiser, and the state a checkpoint needs to resume exactly.

    Under torchrun every rank builds the same trainer (same model initialisation; DDP also
    broadcasts rank 0's parameters) with its own chain and data streams; only rank 0
    evaluates. ``trainer.dist`` says which rank this is.

    ``energy``: a ``torch.nn.Module`` of your own to train instead of the network the config
    builds (it is trained in place). The run records ``energy = "in-memory:<its class>"``;
    resuming it needs the module again (``Run(out, resume=True, energy=...)``). A module that
    can be imported is better named in ``config.energy`` (``"module.path:Name"``): a run then
    rebuilds it by itself, from the command line too.
    """

    def __init__(self, config: TrainConfig, progress: bool = True, energy: torch.nn.Module | None = None):
        self.config = config.validate()
        if energy is not None:
            self.config = self.config.replace(energy=given_energy_spec(self.config.energy, energy))
        if self.config.lr_decay_iters == 0:
            # fixed when the run starts, so that a resumed, longer run keeps the same schedule
            self.config = self.config.replace(lr_decay_iters=self.config.iters)
        c = self.config
        self.dist = distributed.current()
        self.device = distributed.device_for_rank(resolve_device(c.device), self.dist)
        self.progress = progress and self.dist.is_main
        self.target, self.dataset, self.held_out, self.data_shape, self.data_fingerprint = _training_data(c)
        torch.manual_seed(c.seed)  # the model's initialisation: the same on every rank
        self.model = build_energy(c, self.data_shape, energy).to(self.device)
        if c.energy:  # a network of your own: one energy per sample, differentiable, before any step is taken
            check_energy(self.model, self._probe_points().to(self.device), energy_label(c.energy))
        if c.channels_last and c.is_image:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if c.ema > 0 else None
        self.sampler = build_sampler(c)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        self.gen = torch.Generator(device=self.device).manual_seed(stream_seed(c.seed, self.dist.rank, CHAIN_STREAM))
        if c.is_points:
            self.source = PointsSource(self.dataset, stream_seed(c.seed, self.dist.rank, DATA_STREAM), self.device)
        elif c.is_image:
            self.source = ImageSource(self.dataset, stream_seed(c.seed, self.dist.rank, DATA_STREAM), self.device, held_out=self.held_out)
        else:
            self.source = TargetSource(self.target, self.gen)
        self.chains = Chains(c, self.data_shape, self.device, self.gen)
        self.nets = Networks(self.model, c, self.device, self.dist)
        # compiled sampling transitions (anila_core.sampling.compiled), by default only where the run amortises the
        # compile; decided here, when the run is created, and kept in its checkpoint, so a longer resumed run keeps it
        self.fast = compiles(c.fast, self.model, self.device, c.iters * c.n_steps, network_compiled=c.compile)
        self.iteration = 0
        self.wall_s = 0.0
        self.history: list[dict] = []
        self.guard = Guard()
        # on_divergence="rollback": the learning rate's factor (halved at each rollback) and what happened
        self.lr_factor = 1.0
        self.rollbacks: list[dict] = []
        self.samples: torch.Tensor | None = None  # the latest negative samples
        self.scoring = evaluation.ImageScoring()  # its feature network is built at the first FID evaluation

    # ------------------------------------------------------------------ the loop

    def run(self, iters: int | None = None, callback: Callable[["Trainer", dict], None] | None = None,
            on_checkpoint: Callable[["Trainer"], None] | None = None,
            on_rollback: Callable[["Trainer", dict], None] | None = None) -> list[dict]:
        """Train until iteration ``iters`` (default: the config's), evaluating every ``eval_every`` iterations.

        ``callback(trainer, row)`` runs after each evaluation (live plots in a notebook);
        ``on_checkpoint(trainer)`` every ``checkpoint_every`` iterations (the run directory),
        on every rank: saving a distributed run gathers every rank's chain state.

        A divergence raises :class:`TrainingDiverged`, or with ``on_divergence="rollback"``
        restores the last good state (a copy in memory of the state at the last checkpoint, or
        at the start of this call, taken only while the parameters are finite), halves the
        learning rate, records it in ``rollbacks``, calls ``on_rollback(trainer, record)`` and
        goes on; past ``max_rollbacks``, or with no finite state to return to, it raises.

        On a CPU the loop runs on one torch thread (:func:`anila_core.processes.training_threads`
        says why), whoever calls it: a notebook, ``compare``'s workers or a sweep's cells; the
        caller's setting is restored after it.
        """
        with torch_threads(training_threads(self.device)):
            return self._run(iters, callback, on_checkpoint, on_rollback)

    def _run(self, iters, callback, on_checkpoint, on_rollback) -> list[dict]:
        c = self.config
        end = c.iters if iters is None else iters
        rollback = c.on_divergence == "rollback"
        if rollback:  # the state a first rollback returns to, if finite (else one of an earlier call, or none)
            self.guard.keep_state_of(self)
        bar = tqdm(total=end, initial=self.iteration, desc=f"{c.sampler} on {c.data_name}", disable=not self.progress, leave=False)
        try:
            while self.iteration < end:
                evaluating = self._is_eval_point(self.iteration + 1, end)
                try:
                    trace = Trace() if evaluating else None
                    start = time.perf_counter()
                    stats = self.train_step(trace)  # negatives, a data batch, the loss, Adam's step, the guard
                    self.wall_s += time.perf_counter() - start
                    bar.update(1)
                    if evaluating:
                        row = self.evaluate(stats, trace, fid=self.is_fid_point(self.iteration, end))
                        self.history.append(row)
                        _show(bar, row, c)
                        if callback is not None:
                            callback(self, row)
                    if self.iteration % c.checkpoint_every == 0 or self.iteration == end:
                        if on_checkpoint is not None:
                            on_checkpoint(self)
                        if rollback:
                            self._keep_good_state()
                except TrainingDiverged as err:
                    if not rollback:
                        raise
                    record = roll_back(self, err)  # or raises: no finite state left, or max_rollbacks spent
                    bar.n = self.iteration
                    bar.refresh()
                    if on_rollback is not None:
                        on_rollback(self, record)
        finally:
            bar.close()
        return self.history

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

        e_pos, e_neg = self.nets.training_energies(x_pos, x_neg)
        loss = e_pos.mean() - e_neg.mean()
        if c.energy_reg > 0:
            loss = loss + c.energy_reg * (e_pos.square().mean() + e_neg.square().mean())
        overflow = self._optimizer_step(loss)
        self.iteration += 1
        if overflow is not None:
            raise self.guard.error(self.iteration, overflow)
        self._update_ema()

        stats = {"loss": loss.detach(), "energy_data": e_pos.detach().mean(), "energy_samples": e_neg.detach().mean()}
        if c.global_moves:
            stats["global_accept"] = global_accept
        samples_finite = torch.isfinite(x_neg).all()
        if self.dist.enabled:
            stats, samples_finite = self._reduce_stats(stats, samples_finite)
        self._guard(stats, samples_finite)
        return stats

    def _optimizer_step(self, loss: torch.Tensor) -> str | None:
        """Adam's step on ``loss`` at this iteration's learning rate; the divergence cause if the update overflowed, else ``None``."""
        lr = self.learning_rate(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        try:
            self.optimizer.step()
        except RuntimeError as err:
            cause = optimizer_overflow(err, lr)
            if cause is None:
                raise
            return cause
        return None

    def _update_ema(self) -> None:
        if self.ema_model is not None:
            with torch.no_grad():
                for p_ema, p in zip(self.ema_model.parameters(), self.model.parameters()):
                    p_ema.lerp_(p, 1 - self.config.ema)

    def _reduce_stats(self, stats: dict, samples_finite: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Average the logged scalars over the ranks, so every rank's guard takes the same decision (none stops alone)."""
        keys = list(stats)
        packed = torch.stack([stats[k].float() for k in keys] + [(~samples_finite).float()])
        distributed.all_reduce_sum(packed)
        world = self.dist.world_size
        return {k: packed[i] / world for i, k in enumerate(keys)}, packed[-1] == 0

    def _guard(self, stats: dict, samples_finite: torch.Tensor) -> None:
        """Stop at the first non-finite or exploding quantity; never continue silently."""
        params_finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        what = step_problem(stats, samples_finite, params_finite, self.config.max_energy_gap, self.learning_rate(self.iteration - 1))
        if what is not None:
            raise self.guard.error(self.iteration, what)

    def check_parameters(self) -> None:
        """Raise :class:`TrainingDiverged` if any parameter is NaN or infinite."""
        if not parameters_finite(self.model):
            raise self.guard.error(self.iteration, "the parameters are not finite")

    def _keep_good_state(self) -> None:
        """The state a rollback returns to: this one, once its parameters are checked to be finite."""
        self.check_parameters()
        self.guard.keep_state_of(self)

    # ------------------------------------------------------------------ the pieces of an iteration

    def _probe_points(self) -> torch.Tensor:
        """A few data points that check a network of your own, drawn without touching any random stream of the run."""
        if self.config.is_points:
            return self.dataset.train[:4]
        if self.config.is_image:
            return self.dataset.to_float(self.dataset.data[:4])
        return self.target.sample(4, generator=torch.Generator().manual_seed(0)).float()

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) as the sampler sees it (bf16 autocast with ``--amp bf16`` on CUDA; the result is float32)."""
        return self.nets.sample_energy(x)

    def eval_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of the evaluation model (the EMA when on), with the sampler's precision."""
        return self.nets.sample_energy(x, self.eval_model())

    def eval_model(self) -> torch.nn.Module:
        """The model the metrics and samples for evaluation use: the EMA when on, else the trained one."""
        return self.ema_model if self.ema_model is not None else self.model

    def learning_rate(self, iteration: int) -> float:
        """The learning rate of the step after ``iteration`` steps: constant or cosine-decayed, times the rollbacks' factor."""
        c = self.config
        if c.lr_schedule == "constant":
            return c.lr * self.lr_factor
        progress = min(iteration / c.lr_decay_iters, 1.0)
        return c.lr * (c.lr_min + (1 - c.lr_min) * 0.5 * (1 + math.cos(math.pi * progress))) * self.lr_factor

    def data_batch(self, n: int) -> torch.Tensor:
        """``n`` data points on the training device, with the configured ``data_noise`` added."""
        x = self.source.sample(n, self.device)
        if self.config.data_noise > 0:
            x = x + self.config.data_noise * torch.randn(x.shape, generator=self.gen, device=self.device)
        return x

    # ------------------------------------------------------------------ evaluation (anila_core.training.evaluation)

    def is_fid_point(self, iteration: int, end: int) -> bool:
        """Whether the evaluation after ``iteration`` computes FID/KID: every ``fid_every`` iterations and at the end."""
        return evaluation.is_fid_point(self.config, iteration, end)

    def _is_eval_point(self, iteration: int, end: int) -> bool:
        # rank 0 evaluates; the others go on and wait for it at the next all-reduce
        return self.dist.is_main and evaluation.is_eval_point(self.config, iteration, end)

    def evaluate(self, stats: dict, trace: Trace | None, fid: bool | None = None) -> dict:
        """A row of diagnostics after a step (see :func:`anila_core.training.evaluation.evaluate`)."""
        return evaluation.evaluate(self, stats, trace, fid)

    def sample_for_eval(self, n: int | None = None) -> torch.Tensor:
        """Model samples for the metrics (CPU), ``n`` of them (see :func:`anila_core.training.evaluation.sample_for_eval`)."""
        return evaluation.sample_for_eval(self, n)

    def scorer(self):
        """The FID/KID scorer of this run's dataset, built once; ``None`` (after one printed notice) when Inception is unavailable."""
        return self.scoring.scorer(self)

    def image_scores(self) -> dict:
        """FID/KID of ``fid_samples`` model samples against as many real images (``None`` when the features are unavailable)."""
        return self.scoring.scores(self)

    def step_size_image(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler's ``γ/ε`` per pixel at images ``x`` (default: the latest negative samples), averaged over batch and channels: ``(H, W)``."""
        return evaluation.step_size_image(self, x)

    # ------------------------------------------------------------------ state (anila_core.training.state)

    def state_dict(self) -> dict:
        """Everything needed to resume exactly. Under torchrun every rank must call it (it gathers the ranks' chain states)."""
        return state.state_dict(self)

    def load_state_dict(self, checkpoint: dict) -> None:
        """Resume from a :meth:`state_dict`; a checkpoint that does not fit this configuration is refused first with a ``ValueError``."""
        state.load_state_dict(self, checkpoint)


def _training_data(config: TrainConfig):
    """What a configuration learns: ``(target, dataset, held_out, shape of one data point, fingerprint of data of your own)``.

    A 2-D target; a built-in image dataset; a folder of your own (its training images, and
    the held-out ones that FID/KID compare with); or points of a file (a
    :class:`~anila_core.training.points_file.PointSet`, which holds both parts).
    """
    spec = config.data_spec
    if spec is not None:
        data = load_file_data(spec, config.image_size, config.standardize)
        if spec.kind == "images":
            return None, data.train, data.held_out, data.train.shape, data.fingerprint
        return None, data, None, (data.dim,), data.fingerprint
    if config.is_image:
        from anila_core.images.datasets import load_dataset

        dataset = load_dataset(config.dataset, config.data_root or None, config.image_size or None, split=TRAIN_SPLITS[config.dataset])
        return None, dataset, None, dataset.shape, None
    target = make_target(config.target)
    return target, None, None, (target.dim,), None


def _show(bar, row: dict, config: TrainConfig) -> None:
    """The progress bar's summary of an evaluation row."""
    if config.is_image:
        bar.set_postfix(gap=f"{row['energy_gap']:.2f}", **({"fid": f"{row['fid']:.1f}"} if row.get("fid") is not None else {}))
    elif config.is_points:
        bar.set_postfix(sw=f"{row['sliced_wasserstein']:.3f}", gap=f"{row['energy_gap']:.2f}")
    else:
        bar.set_postfix(tv=f"{row['grid_tv']:.3f}", gap=f"{row['energy_gap']:.2f}")


def train(config: TrainConfig, callback=None, progress: bool = True, energy: torch.nn.Module | None = None) -> Trainer:
    """Train in memory (no files) and return the trainer; see :mod:`anila_core.training.runs` for run directories."""
    trainer = Trainer(config, progress=progress, energy=energy)
    trainer.run(callback=callback)
    return trainer
