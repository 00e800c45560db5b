"""Command line for long runs: ``python -m anila_core train | compare | demo | sweep`` (``train`` also under
``torchrun`` on several GPUs)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from anila_core.training.config import RESUMABLE_FIELDS, TrainConfig, changed_settings
from anila_core.training.presets import DEFAULT_PRESET, IMAGE_PRESETS, PRESETS, preset
from anila_core.fileio import read_json_file
from anila_core.flags import add_config_flags, config_overrides

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2
#: a run that diverged, or that its machine stopped (disk full, out of memory)
EXIT_FAILED = EXIT_DIVERGED = 3


class _Parser(argparse.ArgumentParser):
    """argparse, answering a bad flag with one ``error:`` line (and where to read more) instead of the usage block
    first."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: the library's arguments that a command-line user sets with a flag: the library's errors name the
#: arguments (a notebook has no flags), and this layer words them in the flags' terms
_FLAGS = {
    "out_dir": "--out",
    "out": "--out",
    "resume=True": "--resume",
    "iters": "--iters",
    "jobs": "--jobs",
    "cell": "--cell",
    "time_min": "--slurm-time",
    "executor": "--executor",
}
#: those of them that mean nothing else inside a message (``out`` or ``jobs`` may be plain words there)
_FLAG_WORDS = ("out_dir", "resume=True", "iters")


def _in_flag_terms(message: str) -> str:
    """A library error worded with the flags that set its arguments: ``iters: 5 is below …`` → ``--iters: 5 is below
    …``."""
    head, sep, rest = message.partition(": ")
    if sep and head in _FLAGS:
        message = _FLAGS[head] + sep + rest
    for name in _FLAG_WORDS:  # not inside a longer name (lr_decay_iters), a path, a flag or quotes (a file's key)
        message = re.sub(rf"(?<![\w./'\"-]){re.escape(name)}(?![\w/'\"])", _FLAGS[name], message)
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m anila_core", description="Train energy-based models with Langevin or AniLA samplers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    presets = (
        f"2-D targets and --dataset points:FILE: {', '.join(sorted(PRESETS))}; with images: "
        f"{', '.join(sorted(IMAGE_PRESETS))}"
    )

    train = sub.add_parser(
        "train",
        help="train one EBM and write a run directory",
        description="Train an EBM (Algorithm 1) on a 2-D target (--target, the default), on an image "
        "dataset (--dataset digits|cifar10|flowers, read from --data-root or $ANILA_DATA), on a "
        "folder of your images (--dataset images:FOLDER) or on points of a file (--dataset "
        "points:FILE), optionally with an energy network of your own (--energy module.path:Name), and "
        "write a run directory: config.json, metrics.jsonl, final.json, checkpoint.pt and PNG "
        "figures. Under torchrun (torchrun --nproc_per_node N -m anila_core train ...) each "
        "process runs its own chains, gradients are averaged, and rank 0 writes the files.",
    )
    train.add_argument("--preset", default=None, help=f"named settings ({presets}; default {DEFAULT_PRESET})")
    train.add_argument(
        "--out", type=Path, default=None, help="run directory (default runs/<target or dataset>-<sampler>-seed<seed>)"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint: the same command line plus --resume (only "
        "--iters, --device, --data-root, --on-divergence and --max-rollbacks may differ from the run's)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(train)

    from anila_core.study.commands import add_parsers

    add_parsers(sub, presets)
    return parser


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

    overrides = config_overrides(args)
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
            run = Run(
                args.out,
                resume=True,
                iters=overrides.get("iters"),
                progress=progress,
                data_root=overrides.get("data_root"),
                on_divergence=overrides.get("on_divergence"),
                max_rollbacks=overrides.get("max_rollbacks"),
                device=overrides.get("device"),
                energy=overrides.get("energy") or None,
            )
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
    parts = "; ".join(
        f"{_flag(k)}: {saved[k]!r} in the run's config.json, {wanted[k]!r} {origin.get(k, 'given')}"
        for k in changed[:4]
    )
    more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
    raise ValueError(
        f"--resume: {', '.join(_flag(k) for k in changed)} cannot change on resume ({parts}{more}); the run keeps "
        f"its config.json: drop the flag or give the run's value; only {', '.join(_flag(f) for f in RESUMABLE_FIELDS)} "
        "can "
        "change"
    )


def _user_code_failed(err: BaseException, args: argparse.Namespace) -> int:
    """Exit 2 with one line naming the module of your own that raised ``err`` or called sys.exit during a run; else
    ``err`` again."""
    from anila_core.training.user_energy import user_code_failure

    theirs = user_code_failure(err, getattr(args, "energy", None) or "")
    if theirs is None and isinstance(err, SystemExit):
        theirs = f"the run called sys.exit({err.code!r}) and stopped"
    if theirs is None:
        raise err
    print(f"error: {theirs}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends with one ``error:`` line: exit 2 for bad input, 3 for a run that diverged or
    that the machine stopped (disk full, out of memory), 130 for Ctrl-C."""
    from anila_core.failures import RunFailure, disk_full, is_out_of_memory
    from anila_core.training.guard import TrainingDiverged

    args = build_parser().parse_args(argv)
    from anila_core.study.commands import cmd_compare, cmd_demo, cmd_sweep

    handlers = {"train": cmd_train, "compare": cmd_compare, "demo": cmd_demo, "sweep": cmd_sweep}
    try:
        return handlers[args.command](args)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        if args.command == "train" and err.checkpoint is not None and not err.gave_up:
            print(
                "hint: continue from that checkpoint with --resume --on-divergence rollback (back to the last good "
                "state at half the learning rate whenever it diverges)",
                file=sys.stderr,
            )
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
        print(
            f"error: out of memory ({type(err).__name__}: {' '.join(str(err).split())[:200]}); reduce --buffer-size, "
            "--batch-size or --width (--conv-width for images)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except (
        SystemExit,
        Exception,
    ) as err:  # argparse exits before this try: here, code of a run (a network of your own)
        return _user_code_failed(err, args)
    except KeyboardInterrupt as err:
        note = getattr(err, "anila_note", None)
        if (
            note is None and args.command == "train"
        ):  # before training started: nothing was written, or the checkpoint is as it was
            note = (
                "interrupted before the run started: its checkpoint is as it was; continue with --resume"
                if args.resume
                else "interrupted before the run started: nothing was written; run the command again"
            )
        elif note is None:  # several runs or cells: each kept what it reached
            note = (
                "interrupted: finished runs and their checkpoints are kept; run the same command again to go on "
                "(compare: "
                "plus --resume; runs stopped before their first checkpoint start again)"
            )
        print(note, file=sys.stderr)
        return 130
