"""Memory a run needs, checked before it starts, and the out-of-memory message that names the sizes to reduce."""

from __future__ import annotations

import math
import os

from anila_core.failures import OutOfMemory
from anila_core.training.config import TrainConfig
from anila_core.training.kinds import data_kind

__all__ = ["memory_needs", "available_memory", "check_memory", "out_of_memory"]

_FLOAT = 4  # bytes of a float32: the chains


def memory_needs(config: TrainConfig) -> dict[str, tuple[int, str]]:
    """A lower bound of the bytes a run holds at once, per part: ``{flag: (bytes, what)}``.

    Only what is certain to be allocated counts (the chains, one layer's activations over a
    batch, the weights with their gradient and Adam's two moments, the MMD's kernel matrices),
    so a refusal never turns away a run that would have fit.
    """
    c = config
    kind = data_kind(c)
    shape = kind.shape()
    needs: dict[str, tuple[int, str]] = {}
    if c.chains == "buffer":
        values = math.prod(shape)
        needs["--buffer-size"] = (
            c.buffer_size * values * _FLOAT,
            f"chains: buffer_size {c.buffer_size} × {values} values × 4 bytes",
        )
    needs.update(kind.memory_needs(shape))  # the network's activations and weights, the metrics' matrices
    return needs


def available_memory(config: TrainConfig) -> tuple[int, str] | None:
    """Bytes free where the run's tensors live (the GPU's free memory, or the machine's available memory); ``None`` when
    unknown."""
    try:
        from anila_core.device import resolve_device

        device = resolve_device(config.device)
    except ValueError:
        return None  # the trainer names the bad device
    if device.type == "cuda":
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(device)
        except RuntimeError:
            return None
        return int(free), f"free on {device}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on this machine"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available on this machine"
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def check_memory(config: TrainConfig) -> None:
    """Refuse, with a ``ValueError`` naming the largest size, a run whose certain needs exceed the memory free for it.

    Cheap (arithmetic on the configuration) and done before anything is allocated or written:
    an allocation of many gigabytes can otherwise succeed on paper and end in the kernel's
    OOM killer, which leaves no message at all.
    """
    free = available_memory(config)
    if free is None:
        return
    needs = memory_needs(config)
    total = sum(b for b, _ in needs.values())
    if total <= free[0]:
        return
    flag, (most, what) = max(needs.items(), key=lambda kv: kv[1][0])
    raise ValueError(
        f"{flag.lstrip('-').replace('-', '_')}: the run needs at least {_gb(total)} of memory, more than the "
        f"{_gb(free[0])} {free[1]}; the largest part is {what} = {_gb(most)}; expected a smaller {flag}"
    )


def out_of_memory(err: BaseException, config: TrainConfig, during: str) -> OutOfMemory:
    """The :class:`OutOfMemory` for a failed allocation ``err`` raised ``during`` a run: what failed, and the sizes to
    reduce, largest first."""
    c = config
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if len(first) > 160:
        first = first[:159] + "…"
    needs = sorted(memory_needs(c).items(), key=lambda kv: -kv[1][0])
    sizes = ", ".join(f"{flag} (now {getattr(c, flag[2:].replace('-', '_'))})" for flag, _ in needs)
    if c.energy:
        sizes = (
            sizes + ", " if sizes else ""
        ) + f"--batch-size (now {c.batch_size}) or the size of your network ({c.energy})"
    where = "GPU memory" if "CUDA" in str(err) or type(err).__name__ == "OutOfMemoryError" else "memory"
    return OutOfMemory(f"out of {where} {during} ({type(err).__name__}: {first}); reduce {sizes}")
