"""Command line for long runs: ``python -m anila_core train | compare | demo | sweep`` (``train`` also under ``torchrun`` on several GPUs)."""

from __future__ import annotations

import argparse
import decimal
import json
import os
import re
import sys
import time
from dataclasses import fields
from pathlib import Path

from anila_core.training.config import DEFAULT_PRESET, IMAGE_PRESETS, PRESETS, RESUMABLE_FIELDS, TrainConfig, changed_settings, describe_changes, preset
from anila_core.fileio import read_json_file
from anila_core.training.file_sources import absolute_data_spec
from anila_core.processes import check_jobs, run_jobs, torch_threads
from anila_core.sampling.registry import SAMPLERS

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
#: a run that diverged, or that its machine stopped (disk full, out of memory)
EXIT_FAILED = EXIT_DIVERGED = 3


class _Parser(argparse.ArgumentParser):
    """argparse, answering a bad flag with one ``error:`` line (and where to read more) instead of the usage block first."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str) -> int:
    """An integer flag's value: ``2000``, or ``1e3`` when it names an integer exactly (``1.5`` does not)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = decimal.Decimal(text)
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
    except decimal.InvalidOperation:
        pass
    raise argparse.ArgumentTypeError(f"expected an integer (such as 2000 or 2e3), got {text!r}")

#: the library's arguments that a command-line user sets with a flag: the library's errors name the
#: arguments (a notebook has no flags), and this layer words them in the flags' terms
_FLAGS = {"out_dir": "--out", "out": "--out", "resume=True": "--resume", "iters": "--iters", "jobs": "--jobs"}
#: those of them that mean nothing else inside a message (``out`` or ``jobs`` may be plain words there)
_FLAG_WORDS = ("out_dir", "resume=True", "iters")


def _in_flag_terms(message: str) -> str:
    """A library error worded with the flags that set its arguments: ``iters: 5 is below …`` → ``--iters: 5 is below …``."""
    head, sep, rest = message.partition(": ")
    if sep and head in _FLAGS:
        message = _FLAGS[head] + sep + rest
    for name in _FLAG_WORDS:  # not inside a longer name (lr_decay_iters), a path, a flag or quotes (a file's key)
        message = re.sub(rf"(?<![\w./'\"-]){re.escape(name)}(?![\w/'\"])", _FLAGS[name], message)
    return message


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    group = parser.add_argument_group("hyperparameters (each overrides the preset)")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default {getattr(defaults, f.name)!r} before the preset)"
        if f.metadata.get("choices"):  # the metavar hides argparse's own {a,b,c}: the values are listed here
            help_text += f"; one of: {_listed(f.metadata['choices'])}"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": _integer, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            group.add_argument(flag, dest=f.name, type=kind, default=None, choices=f.metadata.get("choices"),
                               metavar=f.name.upper(), help=help_text)


def _listed(values) -> str:
    """``a, b, c`` for a help text, with the empty string shown as ``''``."""
    return ", ".join(repr(v) if v == "" else str(v) for v in values)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m anila_core", description="Train energy-based models with Langevin or AniLA samplers.")
    sub = parser.add_subparsers(dest="command", required=True)
    presets = f"2-D targets and --dataset points:FILE: {', '.join(sorted(PRESETS))}; with images: {', '.join(sorted(IMAGE_PRESETS))}"

    train = sub.add_parser("train", help="train one EBM and write a run directory",
                           description="Train an EBM (Algorithm 1) on a 2-D target (--target, the default), on an image "
                                       "dataset (--dataset digits|cifar10|flowers, read from --data-root or $ANILA_DATA), on a "
                                       "folder of your images (--dataset images:FOLDER) or on points of a file (--dataset "
                                       "points:FILE), optionally with an energy network of your own (--energy module.path:Name), and "
                                       "write a run directory: config.json, metrics.jsonl, final.json, checkpoint.pt and PNG "
                                       "figures. Under torchrun (torchrun --nproc_per_node N -m anila_core train ...) each "
                                       "process runs its own chains, gradients are averaged, and rank 0 writes the files.")
    train.add_argument("--preset", default=None, help=f"named settings ({presets}; default {DEFAULT_PRESET})")
    train.add_argument("--out", type=Path, default=None, help="run directory (default runs/<target or dataset>-<sampler>-seed<seed>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint: the same command line plus --resume (only "
                            "--iters, --device, --data-root, --on-divergence and --max-rollbacks may differ from the run's)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(train)

    compare = sub.add_parser("compare", help="train several samplers with the same seed and budget, side by side",
                             description="Train one run per sampler (same preset, seed and budget), then write the side-by-side "
                                         "figure comparison.png and the table comparison.md.")
    compare.add_argument("--samplers", nargs="+", default=["langevin", "anila"], metavar="SAMPLER",
                         help=f"samplers to compare, from: {_listed(sorted(SAMPLERS))} (default langevin anila); an entry "
                              "may carry its own settings, anila:b=3 or anila:b=3,step_size=0.02 (its folder: anila-b3, ...)")
    compare.add_argument("--preset", default=None, help=f"named settings ({presets}; default {DEFAULT_PRESET}); each sampler gets its own tuned entries")
    compare.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder for the runs and the figure (default runs/compare)")
    compare.add_argument("--jobs", type=_integer, default=None, help="runs in parallel (default: one per CPU core, at most one per sampler)")
    compare.add_argument("--resume", action="store_true", help="resume unfinished runs in --out; finished ones are kept")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_flags(compare, skip=("sampler",))

    _add_sweep_parser(sub, presets)

    demo = sub.add_parser("demo", help="the headless demo on the rings at the cpu preset: Langevin, AniLA at b = 30 (clips almost "
                                       "nothing: Langevin's chain) and a clipping AniLA (b = 3); a few minutes")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for the comparison (default runs/demo)")
    demo.add_argument("--preset", default=DEFAULT_PRESET, help=f"named settings (default {DEFAULT_PRESET})")
    return parser


#: the settings a sweep varies per cell; the rest of its flags set the base every cell shares
SWEEP_AXES = ("sampler", "step_size", "b", "n_steps", "chains", "seed", "norm", "variant", "metropolis")


def _add_sweep_parser(sub, presets: str) -> None:
    from anila_core.training.config import CHAIN_KINDS
    from anila_core.study.sweep import KIND_HELP, KINDS, STUDIES

    sweep = sub.add_parser(
        "sweep", help="the sampler study: a grid of settings and seeds at one budget per cell, in parallel, resumable",
        description="Train one run per cell of the grid (samplers × step sizes × b × K × chain kinds × seeds; b applies to "
                    "the AniLA samplers only) at the same budget, in parallel processes, and write sweep.json, sweep.md, "
                    "heatmaps.png, stability.png, quality_vs_budget.png (and two_densities.png) to --out. Each finished cell is saved at once "
                    "(cells/<cell>.json): running the same command again finishes an interrupted sweep without "
                    "recomputing a finished cell. Samplers: " + "; ".join(f"{k}: {v}" for k, v in KIND_HELP.items()) + ".")
    sweep.add_argument("--study", choices=sorted(STUDIES), default=None,
                       help="a named grid (rings: the committed study, docs/study/rings; digits; smoke); "
                            "then the grid flags below are not allowed")
    sweep.add_argument("--samplers", nargs="+", choices=list(KINDS), default=None, metavar="SAMPLER",
                       help=f"samplers, from: {_listed(KINDS)} (default langevin anila)")
    sweep.add_argument("--step-size", dest="grid_step_size", nargs="+", type=float, default=None, metavar="EPS",
                       help="step sizes ε (default 0.01)")
    sweep.add_argument("--b", dest="grid_b", nargs="+", type=float, default=None, metavar="B",
                       help="AniLA thresholds b (default 1)")
    sweep.add_argument("--n-steps", dest="grid_n_steps", nargs="+", type=_integer, default=None, metavar="K",
                       help="sampler transitions per iteration (default: the preset's)")
    sweep.add_argument("--chains", dest="grid_chains", nargs="+", choices=list(CHAIN_KINDS), default=None, metavar="CHAINS",
                       help=f"chain kinds, from: {_listed(CHAIN_KINDS)} (default: the preset's)")
    sweep.add_argument("--seed", dest="grid_seed", nargs="+", type=_integer, default=None, metavar="SEED", help="seeds (default 0)")
    sweep.add_argument("--preset", default=None, help=f"base settings of every cell ({presets}; default sweep, or cpu with --dataset)")
    sweep.add_argument("--out", type=Path, default=None, help="folder of the sweep (default runs/sweep-<study>, or runs/sweep)")
    sweep.add_argument("--jobs", type=_integer, default=None, help="cells in parallel (default: one per CPU core)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(sweep, skip=SWEEP_AXES)


def _overrides(args: argparse.Namespace) -> dict:
    """The settings given on the command line (every flag named after a TrainConfig field that was set)."""
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if overrides.get("dataset"):  # a folder or file of your own, as the run records it: its absolute path
        overrides["dataset"] = absolute_data_spec(overrides["dataset"])
    if overrides.get("dataset") and "target" in overrides:
        raise ValueError("--target and --dataset: choose one; --target learns a 2-D toy density, --dataset an image dataset, "
                         "a folder of images or points of a file")
    return overrides


def _wants_cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _saved_device(out: Path) -> str:
    """The device a run directory's config.json names ('auto' when it cannot be read: the Run then says why)."""
    try:
        return str(read_json_file(out / "config.json", "a run's config.json").get("device", "auto"))
    except (OSError, ValueError, AttributeError):
        return "auto"


def cmd_train(args: argparse.Namespace) -> int:
    from anila_core.training import distributed
    from anila_core.training.runs import Run

    overrides = _overrides(args)
    progress = not args.no_progress
    if args.resume:
        if args.out is None:
            raise ValueError("--resume: needs --out, the run directory to continue")
        _check_resume_settings(args.out, args.preset, overrides)
        config, device = None, overrides.get("device") or _saved_device(args.out)
    else:
        sampler = overrides.pop("sampler", "langevin")
        config = preset(DEFAULT_PRESET if args.preset is None else args.preset, sampler, **overrides)
        device = config.device
    with distributed.process_group(use_cuda=_wants_cuda(device)) as info:
        say = print if info.is_main else (lambda *a, **k: None)
        if args.resume:
            run = Run(args.out, resume=True, iters=overrides.get("iters"), progress=progress, data_root=overrides.get("data_root"),
                      on_divergence=overrides.get("on_divergence"), max_rollbacks=overrides.get("max_rollbacks"),
                      device=overrides.get("device"), energy=overrides.get("energy") or None)
        else:
            out = args.out or Path("runs") / f"{config.data_name}-{config.sampler}-seed{config.seed}"
            run = Run(out, config, progress=progress)
        c, t = run.config, run.trainer
        if args.resume:
            say(f"resuming {run.out} at iteration {t.iteration} of {c.iters}", flush=True)
        what = t.kind.describe()
        where = f" on {info.world_size} processes" if info.enabled else ""
        say(f"training {c.sampler} on {what} for {c.iters} iterations{where} ({t.device}) -> {run.out}", flush=True)
        final = run.train()
    if not info.is_main:
        return 0
    print(f"done: {t.kind.result_line(final)}")
    print(f"run directory: {run.out}")
    return 0


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_resume_settings(out: Path, preset_name: str | None, overrides: dict) -> None:
    """Refuse a ``train --resume`` whose settings differ from the run's own, naming each field with both values.

    The same command line plus ``--resume`` (what a cluster's requeue runs) is accepted: only a
    value that differs from the saved one counts as a change. With ``--preset`` the whole
    configuration that command line stands for is compared (a setting it does not give comes
    from the preset); without, only the flags given. A run folder that cannot be read is left to
    :class:`Run`, which says what is wrong with it.
    """
    try:
        saved = TrainConfig.from_dict(read_json_file(out / "config.json", "a run's config.json")).to_dict()
    except (OSError, ValueError, TypeError, AttributeError):
        return
    if preset_name is not None:
        options = dict(overrides)
        wanted = preset(preset_name, options.pop("sampler", "langevin"), **options).with_fixed_schedule(saved).to_dict()
        origin = {k: f"from --preset {preset_name}" for k in wanted if k not in overrides}
    else:
        wanted, origin = dict(overrides), {}
    changed = changed_settings(saved, wanted)
    if not changed:
        return
    parts = "; ".join(f"{_flag(k)}: {saved[k]!r} in the run's config.json, {wanted[k]!r} {origin.get(k, 'given')}" for k in changed[:4])
    more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
    raise ValueError(f"--resume: {', '.join(_flag(k) for k in changed)} cannot change on resume ({parts}{more}); the run keeps "
                     f"its config.json: drop the flag or give the run's value; only {', '.join(_flag(f) for f in RESUMABLE_FIELDS)} can "
                     "change")


def _check_same_settings(out: Path, config: TrainConfig) -> None:
    """Refuse to keep or resume the run in ``out`` when it was made with other settings than ``config`` (say, an older preset)."""
    path = out / "config.json"
    saved = read_json_file(path, "the config.json a run wrote")
    try:
        saved = TrainConfig.from_dict(saved).to_dict()
    except (TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a valid run configuration ({err}); expected the config.json a run wrote") from None
    # lr_decay_iters 0 means the run's iters, fixed when it started: a longer --iters does not change it
    wanted = config.replace(lr_decay_iters=config.lr_decay_iters or saved.get("lr_decay_iters") or config.iters).to_dict()
    differ = changed_settings(saved, wanted)
    if differ:
        raise ValueError(f"--out: {out} holds a run made with other settings ({describe_changes(differ, saved, wanted, 'there', 'now')}); "
                         "delete that folder to train again, or choose another --out")


#: how ``compare`` shows its runs' progress: a tqdm bar (one run at a time, on a terminal), a line per
#: evaluation of each run (runs in parallel, or output to a log), or nothing (--no-progress)
PROGRESS_BAR, PROGRESS_LINES, NO_PROGRESS = "bar", "lines", None


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
    """Worker of ``compare``: one sampler's run, with its share of the CPU threads, showing its progress as ``progress`` says."""
    from anila_core.training.runs import Run

    config, out, resume, threads, progress = job
    out = Path(out)
    if resume and (out / "final.json").exists():
        final = _finished(out / "final.json")
        if final["iters"] == config.iters:
            print(f"{out}: finished earlier with these settings, kept (delete the folder to train it again)", flush=True)
            return final
        # another --iters: the run goes on from its checkpoint to it (fewer than it trained is refused by the Run)
    bar = progress == PROGRESS_BAR
    with torch_threads(threads):
        if resume and (out / "config.json").exists():
            # restart=True: a sampler killed before its first checkpoint starts again (its settings were checked)
            # the network this command names (--energy), never one the folder names alone
            run = Run(out, config, resume=True, restart=True, progress=bar, energy=config.energy or None, iters=config.iters)
            if (out / "checkpoint.pt").exists():
                print(f"resuming {out} at iteration {run.trainer.iteration} of {run.config.iters}", flush=True)
            else:
                print(f"{out}: stopped before its first checkpoint, started again", flush=True)
        else:
            run = Run(out, config, progress=bar)
        lines = None
        if progress == PROGRESS_LINES:
            lines = _ProgressLines(out.name, run.trainer.iteration, run.config.iters)
            print(f"{out.name}: started, {run.config.iters - run.trainer.iteration} iterations to go "
                  f"(a line at each evaluation, every {run.config.eval_every})", flush=True)
        final = run.train(callback=lines)
        if lines is not None:
            print(f"{out.name}: done in {time.perf_counter() - lines.start:.0f} s, figures written", flush=True)
        return final


def _finished(path: Path) -> dict:
    """A finished run's final.json, checked: a damaged one is named, with how --resume writes it again."""
    again = f"; expected the final.json a run wrote: delete it and --resume writes it again from the run's checkpoint"
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


def cmd_compare(args: argparse.Namespace, preset_name: str | None = None) -> int:
    from anila_core.fileio import LOCK_FILE, locked_folder
    from anila_core.training import distributed
    from anila_core.training.limits import check_memory

    if distributed.from_env().enabled:
        raise ValueError("compare: runs its samplers as separate processes and cannot run under torchrun; "
                         "use `torchrun ... -m anila_core train --sampler NAME` once per sampler")
    overrides = _overrides(args)
    specs = [run_spec(text) for text in dict.fromkeys(args.samplers)]
    labels = [label for label, _, _ in specs]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"--samplers: {', '.join(twice)} named twice (the same run folder); give each entry other settings")
    name = args.preset if args.preset is not None else (preset_name or DEFAULT_PRESET)
    configs = {label: preset(name, sampler, **{**overrides, **settings}) for label, sampler, settings in specs}
    samplers = labels
    out = args.out
    check_jobs(args.jobs, "--jobs")  # before anything is written
    for c in configs.values():
        check_memory(c)

    def unused() -> None:  # under the lock: a comparison may be finished with --resume, not overwritten
        if not args.resume and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise ValueError(f"--out: {out} already holds files; pass --resume to finish that comparison or choose another folder")

    with locked_folder(out, check=unused) as lock:  # one comparison writes the folder at a time
        return _compare(args, out, samplers, configs, lock.verify)


def run_spec(text: str) -> tuple[str, str, dict]:
    """One entry of ``compare --samplers``: ``anila``, or a sampler with its own settings, ``anila:b=3`` or ``anila:b=3,step_size=0.02``.

    Returns the run's label (its folder: ``anila-b3``), the sampler's name and its settings, which
    override the preset's entries for that sampler (and the flags shared by every run).
    """
    sampler, _, rest = text.partition(":")
    settings = {}
    kinds = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(TrainConfig)}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in kinds or key == "sampler":
            raise ValueError(f"--samplers: {text!r}: expected NAME or NAME:setting=value,... with settings of train's flags "
                             f"(such as b=3 or step_size=0.02), got {item!r}")
        try:
            settings[key] = {"int": _integer, "float": float, "str": str, "bool": _boolean}[kinds[key]](value.strip())
        except (ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"--samplers: {text!r}: {key}: {err}") from None
    # a folder name that says what differs: anila:b=3 -> anila-b3
    label = "-".join([sampler] + [k.replace("_", "-") + (f"{v:g}" if isinstance(v, float) else str(v)) for k, v in settings.items()])
    return label, sampler, settings


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _compare(args: argparse.Namespace, out: Path, samplers: list[str], configs: dict[str, TrainConfig],
             verify=lambda: None) -> int:
    """The comparison itself, in the locked folder ``out``: one run per sampler, then the figure and the table.

    ``verify()`` raises :class:`anila_core.failures.LockLost` when the folder's lock is no longer this process's;
    it runs before the figure and the table are written."""
    import torch

    from anila_core.ui.report import model_densities, plot_side_by_side, markdown_table, save_figure
    from anila_core.training.runs import load_trainer

    cores = os.cpu_count() or 1
    on_cuda = any(c.device.startswith("cuda") for c in configs.values()) or (
        torch.cuda.is_available() and all(c.device == "auto" for c in configs.values()))
    jobs = args.jobs or (1 if on_cuda else min(len(samplers), cores))
    threads = max(1, cores // jobs)
    if args.no_progress:
        progress = NO_PROGRESS
    else:  # bars of parallel processes overwrite each other, and a bar in a log is one long line of redraws
        progress = PROGRESS_BAR if jobs == 1 and sys.stderr.isatty() else PROGRESS_LINES
    if args.resume:  # before any run starts: a folder from other settings is refused as a whole
        for s in samplers:
            if (out / s / "config.json").exists():
                _check_same_settings(out / s, configs[s])
    work = [(configs[s], out / s, args.resume, threads, progress) for s in samplers]
    print(f"comparing {', '.join(samplers)} on {configs[samplers[0]].data_name}: {configs[samplers[0]].iters} iterations each, "
          f"{jobs} in parallel -> {out}", flush=True)
    start = time.perf_counter()
    if jobs == 1:
        finals = [_train_one(w) for w in work]
    else:  # a worker that dies (SIGKILL, SIGTERM, the OOM killer) is reported once the others finish: WorkersLost, exit 3
        finals = [None] * len(work)
        for index, final in run_jobs(_train_one, work, jobs, [str(out / s) for s in samplers],
                                     rerun="finish them with the same command plus --resume"):
            finals[index] = final
    finals = dict(zip(samplers, finals))
    verify()
    if configs[samplers[0]].is_image:
        return _finish_image_comparison(out, samplers, finals, start, configs)
    if configs[samplers[0]].is_points:
        return _finish_points_comparison(out, samplers, finals, start, configs)
    runs = {}
    for s in samplers:
        trainer = load_trainer(out / s, progress=False, energy=configs[s].energy or None)
        runs[s] = {**model_densities(trainer), "samples": trainer.sample_for_eval()[:2000], "final": finals[s]}
    target = load_trainer(out / samplers[0], progress=False, energy=configs[samplers[0]].energy or None).target
    save_figure(plot_side_by_side(runs, target), out / "comparison.png")
    return _write_comparison_table(out, markdown_table(finals), start)


def _write_comparison_table(out: Path, table: str, start: float) -> int:
    """comparison.md, then the table, the wall time and where the figure and table are, on the terminal."""
    from anila_core.fileio import atomic_write_text

    atomic_write_text(out / "comparison.md", table)
    print(table)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    print(f"figure: {out / 'comparison.png'}\ntable:  {out / 'comparison.md'}")
    return 0


def _finish_image_comparison(out: Path, samplers: list[str], finals: dict, start: float, configs: dict) -> int:
    """comparison.png (sample grids side by side: the paper's Figures 2 and 3), fid.png and comparison.md."""
    from anila_core.ui.report import image_markdown_table, plot_fid_curve, plot_image_side_by_side, save_figure
    from anila_core.training.runs import load_trainer

    trainers = {s: load_trainer(out / s, progress=False, energy=configs[s].energy or None) for s in samplers}
    samples = {s: t.sample_for_eval(64) for s, t in trainers.items()}
    save_figure(plot_image_side_by_side(samples, finals), out / "comparison.png")
    ax = plot_fid_curve({s: t.history for s, t in trainers.items()})
    if ax is not None:
        save_figure(ax.figure, out / "fid.png")
    return _write_comparison_table(out, image_markdown_table(finals), start)


def _finish_points_comparison(out: Path, samplers: list[str], finals: dict, start: float, configs: dict) -> int:
    """comparison.png (in 2-D the learned densities and samples, else samples on the data's principal axes) and comparison.md."""
    import torch

    from anila_core.sampling.distances import grid_log_probs
    from anila_core.training.runs import load_trainer
    from anila_core.ui.points_report import plot_points_side_by_side, points_markdown_table
    from anila_core.ui.report import save_figure

    runs, points = {}, None
    for s in samplers:
        trainer = load_trainer(out / s, progress=False, energy=configs[s].energy or None)
        points = trainer.dataset
        log_p = None
        if points.dim == 2:
            with torch.no_grad():
                log_p = grid_log_probs(trainer.eval_model(), extent=points.window, device=trainer.device)
        runs[s] = {"log_p": log_p, "samples": trainer.sample_for_eval()[:2000], "final": finals[s]}
    save_figure(plot_points_side_by_side(runs, points), out / "comparison.png")
    return _write_comparison_table(out, points_markdown_table(finals), start)


def cmd_sweep(args: argparse.Namespace) -> int:
    from anila_core.training import distributed
    from anila_core.study.sweep import STUDIES, Grid, best_settings, command_line, quality_key, run_sweep, study_base

    if distributed.from_env().enabled:
        raise ValueError("sweep: runs its cells as separate processes and cannot run under torchrun")
    overrides = _overrides(args)
    grid_flags = {"--samplers": args.samplers, "--step-size": args.grid_step_size, "--b": args.grid_b,
                  "--n-steps": args.grid_n_steps, "--chains": args.grid_chains, "--seed": args.grid_seed}
    if args.study:
        given = [flag for flag, value in grid_flags.items() if value is not None] + (["--preset"] if args.preset is not None else [])
        if given:
            raise ValueError(f"--study: fixes the grid and the preset; drop {', '.join(given)} (or leave out --study to give your own grid)")
        study = STUDIES[args.study]
        base = study_base(study, **overrides)
        cells = study.cells()
        design = dict(verdict_seeds=study.verdict_seeds, version=study.version, product_formula_check=study.product_formula_check)
        out = args.out or Path("runs") / f"sweep-{args.study}"
    else:
        images = bool(overrides.get("dataset")) and not str(overrides["dataset"]).startswith("points:")
        name = args.preset if args.preset is not None else ("cpu" if images else "sweep")
        base = preset(name, "langevin", **overrides)
        grid = Grid(kinds=args.samplers or ["langevin", "anila"], step_sizes=args.grid_step_size or [0.01], bs=args.grid_b or [1.0],
                    n_steps=args.grid_n_steps or [base.n_steps], chains=args.grid_chains or [base.chains], seeds=args.grid_seed or [0])
        cells = grid.cells()
        design = {}
        out = args.out or Path("runs") / "sweep"
    print(f"sweep: {len(cells)} cells on {base.data_name}, {base.iters} iterations each -> {out}", flush=True)
    start = time.perf_counter()
    summary = run_sweep(out, cells, base, jobs=args.jobs, progress=not args.no_progress, study=args.study, command=command_line(),
                        **design)
    for entry in best_settings(summary):
        w = entry["best"]
        steps = ", ".join(f"{s:g}" for s in entry["stable_step_sizes"]) or "none"
        if w is None:
            print(f"  {entry['kind']:>13}: no setting stable for every seed")
            continue
        key = quality_key(summary)
        b = "" if w["b"] is None else f", b={w['b']:g}"
        print(f"  {entry['kind']:>13}: best {key} {w[key]:.3f} at ε={w['step_size']:g}{b}; stable at ε in {{{steps}}}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    figures = [out / name for name in ("heatmaps.png", "stability.png", "quality_vs_budget.png", "two_densities.png") if (out / name).exists()]
    print(f"table: {out / 'sweep.md'}\nresults: {out / 'sweep.json'}\nfigures: {', '.join(map(str, figures))}")
    return 0


#: the demo's runs: Langevin and AniLA at the cpu preset's b = 30 (clips almost nothing, so it is nearly Langevin), and an
#: AniLA that clips most coordinates (b = 3), so that the comparison shows what clipping does to a trained energy
DEMO_RUNS = ("langevin", "anila", "anila:b=3")


def cmd_demo(args: argparse.Namespace) -> int:
    args.samplers, args.jobs, args.resume, args.no_progress = list(DEMO_RUNS), None, args.out.exists(), False
    return cmd_compare(args)


def _user_code_failed(err: BaseException, args: argparse.Namespace) -> int:
    """Exit 2 with one line naming the module of your own that raised ``err`` or called sys.exit during a run; else ``err`` again."""
    from anila_core.training.user_energy import user_code_failure

    theirs = user_code_failure(err, getattr(args, "energy", None) or "")
    if theirs is None and isinstance(err, SystemExit):
        theirs = f"the run called sys.exit({err.code!r}) and stopped"
    if theirs is None:
        raise err
    print(f"error: {theirs}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends with one ``error:`` line: exit 2 for bad input, 3 for a run that diverged or that the
    machine stopped (disk full, out of memory), 130 for Ctrl-C."""
    from anila_core.failures import RunFailure, disk_full, is_out_of_memory
    from anila_core.training.guard import TrainingDiverged

    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "compare": cmd_compare, "demo": cmd_demo, "sweep": cmd_sweep}
    try:
        return handlers[args.command](args)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        if args.command == "train" and "the last good checkpoint is" in str(err) and "gave up after" not in str(err):
            print("hint: continue from that checkpoint with --resume --on-divergence rollback (back to the last good "
                  "state at half the learning rate whenever it diverges)", file=sys.stderr)
        return EXIT_DIVERGED
    except RunFailure as err:
        print(f"error: {_in_flag_terms(str(err))}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, OSError) as err:  # OSError: a missing dataset, a folder one may not write to
        full = disk_full(err, getattr(err, "filename", None) or "a file") if isinstance(err, OSError) else None
        print(f"error: {full or _in_flag_terms(str(err))}", file=sys.stderr)
        return EXIT_FAILED if full else EXIT_BAD_INPUT
    except (MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            return _user_code_failed(err, args)
        print(f"error: out of memory ({type(err).__name__}: {' '.join(str(err).split())[:200]}); reduce --buffer-size, "
              "--batch-size or --width (--conv-width for images)", file=sys.stderr)
        return EXIT_FAILED
    except (SystemExit, Exception) as err:  # argparse exits before this try: here, code of a run (a network of your own)
        return _user_code_failed(err, args)
    except KeyboardInterrupt as err:
        note = getattr(err, "anila_note", None)
        if note is None and args.command == "train":  # before training started: nothing was written, or the checkpoint is as it was
            note = ("interrupted before the run started: its checkpoint is as it was; continue with --resume" if args.resume
                    else "interrupted before the run started: nothing was written; run the command again")
        elif note is None:  # several runs or cells: each kept what it reached
            note = ("interrupted: finished runs and their checkpoints are kept; run the same command again to go on (compare: "
                    "plus --resume; runs stopped before their first checkpoint start again)")
        print(note, file=sys.stderr)
        return 130
