"""Test helper run in a process of its own (tests/sampling/test_cpu_capabilities.py): every sampler's compiled chain
beside its eager chain, on the 2-D MLPs, reported as JSON.

Usage: ``python tests/compiled_chains_worker.py REPORT.json [CASES]``, with ``ATEN_CPU_CAPABILITY`` set
by the caller: torch reads it once, at start-up, so each vector ISA needs a process of its own.
``CASES`` is ``all`` (default: every sampler on MLP 2-128-128-128-1, Langevin and AniLA on
MLP 2-32-32-1) or ``tiny`` (Langevin on MLP 2-8-1: one small graph, for the cache test). The
report holds, per case, the largest difference between the two chains and whether each is
finite; the caller asserts.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

from anila_core.nets import MLPEnergy
from anila_core.sampling import compiled
from anila_core.sampling.kernel import energy_and_grad
from anila_core.sampling.hmc import HMC
from anila_core.sampling.samplers import PSGLD, AniLA, Langevin

N_CHAINS, N_STEPS = 256, 20
X0 = 1.5 * torch.randn(N_CHAINS, 2, generator=torch.Generator().manual_seed(1))
# The compiled and the eager transition differ only in rounding (fused kernels sum in another
# order): float32's ~1e-7 per operation, grown over 20 steps of a smooth energy, stays far
# below these. pSGLD's γ = ε / sqrt(V) magnifies rounding where the gradient is small.
TOLERANCE = {"psgld": dict(rtol=1e-4, atol=1e-4)}
DEFAULT_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def samplers(b: float) -> dict:
    """Every sampler with a compiled path; ``b`` is the start's median |g|, so AniLA shrinks about half the steps."""
    return {
        "langevin": Langevin(0.05),
        "mala": Langevin(0.05, metropolis=True),
        "anila-coordinate": AniLA(0.05, b=b),
        "anila-sample": AniLA(0.05, b=b, norm="sample"),
        "anila-pixel": AniLA(0.05, b=b, norm="pixel"),
        "anila-mh": AniLA(0.05, b=b, metropolis=True),
        "psgld": PSGLD(0.005),
        "hmc": HMC(0.05, n_leapfrog=3),
    }


def cases(which: str):
    torch.manual_seed(0)
    big, small, tiny = MLPEnergy(2, 128, 3), MLPEnergy(2, 32, 2), MLPEnergy(2, 8, 1)
    if which == "tiny":
        yield "mlp-2-8-1/langevin", tiny, Langevin(0.05), DEFAULT_TOLERANCE
        return
    for name, net, chosen in (
        ("mlp-2-128-128-128-1", big, None),
        ("mlp-2-32-32-1", small, ("langevin", "anila-coordinate")),
    ):
        b = float(energy_and_grad(net, X0)[1].abs().median())
        for sampler_name, sampler in samplers(b).items():
            if chosen is None or sampler_name in chosen:
                yield f"{name}/{sampler_name}", net, sampler, TOLERANCE.get(sampler_name, DEFAULT_TOLERANCE)


def main(report: str, which: str = "all") -> None:
    rows = []
    for name, net, sampler, tolerance in cases(which):
        before = {row["name"] for row in compiled.cache_info()}
        chains = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for fast in (False, True):
                chains[fast] = sampler.sample(
                    net, X0, N_STEPS, generator=torch.Generator().manual_seed(7), fast=fast, allow_nonfinite=True
                )
        made = [row for row in compiled.cache_info() if row["name"] not in before]
        eager, quick = chains[False], chains[True]
        rows.append(
            {
                "case": name,
                "compiled": bool(made) and all(row["failed"] is None and row["compile_s"] is not None for row in made),
                "failed": [row["failed"] for row in made if row["failed"]],
                "warnings": [str(w.message) for w in caught],
                "eager_finite": bool(torch.isfinite(eager).all()),
                "compiled_finite": bool(torch.isfinite(quick).all()),
                "moved": float((eager - X0).abs().max()),
                "max_abs_gap": float((quick - eager).abs().max()),
                "close": bool(torch.allclose(quick, eager, **tolerance)),
                "tolerance": tolerance,
            }
        )
    out = {"capability": torch.backends.cpu.get_cpu_capability(), "rows": rows}
    with open(report, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
