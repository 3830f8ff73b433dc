"""Fused softmax cross-entropy and MSE, forward and backward, against PyTorch
in float64 on every ISA path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn.testing import assert_close
from helpers import fresh_seeds, nan_gapped, randn

F = torch.nn.functional
DTYPES = [torch.float32, torch.bfloat16]
REDUCTIONS = ["mean", "sum", "none"]


def torch_ce(x, t, reduction, ignore_index=-100, smoothing=0.0):
    return F.cross_entropy(x, t, reduction=reduction, ignore_index=ignore_index, label_smoothing=smoothing)


def torch_ce_grad(x, t, g, reduction, ignore_index=-100, smoothing=0.0):
    x = x.detach().clone().requires_grad_()
    torch_ce(x, t, reduction, ignore_index, smoothing).backward(g.to(x.dtype))
    return x.grad


def check_ce(x, t, reduction, ignore_index=-100, smoothing=0.0, x_view=None, gen=None):
    xv = x if x_view is None else x_view
    loss = fastnn.cross_entropy(xv, t, reduction, ignore_index, smoothing)
    assert loss.dtype == x.dtype
    assert_close(loss, torch_ce(x, t, reduction, ignore_index, smoothing),
                 torch_ce(x.double(), t, reduction, ignore_index, smoothing), "loss")
    g = randn(loss.shape, x.dtype, gen)
    xr = xv.detach().clone().requires_grad_() if x_view is None else xv.detach().requires_grad_()
    fastnn.cross_entropy(xr, t, reduction, ignore_index, smoothing).backward(g)
    assert_close(xr.grad, torch_ce_grad(x, t, g, reduction, ignore_index, smoothing),
                 torch_ce_grad(x.double(), t, g.double(), reduction, ignore_index, smoothing), "dlogits")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 17), (33, 65), (4, 1025), (3, 4099)])
def test_cross_entropy(shape, dtype, reduction, rng):
    x = randn(shape, dtype, rng) * 3
    t = torch.randint(0, shape[1], (shape[0],), generator=rng)
    check_ce(x, t, reduction, gen=rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.1, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_ignore_index_and_smoothing(reduction, smoothing, dtype, rng):
    x = randn((40, 97), dtype, rng) * 2
    t = torch.randint(0, 97, (40,), generator=rng)
    t[::3] = 5  # ignore_index need not be negative
    check_ce(x, t, reduction, ignore_index=5, smoothing=smoothing, gen=rng)
    t[::3] = -100
    check_ce(x, t, reduction, smoothing=smoothing, gen=rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_all_ignored(reduction, smoothing):
    x = torch.randn(6, 10)
    t = torch.full((6,), -100)
    got = fastnn.cross_entropy(x, t, reduction, label_smoothing=smoothing)
    expected = torch_ce(x, t, reduction, smoothing=smoothing)
    torch.testing.assert_close(got, expected, equal_nan=True)  # NaN for mean (0/0), 0 for sum, zeros for none
    xr = x.clone().requires_grad_()
    fastnn.cross_entropy(xr, t, reduction, label_smoothing=smoothing).sum().backward()
    assert torch.equal(xr.grad, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_extremes(dtype, smoothing, rng):
    inf = float("inf")
    x = randn((6, 37), torch.float32, rng)
    x[0] *= 1e30                     # huge logits
    x[1, ::2] = -inf                 # -inf logits, target finite
    x[2] = 3.4e38                    # all largest finite
    x[3] *= 1e-40                    # subnormal
    x[4, :5] = 88.0
    x[5] = -1e30
    t = torch.tensor([3, 1, 0, 7, 2, 36])
    x = x.to(dtype)
    for reduction in REDUCTIONS:
        got = fastnn.cross_entropy(x, t, reduction, label_smoothing=smoothing)
        assert_close(got, torch_ce(x, t, reduction, smoothing=smoothing),
                     torch_ce(x.double(), t, reduction, smoothing=smoothing))
    finite = x[[0, 2, 3, 4, 5]]
    tf = t[[0, 2, 3, 4, 5]]
    check_ce(finite, tf, "none", smoothing=smoothing, gen=rng)


def test_cross_entropy_nan_rows_as_torch():
    x = torch.randn(4, 9)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    x[3] = -float("inf")
    t = torch.tensor([0, 1, 2, 3])
    got = fastnn.cross_entropy(x, t, "none")
    torch.testing.assert_close(got, torch_ce(x, t, "none"), equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_strided(dtype, rng):
    x = randn((37, 129), dtype, rng) * 3
    t_full = torch.randint(0, 129, (74,), generator=rng)
    t = t_full[::2]
    for view in (nan_gapped(x, 3), nan_gapped(x, 2, transpose=True)):
        check_ce(x, t, "mean", x_view=view, smoothing=0.1, gen=rng)
        check_ce(x, t, "none", x_view=view, gen=rng)


def test_cross_entropy_explicit_backward_and_out(rng):
    x = randn((9, 31), torch.float32, rng)
    t = torch.randint(0, 31, (9,), generator=rng)
    xr = x.clone().requires_grad_()
    loss = fastnn.cross_entropy(xr, t)
    loss.backward()
    mx = x.double().max(-1).values
    stats = torch.stack([mx, torch.logsumexp(x.double() - mx[:, None], -1)], 1)
    out = torch.full_like(x, float("nan"))
    assert fastnn.cross_entropy_backward(torch.tensor(1.0), x, t, stats, out=out) is out
    assert_close(out, xr.grad, torch_ce_grad(x.double(), t, torch.tensor(1.0), "mean"))


def test_cross_entropy_thread_independent(rng):
    x = randn((300, 1000), torch.float32, rng) * 3
    t = torch.randint(0, 1000, (300,), generator=rng)
    first = fastnn.cross_entropy(x, t, "sum")
    previous = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert torch.equal(first, fastnn.cross_entropy(x, t, "sum"))
    finally:
        fastnn.set_num_threads(previous)
    assert torch.equal(first, fastnn.cross_entropy(x, t, "sum"))


def test_cross_entropy_bad_arguments():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"target\[2\] = 5 is out of range"):
        fastnn.cross_entropy(x, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(ValueError, match=r"target\[0\] = -1 is out of range"):
        fastnn.cross_entropy(x, torch.tensor([-1, 1, 2, 2]))
    with pytest.raises(TypeError, match="target must be int64"):
        fastnn.cross_entropy(x, torch.tensor([0, 1, 2, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"target must be \(N,\)"):
        fastnn.cross_entropy(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"logits must be \(N, C\)"):
        fastnn.cross_entropy(torch.randn(5), torch.tensor([0]))
    with pytest.raises(TypeError, match="logits must be float32 or bfloat16"):
        fastnn.cross_entropy(x.double(), torch.tensor([0, 1, 2, 2]))
    with pytest.raises(ValueError, match="reduction must be"):
        fastnn.cross_entropy(x, torch.tensor([0, 1, 2, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        fastnn.cross_entropy(x, torch.tensor([0, 1, 2, 2]), label_smoothing=1.5)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 20), c=st.integers(1, 70), reduction=st.sampled_from(REDUCTIONS),
       dtype=st.sampled_from(DTYPES), smoothing=st.sampled_from([0.0, 0.05, 0.5]),
       scale=st.sampled_from([0.1, 1.0, 10.0]), ignore=st.booleans(), seed=fresh_seeds())
def test_cross_entropy_hypothesis(n, c, reduction, dtype, smoothing, scale, ignore, seed):
    gen = torch.Generator().manual_seed(seed)
    x = randn((n, c), dtype, gen) * scale
    t = torch.randint(0, c, (n,), generator=gen)
    if ignore and n:
        t[0] = -100
    if n == 0 and reduction == "mean":
        return  # torch: NaN loss, covered by test_cross_entropy_all_ignored
    check_ce(x, t, reduction, smoothing=smoothing, gen=gen)


# --- MSE ----------------------------------------------------------------------

def torch_mse_grads(x, y, g, reduction):
    x, y = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    F.mse_loss(x, y, reduction=reduction).backward(g.to(x.dtype))
    return x.grad, y.grad


def check_mse(x, y, reduction, gen, xv=None, yv=None):
    xv = x if xv is None else xv
    yv = y if yv is None else yv
    loss = fastnn.mse_loss(xv, yv, reduction)
    assert_close(loss, F.mse_loss(x, y, reduction=reduction), F.mse_loss(x.double(), y.double(), reduction=reduction))
    g = randn(loss.shape, x.dtype, gen)
    xr, yr = xv.detach().requires_grad_(), yv.detach().requires_grad_()
    fastnn.mse_loss(xr, yr, reduction).backward(g)
    tx, ty = torch_mse_grads(x, y, g, reduction)
    dx, dy = torch_mse_grads(x.double(), y.double(), g.double(), reduction)
    assert_close(xr.grad, tx, dx, "dx")
    assert_close(yr.grad, ty, dy, "dtarget")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (17,), (33, 65), (3, 16384 + 7), (2, 3, 5, 7)])
def test_mse(shape, dtype, reduction, rng):
    check_mse(randn(shape, dtype, rng), randn(shape, dtype, rng), reduction, rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_strided_and_empty(reduction, rng):
    x, y = randn((37, 129), torch.float32, rng), randn((37, 129), torch.float32, rng)
    check_mse(x, y, reduction, rng, nan_gapped(x, 2, True), nan_gapped(y, 3))
    e = torch.empty(0, 4)
    torch.testing.assert_close(fastnn.mse_loss(e, e, reduction), F.mse_loss(e, e, reduction=reduction),
                               equal_nan=True)


def test_mse_numpy_and_bad_arguments(rng):
    with pytest.raises(TypeError, match="target must have the dtype of x"):
        fastnn.mse_loss(torch.ones(3), torch.ones(3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="target must have the shape of x"):
        fastnn.mse_loss(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="reduction must be"):
        fastnn.mse_loss(torch.ones(3), torch.ones(3), "mean_sq")
    x = randn((300, 1000), torch.float32, rng)
    y = randn((300, 1000), torch.float32, rng)
    first = fastnn.mse_loss(x, y)
    previous = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert torch.equal(first, fastnn.mse_loss(x, y))
    finally:
        fastnn.set_num_threads(previous)
    assert isinstance(np.asarray(first), np.ndarray)
