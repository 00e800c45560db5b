"""Rewrites of a compiled CPU step's graph into the same arithmetic, cheaper: the sigmoid computed once, thin products
and biases fused into the elementwise kernels around them.

Inductor hands every matrix product to the BLAS library and writes C++ for the elementwise work
between them. On the CPU MLP that leaves three avoidable costs in a sampler's step (2-128-128-128-1,
batch 1024, one thread, measured with torch's profiler):

- SiLU's forward is ``h / (1 + exp(−h))`` and its derivative ``σ(h)·(1 + h·(1 − σ(h)))``; the
  two are traced apart, so the exponential is computed twice per layer. Written as
  ``h·σ(h)`` over the derivative's own ``σ(h)``, inductor stores σ once (it keeps an
  exponential that several kernels read rather than recomputing it).
- A product with an inner or outer dimension of at most :data:`THIN` (the first layer's
  2 → 128, the head's 128 → 1, and their input gradients) runs far below the library's peak:
  the 1024×128 by 128×2 product took 0.18 ms, half the time of a 128×128 one with 64 times the
  work. As a sum of ``k`` broadcast products (inner dimension ``k`` small) or ``n`` row sums
  (``n`` outputs), it fuses into the kernel that produces its input. The thin weight is first
  copied row-major, so that those kernels read it with vector loads, not a gather per element
  (0.18 ms of a 1.58 ms transition, measured side by side on an Intel Xeon).
- ``addmm`` copies its bias into the output before the product; a product and an add let the
  bias join the activation's kernel.

Together they took 0.43 ms off a 3.1 ms compiled Langevin transition, measured side by side
(README, "Speed"). Each rewrite is exact algebra; only float rounding changes (the order of a
sum of products), so a compiled chain still equals the eager one to float tolerance, as the
tests check under each ``ATEN_CPU_CAPABILITY``. Only float32/float64 CPU graphs of static
shape are touched. The user's module, its weights and their layout are not.
"""

from __future__ import annotations

import torch

from anila_core.sampling import vector_exp

__all__ = ["THIN", "inductor_options"]

#: inner or outer dimension of a matrix product at or below which it becomes elementwise work
THIN = 4

_aten = torch.ops.aten
_FLOATS = (torch.float32, torch.float64)


def _value(node):
    """The example value (a fake tensor) inductor's tracing left on ``node``, or ``None``."""
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _call(graph: torch.fx.Graph, target, *args, **kwargs) -> torch.fx.Node:
    """A new node ``target(*args, **kwargs)`` with its example value, for the passes that run after this one."""
    node = graph.call_function(target, args, kwargs)
    values = torch.fx.node.map_arg(args, _value)
    fake = next((v for v in torch.utils._pytree.tree_leaves(values) if isinstance(v, torch.Tensor)), None)
    mode = getattr(fake, "fake_mode", None)
    if mode is not None:
        with mode:
            node.meta["val"] = target(*values, **kwargs)
    return node


def _contiguous(graph: torch.fx.Graph, t: torch.fx.Node) -> torch.fx.Node:
    """``t`` (2-D) copied row-major into a buffer of its own (``t`` itself where this torch cannot say so).

    A thin weight's column, read along the wide dimension, is strided (the first layer's weight is
    128×2: stride 2); inductor then gathers it element by element in every row of the batch. A
    plain ``clone`` would be inlined back into the reading kernel; forcing a stride order makes
    inductor write the copy (a few hundred floats, once per call).
    """
    try:
        import torch._inductor.inductor_prims  # noqa: F401 - registers the operation (this runs inside inductor)

        force = torch.ops.prims.inductor_force_stride_order
    except (ImportError, AttributeError, RuntimeError):
        return t
    return _call(graph, force.default, t, [_value(t).shape[1], 1])


def _thin_product(graph: torch.fx.Graph, a: torch.fx.Node, b: torch.fx.Node, k: int, n: int) -> torch.fx.Node:
    """``a @ b`` (``a``: m×k, ``b``: k×n) as elementwise work: ``k`` broadcast products, or ``n`` row sums."""

    def cut(t, dim, j):  # the j-th column (dim 1) or row (dim 0) of t, kept 2-D for broadcasting
        return _call(graph, _aten.slice.Tensor, t, dim, j, j + 1)

    if k <= THIN:  # a column of a times a row of b, summed over the k pairs
        b = _contiguous(graph, b)
        out = None
        for j in range(k):
            term = _call(graph, _aten.mul.Tensor, cut(a, 1, j), cut(b, 0, j))
            out = term if out is None else _call(graph, _aten.add.Tensor, out, term)
        return out
    b_columns = _contiguous(graph, _call(graph, _aten.permute.default, b, [1, 0]))
    sums = [
        _call(graph, _aten.sum.dim_IntList, _call(graph, _aten.mul.Tensor, a, cut(b_columns, 0, j)), [1], True)
        for j in range(n)
    ]  # output column j: each row of a dotted with column j of b
    return sums[0] if n == 1 else _call(graph, _aten.cat.default, sums, 1)


def _rewrite_products(graph: torch.fx.Graph) -> None:
    """Thin products as elementwise work, and ``addmm`` as a product and an add."""
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (_aten.mm.default, _aten.addmm.default):
            continue
        if node.target is _aten.addmm.default:
            if node.kwargs or len(node.args) != 3:  # alpha or beta given: leave it to the library
                continue
            bias, a, b = node.args
        else:
            bias, (a, b) = None, node.args
        va, vb = _value(a), _value(b)
        if va is None or vb is None or va.device.type != "cpu" or va.dtype not in _FLOATS or vb.dtype != va.dtype:
            continue
        if not all(isinstance(s, int) for s in (*va.shape, *vb.shape)):  # a symbolic shape: no static choice
            continue
        k, n = vb.shape
        thin = k <= THIN or n <= THIN
        if not thin and bias is None:
            continue
        with graph.inserting_before(node):
            out = _thin_product(graph, a, b, k, n) if thin else _call(graph, _aten.mm.default, a, b)
            if bias is not None:
                out = _call(graph, _aten.add.Tensor, out, bias)
        node.replace_all_uses_with(out)
        graph.erase_node(node)


def _is_silu_of(node, h) -> bool:
    """Whether ``node`` is ``h / (exp(−h) + 1)``, SiLU's forward as traced."""
    if node.target is not _aten.div.Tensor or node.args[0] is not h:
        return False
    den = node.args[1]
    if not isinstance(den, torch.fx.Node) or den.target is not _aten.add.Tensor or den.args[1] != 1:
        return False
    exp = den.args[0]
    if not isinstance(exp, torch.fx.Node) or exp.target is not _aten.exp.default:
        return False
    neg = exp.args[0]
    return isinstance(neg, torch.fx.Node) and neg.target is _aten.neg.default and neg.args[0] is h


def _share_sigmoids(graph: torch.fx.Graph) -> None:
    """SiLU's forward as ``h·σ(h)`` over the ``σ(h)`` its derivative computes, moved up to just after ``h``."""
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _aten.div.Tensor:
            continue
        h = node.args[0]
        if not isinstance(h, torch.fx.Node) or not _is_silu_of(node, h):
            continue
        sigmoid = next((u for u in h.users if u.target is _aten.sigmoid.default), None)
        if sigmoid is None:  # no derivative in this graph: nothing to share
            continue
        h.append(sigmoid)  # defined before both of its readers now
        with graph.inserting_before(node):
            out = _call(graph, _aten.mul.Tensor, h, sigmoid)
        node.replace_all_uses_with(out)
        graph.erase_node(node)


def _make_pass():
    try:
        from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
    except ImportError:  # a torch without custom graph passes compiles the graph as traced
        return None

    class CpuStepRewrites(CustomGraphPass):
        """The rewrites as inductor's last post-grad pass; its cache key: this file's and vector_exp's hash, and which
        exponential the code is written with."""

        def __call__(self, graph: torch.fx.Graph) -> None:
            _rewrite_products(graph)
            _share_sigmoids(graph)
            graph.eliminate_dead_code()
            graph.lint()

        def uuid(self):  # the exponential the code is written with (vector_exp) is part of what it computes
            return get_hash_for_files((__file__, vector_exp.__file__)), vector_exp.in_use()

    return CpuStepRewrites()


_PASS = _make_pass()


def inductor_options() -> dict:
    """Inductor's options that run these rewrites on a compiled CPU step (none where this torch cannot)."""
    return {} if _PASS is None else {"post_grad_custom_post_pass": _PASS}
