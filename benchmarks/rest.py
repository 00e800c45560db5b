"""A transition's rest: its time minus its own library's matrix products (the ``matmuls`` row), ours over the peers'."""

from __future__ import annotations

#: what "rest" means, in the report's words (RESULTS.md and the printed summary)
REST_WORDS = (
    "rest = a row's time per transition minus its own library's `matmuls` row of the same run (torch's for ours, "
    "XLA's for JAX and BlackJAX): what the transition costs beyond its matrix products (the activations and their "
    "derivatives, the move, the noise, the Metropolis test, the loop)"
)
TARGET_REST_RATIO = 1.1  # the speed issue: the rest of our compiled transition at most this times the peer's
#: a row's path -> the library whose ``matmuls/<library>`` row its rest is taken against
LIBRARY = {
    "fast": "torch",
    "default": "torch",  # the public default: compiled whenever fast="auto" compiles (the full and quick sizes)
    "default-method": "torch",
    "default-lambda": "torch",
    "jax": "xla",
    "blackjax": "xla",
}
#: the issue's ratios: (our compiled row, the peer's row, the peer's name)
RATIOS = (("langevin/fast", "langevin/jax", "JAX"), ("langevin-mala/fast", "langevin-mala/blackjax", "BlackJAX"))


def rest_figures(transitions: list[dict]) -> dict:
    """Each compiled or peer row's rest and the issue's two ratios, rest(ours) / rest(peer), from one run's rows.

    Returns ``{"rows": [...], "ratios": [...]}``: a row for every measured row with a ``LIBRARY``
    path whose library's ``matmuls`` row was measured on the same energy and device; a ratio for
    each of ``RATIOS``, ``None`` with ``why`` saying what is missing ("no JAX") when it cannot be formed.
    """
    matmuls = {
        (r["device"], r["energy"], r["path"]): r["ms"]
        for r in transitions
        if r["sampler"] == "matmuls" and r["ms"] is not None
    }
    rows = []
    for r in transitions:
        library = LIBRARY.get(r["path"])
        products = matmuls.get((r["device"], r["energy"], library))
        # an HMC transition is several gradients: one gradient's products are not its matrix products
        if products is None or r["ms"] is None or r["sampler"].startswith("hmc"):
            continue
        rows.append(
            {
                "device": r["device"],
                "energy": r["energy"],
                "row": r["row"],
                "library": library,
                "ms": r["ms"],
                "matmuls_ms": products,
                "rest_ms": r["ms"] - products,
            }
        )
    # the peers run on the CPU only
    rest = {r["row"]: r["rest_ms"] for r in rows if r["device"] == "cpu"}
    have_xla = any(device == "cpu" and library == "xla" for device, _, library in matmuls)
    ratios = []
    for ours, peer, name in RATIOS:
        if not have_xla:
            why = "no JAX"
        elif peer not in rest:
            why = f"no {name}"
        elif ours not in rest:
            why = f"{ours} not measured"
        elif rest[peer] <= 0:
            why = f"{name}'s rest is not above zero ({rest[peer]:.3f} ms: noise-sized rows)"
        else:
            why = None
        ratio = None if why else rest[ours] / rest[peer]
        ratios.append(
            {
                "ours": ours,
                "peer": peer,
                "ratio": ratio,
                "target": TARGET_REST_RATIO,
                "met": None if ratio is None else ratio <= TARGET_REST_RATIO,
                "why": why,
            }
        )
    return {"rows": rows, "ratios": ratios}


def rest_of(rest: dict, row: dict) -> float | None:
    """The rest of one transition row (``None``: it has none in ``rest``, the output of :func:`rest_figures`)."""
    key = (row["device"], row["energy"], row["row"])
    return next((r["rest_ms"] for r in rest["rows"] if (r["device"], r["energy"], r["row"]) == key), None)
