"""The interface every kind of data a run learns answers: its shape, batches, evaluation, summary and files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from anila_core.sampling.kernel import Trace
from anila_core.training.chains import Chains

if TYPE_CHECKING:
    from anila_core.training.config import TrainConfig
    from anila_core.training.parts import RunParts
    from anila_core.training.state import TrainState

__all__ = ["DataKind", "RUN_RECORDS", "CHECKPOINT"]

CHECKPOINT = "checkpoint.pt"
#: what every run writes besides its figures
RUN_RECORDS = ("config.json", "metrics.jsonl", "final.json", CHECKPOINT)
#: what a run that diverged leaves when its divergence is recorded as its result (``Run.record_divergence``): no
#: checkpoint and no figures, as there is no trained state to keep
DIVERGED_RUN_FILES = ("config.json", "metrics.jsonl", "final.json")


class DataKind:
    """What differs between the kinds of data (a known 2-D target, points of a file, images); one per run.

    Built from a configuration by :func:`anila_core.training.kinds.data_kind`; the data
    themselves are read by :meth:`load`, once, when a trainer is built. Everything a caller
    would otherwise decide by asking "images or points?" is asked of this object instead.
    """

    #: what the run learns, in a word: "target", "points" or "images"
    name = ""
    #: whether the data's density is known: exact grid metrics, and figures of the true density
    has_density = False
    #: the final measure a sweep ranks this kind's runs by (lower is better)
    quality_metric = ""
    #: data and samples through the network in one forward (spectral norm's power iteration runs once per step); the
    #: 2-D kinds keep their two forwards, so their results are bit for bit those of earlier versions
    joint_forward = False
    #: whether the data batches come from a generator of their own, saved in the checkpoint (else the chain generator)
    own_data_stream = True
    #: the progress bar's measure: its label there and its key in a row
    headline = ("", "")
    #: the data themselves, where the kind has them: a 2-D target's sampler, a point set, training and held-out images
    target = dataset = held_out = None
    #: an image run's FID/KID scoring
    scoring = None

    def __init__(self, config: TrainConfig):
        self.config = config

    # ------------------------------------------------------------------ the data

    def shape(self) -> tuple[int, ...]:
        """The shape of one data point, from the configuration (files of your own are read for it, once)."""
        raise NotImplementedError

    def load(self) -> None:
        """Read the data (a dataset, a file, a folder) into this object; a 2-D target only builds its sampler."""
        raise NotImplementedError

    def source(self, rank_seed: int, device: torch.device, chain_generator: torch.Generator):
        """The batch stream of training data on ``device`` (``sample(n, device)``, ``state_dict()``,
        ``load_state_dict()``)."""
        raise NotImplementedError

    def probe_points(self) -> torch.Tensor:
        """A few data points that check a network of your own, drawn without touching any random stream of the run."""
        raise NotImplementedError

    @property
    def fingerprint(self) -> str | None:
        """A hash of data of your own, checked when a run resumes (``None`` for built-in data)."""
        return None

    def describe(self) -> str:
        """What the run learns, for the command line's first line."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise ``ValueError`` naming the setting that this kind of data cannot take."""

    # ------------------------------------------------------------------ the network

    def network(self, shape: tuple[int, ...]) -> torch.nn.Module:
        """The built-in energy network for data points of ``shape``."""
        from anila_core.nets import MLPEnergy

        c = self.config
        return MLPEnergy(shape[0], c.width, c.depth, c.activation)

    def channels_last(self) -> bool:
        """Whether the network and its inputs use the channels-last memory layout."""
        return False

    def memory_needs(self, shape: tuple[int, ...]) -> dict[str, tuple[int, str]]:
        """The bytes this kind certainly holds at once beside the chains, per flag (see
        :mod:`anila_core.training.limits`)."""
        c, needs = self.config, {}
        # a network of your own: its sizes are not the configuration's, so none of its terms is certain
        if not c.energy:
            needs["--batch-size"] = (
                c.batch_size * c.width * c.depth * 4,
                f"activations: batch_size {c.batch_size} × width {c.width} × depth {c.depth} × 4 bytes",
            )
            layers = max(c.depth - 1, 1)
            needs["--width"] = (
                4 * c.width * c.width * layers * 4,
                f"weights: width {c.width}² × {layers} "
                "hidden-to-hidden "
                f"layer{'s' if layers > 1 else ''} × 4 copies × 4 bytes",
            )
        n = min(c.eval_samples, c.buffer_size) if c.chains == "buffer" else c.eval_samples
        needs["--eval-samples"] = (3 * n * n * 8, f"the MMD's 3 kernel matrices: {n}² × 8 bytes")
        return needs

    # ------------------------------------------------------------------ evaluation

    def is_fid_point(self, iteration: int, end: int) -> bool:
        """Whether the evaluation after ``iteration`` computes FID/KID (images only)."""
        return False

    def eval_sample_count(self) -> int:
        """How many model samples an evaluation draws by default."""
        return self.config.eval_samples

    def sample_for_eval(self, parts: RunParts, state: TrainState, n: int | None = None) -> torch.Tensor:
        """Model samples for the metrics (CPU): the buffer's chains, or fresh short-run chains from noise.

        Fresh chains use a generator seeded ``seed + 2``: the same start and noise at every
        evaluation, so a metric's curve shows the model changing, not the draw.
        """
        c = self.config
        n = n or self.eval_sample_count()
        if state.chains.buffer is not None:
            return state.chains.buffer[:n].detach().cpu()
        gen = torch.Generator(device=parts.device).manual_seed(c.seed + 2)
        chains = Chains(c, parts.shape, parts.device, gen)
        return self._fresh_samples(parts, state, chains, n, gen)

    def _fresh_samples(
        self, parts: RunParts, state: TrainState, chains: Chains, n: int, gen: torch.Generator
    ) -> torch.Tensor:
        return parts.sampler.sample(
            state.eval_model(), chains.noise(n), self.config.n_steps, generator=gen, allow_nonfinite=True
        ).cpu()

    def metrics(self, parts: RunParts, state: TrainState, fid: bool | None) -> dict:
        """The evaluation row's measures of this kind of data (the model in eval mode, no gradients)."""
        raise NotImplementedError

    def chain_statistics(self, trace: Trace, shape: tuple[int, ...]) -> dict:
        """The sampler's averages over the iteration's transitions: gradient norm, AniLA's clipped share, Metropolis
        acceptance."""
        row = {"grad_norm": float(sum(trace.mean_grad_norm) / len(trace.mean_grad_norm))}
        if trace.clipped_share:
            row["clipped_share"] = float(sum(trace.clipped_share) / len(trace.clipped_share))
        if trace.acceptance_rate:
            row["acceptance"] = float(sum(trace.acceptance_rate) / len(trace.acceptance_rate))
        return row

    def step_size_image(self, parts: RunParts, state: TrainState, x: torch.Tensor | None) -> torch.Tensor:
        """The sampler's ``γ/ε`` per pixel (images only)."""
        raise ValueError("step_size_image: only for image runs (the 2-D map is plots.plot_step_size_map)")

    def progress(self, row: dict) -> dict:
        """The progress bar's summary of an evaluation row: the kind's headline measure and the energy gap."""
        label, key = self.headline
        return {label: f"{row[key]:.3f}", "gap": f"{row['energy_gap']:.2f}"}

    # ------------------------------------------------------------------ what a run leaves

    def summary(self, state: TrainState, shape: tuple[int, ...]) -> dict:
        """``final.json``: the last and best measures of the run's history."""
        raise NotImplementedError

    def last_and_best(self, state: TrainState, kept: tuple[str, ...]) -> tuple[dict, dict, dict]:
        """The history's last row, its row of the least headline measure, and the ``kept`` measures of the last row."""
        last = state.history[-1]
        best = min(state.history, key=lambda r: r[self.headline[1]])
        return last, best, {k: last[k] for k in kept if k in last}

    def result_line(self, final: dict) -> str:
        """The command line's last word on a finished run: its ``final.json`` in one line."""
        raise NotImplementedError

    def expected_files(self) -> tuple[str, ...]:
        """The files a finished run leaves in its folder (FID's figure only when FID could be computed)."""
        raise NotImplementedError

    def save_figures(self, trainer, out) -> None:
        """Draw the run's figures into its folder ``out``."""
        raise NotImplementedError
