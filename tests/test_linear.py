"""Linear forward and backward (fastnn.linear, fastnn.linear_backward and the
autograd function) against torch.nn.functional.linear in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastnn
from fastnn.testing import assert_close
from helpers import nan_gapped, randn

DTYPES = [torch.float32, torch.bfloat16]


def grads_ref(x, w, b, g, dtype):
    """torch's autograd gradients of F.linear at `dtype`."""
    xs, ws = x.detach().to(dtype).requires_grad_(), w.detach().to(dtype).requires_grad_()
    bs = None if b is None else b.detach().to(dtype).requires_grad_()
    F.linear(xs, ws, bs).backward(g.to(dtype))
    return xs.grad, ws.grad, None if bs is None else bs.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 17, 33), (64, 256, 256), (97, 31, 300), (3, 1025, 65),
                                   (200, 5, 7)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward(shape, dtype, with_bias, rng):
    rows, n_in, n_out = shape
    x, w = randn((rows, n_in), dtype, rng), randn((n_out, n_in), dtype, rng)
    b = randn((n_out,), dtype, rng) if with_bias else None
    y = fastnn.linear(x, w, b)
    assert y.shape == (rows, n_out) and y.dtype == dtype
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    assert_close(y, F.linear(x, w, b), ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead", [(2, 3), (4,), (2, 0), (1, 1, 5)])
def test_linear_autograd(lead, dtype, rng):
    n_in, n_out = 37, 19
    x = randn((*lead, n_in), dtype, rng).requires_grad_()
    w = randn((n_out, n_in), dtype, rng).requires_grad_()
    b = randn((n_out,), dtype, rng).requires_grad_()
    g = randn((*lead, n_out), dtype, rng)
    y = fastnn.linear(x, w, b)
    assert y.shape == (*lead, n_out) and y.grad_fn is not None
    y.backward(g)
    expect = grads_ref(x, w, b, g, dtype)
    ref = grads_ref(x, w, b, g, torch.float64)
    for name, got, e, r in zip(("x", "weight", "bias"), (x.grad, w.grad, b.grad), expect, ref):
        assert got.dtype == dtype
        assert_close(got, e, r, name=f"grad {name}")


@pytest.mark.parametrize("rows,n_in,n_out", [(1, 1, 1), (512, 64, 48), (33, 300, 17), (4097, 8, 3)])
def test_linear_backward_direct(rows, n_in, n_out, rng):
    x, w = randn((rows, n_in), gen=rng), randn((n_out, n_in), gen=rng)
    g = randn((rows, n_out), gen=rng)
    dx, dw, db = fastnn.linear_backward(g, x, w)
    expect, ref = grads_ref(x, w, torch.zeros(n_out), g, torch.float32), grads_ref(
        x, w, torch.zeros(n_out), g, torch.float64)
    for name, got, e, r in zip(("x", "weight", "bias"), (dx, dw, db), expect, ref):
        assert_close(got, e, r, name=f"grad {name}")
    only_w = fastnn.linear_backward(g, x, w, input_grad=False, bias_grad=False)
    assert only_w[0] is None and only_w[2] is None and torch.equal(only_w[1], dw)


def test_linear_strided_inputs_and_grad(rng):
    x, w, b = randn((50, 70), gen=rng), randn((40, 70), gen=rng), randn((40,), gen=rng)
    g = randn((50, 40), gen=rng)
    xs, ws, gs = nan_gapped(x, 2, transpose=True), nan_gapped(w, 3), nan_gapped(g, 2)
    bs = nan_gapped(b, 2)
    assert_close(fastnn.linear(xs, ws, bs), F.linear(x, w, b), F.linear(x.double(), w.double(), b.double()))
    got = fastnn.linear_backward(gs, xs, ws)
    expect, ref = grads_ref(x, w, b, g, torch.float32), grads_ref(x, w, b, g, torch.float64)
    for name, gv, e, r in zip(("x", "weight", "bias"), got, expect, ref):
        assert_close(gv, e, r, name=f"grad {name}")


def test_linear_bias_grad_exact_sum_and_non_finite(rng):
    # 1 + 4096 * 1e-8: a float running sum stays at 1.0; the error terms keep
    # the small addends. An infinity or NaN in a column gives what any float
    # sum gives, not the NaN of inf - inf in the error terms.
    g = torch.full((4097, 4), 1e-8)
    g[0] = 1.0
    g[5, 1], g[9, 2], g[7, 3], g[8, 3] = float("inf"), float("nan"), float("inf"), -float("inf")
    x, w = randn((4097, 3), gen=rng), randn((4, 3), gen=rng)
    db = fastnn.linear_backward(g, x, w)[2]
    ref = g.double().sum(0)
    assert db[0].item() == ref[0].float().item() and db[1].item() == float("inf")
    assert db[2].isnan() and db[3].isnan()


def test_linear_bias_grad_same_bits_for_any_strides(rng):
    # The bias gradient sums the same rows in the same order whatever the
    # layout of grad_out (compiled graphs hand backward other strides than
    # eager autograd does).
    g, x, w = randn((1000, 37), gen=rng), randn((1000, 5), gen=rng), randn((37, 5), gen=rng)
    row_major = fastnn.linear_backward(g, x, w)[2]
    for view in (g.T.contiguous().T, nan_gapped(g, 2)):
        assert torch.equal(fastnn.linear_backward(view, x, w)[2], row_major)


def test_linear_expanded_grad_output(rng):
    # sum() hands backward a stride-0 gradient.
    x = randn((30, 20), gen=rng).requires_grad_()
    w = randn((10, 20), gen=rng).requires_grad_()
    fastnn.linear(x, w).sum().backward()
    xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    F.linear(xr, wr).sum().backward()
    x32, w32 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.linear(x32, w32).sum().backward()
    assert_close(x.grad, x32.grad, xr.grad, name="grad x")
    assert_close(w.grad, w32.grad, wr.grad, name="grad weight")


def test_linear_only_weight_requires_grad(rng):
    x, w = randn((9, 8), gen=rng), randn((4, 8), gen=rng).requires_grad_()
    fastnn.linear(x, w).backward(torch.ones(9, 4))
    assert_close(w.grad, torch.ones(9, 4).T @ x, torch.ones(9, 4).double().T @ x.double())


def test_linear_numpy_and_no_grad(rng):
    x, w, b = randn((6, 5), gen=rng), randn((3, 5), gen=rng), randn((3,), gen=rng)
    y = fastnn.linear(x.numpy(), w.numpy(), b.numpy())
    assert isinstance(y, np.ndarray)
    assert_close(y, F.linear(x, w, b), F.linear(x.double(), w.double(), b.double()))
    with torch.no_grad():
        assert fastnn.linear(x, w.requires_grad_(), b).grad_fn is None


def test_linear_direct_call_same_as_general_path(rng):
    """A CPU call with no autograd to record goes straight to the kernel
    (_backend.direct_cpu_call): the general path's bits, and a call that must
    record its graph still does."""
    from fastnn.ops import gemm

    x, w, b = randn((7, 5), gen=rng), randn((3, 5), gen=rng), randn((3,), gen=rng)
    general = gemm._linear(x, w, b)
    assert torch.equal(fastnn.linear(x, w, b), general)
    with torch.no_grad():
        assert torch.equal(fastnn.linear(x, w.clone().requires_grad_(), b), general)
    assert fastnn.linear(x, w.clone().requires_grad_(), b).grad_fn is not None
    assert torch.equal(fastnn.linear(x, w.numpy(), b), general)


def test_linear_deterministic_across_threads(rng):
    x, w, g = randn((300, 200), gen=rng), randn((150, 200), gen=rng), randn((300, 150), gen=rng)
    first = (fastnn.linear(x, w), *fastnn.linear_backward(g, x, w))
    threads = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        single = (fastnn.linear(x, w), *fastnn.linear_backward(g, x, w))
    finally:
        fastnn.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(first, single))


@pytest.mark.single_isa
def test_linear_bad_inputs():
    x, w, b = torch.randn(4, 5), torch.randn(3, 5), torch.randn(3)
    g = torch.randn(4, 3)
    cases = [
        (lambda: fastnn.linear(x, torch.randn(3, 6)), ValueError, "weight must have 5 columns"),
        (lambda: fastnn.linear(x, torch.randn(5)), ValueError, "weight must be 2-D"),
        (lambda: fastnn.linear(x, w, torch.randn(4)), ValueError, "bias must have shape \\(3,\\)"),
        (lambda: fastnn.linear(x, w.bfloat16()), TypeError, "weight must have the dtype of x"),
        (lambda: fastnn.linear(x.double(), w.double()), TypeError, "x must be float32 or bfloat16"),
        (lambda: fastnn.linear(x, w, b.bfloat16()), TypeError, "bias must be float32"),
        (lambda: fastnn.linear_backward(g, torch.randn(5, 5), w), ValueError, "x must have 4 rows"),
        (lambda: fastnn.linear_backward(g, x, torch.randn(3, 4)), ValueError, "weight must have shape \\(3, 5\\)"),
        (lambda: fastnn.linear_backward(g.bfloat16(), x, w), TypeError, "x must have the dtype of grad_out"),
        (lambda: fastnn.linear_backward(g, x, torch.randn(2, 3, 5)), ValueError, "weight must be 2-D"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()
