"""The command line of runs in folders: compare, sweep and demo, their flags parsed and their results printed."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from anila_core.flags import add_config_flags, config_overrides, integer_flag, listed
from anila_core.sampling.compile_rule import parse_fast
from anila_core.sampling.registry import SAMPLERS
from anila_core.study.runner import EXECUTORS, config_flags
from anila_core.training.config import TrainConfig
from anila_core.training.presets import DEFAULT_PRESET, preset
from anila_core.training.kinds import data_kind

__all__ = [
    "add_parsers",
    "cmd_compare",
    "cmd_sweep",
    "cmd_demo",
    "run_spec",
    "DEMO_RUNS",
    "DEMO_PRESET",
    "LABEL_NAMES",
    "SWEEP_AXES",
]


def add_parsers(sub, presets: str) -> None:
    """The ``compare``, ``sweep`` and ``demo`` subcommands, in that order, on the command line's ``sub`` parsers."""
    compare = sub.add_parser(
        "compare",
        help="train several samplers with the same seed and budget, side by side",
        description="Train one run per sampler (same preset, seed and budget), then write the "
        "side-by-side figure comparison.png and the table comparison.md.",
    )
    compare.add_argument(
        "--samplers",
        nargs="+",
        default=["langevin", "anila"],
        metavar="SAMPLER",
        help=f"samplers to compare, from: {listed(sorted(SAMPLERS))} (default langevin anila); an "
        "entry may carry its own settings, anila:b=3 or anila:b=3,step_size=0.02 (its folder: "
        "anila-b3, ...)",
    )
    compare.add_argument(
        "--preset",
        default=None,
        help=f"named settings ({presets}; default {DEFAULT_PRESET}); each sampler gets its own tuned entries",
    )
    compare.add_argument(
        "--out",
        type=Path,
        default=Path("runs/compare"),
        help="folder for the runs and the figure (default runs/compare)",
    )
    compare.add_argument(
        "--jobs",
        type=integer_flag,
        default=None,
        help="runs in parallel (default: one per CPU core, at most one per sampler)",
    )
    compare.add_argument(
        "--resume", action="store_true", help="resume unfinished runs in --out; finished ones are kept"
    )
    compare.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_runner_flags(compare, "run (a `train` command)", "the same command plus --resume collects them")
    add_config_flags(compare, skip=("sampler",))

    _add_sweep_parser(sub, presets)

    demo = sub.add_parser(
        "demo",
        help="the headless demo on the rings: the rings study's seed-0 cells at its preset (sweep): Langevin at "
        "its best (ε = 0.01), AniLA at its best (ε = 0.005, b = 10, clipping a few per cent), and both at ε = 0.05, "
        "where Langevin diverges and AniLA at b = 3 trains; a few minutes on 2 cores",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="folder for the comparison (default runs/demo)"
    )
    demo.add_argument(
        "--preset",
        default=DEMO_PRESET,
        help=f"named settings (default {DEMO_PRESET}, the rings study's: then the runs are its seed-0 cells)",
    )


#: the settings a sweep varies per cell; the rest of its flags set the base every cell shares
SWEEP_AXES = ("sampler", "step_size", "b", "n_steps", "chains", "seed", "norm", "variant", "metropolis")


def _add_sweep_parser(sub, presets: str) -> None:
    from anila_core.training.config import CHAIN_KINDS
    from anila_core.study.grid import KIND_HELP, KINDS, STUDIES

    sweep = sub.add_parser(
        "sweep",
        help="the sampler study: a grid of settings and seeds at one budget per cell, in parallel, resumable",
        description="Train one run per cell of the grid (samplers × step sizes × b × K × chain kinds × seeds; b "
        "applies to the AniLA samplers only) at the same budget, in parallel processes, and write "
        "sweep.json, sweep.md, heatmaps.png, stability.png, quality_vs_budget.png (and "
        "two_densities.png) to --out. Each finished cell is saved at once (cells/<cell>.json): running "
        "the same command again finishes an interrupted sweep without recomputing a finished cell, and an "
        "interrupted cell resumes from its last checkpoint (partial/<cell>/, saved every few minutes). "
        "Samplers: " + "; ".join(f"{k}: {v}" for k, v in KIND_HELP.items()) + ".",
    )
    sweep.add_argument(
        "--study",
        choices=sorted(STUDIES),
        default=None,
        help="a named grid (rings: the committed study, docs/study/rings; digits; smoke); then the grid "
        "flags below are not allowed",
    )
    sweep.add_argument(
        "--samplers",
        nargs="+",
        choices=list(KINDS),
        default=None,
        metavar="SAMPLER",
        help=f"samplers, from: {listed(KINDS)} (default langevin anila)",
    )
    sweep.add_argument(
        "--step-size",
        dest="grid_step_size",
        nargs="+",
        type=float,
        default=None,
        metavar="EPS",
        help="step sizes ε (default 0.01)",
    )
    sweep.add_argument(
        "--b", dest="grid_b", nargs="+", type=float, default=None, metavar="B", help="AniLA thresholds b (default 1)"
    )
    sweep.add_argument(
        "--n-steps",
        dest="grid_n_steps",
        nargs="+",
        type=integer_flag,
        default=None,
        metavar="K",
        help="sampler transitions per iteration (default: the preset's)",
    )
    sweep.add_argument(
        "--chains",
        dest="grid_chains",
        nargs="+",
        choices=list(CHAIN_KINDS),
        default=None,
        metavar="CHAINS",
        help=f"chain kinds, from: {listed(CHAIN_KINDS)} (default: the preset's)",
    )
    sweep.add_argument(
        "--seed", dest="grid_seed", nargs="+", type=integer_flag, default=None, metavar="SEED", help="seeds (default 0)"
    )
    sweep.add_argument(
        "--preset", default=None, help=f"base settings of every cell ({presets}; default sweep, or cpu with --dataset)"
    )
    sweep.add_argument(
        "--out", type=Path, default=None, help="folder of the sweep (default runs/sweep-<study>, or runs/sweep)"
    )
    sweep.add_argument("--jobs", type=integer_flag, default=None, help="cells in parallel (default: one per CPU core)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument(
        "--cell",
        default=None,
        metavar="ID",
        help="train only this cell of the sweep here and write cells/ID.json (what --print-commands "
        "lists; the folder must hold the sweep's plan.json)",
    )
    _add_runner_flags(sweep, "cell (a `sweep ... --cell ID` command)", "the same command collects them")
    add_config_flags(sweep, skip=SWEEP_AXES)


def _add_runner_flags(parser: argparse.ArgumentParser, unit: str, collect: str) -> None:
    """Where the runs go: this machine's processes (the default), a SLURM array through submitit, or a list of
    commands."""
    group = parser.add_argument_group("where the runs go (this machine by default)")
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: processes on this machine (default); submitit: a SLURM array through submitit (pip "
        "install 'anila_core[cluster]'), its job files in --out/submitit; where there is no SLURM, "
        "submitit's local processes",
    )
    group.add_argument(
        "--print-commands",
        action="store_true",
        help=f"print one command per unfinished {unit} instead of running it, for any other scheduler; "
        f"once they ran, {collect}",
    )
    group.add_argument(
        "--slurm-partition", default=None, metavar="NAME", help="the SLURM partition (--executor submitit)"
    )
    group.add_argument(
        "--slurm-time",
        type=integer_flag,
        default=None,
        metavar="MINUTES",
        help="the time limit of each run on SLURM, in minutes (--executor submitit)",
    )


def cmd_compare(args: argparse.Namespace, preset_name: str | None = None) -> int:
    from anila_core.study.compare import run_compare
    from anila_core.training import distributed

    if distributed.from_env().enabled:
        raise ValueError(
            "compare: runs its samplers as separate processes and cannot run under torchrun; use "
            "`torchrun ... -m anila_core train --sampler NAME` once per sampler"
        )
    overrides = config_overrides(args)
    parsed = [run_spec(text) for text in dict.fromkeys(args.samplers)]
    labels = [label for label, _, _ in parsed]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(
            f"--samplers: {', '.join(twice)} named twice (the same run folder); give each entry other settings"
        )
    specs = {label: (sampler, settings) for label, sampler, settings in parsed}
    name = args.preset if args.preset is not None else (preset_name or DEFAULT_PRESET)
    configs = {
        label: preset(name, sampler, **{**overrides, **settings}) for label, (sampler, settings) in specs.items()
    }

    # the one `train` command that makes the same run (folders given absolute)
    def train_command(label: str) -> list[str]:
        sampler, settings = specs[label]
        return [
            "train",
            "--preset",
            name,
            "--sampler",
            sampler,
            *config_flags({**overrides, **settings}),
            "--out",
            str((args.out / label).absolute()),
            "--no-progress",
        ]

    result = run_compare(
        args.out,
        configs,
        jobs=args.jobs,
        resume=args.resume,
        progress=not args.no_progress,
        executor=args.executor,
        partition=args.slurm_partition,
        time_min=args.slurm_time,
        train_command=train_command,
        print_only=args.print_commands,
    )
    if result is None:
        print(
            "compare: one `train` command per unfinished run above; once they ran, the same compare command plus "
            "--resume collects them and writes the figure and the table",
            file=sys.stderr,
        )
        return 0
    print(result.table)
    print(f"wall time {result.wall_s:.0f} s")
    figure = result.figure_path or "none (no run trained: the table says where each diverged)"
    print(f"figure: {figure}\ntable:  {result.table_path}")
    return 0


#: how a run's folder name writes a setting, as the study's cell ids do (anila_core.study.grid.cell_id)
LABEL_NAMES = {"step_size": "eps", "n_steps": "K"}


def run_spec(text: str) -> tuple[str, str, dict]:
    """One entry of ``compare --samplers``: ``anila``, or a sampler with its own settings, ``anila:b=3`` or
    ``anila:b=3,step_size=0.02``.

    Returns the run's label (its folder: ``anila-b3``, ``anila-eps0.05``, ``anila-b3-K5``), the
    sampler's name and its settings, which override the preset's entries for that sampler (and the
    flags shared by every run).
    """
    sampler, _, rest = text.partition(":")
    settings = {}
    kinds = {f.name: f.type if isinstance(f.type, str) else f.type.__name__ for f in fields(TrainConfig)}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in kinds or key == "sampler":
            raise ValueError(
                f"--samplers: {text!r}: expected NAME or NAME:setting=value,... with settings of train's "
                f"flags (such as b=3 or step_size=0.02), got {item!r}"
            )
        try:
            parsers = {"int": integer_flag, "float": float, "str": str, "bool": _boolean, "str | bool": parse_fast}
            settings[key] = parsers[kinds[key]](value.strip())
        except (ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"--samplers: {text!r}: {key}: {err}") from None
    # a folder name that says what differs, in the study's cell ids' words: anila:b=3,step_size=0.05 -> anila-b3-eps0.05
    label = "-".join(
        [sampler]
        + [
            LABEL_NAMES.get(k, k.replace("_", "-")) + (f"{v:g}" if isinstance(v, float) else str(v))
            for k, v in settings.items()
        ]
    )
    return label, sampler, settings


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from anila_core.study.grid import STUDIES, Grid, study_base
    from anila_core.study.results import best_settings, quality_key
    from anila_core.study.sweep import command_line, run_sweep, run_sweep_cell
    from anila_core.training import distributed

    if distributed.from_env().enabled:
        raise ValueError("sweep: runs its cells as separate processes and cannot run under torchrun")
    overrides = config_overrides(args)
    grid_flags = _grid_flags(args)
    if args.study:
        given = [flag for flag, value in grid_flags.items() if value is not None]
        given += ["--preset"] if args.preset is not None else []
        if given:
            raise ValueError(
                f"--study: fixes the grid and the preset; drop {', '.join(given)} (or leave out --study "
                f"to give your own grid)"
            )
        study = STUDIES[args.study]
        base = study_base(study, **overrides)
        cells = study.cells()
        design = dict(
            verdict_seeds=study.verdict_seeds, version=study.version, product_formula_check=study.product_formula_check
        )
        out = args.out or Path("runs") / f"sweep-{args.study}"
    else:
        images = data_kind(TrainConfig(dataset=overrides.get("dataset") or "")).name == "images"
        name = args.preset if args.preset is not None else ("cpu" if images else "sweep")
        base = preset(name, "langevin", **overrides)
        grid = Grid(
            kinds=args.samplers or ["langevin", "anila"],
            step_sizes=args.grid_step_size or [0.01],
            bs=args.grid_b or [1.0],
            n_steps=args.grid_n_steps or [base.n_steps],
            chains=args.grid_chains or [base.chains],
            seeds=args.grid_seed or [0],
        )
        cells = grid.cells()
        design = {}
        out = args.out or Path("runs") / "sweep"
    if args.cell is not None:
        if args.print_commands or args.executor != "local":
            raise ValueError("--cell: trains that one cell here; drop --print-commands and --executor")
        done = run_sweep_cell(
            out, cells, base, args.cell, verdict_seeds=design.get("verdict_seeds", ()), version=design.get("version", 1)
        )
        print(f"cell {done['id']}: {out / 'cells' / (done['id'] + '.json')}")
        return 0
    # with --print-commands the commands alone go to stdout (to pipe into a scheduler), what the sweep says to stderr
    where = sys.stderr if args.print_commands else sys.stdout

    def say(text: str) -> None:
        print(text, file=where, flush=True)

    say(f"sweep: {len(cells)} cells on {base.data_name}, {base.iters} iterations each -> {out}")
    start = time.perf_counter()
    summary = run_sweep(
        out,
        cells,
        base,
        jobs=args.jobs,
        progress=not args.no_progress,
        study=args.study,
        command=command_line(),
        executor=args.executor,
        partition=args.slurm_partition,
        time_min=args.slurm_time,
        cell_command=_sweep_cell_command(args, overrides, out),
        print_only=args.print_commands,
        **design,
    )
    if summary is None:
        say(
            "sweep: one command per unfinished cell above, in any order on any scheduler; once they ran, this same "
            "command collects the cells and writes the report (a study with verdict seeds then lists their cells)"
        )
        return 0
    for entry in best_settings(summary):
        w = entry["best"]
        steps = ", ".join(f"{s:g}" for s in entry["stable_step_sizes"]) or "none"
        if w is None:
            print(f"  {entry['kind']:>13}: every seed of its settings diverged")
            continue
        key = quality_key(summary)
        b = "" if w["b"] is None else f", b={w['b']:g}"
        print(f"  {entry['kind']:>13}: best {key} {w[key]:.3f} at ε={w['step_size']:g}{b}; stable at ε in {{{steps}}}")
    print(f"wall time {time.perf_counter() - start:.0f} s")
    figures = [
        out / name
        for name in ("heatmaps.png", "stability.png", "quality_vs_budget.png", "two_densities.png")
        if (out / name).exists()
    ]
    print(f"table: {out / 'sweep.md'}\nresults: {out / 'sweep.json'}\nfigures: {', '.join(map(str, figures))}")
    return 0


def _grid_flags(args: argparse.Namespace) -> dict:
    """The grid's flags as given on the command line (``None`` where left out), by flag."""
    return {
        "--samplers": args.samplers,
        "--step-size": args.grid_step_size,
        "--b": args.grid_b,
        "--n-steps": args.grid_n_steps,
        "--chains": args.grid_chains,
        "--seed": args.grid_seed,
    }


def _sweep_cell_command(args: argparse.Namespace, overrides: dict, out: Path):
    """The command of one cell of this sweep: the same grid (or study) and settings, the folder absolute, plus ``--cell
    ID``."""
    from anila_core.study.grid import cell_id

    argv = ["sweep"]
    if args.study:
        argv += ["--study", args.study]
    else:
        argv += ["--preset", args.preset] if args.preset is not None else []
        for flag, values in _grid_flags(args).items():
            if values is not None:  # repr: every digit of a float
                argv += [flag, *(repr(v) if isinstance(v, float) else str(v) for v in values)]
    argv += [*config_flags(overrides), "--out", str(out.absolute()), "--no-progress"]
    return lambda cell: [*argv, "--cell", cell_id(cell)]


#: the demo's preset: the rings study's (its base is the cells' base), so that at seed 0 its runs are the study's cells
DEMO_PRESET = "sweep"
#: the demo's runs, the contrasts the rings study found: Langevin and AniLA at their best (the preset's entries:
#: ε = 0.01; ε = 0.005, b = 10, which clips a few per cent of the coordinates), and both at ε = 0.05, where Langevin
#: lost the target for each of 10 seeds and AniLA at b = 3 trained for each (at b = 10 it lost 2 of 3 search seeds)
DEMO_RUNS = ("langevin", "anila", "langevin:step_size=0.05", "anila:step_size=0.05,b=3")


def cmd_demo(args: argparse.Namespace) -> int:
    args.samplers, args.jobs, args.resume, args.no_progress = list(DEMO_RUNS), None, args.out.exists(), False
    args.executor, args.print_commands, args.slurm_partition, args.slurm_time = "local", False, None, None
    return cmd_compare(args)
