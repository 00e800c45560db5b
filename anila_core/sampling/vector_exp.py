"""The compiled CPU step's vector exponential: ATen's ``exp_u20`` (at most 20 ulp) in place of Sleef's 1-ulp ``exp``.

On the CPU MLP the exponential inside each SiLU (one per hidden layer, element and step,
shared by the forward and the derivative, see :mod:`~anila_core.sampling.graph_rewrites`) is
the costliest of the elementwise work a compiled transition adds to its matrix products:
inductor's vector code computes it with Sleef's ``expf``, correct to 1 ulp, a function call
per vector of floats. ATen's vector library has a cheaper exponential
of its own, ``Vectorized<float>::exp_u20`` (a degree-5 polynomial after the usual range
reduction, stated to be within 20 ulp, a relative 2.4e-6, which the tests check on [−86, 88]
against float64), defined for every vector ISA it builds for, AVX2, AVX-512 and arm64 alike. While
:func:`cheaper_exponential` is active, inductor writes that call wherever its vector code
would write a float32 ``exp()`` or sigmoid; the scalar code (``ATEN_CPU_CAPABILITY=default``,
loop tails) keeps ``std::exp``, and float64 keeps the 1-ulp one. Side by side on an AMD EPYC
(``benchmarks/exponential.py``, paired within each repetition) a compiled transition of the MLP
2-128-128-128-1 at batch 1024 took 0.915 of Sleef's time for Langevin, 0.921 for MALA and 0.911
for AniLA (``benchmarks/exponential.json``; README, "Speed").

What it changes in a chain is float rounding, a few float32 ulps in σ: a compiled chain still
equals the eager chain of the same seed to float tolerance, as the tests check under each
``ATEN_CPU_CAPABILITY``. Limits are kept: +inf above ln(FLT_MAX), NaN for NaN (``exp_u20``
alone gives +inf, so NaN is put back), and 0 below about −87, where Sleef gives the smallest
floats (under 1.7e−38) instead; a sigmoid still saturates to 0 and 1, and a non-finite chain
is still seen by the watch.

The switch is inductor's code generator's table of vector operations, changed for the duration
of a compiled step's call (where inductor generates its code, on the first call and on a
recompile) and restored after. While it lasts it is the process's: a compile in another thread
at that moment would be written with it too. :data:`AVAILABLE` is ``False`` where this torch's
code generator has no such table or its vector headers no ``exp_u20``, and compiled steps then
keep Sleef's exponential, as they do after ``vector_exp.use_exp_u20 = False``. The compiled
graph's cache key holds this file's hash and :func:`in_use`
(:mod:`~anila_core.sampling.graph_rewrites`), so code written with one exponential is not served
to a compile that asked for the other.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

__all__ = ["AVAILABLE", "use_exp_u20", "in_use", "cheaper_exponential"]


def _headers_declare_exp_u20() -> bool:
    """Whether the vector headers inductor's code is built against declare ``exp_u20`` for one vector and for several
    (an older torch's may not: its code would then fail to build, and the step run eagerly)."""
    folder = Path(torch.__file__).parent / "include" / "ATen" / "cpu" / "vec"
    try:
        return all("exp_u20" in (folder / name).read_text(errors="replace") for name in ("vec_base.h", "vec_n.h"))
    except OSError:
        return False


def _vector_table():
    """Inductor's table of vector operations for CPU code and its own ``exp`` and ``sigmoid`` (``None`` if absent)."""
    try:
        from torch._inductor.codegen.cpp import CppVecOverrides
    except ImportError:
        return None
    own = vars(CppVecOverrides)
    if not all(isinstance(own.get(name), staticmethod) for name in ("exp", "sigmoid")):
        return None
    if not _headers_declare_exp_u20():
        return None
    return CppVecOverrides, own["exp"], own["sigmoid"]


_TABLE = _vector_table()
#: whether this torch's inductor lets compiled steps use ``exp_u20``
AVAILABLE = _TABLE is not None
#: ``False``: the steps compiled from then on are written with Sleef's exponential (``benchmarks/exponential.py``
#: compares the two); steps already compiled keep their code
use_exp_u20 = True


def in_use() -> bool:
    """Whether a step compiled now is written with ``exp_u20`` (part of the compiled graph's cache key)."""
    return AVAILABLE and use_exp_u20


def _is_float32(x) -> bool:
    return getattr(x, "dtype", None) == torch.float32


# exp_u20 turns NaN into +inf; NaN is given back as NaN, so that a NaN chain stays NaN (a C++ lambda, as ``x`` may
# be an expression and its type one vector or several)
_EXP = "[](auto v) {{ return decltype(v)::blendv(v.exp_u20(), v, v.isnan()); }}({x})"
_SIGMOID = (
    "[](auto v) {{ return decltype(v)::blendv(decltype(v)(1) / (decltype(v)(1) + v.neg().exp_u20()), v, v.isnan()); "
    "}}({x})"
)


def exp(x):  # named as the operation it replaces: inductor finds its scalar twin by this name
    """The C++ of a vector ``exp(x)``: ``exp_u20`` for float32, inductor's own otherwise."""
    return _EXP.format(x=x) if _is_float32(x) else _TABLE[1].__func__(x)


def sigmoid(x):
    """The C++ of a vector ``sigmoid(x)``: ``1 / (1 + exp_u20(−x))`` for float32, inductor's own otherwise."""
    return _SIGMOID.format(x=x) if _is_float32(x) else _TABLE[2].__func__(x)


class _CheaperExponential:
    """The context of :func:`cheaper_exponential`: swaps the two entries in, and back when the outermost use ends."""

    _lock = threading.Lock()
    _depth = 0

    def __enter__(self):
        self._swapped = in_use()
        if self._swapped:
            with self._lock:
                if _CheaperExponential._depth == 0:
                    table = _TABLE[0]
                    table.exp, table.sigmoid = staticmethod(exp), staticmethod(sigmoid)
                _CheaperExponential._depth += 1
        return self

    def __exit__(self, *exc):
        if self._swapped:
            with self._lock:
                _CheaperExponential._depth -= 1
                if _CheaperExponential._depth == 0:
                    table, own_exp, own_sigmoid = _TABLE
                    table.exp, table.sigmoid = own_exp, own_sigmoid
        return False


def cheaper_exponential() -> _CheaperExponential:
    """The block in which inductor writes ``exp_u20`` for float32 vector exponentials and sigmoids."""
    return _CheaperExponential()
