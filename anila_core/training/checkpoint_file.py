"""Reading a checkpoint file: tensors and plain data only (loading never runs code), its generator states fitted to the
device."""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from pathlib import Path

import torch

from anila_core.fileio import check_regular

__all__ = ["load_checkpoint", "fit_generator_states"]


def load_checkpoint(path: str | Path) -> object:
    """Read a checkpoint (or any state file of a run) without running code it may carry: tensors and plain data only.

    ``torch.load(weights_only=True)``: a pickle can name any Python callable to rebuild an
    object, and loading it calls that callable, so a run folder from elsewhere could run code
    on resume, in a notebook or in the app. What anila_core saves (dicts, lists, numbers,
    strings, tensors, generator states as byte tensors) needs nothing more. A file that asks
    for more is refused with a ``ValueError`` naming it, and nothing is loaded.
    """
    path = Path(path)
    check_regular(path, "a checkpoint.pt written by anila_core")  # a FIFO would block torch.load forever
    try:
        with warnings.catch_warnings():
            # torch warns about a pickle protocol it does not expect: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _unreadable(path, err) from None
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it asks for {found.group(1)}" if found else "it is not a torch checkpoint"
        raise ValueError(
            f"{path}: refused: it may not be a checkpoint of anila_core: it holds Python objects other "
            "than "
            f"tensors and plain data ({what}), and loading such a file could run code it carries; "
            "nothing was "
            "loaded and nothing in its folder was changed; expected a checkpoint.pt written by "
            "anila_core"
        ) from None
    except Exception as err:  # a torn or foreign file: say which and why
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> ValueError:
    detail = " ".join(str(err).split())
    detail = detail if len(detail) <= 200 else detail[:199] + "…"
    return ValueError(
        f"{path}: cannot be read as a checkpoint, it is truncated or not a checkpoint at all "
        f"({type(err).__name__}: {detail}); expected a complete checkpoint.pt written by anila_core"
    )


def fit_generator_states(state: dict, device: torch.device) -> bool:
    """Make the saved chain generators' states loadable by a generator on ``device``, in place; True when one had to
    change.

    A CPU generator's state (the Mersenne Twister's 5 kB) and a CUDA one's (Philox seed and
    offset) cannot be loaded into each other, so a run resumed on another kind of device
    reseeds its chain stream from a hash of the saved state: deterministic, and still its own
    stream per rank.
    """
    ranks = state.get("ranks")
    holders = [state] + [r for r in (ranks if isinstance(ranks, list) else []) if isinstance(r, dict)]
    changed = False
    # only a state of exactly another kind of device's generator is reseeded; any other is left for validate_checkpoint
    # to refuse
    sizes = {torch.Generator(device="cpu").get_state().numel()}
    if device.type == "cpu":
        sizes.add(16)  # a CUDA generator's seed and offset
    for holder in holders:
        saved = holder.get("generator")
        if not isinstance(saved, torch.Tensor) or saved.dtype != torch.uint8 or saved.numel() not in sizes:
            continue
        try:
            torch.Generator(device=device).set_state(saved)
        except RuntimeError:  # the wrong size for this device's generator: saved on another kind of device
            seed = int.from_bytes(hashlib.sha256(saved.cpu().numpy().tobytes()).digest()[:8], "little") >> 1
            holder["generator"] = torch.Generator(device=device).manual_seed(seed).get_state()
            changed = True
    return changed
