"""The benchmark's clocks and measures: machine facts, the load average, rows taking turns, medians, memory peaks."""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from anila_core.sampling.kernel import energy_and_grad

# --------------------------------------------------------------------------- machine


def machine_info(threads: int) -> dict:
    """The machine and the versions a results file names, TorchEBM's included, and the load average at the start."""
    from anila_core.device import processor_name

    info = {
        "cpu": processor_name(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_start": load_average(),
    }
    try:
        import torchebm

        info["torchebm"] = torchebm.__version__
    except Exception as err:  # not installed (an optional, benchmark-only extra) or broken
        info["torchebm"] = None
        info["torchebm_error"] = f"{type(err).__name__}: {err}"
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, rounded (``None`` where the system keeps none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class LoadLog:
    """The 1-minute load average, sampled at every section: other jobs share the CPU, and the reader must know."""

    def __init__(self):
        self.samples: list[float] = []

    def mark(self) -> None:
        load = load_average()
        if load:
            self.samples.append(load[0])

    def summary(self) -> dict:
        s = self.samples or [float("nan")]
        return {"min": min(s), "median": round(statistics.median(s), 2), "max": max(s), "samples": len(self.samples)}


# --------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device``: CUDA runs asynchronously, so a clock read before would stop too early."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clocks(device: torch.device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds), after the device's queued work is done."""
    sync(device)
    return time.perf_counter(), time.process_time()


def _diff(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return b[0] - a[0], b[1] - a[1]


def interleaved(
    measures: dict[str, Callable[[], tuple[float, float]]], reps: int, warmup: int
) -> dict[str, list[tuple[float, float]]]:
    """Run every measure ``warmup`` times, then ``reps`` rounds in which each takes its turn (the order rotated)."""
    for m in measures.values():
        for _ in range(warmup):
            m()
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in measures}
    names = list(measures)
    for r in range(reps):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotated: no row always follows the same neighbour
            samples[name].append(measures[name]())
    return samples


class Stats:
    """Medians of (wall, CPU) samples, reported on the clock chosen for the device (see ``--clock``)."""

    clock = "wall"

    @classmethod
    def use_clock(cls, clock: str) -> None:
        """Report CPU rows on ``clock`` from now on: ``"cpu"`` (this process's CPU time) or ``"wall"``."""
        cls.clock = clock

    @classmethod
    def of(cls, values: list[tuple[float, float]], device: torch.device) -> dict:
        use_cpu = cls.clock == "cpu" and device.type == "cpu"
        ms = sorted(v[1 if use_cpu else 0] * 1e3 for v in values)
        q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0], ms[0], ms[0]]
        return {
            "ms": statistics.median(ms),
            "ms_p25": q[0],
            "ms_p75": q[2],
            "n": len(ms),
            "clock": "cpu" if use_cpu else "wall",
            "wall_ms": statistics.median(v[0] * 1e3 for v in values),
            "cpu_ms": statistics.median(v[1] * 1e3 for v in values),
        }


def floor_measure(net, x, K: int) -> Callable[[], tuple[float, float]]:
    """One ``energy_and_grad`` of ``net`` at ``x``, measured like a transition: the marginal cost of one more call."""

    def run(k: int) -> None:
        for _ in range(k):
            energy_and_grad(net, x)

    return marginal_measure(run, K, x.device)


def matmul_chain_arrays(net, batch: int) -> dict:
    """Inputs for timing a transition's matrix products alone: a ``(batch, width)`` start, an orthogonal matrix per
    square hidden layer of ``net``.

    A transition of an MLP makes two products per ``width × width`` layer (the forward, and
    its input gradient through the transposed weight). Chained with orthogonal matrices of
    those shapes, the products keep the activations' norm, so no value drifts into the
    denormals that slow a CPU's arithmetic, and each product needs the one before, as in a
    transition. The same arrays feed the torch row and the XLA row.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    squares = [m for m in net.modules() if isinstance(m, torch.nn.Linear) and m.in_features == m.out_features]
    arrays = {"mm_h": rng.standard_normal((batch, squares[0].in_features)).astype(np.float32)} if squares else {}
    for i, m in enumerate(squares):
        arrays[f"mm_q{i}"] = np.linalg.qr(rng.standard_normal((m.in_features, m.in_features)))[0].astype(np.float32)
    return arrays


def matmuls_measure(arrays: dict, K: int, device: torch.device) -> Callable[[], tuple[float, float]]:
    """The products of :func:`matmul_chain_arrays` per transition, with torch's GEMM.

    ``x @ Wᵀ`` forward, ``g @ W`` backward: the layouts of a transition's graph.
    """
    h0 = torch.from_numpy(arrays["mm_h"]).to(device)
    qs = [torch.from_numpy(arrays[f"mm_q{i}"]).to(device) for i in range(len(arrays) - 1)]

    def run(k: int) -> None:
        h = h0
        for _ in range(k):
            for q in qs:
                h = torch.mm(h, q.t())
            for q in reversed(qs):
                h = torch.mm(h, q)

    return marginal_measure(run, K, device)


def marginal_measure(run: Callable[[int], object], K: int, device: torch.device) -> Callable[[], tuple[float, float]]:
    """Seconds per transition as ``(t(K) − t(1)) / (K − 1)``: the start of a chain is not a transition's cost."""

    def measure():
        t0 = _clocks(device)
        run(1)
        t1 = _clocks(device)
        run(K)
        t2 = _clocks(device)
        one, many = _diff(t0, t1), _diff(t1, t2)
        return (many[0] - one[0]) / (K - 1), (many[1] - one[1]) / (K - 1)

    return measure


def whole_call_measure(fn: Callable[[], object], steps: int, device: torch.device) -> Callable[[], tuple[float, float]]:
    """Seconds per transition of one whole call of ``steps`` transitions, as a user sees it (chain start included)."""

    def measure():
        t0 = _clocks(device)
        fn()
        wall, cpu = _diff(t0, _clocks(device))
        return wall / steps, cpu / steps

    return measure


def primed(fn: Callable[[], object], device: torch.device) -> Callable[[], tuple[float, float]]:
    """Time the second of two consecutive calls: the cost of one more call, like the transitions' marginal cost.

    The first call of a row after another row's turn can pay for memory the other row's
    buffers displaced; training runs one iteration after another, so the second call is the
    one to time.
    """

    def measure():
        fn()
        start = _clocks(device)
        fn()
        return _diff(start, _clocks(device))

    return measure


# --------------------------------------------------------------------------- memory


def _status_bytes(key: str) -> int:
    found = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(found.group(1)) * 1024


def peak_memory(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of ``fn()`` above what was held before, in MiB.

    CUDA: the allocator's own peak. CPU (Linux): the resident-set high-water mark, reset
    before the call (``/proc/self/clear_refs``) after giving freed heap back to the system,
    so it counts what the call itself touched. ``None`` where neither is available.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_bytes("VmRSS")
        fn()
        return (_status_bytes("VmHWM") - base) / 2**20
    except OSError:
        return None
