"""The libraries the benchmark is measured against: TorchEBM's Langevin in this process, JAX and BlackJAX in a child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

from anila_core.nets import MLPEnergy
from anila_core.sampling.kernel import energy_and_grad
from anila_core.sampling.samplers import Langevin
from timing import matmul_chain_arrays

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- TorchEBM


def torchebm_sampler(net, x: torch.Tensor, langevin: Langevin):
    """TorchEBM's LangevinDynamics on our network, with its parameters mapped onto our convention.

    TorchEBM 0.8 steps ``x + η·(−∇E) + sqrt(2·s²)·sqrt(η)·ξ`` (its Euler–Maruyama integrator,
    ξ drawn with ``torch.randn_like(x, generator=...)`` after the gradient); ours is
    ``x − (ε/2)·∇E + τ·sqrt(ε)·ξ``. So η = ε/2 and s = τ give the same update, and the same
    generator gives the same ξ.
    """
    from torchebm.core import BaseModel
    from torchebm.samplers import LangevinDynamics

    class Wrapped(BaseModel):
        """Our energy network as a TorchEBM model: ``forward`` returns one energy per sample."""

        def __init__(self, inner):
            super().__init__(device=x.device)
            self.inner = inner

        def forward(self, z):
            return self.inner(z)

    return LangevinDynamics(
        Wrapped(net), step_size=langevin.step_size / 2, noise_scale=langevin.noise_scale, device=x.device
    )


def check_torchebm(ebm, net, x: torch.Tensor, langevin: Langevin, K: int) -> dict:
    """Run both chains from the same start with generators of the same seed; they must agree to float tolerance."""
    gen = lambda: torch.Generator(device=x.device).manual_seed(1234)  # noqa: E731
    ours = langevin.sample(net, x, K, generator=gen())
    theirs = ebm.sample(x=x.clone(), n_steps=K, generator=gen())
    diff = float((ours - theirs).abs().max())
    scale = float(ours.abs().max())
    moved = float((ours - x).abs().max())
    # rounding only: the two write the same sum in another order
    equal = bool(torch.allclose(theirs, ours, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))
    return {"max_abs_diff": diff, "max_abs_state": scale, "max_move": moved, "K": K, "equal": equal}


# --------------------------------------------------------------------------- JAX and BlackJAX


def _jax_missing() -> str | None:
    """Why the JAX rows cannot run (``None`` when jax is installed); nothing is imported here."""
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        return "skipped: not installed (pip install -e '.[bench]')"
    return None


class JaxRows:
    """The JAX rows (``benchmarks/jax_rows.py``) in a child process, measured in turn with the torch rows.

    jax never enters this process, so its threads and allocator cannot touch the torch rows'
    timings. Each measure asks the child for one sample and waits (blocked, using no CPU) for
    the reply; the child runs on one CPU, with XLA's one-thread flags and ``OMP_NUM_THREADS=1``.
    """

    WORKER = HERE / "jax_rows.py"

    def __init__(self, net: MLPEnergy, x: torch.Tensor, langevin: Langevin, K: int, folder: Path):
        import numpy as np

        energy, grad = energy_and_grad(net, x)
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        arrays = {
            "x": x.cpu().numpy(),
            "energy": energy.cpu().numpy(),
            "grad": grad.cpu().numpy(),
            **matmul_chain_arrays(net, len(x)),
        }
        for i, m in enumerate(linears):
            arrays[f"w{i}"] = m.weight.detach().cpu().numpy()
            arrays[f"b{i}"] = m.bias.detach().cpu().numpy()
        npz = folder / "jax_rows_inputs.npz"
        np.savez(npz, **arrays)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._stderr = open(folder / "jax_rows.stderr", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(self.WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        spec = {
            "npz": str(npz),
            "n_layers": len(linears),
            "K": K,
            "step_size": langevin.step_size,
            "noise_scale": langevin.noise_scale,
        }
        self.info = self._ask(json.dumps(spec)) or {"ok": False, "why": self._last_error()}

    def _last_error(self) -> str:
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
        return f"the JAX process ended ({lines[-1][:300] if lines else 'no message'})"

    def _ask(self, line: str) -> dict | None:
        if self.proc.poll() is not None:
            return None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            return None
        return json.loads(reply) if reply.strip() else None

    def measure(self, name: str) -> Callable[[], tuple[float, float]]:
        def run():
            reply = self._ask(name)
            if reply is None:
                raise RuntimeError(self._last_error())
            return reply["wall"], reply["cpu"]

        return run

    def close(self) -> None:
        if self.proc.poll() is None:
            self._ask("quit")
            try:
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a child that will not quit is ended, never left behind
                self.proc.kill()
        self._stderr.close()


JAX_ROWS = ("langevin/jax", "langevin-mala/blackjax", "matmuls/xla")


def add_jax_rows(net, x, langevin: Langevin, K: int, measures: dict, notes: dict, results: dict, folder: Path):
    """Start the JAX child and add its measures (or a note per row saying why not); returns it to close, or ``None``."""
    why = _jax_missing()
    if why is None:
        rows = JaxRows(net, x, langevin, K, folder)
        info = rows.info
        results["jax"] = {k: v for k, v in info.items() if k != "ok"}
        if not info.get("ok"):
            why = f"skipped: {info.get('why')}"
            rows.close()
        elif not info["check"]["equal"]:
            gap = info["check"]["energy_max_abs_diff"]
            why = f"not timed: its energy differs from the torch MLP's (max |ΔE| = {gap:.3g})"
            rows.close()
        else:
            for key in JAX_ROWS:
                row = info["rows"].get(key, {})
                if "skipped" in row:
                    notes[key] = f"skipped: {row['skipped']}"
                else:
                    measures[key] = rows.measure(key)
            return rows
    else:
        results["jax"] = {"skipped": why}
    for key in JAX_ROWS:
        notes.setdefault(key, why)
    return None
