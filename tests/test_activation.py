"""ReLU forward/backward against PyTorch in float64, on every ISA path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn.testing import assert_close
from helpers import ODD_SIZES, nan_gapped, poisoned, randn

DTYPES = [torch.float32, torch.bfloat16]


def relu_ref(x):
    return torch.relu(x.double())


def relu_backward_ref(g, y):
    return torch.ops.aten.threshold_backward(g.double(), y.double(), 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0] + ODD_SIZES + [16384 * 3 + 5])
def test_relu_sizes(n, dtype, rng):
    x = randn((n,), dtype, rng)
    out = poisoned((n,), dtype)
    fastnn.relu(x, out=out)
    assert_close(out, torch.relu(x), relu_ref(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1, 1), (3, 0, 5), (2, 3, 5, 7), (1, 1025, 3)])
def test_relu_forward_backward(shape, dtype, rng):
    x, g = randn(shape, dtype, rng), randn(shape, dtype, rng)
    y = fastnn.relu(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert_close(y, torch.relu(x), relu_ref(x))
    gi = fastnn.relu_backward(g, y)
    y_t = torch.relu(x)
    assert_close(gi, torch.ops.aten.threshold_backward(g, y_t, 0), relu_backward_ref(g, y_t))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_relu_strided_inputs_and_outputs(dtype, transpose, rng):
    x = randn((37, 129), dtype, rng)
    g = randn((37, 129), dtype, rng)
    xs, gs = nan_gapped(x, 3, transpose), nan_gapped(g, 2, not transpose)
    out = nan_gapped(poisoned((37, 129), dtype), 2, transpose)
    ptr, strides = out.data_ptr(), out.stride()
    fastnn.relu(xs, out=out)
    assert out.data_ptr() == ptr and out.stride() == strides
    assert_close(out, torch.relu(x), relu_ref(x))
    y = torch.relu(x)
    gi = fastnn.relu_backward(gs, nan_gapped(y, 2))
    assert_close(gi, torch.ops.aten.threshold_backward(g, y, 0), relu_backward_ref(g, y))


def test_relu_numpy_negative_strides_and_offsets(rng):
    a = randn((33, 65), torch.float32, rng).numpy()
    for view in (a[::-1], a[:, ::-2], a[1:], a.T[5:, ::-1]):
        out = fastnn.relu(view)
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, np.maximum(view, 0))


def test_relu_extremes():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.4028235e38, -3.4028235e38,
                      1e-45, -1e-45, 0.0, -0.0])
    for dtype in DTYPES:
        xd = x.to(dtype)
        assert torch.equal(fastnn.relu(xd).isnan(), torch.relu(xd).isnan())
        torch.testing.assert_close(fastnn.relu(xd), torch.relu(xd), rtol=0, atol=0, equal_nan=True)
        g = torch.ones_like(xd)
        torch.testing.assert_close(fastnn.relu_backward(g, torch.relu(xd)),
                                   torch.ops.aten.threshold_backward(g, torch.relu(xd), 0),
                                   rtol=0, atol=0, equal_nan=True)


def test_relu_in_place(rng):
    x = randn((1000,), torch.float32, rng)
    expected = torch.relu(x)
    y = fastnn.relu(x, out=x)
    assert y is x
    assert torch.equal(x, expected)


def test_relu_autograd_matches_torch(rng):
    x = randn((17, 33), torch.float32, rng).requires_grad_()
    x_t = x.detach().clone().requires_grad_()
    g = randn((17, 33), torch.float32, rng)
    fastnn.relu(x).backward(g)
    torch.relu(x_t).backward(g)
    assert torch.equal(x.grad, x_t.grad)


def test_relu_deterministic(rng):
    x = randn((4096, 257), torch.float32, rng)
    assert torch.equal(fastnn.relu(x), fastnn.relu(x))


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 40), min_size=0, max_size=4),
       dtype=st.sampled_from(DTYPES), step=st.integers(1, 3), transpose=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_relu_hypothesis(shape, dtype, step, transpose, seed):
    gen = torch.Generator().manual_seed(seed)
    x = randn(tuple(shape), dtype, gen)
    xs = nan_gapped(x, step, transpose) if shape else x
    out = fastnn.relu(xs)
    assert_close(out, torch.relu(x), relu_ref(x))


@pytest.mark.large
@pytest.mark.single_isa
def test_relu_past_2_pow_31_elements():
    n = 2**31 + 17
    x = torch.empty(n, dtype=torch.bfloat16)
    x[:8] = torch.tensor([-1, 2, -3, 4, -5, 6, -7, 8], dtype=torch.bfloat16)
    x[-8:] = torch.tensor([1, -2, 3, -4, 5, -6, 7, -8], dtype=torch.bfloat16)
    x[8:-8] = -1
    fastnn.relu(x, out=x)
    assert x[:8].tolist() == [0, 2, 0, 4, 0, 6, 0, 8]
    assert x[-8:].tolist() == [1, 0, 3, 0, 5, 0, 7, 0]
    assert x[2**31 - 1].item() == 0 and x[2**31 + 3].item() == 0


@pytest.mark.cuda
@pytest.mark.single_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (1025,), (37, 129), (4096, 4097)])
def test_relu_cuda(shape, dtype, rng):
    x = randn(shape, dtype, rng, device="cuda")
    g = randn(shape, dtype, rng, device="cuda")
    out = poisoned(shape, dtype, "cuda")
    fastnn.relu(x, out=out)
    assert_close(out, torch.relu(x), relu_ref(x))
    y = torch.relu(x)
    assert_close(fastnn.relu_backward(g, y), torch.ops.aten.threshold_backward(g, y, 0), relu_backward_ref(g, y))
    if len(shape) == 2:
        xt = nan_gapped(x, 2, True)
        assert_close(fastnn.relu(xt), torch.relu(x), relu_ref(x))


@pytest.mark.cuda
@pytest.mark.single_isa
def test_relu_cuda_runs_on_current_stream(rng):
    x = randn((1 << 20,), torch.float32, rng, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = fastnn.relu(x)
    stream.synchronize()
    assert torch.equal(y, torch.relu(x))


@pytest.mark.single_isa
def test_relu_custom_ops_pass_opcheck(rng):
    x = randn((5, 3), torch.float32, rng).requires_grad_()
    torch.library.opcheck(torch.ops.fastnn.relu.default, (x,))
    y = torch.relu(randn((5, 3), torch.float32, rng))
    torch.library.opcheck(torch.ops.fastnn.relu_backward.default, (randn((5, 3), torch.float32, rng), y))


@pytest.mark.single_isa
def test_relu_torch_compile_fullgraph(rng):
    fn = torch.compile(lambda t: fastnn.relu(t * 2).sum(), fullgraph=True)
    x = randn((8, 16), torch.float32, rng).requires_grad_()
    x_t = x.detach().clone().requires_grad_()
    fn(x).backward()
    torch.relu(x_t * 2).sum().backward()
    assert torch.equal(x.grad, x_t.grad)
