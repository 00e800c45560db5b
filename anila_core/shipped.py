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
    "default_panel_run",
]

#: data/trained of the repository this package sits in (an editable install, or the checkout itself)
TRAINED = Path(__file__).resolve().parent.parent / "data" / "trained"
#: ``python -m anila_core demo``'s runs: the rings at the cpu preset, one folder per sampler
RINGS_DEMO = TRAINED / "rings-demo"
#: ``python -m anila_core compare --dataset digits --preset cpu``: Langevin and AniLA on the 8×8 digits
DIGITS_CPU = TRAINED / "digits-cpu"
#: the order runs are shown in: Langevin first, then the tuned AniLA, then the clipping one; other folders after, by
#: name
RUN_ORDER = ("langevin", "anila", "anila-b3")
#: what a folder needs for the loader and the notebooks: the settings, the weights and the final numbers
NEEDED = ("config.json", "checkpoint.pt", "final.json")


def run_folders(group: str | Path) -> dict[str, Path]:
    """The finished run folders of a comparison folder (``RINGS_DEMO``, ``DIGITS_CPU`` or a ``compare --out``): name →
    folder.

    A folder counts when it holds ``config.json``, ``checkpoint.pt`` and ``final.json``;
    names come in :data:`RUN_ORDER`, then alphabetically. Empty when there is none (say, a
    package installed without the repository's data folder).
    """
    group = Path(group)
    if not group.is_dir():
        return {}
    found = [p for p in group.iterdir() if p.is_dir() and all((p / f).is_file() for f in NEEDED)]
    rank = {name: i for i, name in enumerate(RUN_ORDER)}
    found.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    return {p.name: p for p in found}


def run_label(config) -> str:
    """How a run is named in figures: ``Langevin``, or ``AniLA b = 30`` (its threshold), from a TrainConfig or config
    dict."""
    c = config if isinstance(config, dict) else config.to_dict()
    names = {"langevin": "Langevin", "anila": "AniLA", "mala": "MALA", "psgld": "pSGLD", "hmc": "HMC"}
    label = names.get(c["sampler"], c["sampler"])
    if c["sampler"] == "anila":
        label += f" b = {c['b']:g}"
    return label


def load_runs(group: str | Path, device: str | None = None, names=None, energy=None) -> dict[str, object]:
    """The trainers of a comparison folder's runs, each rebuilt by
    :func:`anila_core.training.run_loading.load_trainer`: label → Trainer.

    ``load_trainer`` reads the checkpoint with ``weights_only=True`` (tensors and plain data,
    no code) and checks it against the run's config.json. ``device``: where to put the
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
        folders = {n: folders[n] for n in names}
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


def default_panel_run() -> Path | None:
    """The run a trained-energy panel samples when none is named: the shipped demo's tuned AniLA run (``None`` if
    absent)."""
    folders = run_folders(RINGS_DEMO)
    return folders.get("anila") or next(iter(folders.values()), None)
