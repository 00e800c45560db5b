"""A comparison of samplers: one run folder per sampler, run by the runner of cells, then one figure and table."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from anila_core.fileio import LOCK_FILE, atomic_write_text, locked_folder, read_json_file
from anila_core.processes import check_jobs, torch_threads
from anila_core.study.runner import Cell, Executor, print_commands, run_cells, threads_per_cell
from anila_core.training.config import TrainConfig, changed_settings, describe_changes
from anila_core.training.kinds import data_kind

__all__ = ["Comparison", "run_compare", "PROGRESS_BAR", "PROGRESS_LINES", "NO_PROGRESS"]

#: how ``compare`` shows its runs' progress: a tqdm bar (one run at a time, on a terminal), a line per
#: evaluation of each run (runs in parallel, or output to a log), or nothing (--no-progress)
PROGRESS_BAR, PROGRESS_LINES, NO_PROGRESS = "bar", "lines", None


@dataclass(frozen=True)
class Comparison:
    """What a finished comparison wrote: each run's ``final.json`` by label, the markdown ``table`` and where it and
    the figure are (``figure_path`` is ``None`` when no run trained: a figure of diverged runs has nothing to show)."""

    finals: dict
    table: str
    table_path: Path
    figure_path: Path | None
    wall_s: float


def run_compare(
    out: str | Path,
    configs: dict[str, TrainConfig],
    jobs: int | None = None,
    resume: bool = False,
    progress: bool = True,
    executor: str = "local",
    partition: str | None = None,
    time_min: int | None = None,
    train_command: Callable[[str], Sequence[str]] | None = None,
    print_only: bool = False,
) -> Comparison | None:
    """Train one run per entry of ``configs`` (label → configuration) in ``out/<label>``, then write the figure and the
    table.

    ``out`` is locked while the comparison writes it; a folder that holds files is refused
    unless ``resume``, which keeps finished runs, continues the others from their checkpoints
    and refuses a run made with other settings. Runs go ``jobs`` at a time (default: one per
    CPU core, one at a time on a GPU), or through submitit (``executor``). ``train_command(label)``:
    the arguments of the ``python -m anila_core train`` command of one run; with ``print_only`` the
    unfinished runs' commands are printed instead (then ``None``): once they ran, the same call
    with ``resume`` collects them.
    """
    from anila_core.training.limits import check_memory

    out = Path(out)
    check_jobs(jobs)  # before anything is written
    Executor(executor, jobs or 1, out / "submitit", partition, time_min)
    if print_only and train_command is None:
        raise ValueError("print_only: needs train_command, the command of one run")
    for c in configs.values():
        check_memory(c)

    def unused() -> None:  # under the lock: a comparison may be finished with resume, not overwritten
        if not resume and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise ValueError(
                f"out: {out} already holds files; pass resume=True to finish that comparison or choose another folder"
            )

    with locked_folder(out, check=unused) as lock:  # one comparison writes the folder at a time
        if resume:  # before any run starts: a folder from other settings is refused as a whole
            for label, config in configs.items():
                if (out / label / "config.json").exists():
                    _check_same_settings(out / label, config)
        commands = {
            label: tuple(_command(out / label, train_command(label))) if train_command else () for label in configs
        }
        if print_only:
            print_commands(
                [
                    Cell(str(out / label), None, commands[label])
                    for label in configs
                    if not _finished_with(out / label, configs[label])
                ]
            )
            return None
        how = dict(kind=executor, folder=out / "submitit", partition=partition, time_min=time_min)
        return _compare(out, configs, jobs, resume, progress, how, commands, lock.verify)


def _command(folder: Path, command: Sequence[str]) -> list[str]:
    """A run's ``train`` command, ``--resume`` added where the run has a checkpoint to continue from."""
    return [*command, "--resume"] if (folder / "checkpoint.pt").exists() else list(command)


def _finished_with(folder: Path, config: TrainConfig) -> bool:
    """Whether the run in ``folder`` finished at ``config``'s iterations, or diverged (a resumed comparison keeps
    it)."""
    return (folder / "final.json").exists() and _done(_finished(folder / "final.json"), config)


def _done(final: dict, config: TrainConfig) -> bool:
    """Whether ``final`` ends its run at ``config``: trained to its iterations, or diverged (a result: training it
    again with the same seed diverges again)."""
    return bool(final.get("diverged")) or final["iters"] == config.iters


def _compare(
    out: Path,
    configs: dict[str, TrainConfig],
    jobs: int | None,
    resume: bool,
    progress: bool,
    how: dict,
    commands: dict[str, tuple],
    verify: Callable[[], None],
) -> Comparison:
    """The comparison itself, in the locked folder ``out``; ``verify()`` (LockLost otherwise) runs before the figure
    and table."""
    import torch

    labels = list(configs)
    cores = os.cpu_count() or 1
    on_cuda = any(c.device.startswith("cuda") for c in configs.values()) or (
        torch.cuda.is_available() and all(c.device == "auto" for c in configs.values())
    )
    jobs = jobs or (1 if on_cuda else min(len(labels), cores))
    threads = threads_per_cell(how["kind"], jobs)
    if not progress:
        shown = NO_PROGRESS
    else:  # bars of parallel processes overwrite each other, and a bar in a log is one long line of redraws
        shown = PROGRESS_BAR if jobs == 1 and sys.stderr.isatty() else PROGRESS_LINES
    cells = [Cell(str(out / s), (configs[s], out / s, resume, threads, shown), commands[s]) for s in labels]
    first = configs[labels[0]]
    print(
        f"comparing {', '.join(labels)} on {first.data_name}: {first.iters} iterations each, {jobs} in parallel -> "
        f"{out}",
        flush=True,
    )
    start = time.perf_counter()
    finals = {}
    where = Executor(jobs=jobs, **how)
    # a worker that dies (SIGKILL, SIGTERM, the OOM killer) is reported once the others finish: WorkersLost, exit 3
    for index, final in run_cells(_train_one, cells, where, rerun="finish them with the same command plus --resume"):
        finals[labels[index]] = final
    finals = {s: finals[s] for s in labels}
    verify()
    finish = {
        "images": _finish_image_comparison,
        "points": _finish_points_comparison,
        "target": _finish_target_comparison,
    }[data_kind(first).name]
    figure = out / "comparison.png"
    figure.unlink(missing_ok=True)  # a figure of an earlier attempt must not pass for this one's
    table = finish(out, labels, finals, configs)
    atomic_write_text(out / "comparison.md", table)
    shown = figure if figure.exists() else None
    return Comparison(finals, table, out / "comparison.md", shown, time.perf_counter() - start)


def _check_same_settings(out: Path, config: TrainConfig) -> None:
    """Refuse to keep or resume the run in ``out`` when it was made with other settings than ``config`` (say, an older
    preset)."""
    path = out / "config.json"
    saved = read_json_file(path, "the config.json a run wrote")
    try:
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(
            f"{path}: not a valid run configuration ({err}); expected the config.json a run wrote"
        ) from None
    # lr_decay_iters 0 means the run's iters, fixed when it started: a longer --iters does not change it
    wanted = config.with_fixed_schedule(saved).to_dict()
    differ = changed_settings(saved, wanted)
    if differ:
        raise ValueError(
            f"--out: {out} holds a run made with other settings "
            f"({describe_changes(differ, saved, wanted, 'there', 'now')}); "
            "delete that folder to train again, or choose another --out"
        )


class _ProgressLines:
    """A :meth:`Run.train` callback that prints one line per evaluation of one run, readable in a terminal and in a log.

    Runs in parallel processes print into the same terminal: each line names its run, and
    a whole line is one write, so lines of two runs never mix. ``langevin: 750/3000 iterations
    (25%), grid TV 0.312, 41 s, about 2 min left``.
    """

    def __init__(self, name: str, start_iteration: int, total: int):
        self.name, self.start_iteration, self.total = name, start_iteration, total
        self.start = time.perf_counter()

    def __call__(self, trainer, row: dict) -> None:
        done = row["iter"]
        elapsed = time.perf_counter() - self.start
        parts = [f"{done}/{self.total} iterations ({done / self.total:.0%})"]
        if row.get("grid_tv") is not None:
            parts.append(f"grid TV {row['grid_tv']:.3f}")
        if row.get("fid") is not None:
            parts.append(f"FID {row['fid']:.1f}")
        parts.append(f"energy gap {row['energy_gap']:.2f}")
        parts.append(f"{elapsed:.0f} s")
        if self.start_iteration < done < self.total:
            parts.append(f"about {_duration(elapsed / (done - self.start_iteration) * (self.total - done))} left")
        print(f"{self.name}: {', '.join(parts)}", flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _train_one(job: tuple) -> dict:
    """Worker of a comparison: one sampler's run, with its share of the CPU threads, showing its progress as
    ``progress`` says."""
    from anila_core.training.guard import TrainingDiverged
    from anila_core.training.runs import Run

    config, out, resume, threads, progress = job
    out = Path(out)
    if resume and (out / "final.json").exists():
        final = _finished(out / "final.json")
        if _done(final, config):
            print(
                f"{out}: finished earlier with these settings, kept (delete the folder to train it again)", flush=True
            )
            return final
        # another --iters: the run goes on from its checkpoint to it (fewer than it trained is refused by the Run)
    bar = progress == PROGRESS_BAR
    with torch_threads(threads):
        if resume and (out / "config.json").exists():
            # restart=True: a sampler killed before its first checkpoint starts again (its settings were checked)
            # the network this command names (--energy), never one the folder names alone
            run = Run(
                out, config, resume=True, restart=True, progress=bar, energy=config.energy or None, iters=config.iters
            )
            if (out / "checkpoint.pt").exists():
                print(f"resuming {out} at iteration {run.trainer.iteration} of {run.config.iters}", flush=True)
            else:
                print(f"{out}: stopped before its first checkpoint, started again", flush=True)
        else:
            run = Run(out, config, progress=bar)
        lines = None
        if progress == PROGRESS_LINES:
            lines = _ProgressLines(out.name, run.trainer.iteration, run.config.iters)
            print(
                f"{out.name}: started, {run.config.iters - run.trainer.iteration} iterations to go (a line at each "
                f"evaluation, every {run.config.eval_every})",
                flush=True,
            )
        try:
            final = run.train(callback=lines)
        except TrainingDiverged as err:  # a result of the comparison, shown as such, not a failure of it
            final = run.record_divergence(err)
            run.close()
            print(f"{out.name}: diverged at iteration {final['diverged_at']} ({final['cause']})", flush=True)
            return final
        if lines is not None:
            print(f"{out.name}: done in {time.perf_counter() - lines.start:.0f} s, figures written", flush=True)
        return final


def _finished(path: Path) -> dict:
    """A finished run's final.json, checked: a damaged one is named, with how --resume writes it again."""
    again = "; expected the final.json a run wrote: delete it and --resume writes it again from the run's checkpoint"
    try:
        final = read_json_file(path, "the final.json a run wrote")
    except ValueError as err:
        raise ValueError(f"{str(err).split('; expected')[0]}{again}") from None
    if not isinstance(final, dict):
        raise ValueError(f"{path}: holds a JSON {type(final).__name__}, not an object{again}")
    missing = [k for k in ("sampler", "iters", "config") if k not in final]
    if missing:
        raise ValueError(f"{path}: lacks {', '.join(repr(k) for k in missing)}{again}")
    return final


def _finish_target_comparison(out: Path, labels: list[str], finals: dict, configs: dict) -> str:
    """comparison.png (the learned densities and samples side by side with the target's) and the table, on a 2-D
    target."""
    from anila_core.training.run_loading import load_trainer
    from anila_core.ui.report import markdown_table, model_densities, plot_side_by_side, save_figure

    runs = {}
    for s in labels:
        if finals[s].get("diverged"):  # no trained state: its column says where it diverged
            runs[s] = {"final": finals[s]}
            continue
        trainer = load_trainer(out / s, progress=False, energy=configs[s].energy or None)
        runs[s] = {**model_densities(trainer), "samples": trainer.sample_for_eval()[:2000], "final": finals[s]}
    target = data_kind(configs[labels[0]]).target
    save_figure(plot_side_by_side(runs, target), out / "comparison.png")
    return markdown_table(finals)


def _finish_image_comparison(out: Path, labels: list[str], finals: dict, configs: dict) -> str:
    """comparison.png (sample grids side by side: the paper's Figures 2 and 3), fid.png and the table."""
    from anila_core.training.run_loading import load_trainer
    from anila_core.ui.report import image_markdown_table, plot_fid_curve, plot_image_side_by_side, save_figure

    trained = [s for s in labels if not finals[s].get("diverged")]  # a diverged run is in the table, with no samples
    trainers = {s: load_trainer(out / s, progress=False, energy=configs[s].energy or None) for s in trained}
    samples = {s: t.sample_for_eval(64) for s, t in trainers.items()}
    if samples:
        save_figure(plot_image_side_by_side(samples, finals), out / "comparison.png")
    ax = plot_fid_curve({s: t.history for s, t in trainers.items()})
    if ax is not None:
        save_figure(ax.figure, out / "fid.png")
    return image_markdown_table(finals)


def _finish_points_comparison(out: Path, labels: list[str], finals: dict, configs: dict) -> str:
    """comparison.png (in 2-D the learned densities and samples, else samples on the data's principal axes) and the
    table."""
    import torch

    from anila_core.sampling.distances import grid_log_probs
    from anila_core.training.run_loading import load_trainer
    from anila_core.ui.points_report import plot_points_side_by_side, points_markdown_table
    from anila_core.ui.report import save_figure

    runs, points = {}, None
    for s in [s for s in labels if not finals[s].get("diverged")]:  # a diverged run is in the table, with no samples
        trainer = load_trainer(out / s, progress=False, energy=configs[s].energy or None)
        points = trainer.dataset
        log_p = None
        if points.dim == 2:
            with torch.no_grad():
                log_p = grid_log_probs(trainer.eval_model(), extent=points.window, device=trainer.device)
        runs[s] = {"log_p": log_p, "samples": trainer.sample_for_eval()[:2000], "final": finals[s]}
    if runs:
        save_figure(plot_points_side_by_side(runs, points), out / "comparison.png")
    return points_markdown_table(finals)
