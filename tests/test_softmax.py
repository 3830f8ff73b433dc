"""Softmax and log-softmax forward/backward against PyTorch in float64, on
every ISA path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn.testing import assert_close
from helpers import ODD_SIZES, fresh_seeds, nan_gapped, poisoned, randn

DTYPES = [torch.float32, torch.bfloat16]
LOG = [False, True]


def fwd(log):
    return fastnn.log_softmax if log else fastnn.softmax


def bwd(log):
    return fastnn.log_softmax_backward if log else fastnn.softmax_backward


def torch_fwd(x, log):
    return x.log_softmax(-1) if log else x.softmax(-1)


def torch_bwd(g, y, log):
    """PyTorch's backward kernel on the same (grad_out, y) at their dtype. The
    float64 reference gets these same inputs: measured from float64 x instead,
    the rounding of y (the forward's error, common to both libraries) would
    dominate the comparison."""
    fn = torch._log_softmax_backward_data if log else torch._softmax_backward_data
    return fn(g, y, -1, y.dtype)


def check_backward(g, y, log, g_view=None, y_view=None):
    got = bwd(log)(g if g_view is None else g_view, y if y_view is None else y_view)
    assert_close(got, torch_bwd(g, y, log), torch_bwd(g.double(), y.double(), log), "backward")


def check(x, g, log, x_view=None, g_view=None):
    y = fwd(log)(x if x_view is None else x_view)
    assert_close(y, torch_fwd(x, log), torch_fwd(x.double(), log), "forward")
    check_backward(g, torch_fwd(x, log), log, g_view)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", ODD_SIZES + [4096 + 3])
def test_row_lengths(cols, dtype, log, rng):
    x, g = randn((5, cols), dtype, rng) * 4, randn((5, cols), dtype, rng)
    check(x, g, log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape", [(1,), (3, 0), (0, 7), (2, 3, 17), (1000, 33), (2, 2, 2, 65)])
def test_shapes(shape, log, rng):
    x, g = randn(shape, torch.float32, rng) * 3, randn(shape, torch.float32, rng)
    out = poisoned(shape)
    assert fwd(log)(x, out=out) is out
    assert_close(out, torch_fwd(x, log), torch_fwd(x.double(), log))
    check(x, g, log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_strided_rows(dtype, log, transpose, rng):
    x, g = randn((37, 129), dtype, rng) * 3, randn((37, 129), dtype, rng)
    check(x, g, log, nan_gapped(x, 3, transpose), nan_gapped(g, 2, not transpose))
    out = nan_gapped(poisoned((37, 129), dtype), 2, transpose)
    ptr, strides = out.data_ptr(), out.stride()
    fwd(log)(x, out=out)
    assert out.data_ptr() == ptr and out.stride() == strides
    assert_close(out, torch_fwd(x, log), torch_fwd(x.double(), log))


@pytest.mark.parametrize("log", LOG)
def test_numpy_negative_strides(log, rng):
    a = (randn((33, 65), torch.float32, rng) * 3).numpy()
    for view in (a[::-1], a[:, ::-2], a[1:], a.T[5:, ::-1]):
        out = fwd(log)(view)
        assert isinstance(out, np.ndarray)
        t = torch.from_numpy(view.copy())
        assert_close(out, torch_fwd(t, log), torch_fwd(t.double(), log))


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
def test_extremes(log, dtype):
    inf, nan = float("inf"), float("nan")
    rows = [
        [1e30, -1e30, 0.0, 1e30],           # huge logits
        [-inf, 0.0, 1.0, -inf],             # some -inf
        [-inf, -inf, -inf, -inf],           # all -inf: NaN (0/0), as PyTorch
        [inf, 0.0, 1.0, 2.0],               # +inf: NaN
        [nan, 0.0, 1.0, 2.0],               # NaN: NaN
        [3.4e38, -3.4e38, 3.4e38, 0.0],     # largest finite
        [1e-45, -1e-45, 0.0, 1e-40],        # subnormals
        [88.0, 89.0, 90.0, -104.0],         # exp's range ends
    ]
    x = torch.tensor(rows, dtype=torch.float32).to(dtype)
    x = x.repeat(1, 9)  # 36 columns: a full vector plus a tail on every path
    assert_close(fwd(log)(x), torch_fwd(x, log), torch_fwd(x.double(), log))
    g = torch.ones_like(x)
    g[:, ::3] = -2
    check_backward(g[:2], torch_fwd(x[:2], log), log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
def test_autograd_matches_torch(log, dtype, rng):
    x = (randn((17, 65), dtype, rng) * 3).requires_grad_()
    g = randn((17, 65), dtype, rng)
    y = fwd(log)(x)
    assert y.grad_fn is not None
    y.backward(g)
    # The autograd path runs the checked kernels on the forward's own output.
    assert torch.equal(x.grad, bwd(log)(g, fwd(log)(x.detach())))
    x_t = x.detach().clone().requires_grad_()
    torch_fwd(x_t, log).backward(g)
    assert_close(x.grad, x_t.grad, torch_bwd(g.double(), torch_fwd(x.detach().double(), log), log))


def test_backward_dot_correctly_rounded(rng):
    """dx = y * (dy - sum(dy * y)): where y is nearly one-hot, dy - dot cancels
    to a few ulp of dot, so dx is decided by dot's last bit. fastnn's dot is
    compensated (products' and sums' rounding errors carried), i.e. dot
    rounded once from its float64 value; one extra rounding anywhere (an FMA
    contracted by the compiler into a compensated sum counted a product's
    error twice) changes dx."""
    x, g = randn((256, 33), torch.float32, rng) * 100, randn((256, 33), torch.float32, rng)
    y = x.softmax(-1)
    dot = (g.double() * y.double()).sum(-1, keepdim=True).float()
    assert torch.equal(fastnn.softmax_backward(g, y), y * (g - dot))


def test_log_backward_cancellation(rng):
    """dx = dy - e^y sum(dy): on short rows with nearly equal dy the two terms
    cancel, and dx's error is the error of e^y sum(dy). fastnn carries e^y and
    the product in two floats, so the error stays near dx's own rounding
    plus 2^-25 of the product, where a float exp and a rounded product (an ulp
    of the product or more) fail."""
    g = 1.0 + 1e-3 * randn((4096, 3), torch.float32, rng)
    y = (0.1 * randn((4096, 3), torch.float32, rng)).log_softmax(-1)
    got = fastnn.log_softmax_backward(g, y).double()
    ref = torch._log_softmax_backward_data(g.double(), y.double(), -1, torch.float64)
    product = y.double().exp() * g.double().sum(-1, keepdim=True)
    ulp = torch.finfo(torch.float32).eps
    bound = 0.5 * ulp * ref.abs() + 2.0**-25 * product
    assert ((got - ref).abs() <= bound).all()


@pytest.mark.parametrize("log", LOG)
def test_deterministic_and_thread_independent(log, rng):
    x = randn((300, 1000), torch.float32, rng) * 5
    first = fwd(log)(x)
    assert torch.equal(first, fwd(log)(x))
    previous = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert torch.equal(first, fwd(log)(x))
    finally:
        fastnn.set_num_threads(previous)


def test_bad_arguments():
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        fastnn.softmax(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        fastnn.softmax(torch.tensor(1.0))
    with pytest.raises(ValueError, match="out must have the shape of x"):
        fastnn.log_softmax(torch.ones(3, 4), out=torch.empty(4, 3))
    x = torch.ones(3, 4)
    with pytest.raises(ValueError, match="out overlaps x"):
        fastnn.softmax(x, out=x)
    with pytest.raises(TypeError, match="y must have the dtype of grad_out"):
        fastnn.softmax_backward(torch.ones(3), torch.ones(3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="y must have the shape of grad_out"):
        fastnn.log_softmax_backward(torch.ones(3, 2), torch.ones(2, 3))
    ro = np.ones((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        fastnn.softmax(np.ones((2, 3), np.float32), out=ro)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 50), min_size=1, max_size=3), log=st.booleans(),
       dtype=st.sampled_from(DTYPES), step=st.integers(1, 3), transpose=st.booleans(),
       scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]), seed=fresh_seeds())
def test_hypothesis(shape, log, dtype, step, transpose, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    x, g = randn(tuple(shape), dtype, gen) * scale, randn(tuple(shape), dtype, gen)
    check(x, g, log, nan_gapped(x, step, transpose), nan_gapped(g, step, not transpose))
