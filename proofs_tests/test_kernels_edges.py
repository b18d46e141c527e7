"""Issue 13 edge cases of the kernels: in-place gradient order, zero masked rows, any logit layout.

What a CPU can and cannot show about the in-place race: the interpreter runs one program at a time and each
op over the whole tile at once, so no interleaving of warps ever happens here. These tests therefore check
(a) that the in-place result equals the out-of-place one for both kernels, and (b) by reading the kernels'
source, that nothing reads the target logit from memory after the first store of a kernel that may run in
place (the rule that makes the GPU result independent of warp scheduling). Only a GPU run can show the
absence of the race itself (``oemdm bench --acceptance`` compares in-place vs out-of-place on the GPU).

Tolerances: in-place vs out-of-place are the same arithmetic on the same values in the same order, so they
are compared bitwise; values against the float64 formula use the CPU fp32 budget of test_kernels_common.py
(2e-5 relative to the magnitude of the row).
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch
from test_kernels_common import BACKENDS, DEVICE, gen

from oemdm_spec.fast.kernels import _triton as K
from oemdm_spec.fast.kernels import linear_oemdm_row_loss, oemdm_row_loss

TOL = 2e-5  # fp32 on CPU: see the module docstring


def _rows(n, v, seed=0):
    g = gen(seed)
    logits = torch.randn(n, v, generator=g) * 3
    target = torch.randint(0, v, (n,), generator=g)
    A = torch.rand(n, generator=g) + 0.1
    A_hat = torch.rand(n, generator=g) + 0.1
    return logits.to(DEVICE), target.to(DEVICE), A.to(DEVICE), A_hat.to(DEVICE)


def _reference(logits, target, A, A_hat):
    """float64 loss and logit gradient A·(softmax − onehot)."""
    x = logits.double()
    lsm = torch.log_softmax(x, -1)
    a, ah = A.double(), A_hat.double()
    loss = -a * lsm.gather(1, target[:, None]).squeeze(1) + a * (a.log() - ah.log()) - (a - ah)
    g = lsm.exp() * a[:, None]
    g[torch.arange(len(target)), target] -= a
    return loss, g


# --- 1. the in-place gradient ------------------------------------------------------------------------------

_CONFIGS = [
    {"kind": "tile", "BLOCK_R": 4, "BLOCK_V": 512, "num_warps": 4, "RELOAD": False},
    {"kind": "tile", "BLOCK_R": 2, "BLOCK_V": 512, "num_warps": 4, "RELOAD": True},
    {"kind": "chunked", "BLOCK_V": 128, "num_warps": 4},
]


@pytest.mark.parametrize("cfg", _CONFIGS, ids=lambda c: f"{c['kind']}-{c['BLOCK_V']}")
def test_in_place_gradient_equals_out_of_place(cfg) -> None:
    logits, target, A, A_hat = _rows(7, 300, seed=3)
    target[0] = 299  # last column of the last chunk: the first chunk written by the reversed pass 2
    target[1] = 0
    out_g = torch.empty_like(logits)
    loss1, lp1 = K.triton_row_loss_forward(logits, target, A, A_hat, out_g, **cfg)
    buf = logits.clone()
    loss2, lp2 = K.triton_row_loss_forward(buf, target, A, A_hat, buf, **cfg)  # gradient over its own input
    assert torch.equal(loss1, loss2) and torch.equal(lp1, lp2)
    assert torch.equal(out_g, buf)
    ref_loss, ref_g = _reference(logits, target, A, A_hat)
    mag = A.double()[:, None] * (1 + logits.double().abs().amax(1, keepdim=True))
    assert ((loss1.double() - ref_loss).abs() <= TOL * mag[:, 0]).all()
    assert ((out_g.double() - ref_g).abs() <= TOL * mag).all()


def _kernel_body(fn) -> list[ast.stmt]:
    src = textwrap.dedent(inspect.getsource(getattr(fn, "fn", fn)))
    return ast.parse(src).body[0].body


_EVENTS = ("load", "store", "max", "sum")  # memory accesses and cross-warp reductions (barriers on a GPU)


def _calls_in_order(body: list[ast.stmt]) -> list[tuple[str, str]]:
    """(attribute name, source) of every tl.load / tl.store / tl.max / tl.sum call, in source order."""
    out = []
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _EVENTS:
            out.append((node.lineno, node.col_offset, node.func.attr, ast.unparse(node)))
    return [(a, s) for _, _, a, s in sorted(out)]


@pytest.mark.parametrize("kernel", [K._row_loss_tile_kernel, K._row_loss_chunked_kernel], ids=["tile", "chunked"])
def test_target_logit_is_read_before_any_store(kernel) -> None:
    """Source rule for in-place safety: the logits are never read at the target column after the first
    reduction or store. Another warp may pass the reductions and store its gradient slice (which may hold
    column tgt) while this warp has yet to issue a later load; a load issued before the reductions is ordered
    before every warp's stores by the reduction's barrier.

    (Mutation check: moving ``x_t = tl.load(x_row + tgt)`` of the chunked kernel back after pass 1, or
    re-loading ``x_ptr + ... + tgt`` in the tile kernel after the reductions, fails this test.)"""
    calls = _calls_in_order(_kernel_body(kernel))
    first = next(i for i, (a, _) in enumerate(calls) if a != "load")
    late = [s for a, s in calls[first:] if a == "load" and "x_" in s and "tgt" in s]
    assert not late, f"target logit loaded after a reduction/store (racy with an in-place gradient): {late}"
    assert any(a == "load" and "x_" in s for a, s in calls[:first])


# --- 2. no masked rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("grad_kind", ["sum", "weighted"])
def test_linear_with_zero_rows_gives_zero_weight_gradients(backend, with_bias, grad_kind) -> None:
    d, v = 8, 33
    h = torch.zeros(0, d, device=DEVICE, requires_grad=True)
    W = torch.randn(v, d, device=DEVICE, requires_grad=True)
    b = torch.randn(v, device=DEVICE, requires_grad=True) if with_bias else None
    e = torch.zeros(0, device=DEVICE)
    tgt = torch.zeros(0, dtype=torch.long, device=DEVICE)
    out = linear_oemdm_row_loss(h, W, b, tgt, e, e, backend=backend)
    assert out.shape == (0,)
    (out.sum() if grad_kind == "sum" else (out * torch.zeros(0, device=DEVICE)).sum()).backward()
    assert W.grad is not None and torch.equal(W.grad, torch.zeros_like(W))
    if with_bias:
        assert b.grad is not None and torch.equal(b.grad, torch.zeros_like(b))
    assert h.grad is not None and h.grad.shape == (0, d)
    with torch.no_grad():  # forward only
        assert linear_oemdm_row_loss(h, W, b, tgt, e, e, backend=backend).shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_loss_with_zero_rows_forward_and_backward(backend) -> None:
    logits = torch.zeros(0, 9, device=DEVICE, requires_grad=True)
    A = torch.zeros(0, device=DEVICE, requires_grad=True)
    A_hat = torch.zeros(0, device=DEVICE, requires_grad=True)
    out = oemdm_row_loss(logits, torch.zeros(0, dtype=torch.long, device=DEVICE), A, A_hat, backend=backend)
    (out * torch.zeros(0, device=DEVICE)).sum().backward()
    assert logits.grad.shape == (0, 9) and A.grad.shape == (0,) and A_hat.grad.shape == (0,)


# --- 6. any layout of the logits --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["transposed", "column-slice"])
def test_non_contiguous_logits_requiring_grad(backend, layout) -> None:
    base, target, A, A_hat = _rows(6, 40, seed=5)
    if layout == "transposed":  # column-major (stride (1, N)): empty_like of it is column-major too
        logits = base.t().contiguous().t()
    else:  # every other column of a wider buffer: column stride 2
        wide = torch.zeros(6, 80, device=DEVICE)
        wide[:, ::2] = base
        logits = wide[:, ::2]
    assert logits.stride(1) != 1
    logits = logits.detach().requires_grad_(True)
    w = torch.linspace(0.5, 2.0, 6, device=DEVICE)
    loss = oemdm_row_loss(logits, target, A, A_hat, backend=backend)
    (loss * w).sum().backward()
    ref_loss, ref_g = _reference(base, target, A, A_hat)
    mag = A.double()[:, None] * (1 + base.double().abs().amax(1, keepdim=True))
    assert ((loss.double() - ref_loss).abs() <= TOL * mag[:, 0]).all()
    assert ((logits.grad.double() - ref_g * w.double()[:, None]).abs() <= TOL * mag * 2).all()


@pytest.mark.parametrize("in_place", [False, True])
def test_launcher_accepts_column_major_buffers(in_place) -> None:
    base, target, A, A_hat = _rows(5, 24, seed=6)
    cm = base.t().contiguous().t()  # column-major logits
    if in_place:
        loss, _ = K.triton_row_loss_forward(cm, target, A, A_hat, cm)
        g = cm
    else:
        g = torch.empty(24, 5, device=DEVICE).t()  # column-major gradient buffer
        loss, _ = K.triton_row_loss_forward(base, target, A, A_hat, g)
    ref_loss, ref_g = _reference(base, target, A, A_hat)
    mag = A.double()[:, None] * (1 + base.double().abs().amax(1, keepdim=True))
    assert ((g.double() - ref_g).abs() <= TOL * mag).all()
    assert ((loss.double() - ref_loss).abs() <= TOL * mag[:, 0]).all()
