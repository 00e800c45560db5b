"""The trained runs the repository ships in data/trained (the rings demo, the digits at the cpu preset): where they are,
how to name them, and loading them through the safe loader."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "TRAINED",
    "RINGS_DEMO",
    "DIGITS_CPU",
    "RUN_ORDER",
    "run_folders",
    "run_label",
    "load_runs",
    "diverged_runs",
    "default_panel_run",
]

#: data/trained of the repository this package sits in (an editable install, or the checkout itself)
TRAINED = Path(__file__).resolve().parent.parent / "data" / "trained"
#: ``python -m anila_core demo``'s runs: the rings study's seed-0 cells at its preset (sweep), one folder per run
RINGS_DEMO = TRAINED / "rings-demo"
#: ``python -m anila_core compare --dataset digits --preset cpu``: Langevin and AniLA on the 8×8 digits
DIGITS_CPU = TRAINED / "digits-cpu"
#: the order runs are shown in: Langevin and AniLA at their best (the presets' entries), then both at ε = 0.05 (the
#: demo's step size at which one trains and the other fails); other folders after, by name
RUN_ORDER = ("langevin", "anila", "langevin-eps0.05", "anila-eps0.05-b3")
#: what a folder needs for the loader and the notebooks: the settings, the weights and the final numbers
NEEDED = ("config.json", "checkpoint.pt", "final.json")
#: what a run that diverged leaves (its final.json says where and why; there are no weights to load)
NEEDED_DIVERGED = ("config.json", "final.json")


def run_folders(group: str | Path) -> dict[str, Path]:
    """The finished run folders of a comparison folder (``RINGS_DEMO``, ``DIGITS_CPU`` or a ``compare --out``): name →
    folder.

    A folder counts when it holds ``config.json``, ``checkpoint.pt`` and ``final.json``, or is a
    run that diverged (``config.json`` and a ``final.json`` that says so: a comparison's result
    too); names come in :data:`RUN_ORDER`, then alphabetically. Empty when there is none (say, a
    package installed without the repository's data folder).
    """
    group = Path(group)
    if not group.is_dir():
        return {}
    found = [p for p in group.iterdir() if p.is_dir() and (_diverged(p) or all((p / f).is_file() for f in NEEDED))]
    rank = {name: i for i, name in enumerate(RUN_ORDER)}
    found.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    return {p.name: p for p in found}


def _diverged(folder: Path) -> bool:
    """Whether ``folder`` holds a run that diverged, recorded as such (``Run.record_divergence``)."""
    if not all((folder / f).is_file() for f in NEEDED_DIVERGED) or (folder / "checkpoint.pt").exists():
        return False
    try:
        final = json.loads((folder / "final.json").read_text())
    except (OSError, ValueError):
        return False  # a damaged file: not a run this module can show (the loader names what is wrong with it)
    return isinstance(final, dict) and final.get("diverged") is True


def run_label(config) -> str:
    """How a run is named in figures, with its step size (and threshold): ``Langevin ε = 0.05``, ``AniLA ε = 0.02, b =
    3``, from a TrainConfig or config dict."""
    c = config if isinstance(config, dict) else config.to_dict()
    names = {"langevin": "Langevin", "anila": "AniLA", "mala": "MALA", "psgld": "pSGLD", "hmc": "HMC"}
    label = f"{names.get(c['sampler'], c['sampler'])} ε = {c['step_size']:g}"
    if c["sampler"] == "anila":
        label += f", b = {c['b']:g}"
    return label


def load_runs(group: str | Path, device: str | None = None, names=None, energy=None) -> dict[str, object]:
    """The trainers of a comparison folder's runs, each rebuilt by
    :func:`anila_core.training.run_loading.load_trainer`: label → Trainer.

    ``load_trainer`` reads the checkpoint with ``weights_only=True`` (tensors and plain data,
    no code) and checks it against the run's config.json. Runs that diverged have no weights
    and are left out (:func:`diverged_runs` gives them); naming one is refused. ``device``: where to put the
    models (default: the device the run names). ``names``: only those folders. ``energy``: the
    network of your own the runs were trained with (its spec or class; nothing a folder names
    alone is imported). Raises
    ``ValueError`` when the folder holds no finished run.
    """
    from anila_core.training.run_loading import load_trainer

    folders = run_folders(group)
    if names is not None:
        missing = [n for n in names if n not in folders]
        if missing:
            raise ValueError(f"names: {missing} are not finished runs in {group} (found {sorted(folders)})")
        diverged = [n for n in names if _diverged(folders[n])]
        if diverged:
            raise ValueError(f"names: {diverged} diverged in {group}: no trained weights to load (see diverged_runs)")
        folders = {n: folders[n] for n in names}
    folders = {n: p for n, p in folders.items() if not _diverged(p)}
    if not folders:
        raise ValueError(
            f"group: {group} holds no finished run (a folder with {', '.join(NEEDED)}); "
            "train anew, or point to the output of `python -m anila_core compare --out ...`"
        )
    trainers = {}
    for folder in folders.values():
        trainer = load_trainer(folder, progress=False, device=device, energy=energy)  # checks config.json first
        trainers[run_label(json.loads((folder / "config.json").read_text()))] = trainer
    return trainers


def diverged_runs(group: str | Path) -> dict[str, dict]:
    """The runs of a comparison folder that diverged: label → their ``final.json`` (``diverged_at``, ``cause``,
    ``config``)."""
    finals = [json.loads((p / "final.json").read_text()) for p in run_folders(group).values() if _diverged(p)]
    return {run_label(f["config"]): f for f in finals}


def default_panel_run() -> Path | None:
    """The run a trained-energy panel samples when none is named: the shipped demo's AniLA at its best (ε = 0.005,
    b = 10), a run that clips a few per cent of the coordinates (``None`` if absent)."""
    folders = {n: p for n, p in run_folders(RINGS_DEMO).items() if not _diverged(p)}
    return folders.get("anila") or next(iter(folders.values()), None)
