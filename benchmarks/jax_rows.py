"""The speed benchmark's JAX rows in a process of their own: a ``jax.jit`` Langevin loop, BlackJAX's MALA and the matrix
products alone, on the torch MLP's weights, on one CPU.

Started by the benchmark (``benchmarks/peers.py``; never by hand): a separate process, so that JAX's runtime
threads and allocator never share a process with the torch rows it is compared with. It
speaks JSON lines on stdin/stdout: the first line names the ``.npz`` file with the MLP's
weights and the start ``x`` (and the torch energies and gradients at ``x``, to check that
this is the same energy); the reply says what is available, the compile times and that
check. Each later line names one measure; the reply is one sample of it, the seconds per
transition ``(t(K) − t(1)) / (K − 1)`` on the wall clock and on this process's CPU clock,
so that the parent can take these rows in turn with its own (``interleaved``). ``quit`` ends it.

Imports no torch: the weights come as numpy arrays.
"""

from __future__ import annotations

import os
import sys

# One compute thread, like the torch rows; set before jax is imported, or XLA ignores them.
XLA_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_THREAD_FLAGS).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The flags alone still left XLA's CPU runtime computing on two threads at once here (measured: CPU
# time twice the wall time): it sizes its thread pools from the CPUs the process may use, so the
# process is held to one CPU before jax starts (then CPU time stays at most the wall time, measured).
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import json  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402


def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _versions() -> dict:
    out = {}
    for name in ("jax", "jaxlib", "blackjax"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except Exception as err:  # noqa: BLE001 - a broken install reads as "not available", with the reason
            out[name] = None
            out[name + "_error"] = f"{type(err).__name__}: {err}"
    return out


def setup(spec: dict) -> tuple[dict, dict]:
    """Build the measures for ``spec``; return (measures by name, the reply describing them)."""
    import numpy as np

    versions = _versions()
    if versions["jax"] is None:
        return {}, {"ok": False, "versions": versions, "why": f"jax cannot be imported ({versions['jax_error']})"}
    import jax
    import jax.numpy as jnp
    from jax import lax

    arrays = np.load(spec["npz"])
    layers = [(jnp.asarray(arrays[f"w{i}"]), jnp.asarray(arrays[f"b{i}"])) for i in range(spec["n_layers"])]
    x0 = jnp.asarray(arrays["x"])
    K, eps, tau = spec["K"], spec["step_size"], spec["noise_scale"]

    def energy(x):
        """The torch ``MLPEnergy``: Linear and SiLU layers, a Linear head to one energy per sample."""
        h = x
        for w, b in layers[:-1]:
            h = jax.nn.silu(h @ w.T + b)
        w, b = layers[-1]
        return (h @ w.T + b)[:, 0]

    grad_sum = jax.grad(lambda x: energy(x).sum())

    def langevin(x, key, n):
        # the torch samplers' update: x − (ε/2)·∇E + τ·sqrt(ε)·ξ
        def body(_, carry):
            x, key = carry
            key, sub = jax.random.split(key)
            g = grad_sum(x)
            return x - 0.5 * eps * g + tau * (eps**0.5) * jax.random.normal(sub, x.shape, x.dtype), key

        return lax.fori_loop(0, n, body, (x, key))[0]

    measures: dict = {}
    info: dict = {"ok": True, "versions": versions, "xla_flags": os.environ["XLA_FLAGS"], "rows": {}}

    # the same energy? energies and input gradients at x against torch's
    g = jax.jit(grad_sum)(x0)
    e_each = jax.jit(energy)(x0)
    scale = float(np.abs(arrays["grad"]).max())
    info["check"] = {
        "energy_max_abs_diff": float(np.abs(np.asarray(e_each) - arrays["energy"]).max()),
        "grad_max_abs_diff": float(np.abs(np.asarray(g) - arrays["grad"]).max()),
        "grad_max_abs": scale,
    }
    info["check"]["equal"] = bool(
        np.allclose(np.asarray(e_each), arrays["energy"], rtol=1e-4, atol=1e-4)
        and np.allclose(np.asarray(g), arrays["grad"], rtol=1e-3, atol=1e-5 * max(scale, 1.0))
    )

    key = jax.random.PRNGKey(0)
    run_k, run_1 = jax.jit(partial(langevin, n=K)), jax.jit(partial(langevin, n=1))

    def compiled(name, fn_1, fn_k, *args):
        start = time.perf_counter()
        jax.block_until_ready(fn_1(*args))
        jax.block_until_ready(fn_k(*args))
        info["rows"][name] = {"compile_s": round(time.perf_counter() - start, 2)}
        measures[name] = lambda: _marginal(lambda: fn_1(*args), lambda: fn_k(*args), K)

    compiled("langevin/jax", run_1, run_k, x0, key)
    _add_matmuls(arrays, K, compiled, info)

    if versions["blackjax"] is None:
        info["rows"]["langevin-mala/blackjax"] = {
            "skipped": f"blackjax cannot be imported ({versions['blackjax_error']})"
        }
        return measures, info
    try:
        _add_blackjax(energy, x0, key, K, eps, compiled, info)
    except Exception as err:  # noqa: BLE001 - an API this code does not know: the row says why, the JAX row stays
        info["rows"]["langevin-mala/blackjax"] = {
            "skipped": f"blackjax {versions['blackjax']} failed here ({type(err).__name__}: {err})"[:300]
        }
    return measures, info


def _add_matmuls(arrays, K: int, compiled, info: dict) -> None:
    """``matmuls/xla``: the chain of matrix products the parent times with torch (``matmul_chain_arrays``), here with
    XLA's dot."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    qs = [jnp.asarray(arrays[f"mm_q{i}"]) for i in range(sum(n.startswith("mm_q") for n in arrays.files))]
    if not qs:
        info["rows"]["matmuls/xla"] = {"skipped": "the network has no width × width layer"}
        return

    def chain(h, n):
        # the barriers keep each product where it is: XLA may otherwise reassociate (h·A)·B into h·(A·B)
        def body(_, h):
            for q in qs:
                h = lax.optimization_barrier(h @ q.T)
            for q in reversed(qs):
                h = lax.optimization_barrier(h @ q)
            return h

        return lax.fori_loop(0, n, body, h)

    h0 = jnp.asarray(arrays["mm_h"])
    compiled("matmuls/xla", jax.jit(partial(chain, n=1)), jax.jit(partial(chain, n=K)), h0)


def _add_blackjax(energy, x0, key, K: int, eps: float, compiled, info: dict) -> None:
    import blackjax
    import jax
    from jax import lax

    # BlackJAX's MALA proposes z + h·∇log p + sqrt(2h)·ξ: with log p = −E and h = ε/2 it is our Langevin proposal at τ =
    # 1
    mala = blackjax.mala(lambda z: -energy(z[None])[0], step_size=eps / 2)
    states = jax.vmap(mala.init)(x0)

    def mala_run(states, key, n):
        def body(_, carry):
            states, key, accepted = carry
            key, sub = jax.random.split(key)
            states, step_info = jax.vmap(mala.step)(jax.random.split(sub, x0.shape[0]), states)
            return states, key, accepted + step_info.is_accepted.mean()

        states, _, accepted = lax.fori_loop(0, n, body, (states, key, 0.0))
        return states.position, accepted / n

    mala_k, mala_1 = jax.jit(partial(mala_run, n=K)), jax.jit(partial(mala_run, n=1))
    compiled("langevin-mala/blackjax", mala_1, mala_k, states, key)
    info["rows"]["langevin-mala/blackjax"]["acceptance"] = round(float(mala_k(states, key)[1]), 3)


def parallelism(measure, calls: int = 20) -> float:
    """CPU time over wall time across ``calls`` runs of ``measure``: at most about 1 when one CPU at a time computes
    (the check of one thread)."""
    samples = [measure() for _ in range(calls)]
    return round(sum(m["cpu"] for m in samples) / sum(m["wall"] for m in samples), 2)


def _marginal(one, many, K: int) -> dict:
    import jax

    t0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(one())
    t1 = time.perf_counter(), time.process_time()
    jax.block_until_ready(many())
    t2 = time.perf_counter(), time.process_time()
    return {"wall": ((t2[0] - t1[0]) - (t1[0] - t0[0])) / (K - 1), "cpu": ((t2[1] - t1[1]) - (t1[1] - t0[1])) / (K - 1)}


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    try:
        measures, info = setup(spec)
    except Exception as err:  # noqa: BLE001 - reported as the rows' note; the torch rows go on
        _reply({"ok": False, "why": f"{type(err).__name__}: {err}"})
        return 0
    if info.get("ok") and "langevin/jax" in measures:
        info["cpu_per_wall"] = parallelism(measures["langevin/jax"])
        info["cpu_affinity"] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    _reply(info)
    for line in sys.stdin:
        name = line.strip()
        if name == "quit" or not name:
            break
        _reply(measures[name]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
