"""Tests of the compiled CPU step's cheaper exponential: its error, its limits, where it is written, and its undoing."""

import contextlib

import pytest
import torch
from torch._inductor.cpu_vec_isa import pick_vec_isa

from anila_core.sampling import compiled, vector_exp

pytestmark = pytest.mark.skipif(not vector_exp.AVAILABLE, reason="this torch's inductor has no vector operation table")

#: the error ATen states for exp_u20: 20 units in the last place of a float32
STATED_ERROR = 20 * 2.0**-23


def exp_and_sigmoid(h):
    return torch.exp(h), torch.sigmoid(h), h * torch.sigmoid(h)


def compiled_fn(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False, options=compiled.cpu_codegen_options())


def test_exponential_sigmoid_and_silu_within_the_stated_error_where_floats_are_normal():
    """On 400 001 points of [−86, 88] (results between 2e−38 and 1.7e38), each of exp, σ and h·σ is within 20 ulp of
    float64's, relatively; σ within 20 ulp absolutely on [−120, 120]."""
    h = torch.linspace(-86.0, 88.0, 400_001)
    with torch._inductor.config.patch(fx_graph_cache=False), vector_exp.cheaper_exponential():
        ours = compiled_fn(exp_and_sigmoid)(h)
    for name, value, exact in zip(("exp", "sigmoid", "silu"), ours, exp_and_sigmoid(h.double())):
        nonzero = exact != 0
        relative = ((value.double() - exact) / exact)[nonzero].abs().max().item()
        assert relative <= STATED_ERROR, f"{name}: relative error {relative:.3g}"
    wide = torch.linspace(-120.0, 120.0, 100_001)
    with torch._inductor.config.patch(fx_graph_cache=False), vector_exp.cheaper_exponential():
        sigma = compiled_fn(torch.sigmoid)(wide)
    assert (sigma.double() - torch.sigmoid(wide.double())).abs().max().item() <= STATED_ERROR


def test_limits_are_kept_nan_stays_nan():
    """exp: NaN → NaN, +inf → +inf, −inf → 0, overflow → +inf, far below ln(FLT_MIN) → 0 (no denormal promised);
    σ: NaN → NaN, ±inf → 1 and 0. Sixteen copies of each input, so that they go through the vector code."""
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 89.0, -110.0, 0.0]).repeat_interleave(16)
    with torch._inductor.config.patch(fx_graph_cache=False), vector_exp.cheaper_exponential():
        e, s, _ = compiled_fn(exp_and_sigmoid)(special)
    e, s = e.view(6, 16), s.view(6, 16)
    assert e[0].isnan().all() and s[0].isnan().all()
    assert (e[1] == float("inf")).all() and (s[1] == 1).all()
    assert (e[2] == 0).all() and (s[2] == 0).all()
    assert (e[3] == float("inf")).all() and (s[3] == 1).all()
    assert (e[4] == 0).all() and (s[4] == 0).all()
    assert (e[5] == 1).all() and (s[5] == 0.5).all()


def test_inductor_writes_exp_u20_only_inside_the_block_and_only_for_float32_vectors():
    """The generated code: exp_u20 inside the block for float32 where the code is vectorised; not outside it, not for
    float64, and nowhere under ATEN_CPU_CAPABILITY=default (scalar code)."""
    from torch._inductor.utils import run_and_get_code

    vectors = pick_vec_isa().bit_width() > 0  # ATEN_CPU_CAPABILITY=default: scalar code, std::exp everywhere
    codes = {}
    with torch._inductor.config.patch(fx_graph_cache=False):
        cases = (("in", torch.float32, True), ("out", torch.float32, False), ("f64", torch.float64, True))
        for name, dtype, cheaper in cases:
            torch._dynamo.reset()
            x = torch.linspace(-3, 3, 4096, dtype=dtype)
            with vector_exp.cheaper_exponential() if cheaper else contextlib.nullcontext():
                _, code = run_and_get_code(compiled_fn(exp_and_sigmoid), x)
            codes[name] = "\n".join(code)
    assert ("exp_u20" in codes["in"]) == vectors
    assert "exp_u20" not in codes["out"] and "exp_u20" not in codes["f64"]


def test_the_block_puts_inductors_own_operations_back_even_after_an_error():
    from torch._inductor.codegen.cpp import CppVecOverrides

    own = dict(vars(CppVecOverrides))
    with vector_exp.cheaper_exponential():
        with vector_exp.cheaper_exponential():  # nested: the outer block still has the cheaper one
            pass
        assert vars(CppVecOverrides)["exp"].__func__ is vector_exp.exp
    assert vars(CppVecOverrides)["exp"] is own["exp"] and vars(CppVecOverrides)["sigmoid"] is own["sigmoid"]
    with pytest.raises(RuntimeError, match="inside"):
        with vector_exp.cheaper_exponential():
            raise RuntimeError("inside")
    assert vars(CppVecOverrides)["exp"] is own["exp"] and vars(CppVecOverrides)["sigmoid"] is own["sigmoid"]


def test_a_torch_whose_vector_headers_lack_exp_u20_keeps_sleefs(monkeypatch, tmp_path):
    """Code calling exp_u20 against headers without it would not build (and the step would run eagerly): such a torch
    is told apart before any compile, and nothing is swapped."""
    from torch._inductor.codegen.cpp import CppVecOverrides

    (tmp_path / "include" / "ATen" / "cpu" / "vec").mkdir(parents=True)
    for name in ("vec_base.h", "vec_n.h"):
        (tmp_path / "include" / "ATen" / "cpu" / "vec" / name).write_text("Vectorized<T> exp() const;\n")
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "__init__.py"))
    assert vector_exp._headers_declare_exp_u20() is False and vector_exp._vector_table() is None
    monkeypatch.setattr(vector_exp, "AVAILABLE", False)
    own = dict(vars(CppVecOverrides))
    with vector_exp.cheaper_exponential():
        assert vars(CppVecOverrides)["exp"] is own["exp"]
    assert not vector_exp.in_use()
