"""max_pool2d / avg_pool2d / adaptive_avg_pool2d forward and backward against
PyTorch in float64, on every ISA path: NCHW and channels-last, strided
NaN-gapped inputs, kernel/stride/padding/dilation/ceil_mode combinations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn.testing import assert_close
from helpers import fresh_seeds, nan_gapped, poisoned, randn

LAYOUT_DTYPES = [("nchw", torch.float32), ("nhwc", torch.float32), ("nchw", torch.bfloat16),
                 ("nhwc", torch.bfloat16)]


def check(fast_fn, torch_fn, x, layout="nchw"):
    """Forward and input gradient of fast_fn against torch_fn (same kwargs)."""
    xs = x.to(memory_format=torch.channels_last) if layout == "nhwc" else x
    xf = xs.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    out = fast_fn(xf)
    if layout == "nhwc" and out.dim() == 4 and out.shape[1] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(out.shape).to(x.dtype)
    out.backward(g)
    results = []
    for dtype in (x.dtype, torch.float64):
        xt = x.detach().to(dtype).requires_grad_()
        ot = torch_fn(xt)
        ot.backward(g.to(dtype))
        results.append((ot.detach(), xt.grad))
    assert_close(out.detach(), results[0][0], results[1][0], "out")
    assert_close(xf.grad, results[0][1], results[1][1], "grad")


POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True),
    dict(kernel_size=5, stride=3, padding=2, ceil_mode=True),
]


@pytest.mark.parametrize("layout,dtype", LAYOUT_DTYPES)
@pytest.mark.parametrize("kw", POOL_CASES)
def test_max_pool(kw, layout, dtype, rng):
    x = randn((2, 67, 13, 17), dtype, rng)
    check(lambda t: fastnn.max_pool2d(t, **kw), lambda t: F.max_pool2d(t, **kw), x, layout)
    check(lambda t: fastnn.max_pool2d(t, dilation=2, **kw), lambda t: F.max_pool2d(t, dilation=2, **kw), x, layout)


@pytest.mark.parametrize("layout,dtype", LAYOUT_DTYPES)
@pytest.mark.parametrize("kw", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool(kw, count_include_pad, layout, dtype, rng):
    x = randn((2, 5, 15, 11), dtype, rng)
    kw = dict(kw, count_include_pad=count_include_pad)
    check(lambda t: fastnn.avg_pool2d(t, **kw), lambda t: F.avg_pool2d(t, **kw), x, layout)


def test_avg_pool_divisor_override(rng):
    x = randn((1, 3, 9, 9), torch.float32, rng)
    kw = dict(kernel_size=3, stride=2, padding=1, divisor_override=7)
    check(lambda t: fastnn.avg_pool2d(t, **kw), lambda t: F.avg_pool2d(t, **kw), x)


@pytest.mark.parametrize("layout,dtype", LAYOUT_DTYPES)
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (10, 4), (None, 2)])
def test_adaptive_avg_pool(size, layout, dtype, rng):
    x = randn((2, 70, 9, 13), dtype, rng)
    check(lambda t: fastnn.adaptive_avg_pool2d(t, size), lambda t: F.adaptive_avg_pool2d(t, size), x, layout)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_adaptive_avg_pool_large_windows(layout, rng):
    # Window areas above the kernel's reciprocal table (4096) are divided.
    x = randn((1, 3, 90, 80), torch.float32, rng)
    for size in [(1, 1), (1, 2)]:
        check(lambda t: fastnn.adaptive_avg_pool2d(t, size), lambda t: F.adaptive_avg_pool2d(t, size), x, layout)
    # Channels-last with many channels: vectors over C, a partial last one.
    x = randn((2, 1100, 5, 4), torch.float32, rng)
    check(lambda t: fastnn.adaptive_avg_pool2d(t, 1), lambda t: F.adaptive_avg_pool2d(t, 1), x, layout)


def test_pool_unbatched_strided_nan_gapped_and_numpy(rng):
    x = randn((3, 10, 12), torch.float32, rng)
    xg = nan_gapped(x, 2, transpose=True)
    assert torch.equal(fastnn.max_pool2d(xg, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    out = fastnn.avg_pool2d(xg, 2)
    assert_close(out, F.avg_pool2d(x, 2), F.avg_pool2d(x.double(), 2))
    xn = x.numpy()[None]
    res = fastnn.adaptive_avg_pool2d(xn, 3)
    assert isinstance(res, np.ndarray)
    assert_close(torch.from_numpy(res), F.adaptive_avg_pool2d(x[None], 3), F.adaptive_avg_pool2d(x[None].double(), 3))
    out, idx = fastnn.max_pool2d(x, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


@pytest.mark.parametrize("views", ["nchw", "nhwc", "nwch"])
@pytest.mark.parametrize("case", [("avg", (3, 3), (2, 2), (1, 1)), ("avg", (2, 2), (3, 3), (0, 0)),
                                  ("adaptive_avg", (1, 1), (1, 1), (0, 0)), ("adaptive_avg", (4, 3), (1, 1), (0, 0))])
def test_average_kernels_write_every_element(case, views, rng):
    # The kernel-level ops into poisoned outputs of any strides: every
    # element is written (grad_in too where no window reads it: stride 3 >
    # kernel 2), whatever the layout picks (planes, channels-last, or a
    # (N, W, C, H) buffer, neither channels nor columns unit-stride).
    kind, kernel, stride, pad = case
    order = {"nchw": (0, 1, 2, 3), "nhwc": (0, 2, 3, 1), "nwch": (0, 3, 1, 2)}[views]

    def poisoned_view(shape):
        buf = poisoned(tuple(shape[i] for i in order))
        return buf.permute(*[order.index(i) for i in range(4)])

    x = randn((2, 19, 11, 10), torch.float32, rng)
    if kind == "avg":
        ref_fn = lambda t: F.avg_pool2d(t, kernel, stride, pad)  # noqa: E731
    else:
        ref_fn = lambda t: F.adaptive_avg_pool2d(t, kernel)  # noqa: E731
    out_shape = ref_fn(x).shape
    xv = poisoned_view(x.shape).copy_(x)
    out = poisoned_view(out_shape)
    fastnn._C.pool_forward(kind, xv, out, None, kernel, stride, pad, (1, 1), False, True, 0)
    assert_close(out, ref_fn(x), ref_fn(x.double()), "out")
    g = randn(out_shape, torch.float32, rng)
    gv = poisoned_view(out_shape).copy_(g)
    grad_in = poisoned_view(x.shape)
    fastnn._C.pool_backward(kind, gv, None, grad_in, kernel, stride, pad, (1, 1), False, True, 0)
    refs = []
    for dt in (torch.float32, torch.float64):
        xt = x.to(dt).requires_grad_()
        refs.append(torch.autograd.grad(ref_fn(xt), xt, g.to(dt))[0])
    assert_close(grad_in, *refs, "grad")


@pytest.mark.parametrize("layout,dtype", LAYOUT_DTYPES)
@pytest.mark.parametrize("kw", POOL_CASES + [dict(kernel_size=3, stride=2, padding=1, dilation=2)])
@pytest.mark.parametrize("channels", [64, 67])
def test_max_pool_inference_with_and_without_indices(kw, channels, layout, dtype, isa, rng):
    """Without autograd, indices are computed only when asked for: both
    kernels give torch's maxima (NaN included) and the asked-for indices are
    torch's."""
    x = randn((2, channels, 13, 17), dtype, rng)
    x[0, 3, 2, 2] = x[1, -1, 5, 7] = float("nan")
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    ref, ref_idx = F.max_pool2d(x, return_indices=True, **kw)
    out = fastnn.max_pool2d(x, **kw)
    out_i, idx = fastnn.max_pool2d(x, return_indices=True, **kw)
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(out.nan_to_num(), out_i.nan_to_num()) and torch.equal(idx, ref_idx)


def test_max_pool_nan_inf_and_indices():
    x = torch.tensor([[[[1.0, float("nan"), -float("inf"), -float("inf")],
                        [2.0, 0.5, -float("inf"), -float("inf")]]]])
    out, idx = fastnn.max_pool2d(x, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 2, return_indices=True)
    torch.testing.assert_close(out, ref, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("c", [64, 70, 128])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=1, dilation=2),
                                dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)])
def test_max_pool_backward_channels_last_bits(c, kw, isa, rng):
    # Channels-last float gradients are pulled by each input from the outputs
    # whose window holds it; planar ones are scattered. Both add the same
    # gradients in the outputs' order, so the bits agree (ties included:
    # inputs rounded to one decimal).
    x = randn((2, c, 13, 11), torch.float32, rng).round(decimals=1)
    g = None
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.clone(memory_format=fmt).requires_grad_()
        out = fastnn.max_pool2d(xf, **kw)
        g = torch.randn(out.shape, generator=rng) if g is None else g
        out.backward(g.to(memory_format=fmt))
        grads.append(xf.grad)
    assert torch.equal(grads[0], grads[1])


def test_max_pool_backward_foreign_indices(isa, rng):
    # The backward op takes its indices from the caller: ones the forward did
    # not produce (outside their window, or out of range) go where they point,
    # as in PyTorch's scatter, on the channels-last path too.
    x = randn((1, 64, 8, 8), torch.float32, rng).to(memory_format=torch.channels_last)
    _, idx = fastnn.max_pool2d(x, 2, return_indices=True)
    bad = torch.randint(-2, 66, idx.shape, generator=rng).to(memory_format=torch.channels_last)
    g = randn(bad.shape, torch.float32, rng).to(memory_format=torch.channels_last)
    got = torch.ops.fastnn.max_pool2d_backward(g, bad, [1, 64, 8, 8], True, [2, 2], [2, 2], [0, 0], [1, 1], False)
    keep = (bad >= 0) & (bad < 64)
    ref = torch.zeros(1, 64, 64).scatter_add_(2, torch.where(keep, bad, 0).reshape(1, 64, -1),
                                              torch.where(keep, g, 0.0).reshape(1, 64, -1))
    assert torch.equal(got.reshape(1, 64, 64), ref)


@settings(max_examples=6, deadline=None)
@given(k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2), ceil=st.booleans(),
       h=st.integers(5, 14), w=st.integers(5, 14), c=st.integers(1, 9), nhwc=st.booleans(),
       seed=fresh_seeds())
def test_pool_random(k, s, p, d, ceil, h, w, c, nhwc, seed):
    p = min(p, k // 2)
    x = torch.randn((2, c, h, w), generator=torch.Generator().manual_seed(seed))
    layout = "nhwc" if nhwc else "nchw"
    kw = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
    if (h + 2 * p - d * (k - 1) - 1) >= 0 and (w + 2 * p - d * (k - 1) - 1) >= 0:
        check(lambda t: fastnn.max_pool2d(t, dilation=d, **kw), lambda t: F.max_pool2d(t, dilation=d, **kw), x,
              layout)
    check(lambda t: fastnn.avg_pool2d(t, **kw), lambda t: F.avg_pool2d(t, **kw), x, layout)


def test_pool_deterministic_and_zero_size(rng):
    x = randn((2, 4, 9, 9), torch.float32, rng).requires_grad_()
    grads = []
    for _ in range(2):
        x.grad = None
        fastnn.avg_pool2d(x, 3, 1, 1).sum().backward()
        grads.append(x.grad.clone())
    assert torch.equal(*grads)
    assert fastnn.max_pool2d(torch.empty(0, 3, 8, 8), 2).shape == (0, 3, 4, 4)
    assert fastnn.avg_pool2d(torch.empty(2, 0, 8, 8), 2).shape == (2, 0, 4, 4)


def test_pool_bad_inputs():
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        fastnn.max_pool2d(x.double(), 2)
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\)"):
        fastnn.max_pool2d(x[0, 0], 2)
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        fastnn.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="stride must be positive"):
        fastnn.avg_pool2d(x, 2, stride=-1)
    with pytest.raises(ValueError, match="padding must be at most half"):
        fastnn.max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="padding must be non-negative"):
        fastnn.avg_pool2d(x, 3, padding=-1)
    with pytest.raises(ValueError, match="dilation must be positive"):
        fastnn.max_pool2d(x, 2, dilation=0)
    with pytest.raises(ValueError, match="too small"):
        fastnn.max_pool2d(torch.randn(1, 1, 2, 2), 3)
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        fastnn.max_pool2d(x, "2")
    with pytest.raises(ValueError, match="output_size must be positive"):
        fastnn.adaptive_avg_pool2d(x, 0)
    with pytest.raises(ValueError, match="divisor_override"):
        fastnn.avg_pool2d(x, 2, divisor_override=0)
