"""Algorithm 1 of the paper: maximum-likelihood EBM training with MCMC negatives, in one readable loop.

For t = 1..T: run K sampler transitions from the chains, draw a data batch, and take an Adam
step on ``mean E(data) − mean E(samples)`` (the Monte Carlo estimate of the negative
log-likelihood's gradient). Any sampler from :mod:`anila_core.sampling.samplers` plugs in unchanged.
The data are a 2-D target or points of a file (an MLP energy) or images (a ConvNet energy), and
the energy may be a network of your own (:mod:`~anila_core.training.user_energy`); under
``torchrun`` each process runs its own chains and DistributedDataParallel averages the
parameter gradients (see :mod:`anila_core.training.distributed`).

The parts live next door: what changes while training (model, optimiser, chains, iteration,
history) in one :class:`~anila_core.training.state.TrainState`, what does not in
:class:`~anila_core.training.parts.RunParts`, what differs between the kinds of data in
:mod:`~anila_core.training.kinds`, the chains in :mod:`~anila_core.training.chains`, the
networks' wrappers in :mod:`~anila_core.training.networks`, the diagnostics in
:mod:`~anila_core.training.evaluation`, checkpoint checks in
:mod:`~anila_core.training.checkpoint_checks` and divergence handling in :mod:`~anila_core.training.guard`.
"""

from __future__ import annotations

import copy
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
from anila_core.training import distributed, evaluation
from anila_core.training.chains import Chains
from anila_core.training.checkpoint_checks import check_same_data, validate_checkpoint
from anila_core.training.config import TrainConfig
from anila_core.training.guard import Guard, TrainingDiverged, optimizer_overflow
from anila_core.training.kinds import data_kind
from anila_core.training.networks import Networks, build_energy
from anila_core.training.parts import RunParts
from anila_core.training.sources import CHAIN_STREAM, DATA_STREAM, stream_seed
from anila_core.training.state import TrainState
from anila_core.training.user_energy import check_energy, energy_label, given_energy_spec

__all__ = ["Trainer", "build_sampler", "train"]


def build_sampler(config: TrainConfig) -> Sampler:
    """The sampler a configuration names, with its hyperparameters
    (:func:`~anila_core.sampling.registry.sampler_from_config`)."""
    return sampler_from_config(config)


def _views(owner: str, *names: str) -> tuple[property, ...]:
    """Read-only properties that read ``names`` from the trainer's ``owner`` (its ``state``, ``parts`` or ``kind``)."""
    return tuple(
        property(lambda self, name=name: getattr(getattr(self, owner), name), doc=f"``{owner}.{name}``")
        for name in names
    )


class Trainer:
    """One training run: its fixed parts (:attr:`parts`), its changing state (:attr:`state`), the loop of Algorithm 1.

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
        config = config.validate()
        if energy is not None:
            config = config.replace(energy=given_energy_spec(config.energy, energy))
        self.config = config.with_fixed_schedule()
        c = self.config
        dist = distributed.current()
        device = distributed.device_for_rank(resolve_device(c.device), dist)
        self.progress = progress and dist.is_main
        kind = data_kind(c)
        kind.load()
        shape = kind.shape()
        torch.manual_seed(c.seed)  # the model's initialisation: the same on every rank
        model = build_energy(c, shape, energy).to(device)
        if c.energy:  # a network of your own: one energy per sample, differentiable, before any step is taken
            check_energy(model, kind.probe_points().to(device), energy_label(c.energy))
        if kind.channels_last():
            model = model.to(memory_format=torch.channels_last)
        gen = torch.Generator(device=device).manual_seed(stream_seed(c.seed, dist.rank, CHAIN_STREAM))
        self.state = TrainState(
            model=model,
            ema_model=copy.deepcopy(model).requires_grad_(False) if c.ema > 0 else None,
            optimizer=torch.optim.Adam(model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2)),
            chains=Chains(c, shape, device, gen),
            source=kind.source(stream_seed(c.seed, dist.rank, DATA_STREAM), device, gen),
        )
        # the state's networks, held here too (the same objects, loaded in place, never replaced): notebooks, the
        # figures and calls such as sampler.sample(trainer.model, ...) name them as the trainer's own
        self.model, self.ema_model = self.state.model, self.state.ema_model
        nets = Networks(
            model,
            self.state.eval_model(),
            c,
            device,
            dist,
            channels_last=kind.channels_last(),
            joint_forward=kind.joint_forward,
        )
        self.parts = RunParts(c, kind, shape, build_sampler(c), nets, device, dist)
        self.guard = Guard()
        # compiled sampling transitions (anila_core.sampling.compiled), by default only where the run amortises the
        # compile; decided here, when the run is created, and kept in its checkpoint, so a longer resumed run keeps it
        planned = c.iters * c.n_steps * c.batch_size  # chain-steps
        self.fast = compiles(c.fast, model, device, planned, network_compiled=c.compile, record=False)

    # ------------------------------------------------------------------ the loop

    def run(
        self,
        iters: int | None = None,
        callback: Callable[["Trainer", dict], None] | None = None,
        on_checkpoint: Callable[["Trainer"], None] | None = None,
        on_rollback: Callable[["Trainer", dict], None] | None = None,
    ) -> list[dict]:
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
        c, state, guard = self.config, self.state, self.guard
        end = c.iters if iters is None else iters
        rollback = c.on_divergence == "rollback"
        if rollback:  # the state a first rollback returns to, if finite (else one of an earlier call, or none)
            guard.keep(state)
        bar = tqdm(
            total=end,
            initial=state.iteration,
            desc=f"{c.sampler} on {c.data_name}",
            disable=not self.progress,
            leave=False,
        )
        try:
            while state.iteration < end:
                evaluating = self._is_eval_point(state.iteration + 1, end)
                try:
                    trace = Trace() if evaluating else None
                    start = time.perf_counter()
                    stats = self.train_step(trace)  # negatives, a data batch, the loss, Adam's step, the guard
                    state.add_time(time.perf_counter() - start)
                    bar.update(1)
                    if evaluating:
                        row = self.evaluate(stats, trace, fid=self.is_fid_point(state.iteration, end))
                        state.record(row)
                        bar.set_postfix(self.kind.progress(row))
                        if callback is not None:
                            callback(self, row)
                    if state.iteration % c.checkpoint_every == 0 or state.iteration == end:
                        if on_checkpoint is not None:
                            on_checkpoint(self)
                        if rollback:  # the state a rollback returns to: this one, once its parameters are checked
                            guard.check_parameters(state)
                            guard.keep(state)
                except TrainingDiverged as err:
                    if not rollback:
                        raise
                    # or raises: no finite state to return to, or max_rollbacks spent
                    record = guard.roll_back(state, c, err, say=self.dist.is_main)
                    bar.update(state.iteration - bar.n)  # back to the iteration rolled back to
                    if on_rollback is not None:
                        on_rollback(self, record)
        finally:
            bar.close()
        return state.history

    def train_step(self, trace: Trace | None = None) -> dict:
        """One iteration of Algorithm 1; returns the scalars worth logging."""
        c, state, chains = self.config, self.state, self.state.chains
        x0 = chains.start(c.batch_size)
        if c.global_moves:
            x0, global_accept = independence_moves(self.energy, x0, c.global_moves, c.init_scale, chains.gen)
        sampled = chains.sampler_start(self.sampler, self.energy, x0)
        # allow_nonfinite: non-finite chains are the divergence guard's to catch, with the run's policy (stop or roll
        # back); evaluate_final=False: the next iteration's energy differs, so the last gradient would be thrown away
        sampled = self.sampler.run(
            self.energy,
            sampled,
            c.n_steps,
            generator=chains.gen,
            trace=trace,
            fast=self.fast,
            evaluate_final=False,
            allow_nonfinite=True,
        )
        x_neg = sampled.x
        if c.clamp > 0:
            x_neg = x_neg.clamp(-c.clamp, c.clamp)
        chains.finish(x_neg, sampled.extra)
        x_pos = self.data_batch(c.batch_size)

        e_pos, e_neg = self.nets.training_energies(x_pos, x_neg)
        loss = e_pos.mean() - e_neg.mean()
        if c.energy_reg > 0:
            loss = loss + c.energy_reg * (e_pos.square().mean() + e_neg.square().mean())
        overflow = self._optimizer_step(loss)
        state.step_taken(x_neg)
        if overflow is not None:
            raise self.guard.error(state.iteration, overflow)
        self._update_ema()

        stats = {"loss": loss.detach(), "energy_data": e_pos.detach().mean(), "energy_samples": e_neg.detach().mean()}
        if c.global_moves:
            stats["global_accept"] = global_accept
        samples_finite = torch.isfinite(x_neg).all()
        if self.dist.enabled:
            stats, samples_finite = self._reduce_stats(stats, samples_finite)
        self.guard.check_step(state, c, stats, samples_finite)
        return stats

    def _optimizer_step(self, loss: torch.Tensor) -> str | None:
        """Adam's step on ``loss`` at this iteration's learning rate; the divergence cause if the update overflowed,
        else ``None``."""
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
        """Average the logged scalars over the ranks, so every rank's guard takes the same decision (none stops
        alone)."""
        keys = list(stats)
        packed = torch.stack([stats[k].float() for k in keys] + [(~samples_finite).float()])
        distributed.all_reduce_sum(packed)
        world = self.dist.world_size
        return {k: packed[i] / world for i, k in enumerate(keys)}, packed[-1] == 0

    def check_parameters(self) -> None:
        """Raise :class:`TrainingDiverged` if any parameter is NaN or infinite."""
        self.guard.check_parameters(self.state)

    # ------------------------------------------------------------------ the pieces of an iteration

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) as the sampler sees it (bf16 autocast with ``--amp bf16`` on CUDA; the result is float32)."""
        return self.nets.sample_energy(x)

    def eval_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of the evaluation model (the EMA when on), with the sampler's precision."""
        return self.nets.eval_energy(x)

    def eval_model(self) -> torch.nn.Module:
        """The model the metrics and samples for evaluation use: the EMA when on, else the trained one."""
        return self.state.eval_model()

    def learning_rate(self, iteration: int) -> float:
        """The learning rate of the step after ``iteration`` steps: constant or cosine-decayed, times the rollbacks'
        factor."""
        return self.state.learning_rate(self.config, iteration)

    def data_batch(self, n: int) -> torch.Tensor:
        """``n`` data points on the training device, with the configured ``data_noise`` added."""
        x = self.source.sample(n, self.device)
        if self.config.data_noise > 0:
            x = x + self.config.data_noise * torch.randn(x.shape, generator=self.gen, device=self.device)
        return x

    # ------------------------------------------------------------------ evaluation (anila_core.training.evaluation)

    def is_fid_point(self, iteration: int, end: int) -> bool:
        """Whether the evaluation after ``iteration`` computes FID/KID: every ``fid_every`` iterations and at the
        end."""
        return self.kind.is_fid_point(iteration, end)

    def _is_eval_point(self, iteration: int, end: int) -> bool:
        # rank 0 evaluates; the others go on and wait for it at the next all-reduce
        return self.dist.is_main and evaluation.is_eval_point(self.parts, iteration, end)

    def evaluate(self, stats: dict, trace: Trace | None, fid: bool | None = None) -> dict:
        """A row of diagnostics after a step (see :func:`anila_core.training.evaluation.evaluate`)."""
        return evaluation.evaluate(self.parts, self.state, stats, trace, fid)

    def sample_for_eval(self, n: int | None = None) -> torch.Tensor:
        """Model samples for the metrics (CPU): ``n`` (default ``eval_samples``, ``fid_samples`` for images) of the
        buffer's chains, or of fresh short-run chains from noise seeded ``seed + 2``, the same each time."""
        return self.kind.sample_for_eval(self.parts, self.state, n)

    def scorer(self):
        """The FID/KID scorer of this run's images, built once; ``None`` (after a notice) without its features."""
        return self.kind.scoring.scorer(self.parts)

    def image_scores(self) -> dict:
        """FID/KID of ``fid_samples`` model samples against as many real images (``None`` when the features are
        unavailable)."""
        return self.kind.scoring.scores(self.parts, self.state)

    def step_size_image(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The sampler's ``γ/ε`` per pixel at images ``x`` (default: the latest negative samples), averaged over batch
        and channels: ``(H, W)``."""
        return self.kind.step_size_image(self.parts, self.state, x)

    def summary(self) -> dict:
        """``final.json``: the last and best measures of the run (also for an in-memory trainer)."""
        if not self.history:
            raise ValueError("trainer: has no evaluation rows yet; train it (or load a run) first")
        return self.kind.summary(self.state, self.data_shape)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Everything needed to resume exactly. Under torchrun every rank must call it (it gathers the ranks' chain
        states)."""
        return self.state.state_dict(self.config, self.kind.fingerprint, self.dist)

    def load_state_dict(self, checkpoint: dict) -> None:
        """Resume from a :meth:`state_dict`; a checkpoint that does not fit this configuration is refused first with a
        ``ValueError``."""
        validate_checkpoint(checkpoint, self.config, self.data_shape, self.device, model=self.model)
        check_same_data(checkpoint.get("data_fingerprint"), self.config, self.kind.fingerprint)
        self.state.load_state_dict(checkpoint, self.dist.rank)

    # ------------------------------------------------------------------ views of the parts and the state

    # read-through names for notebooks and callers: trainer.model is trainer.state.model, trainer.sampler is
    # trainer.parts.sampler (their fields are documented in TrainState, RunParts and DataKind)
    optimizer, chains, source, iteration, wall_s, history, rollbacks = _views(
        "state", "optimizer", "chains", "source", "iteration", "wall_s", "history", "rollbacks"
    )
    kind, sampler, nets, device, dist = _views("parts", "kind", "sampler", "nets", "device", "dist")
    target, dataset, held_out, scoring = _views("kind", "target", "dataset", "held_out", "scoring")
    data_shape = property(lambda self: self.parts.shape, doc="The shape of one data point: ``(d,)`` or ``(C, H, W)``.")
    data_fingerprint = property(
        lambda self: self.kind.fingerprint, doc="A hash of data of your own (``None`` for built-in data)."
    )
    gen = property(lambda self: self.state.chains.gen, doc="The chain generator (chains, sampler noise, 2-D data).")
    lr_factor = property(
        lambda self: self.state.lr_factor,
        lambda self, factor: self.state.set_lr_factor(factor),
        doc="The learning rate's factor, halved at each rollback.",
    )
    samples = property(
        lambda self: self.state.samples,
        lambda self, x: self.state.set_samples(x),
        doc="The latest negative samples (a notebook may set others to show or start from).",
    )
    fast = property(
        lambda self: self.state.fast,
        lambda self, on: self.state.set_fast(on),
        doc="Whether the chains sample through compiled transitions: decided when the run is created, "
        "kept by its checkpoint.",
    )


def train(config: TrainConfig, callback=None, progress: bool = True, energy: torch.nn.Module | None = None) -> Trainer:
    """Train in memory (no files) and return the trainer; see :mod:`anila_core.training.runs` for run directories."""
    trainer = Trainer(config, progress=progress, energy=energy)
    trainer.run(callback=callback)
    return trainer
