"""Tests of the compiled CPU step's graph rewrites: which nodes they replace, and that the graph computes the same."""

import pytest
import torch
from torch._inductor.decomposition import select_decomp_table
from torch.fx.experimental.proxy_tensor import make_fx

from anila_core.sampling import graph_rewrites as rewrites

pytestmark = pytest.mark.skipif(rewrites._PASS is None, reason="this torch has no custom graph passes")


def traced(fn, *args):
    """``fn``'s aten graph as inductor's post-grad passes see it: decomposed as inductor decomposes, with example
    values."""
    return make_fx(fn, decomposition_table=select_decomp_table(), tracing_mode="fake")(*args)


def targets(gm) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def rewritten(gm):
    rewrites._PASS(gm.graph)
    gm.recompile()
    return gm


def test_an_mlp_step_keeps_its_wide_products_and_shares_its_sigmoids():
    """The energy and input gradient of a 2-16-16-1 SiLU MLP: the thin products and addmm's bias copies go, one
    sigmoid per SiLU layer serves forward and derivative, and the two 16×16 products stay with the library."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1)
    )
    params = dict(net.named_parameters())

    def energy_and_grad(params, x):
        x = x.detach().requires_grad_(True)
        energy = torch.func.functional_call(net, params, (x,)).squeeze(-1)
        (grad,) = torch.autograd.grad(energy.sum(), x)
        return energy, grad

    x = torch.randn(64, 2)
    gm = traced(energy_and_grad, params, x)
    before = targets(gm)
    assert before.count("aten.addmm.default") == 3 and before.count("aten.exp.default") == 2
    after = targets(rewritten(gm))
    assert "aten.addmm.default" not in after and "aten.exp.default" not in after and "aten.div.Tensor" not in after
    assert after.count("aten.sigmoid.default") == 2
    assert after.count("aten.mm.default") == 2  # the 16×16 layer's forward and input gradient
    # every new node carries its example value, as inductor's later passes expect
    assert all("val" in n.meta for n in gm.graph.nodes if n.op == "call_function")
    # exact algebra: only the order of the sums changes, a few float32 roundings over 16 terms
    for ours, theirs in zip(gm(params, x), energy_and_grad(params, x)):
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,n", [(1, 8), (2, 8), (4, 8), (8, 1), (8, 2), (8, 4), (5, 5), (8, 8)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_product_with_a_thin_side_becomes_elementwise(k, n, dtype):
    a = torch.randn(32, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    gm = rewritten(traced(torch.mm, a, b))
    thin = k <= rewrites.THIN or n <= rewrites.THIN
    assert ("aten.mm.default" in targets(gm)) is not thin
    # float32: a sum of k products in another order, a few roundings of 6e-8; float64 far below
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gm(a, b), a @ b, **tol)


def test_addmm_becomes_a_product_and_an_add():
    bias, a, b = torch.randn(8), torch.randn(32, 8), torch.randn(8, 8)
    gm = rewritten(traced(torch.addmm, bias, a, b))
    assert targets(gm).count("aten.mm.default") == 1 and "aten.addmm.default" not in targets(gm)
    torch.testing.assert_close(gm(bias, a, b), torch.addmm(bias, a, b), rtol=1e-5, atol=1e-6)


def test_addmm_with_alpha_or_beta_and_other_dtypes_are_left_alone():
    bias, a, b = torch.randn(2), torch.randn(32, 8), torch.randn(8, 2)
    gm = rewritten(traced(lambda bias, a, b: torch.addmm(bias, a, b, beta=0.5), bias, a, b))
    assert "aten.addmm.default" in targets(gm)
    half = rewritten(traced(torch.mm, a.bfloat16(), b.bfloat16()))
    assert "aten.mm.default" in targets(half)  # low precision keeps the library's float32 accumulation


def test_silu_without_its_derivative_is_left_as_traced():
    """Nothing to share without a backward: the forward keeps inductor's own expression."""
    gm = rewritten(traced(lambda h: torch.nn.functional.silu(h), torch.randn(16, 8)))
    assert "aten.div.Tensor" in targets(gm) and "aten.sigmoid.default" not in targets(gm)


def test_the_pass_has_a_cache_key_of_its_own_source_and_the_exponentials():
    """Inductor's graph cache keys on the pass's uuid: a change to this file, or to the exponential the code is written
    with (vector_exp), must not be served an old graph."""
    from torch._inductor.custom_graph_pass import get_hash_for_files

    from anila_core.sampling import vector_exp

    files = get_hash_for_files((rewrites.__file__, vector_exp.__file__))
    assert rewrites._PASS.uuid() == (files, vector_exp.in_use())
    try:
        vector_exp.use_exp_u20 = False
        assert rewrites._PASS.uuid() == (files, False)
    finally:
        vector_exp.use_exp_u20 = True
