"""conv2d forward and backward (dx, dw, db) against torch in float64, on every
ISA path: odd channel counts, stride/dilation/padding/groups combinations
(depthwise included), 'same'/'valid', NCHW and channels-last, strided
NaN-gapped inputs, bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _C
from fastnn.testing import assert_close
from helpers import check_sampled, fresh_seeds, nan_gapped, poisoned, randn


def check(x, w, b, channels_last=False, gen=None, sample=None, **kw):
    """Forward and all three gradients of fastnn.conv2d against torch (the
    output gradient drawn from gen); with an ErrorSample, the results are
    added to it instead of checked here."""
    xs = x.to(memory_format=torch.channels_last) if channels_last else x
    xf = xs.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    wf = w.detach().clone().requires_grad_()
    bf = None if b is None else b.detach().clone().requires_grad_()
    out = fastnn.conv2d(xf, wf, bf, **kw)
    if channels_last and out.shape[1] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(out.shape, generator=gen).to(x.dtype)
    out.backward(g)
    results = []
    for dtype in (x.dtype, torch.float64):
        ts = [None if t is None else t.detach().to(dtype).requires_grad_() for t in (x, w, b)]
        ot = F.conv2d(*ts, **kw)
        ot.backward(g.to(dtype))
        results.append([ot.detach()] + [None if t is None else t.grad for t in ts])
    mine = [out.detach(), xf.grad, wf.grad, None if bf is None else bf.grad]
    for name, a, base, ref in zip(("out", "dx", "dw", "db"), mine, *results):
        if ref is None:
            continue
        if sample is None:
            assert_close(a, base, ref, name)
        else:
            sample.add(name, a, base, ref)


CASES = [
    # (N, C, H, W, K, R, S, kwargs)
    (2, 3, 11, 9, 5, 3, 3, dict(padding=1)),
    (1, 17, 10, 13, 33, 3, 3, dict(stride=2, padding=(1, 0))),
    (2, 8, 12, 12, 6, 3, 2, dict(dilation=(2, 1), padding=2, groups=2)),
    (1, 12, 9, 9, 12, 3, 3, dict(padding=1, groups=12)),       # depthwise
    (1, 6, 9, 9, 12, 3, 3, dict(padding="same", groups=6)),    # depthwise, multiplier 2
    (2, 19, 7, 7, 21, 1, 1, dict()),                          # 1x1 as GEMM (planar)
    (2, 24, 5, 6, 80, 1, 1, dict()),                          # 1x1 as GEMM (channels-last too: K > 64)
    (1, 16, 8, 8, 7, 1, 1, dict(stride=2)),
    (1, 5, 8, 10, 7, 4, 4, dict(padding="same")),             # even kernel: asymmetric padding
    (1, 4, 9, 8, 3, 5, 3, dict(padding="valid", stride=(1, 3), dilation=2)),
    (1, 64, 14, 14, 64, 3, 3, dict(padding=1)),
]


# 3x3 stride-1 layers with >= 16 channels per group and outputs of >= 3x3
# pixels run on Winograd F(2x2, 3x3) (forward, dx, dw): odd sizes (partial
# 2x2 tiles), channel counts off the vector width, padding 0-2 (dx is the
# forward with padding 2 - pad) and 3 (dx on the direct path), groups,
# images of several tile blocks whose blocks end mid-row (30x30 at 48
# channels), and 1- and 2-pixel images (the direct path).
WINOGRAD_CASES = [
    # (N, C, H, W, K, padding, groups)
    (2, 16, 3, 4, 16, 1, 1),
    (1, 17, 3, 5, 33, 1, 1),
    (2, 33, 13, 7, 19, 0, 1),
    (1, 32, 9, 11, 40, 2, 2),
    (1, 24, 8, 8, 16, 3, 1),
    (1, 48, 30, 30, 48, 1, 1),
    (2, 16, 1, 2, 16, 1, 1),
]


# One group, at least 64 filter taps (C R S) and 32 output channels run as
# GEMMs over gathered patches (conv_im2col.cpp) when strided with
# at most 256 output pixels per image, or 3x3 stride 1 with few 2x2 output
# tiles for the channels: channel counts off the vector width, asymmetric
# stride and padding, dilation, filters of more than 16 taps (the scalar
# weight reorder), a 1x1 strided layer, one output pixel.
IM2COL_CASES = [
    # (N, C, H, W, K, R, S, kwargs)
    (2, 17, 9, 11, 33, 3, 3, dict(stride=2, padding=1)),
    (1, 8, 13, 10, 40, 3, 3, dict(stride=(2, 3), padding=(1, 0), dilation=(1, 2))),
    (3, 5, 15, 14, 32, 5, 5, dict(stride=2, padding=2)),
    (2, 70, 6, 7, 36, 1, 1, dict(stride=2)),
    (1, 32, 3, 3, 34, 3, 3, dict(stride=2)),
    (2, 64, 3, 5, 48, 3, 3, dict(padding=1)),
    (1, 97, 7, 7, 80, 3, 3, dict(padding=1)),
    (1, 40, 8, 9, 36, 3, 3, dict(stride=2, padding=2, dilation=2)),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("N,C,H,W,K,R,S,kw",
                         IM2COL_CASES + CASES + [(N, C, H, W, K, 3, 3, dict(padding=p, groups=g))
                                  for N, C, H, W, K, p, g in WINOGRAD_CASES])
def test_conv_cases(N, C, H, W, K, R, S, kw, channels_last, rng):
    # Over repeated draws (check_sampled): some cases have a handful of
    # outputs (6 at the 5x3 dilated one), where a single draw is a coin toss
    # between two libraries' few-ulp errors (that case: 1 failure in 3000).
    groups = kw.get("groups", 1)

    def trial(gen, sample):
        x, w, b = randn((N, C, H, W), torch.float32, gen), randn((K, C // groups, R, S), torch.float32, gen), \
            randn((K,), torch.float32, gen)
        check(x, w, b, channels_last, gen, sample, **kw)

    check_sampled(trial, rng, min_elements=4096)


# Depthwise layers (groups == C == K) run on conv_depthwise.cpp: channel
# counts below, at and around the vector widths (runs of 4 vectors: 64 on
# AVX-512, 32 on AVX2), strides and dilations whose taps skip pixels,
# padding wider than the filter reach, 'same' with an even filter
# (asymmetric), a 1-pixel image, filters taller than the image.
DEPTHWISE_CASES = [
    # (N, C, H, W, R, S, kwargs)
    (2, 1, 9, 8, 3, 3, dict(padding=1)),
    (1, 5, 11, 7, 3, 3, dict(padding=1, stride=2)),
    (2, 16, 8, 9, 3, 3, dict(padding=1)),
    (1, 17, 10, 10, 5, 5, dict(padding=2, dilation=1, stride=(1, 2))),
    (1, 33, 7, 12, 3, 3, dict(padding=(2, 0), dilation=(1, 2))),
    (2, 70, 6, 6, 3, 3, dict(padding=1)),
    (1, 130, 5, 4, 3, 3, dict(padding=3, stride=(3, 2))),
    (1, 24, 9, 9, 4, 4, dict(padding="same")),
    (2, 12, 1, 1, 3, 3, dict(padding=1)),
    (1, 9, 3, 8, 7, 1, dict(padding=(6, 0), dilation=2)),
    # padding past the filter's reach: the input gradient's shifted walk
    # starts before dY's first row and column
    (1, 11, 5, 6, 3, 3, dict(padding=(3, 4))),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("N,C,H,W,R,S,kw", DEPTHWISE_CASES)
def test_conv_depthwise(N, C, H, W, R, S, kw, channels_last, rng):
    def trial(gen, sample):
        x, w, b = randn((N, C, H, W), torch.float32, gen), randn((C, 1, R, S), torch.float32, gen), \
            randn((C,), torch.float32, gen)
        check(x, w, b, channels_last, gen, sample, groups=C, **kw)

    check_sampled(trial, rng, min_elements=4096)


@pytest.mark.parametrize("views", ["nchw", "nhwc", "gapped"])
def test_conv_depthwise_writes_every_element(views, rng):
    """The depthwise kernels on NaN-filled out, grad_x and grad_weight of
    planar, channels-last and NaN-gapped views (x and dY read in place or
    through channels-last copies, outputs written in place or through the
    row buffer): NaN-free, equal to the autograd path, and the same bits on
    one thread as on two."""
    C, kw = 37, dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    x, w, b = randn((2, C, 13, 11), torch.float32, rng), randn((C, 1, 3, 3), torch.float32, rng), \
        randn((C,), torch.float32, rng)
    expect = F.conv2d(x, w, b, groups=C, **kw)
    g = randn(expect.shape, torch.float32, rng)

    def view(t):
        if views == "nhwc":
            return t.to(memory_format=torch.channels_last)
        if views == "gapped":
            return nan_gapped(t, 2, transpose=True)
        return t

    def out_view(shape):
        buf = poisoned(shape)
        if views == "nhwc":
            return buf.to(memory_format=torch.channels_last).fill_(float("nan"))
        if views == "gapped":
            return nan_gapped(buf, 2, transpose=True)
        return buf

    geo = ((2, 1), (1, 2), (1, 2), (1, 2), C)
    results, threads_before = [], fastnn.get_num_threads()
    try:
        for threads in (1, 2):
            fastnn.set_num_threads(threads)
            out, gx, gw = out_view(expect.shape), out_view(x.shape), poisoned(w.shape)
            _C.conv2d_forward(view(x), w, b, out, *geo)
            _C.conv2d_backward(view(x), w, view(g), gx, gw, None, *geo)
            results.append((out, gx, gw))
    finally:
        fastnn.set_num_threads(threads_before)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    ours = fastnn.conv2d(xg, wg, b, groups=C, **kw)
    ours.backward(g)
    for got in results:
        assert not any(t.isnan().any() for t in got)
        assert torch.equal(got[0], ours.detach()) and torch.equal(got[1], xg.grad) and torch.equal(got[2], wg.grad)


@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=(2, 1), dilation=(2, 1)), dict(padding=1, stride=2),
                                dict(padding=(3, 4))])
def test_conv_depthwise_layouts_same_bits(kw, rng):
    """Planar layers take the plane-by-plane kernels (forward; the input
    gradient at stride 1), channels-last ones the pixel kernels: the same
    sums in the same order, so the same bits (torch.compile may hand the
    backward either layout)."""
    C = 21
    x, w, b = randn((2, C, 12, 9), torch.float32, rng), randn((C, 1, 3, 3), torch.float32, rng), \
        randn((C,), torch.float32, rng)
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        xf = x.clone(memory_format=fmt).requires_grad_()
        wf = w.clone().requires_grad_()
        out = fastnn.conv2d(xf, wf, b, groups=C, **kw)
        g = torch.ones_like(out).mul_(0.5).add_(out.detach().sin())
        out.backward(g)
        results.append((out.detach().contiguous(), xf.grad.contiguous(), wf.grad))
    assert all(torch.equal(a, c) for a, c in zip(*results))


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_depthwise_bfloat16(channels_last, rng):
    x, w, b = (randn(s, torch.bfloat16, rng) for s in [(2, 40, 9, 10), (40, 1, 3, 3), (40,)])
    check(x, w, b, channels_last, rng, padding=1, groups=40)
    check(x, w, None, channels_last, rng, stride=2, groups=40)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_bfloat16(channels_last, rng):
    x, w, b = (randn(s, torch.bfloat16, rng) for s in [(2, 9, 10, 10), (14, 9, 3, 3), (14,)])
    check(x, w, b, channels_last, rng, padding=1, stride=2)
    check(x, w[:12, :3], None, channels_last, rng, groups=3)


@pytest.mark.parametrize("N,C,H,W,K,pad,groups", WINOGRAD_CASES[:4])
def test_conv_winograd_writes_every_element(N, C, H, W, K, pad, groups, rng):
    """The kernels called on NaN-filled outputs: out, grad_x and grad_weight
    come back NaN-free and equal to what the autograd path computes."""
    x, w, b = randn((N, C, H, W), torch.float32, rng), randn((K, C // groups, 3, 3), torch.float32, rng), \
        randn((K,), torch.float32, rng)
    geo = ((1, 1), (pad, pad), (pad, pad), (1, 1), groups)
    out = poisoned((N, K, H + 2 * pad - 2, W + 2 * pad - 2))
    _C.conv2d_forward(x, w, b, out, *geo)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    expect = fastnn.conv2d(xg, wg, b, padding=pad, groups=groups)
    assert torch.equal(out, expect.detach())
    g = randn(out.shape, torch.float32, rng)
    expect.backward(g)
    gx, gw = poisoned(x.shape), poisoned(w.shape)
    _C.conv2d_backward(x, w, g, gx, gw, None, *geo)
    assert torch.equal(gx, xg.grad) and torch.equal(gw, wg.grad)


@pytest.mark.parametrize("N,C,H,W,K,R,S,kw", IM2COL_CASES[:2] + IM2COL_CASES[5:7])
def test_conv_im2col_writes_every_element(N, C, H, W, K, R, S, kw, rng):
    """The gathered-patch GEMMs on NaN-filled out, grad_x and grad_weight
    (planar, so the output goes through the staging buffer and x and dY
    through channels-last copies): NaN-free and equal to the autograd path."""
    x, w, b = randn((N, C, H, W), torch.float32, rng), randn((K, C, R, S), torch.float32, rng), \
        randn((K,), torch.float32, rng)
    expect = fastnn.conv2d(x, w, b, **kw)
    geo = (_pair(kw.get("stride", 1)), _pair(kw.get("padding", 0)), _pair(kw.get("padding", 0)),
           _pair(kw.get("dilation", 1)), 1)
    out = poisoned(expect.shape)
    _C.conv2d_forward(x, w, b, out, *geo)
    assert torch.equal(out, expect)
    g = randn(out.shape, torch.float32, rng)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    fastnn.conv2d(xg, wg, b, **kw).backward(g)
    gx, gw = poisoned(x.shape), poisoned(w.shape)
    _C.conv2d_backward(x, w, g, gx, gw, None, *geo)
    assert torch.equal(gx, xg.grad) and torch.equal(gw, wg.grad)


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_im2col_bfloat16_and_strided(channels_last, rng):
    """bf16 on the gathered-patch path (its GEMMs take bf16 operands with
    float32 sums); non-contiguous x and weight (the strided weight reorder)."""
    x, w, b = randn((2, 24, 11, 9), torch.bfloat16, rng), randn((40, 24, 3, 3), torch.bfloat16, rng), \
        randn((40,), torch.bfloat16, rng)
    check(x, w, b, channels_last, rng, stride=2, padding=1)
    x, w = randn((2, 16, 9, 10), torch.float32, rng), randn((36, 16, 3, 3), torch.float32, rng)
    xs, ws = nan_gapped(x, 3), nan_gapped(w, 2)
    assert_close(fastnn.conv2d(xs, ws, stride=2, padding=1), F.conv2d(x, w, stride=2, padding=1),
                 F.conv2d(x.double(), w.double(), stride=2, padding=1))


def test_conv_im2col_image_chunks(rng):
    """A batch whose gathered patches pass one chunk (32 MiB: 36 images of 49
    output pixels x 4608 taps here), so the weight gradient sums over chunks
    and the input gradient gathers chunk by chunk."""
    x, w, b = randn((37, 512, 14, 14), torch.float32, rng), randn((32, 512, 3, 3), torch.float32, rng), \
        randn((32,), torch.float32, rng)
    check(x, w, b, True, rng, stride=2, padding=1)


def test_conv_winograd_bfloat16_and_strided(rng):
    x, w, b = randn((2, 20, 11, 9), torch.bfloat16, rng), randn((24, 20, 3, 3), torch.bfloat16, rng), \
        randn((24,), torch.bfloat16, rng)
    check(x, w, b, True, rng, padding=1)
    check(x, w, None, False, rng, padding="valid")
    x, w = randn((2, 16, 9, 10), torch.float32, rng), randn((18, 16, 3, 3), torch.float32, rng)
    xs, ws = nan_gapped(x, 3), nan_gapped(w, 2)
    assert_close(fastnn.conv2d(xs, ws, padding=1), F.conv2d(x, w, padding=1),
                 F.conv2d(x.double(), w.double(), padding=1))


def test_conv_strided_nan_gapped_and_unbatched(rng):
    x, w, b = randn((2, 6, 9, 11), torch.float32, rng), randn((4, 6, 3, 3), torch.float32, rng), \
        randn((4,), torch.float32, rng)
    xs, ws, bs = nan_gapped(x, 2, transpose=True), nan_gapped(w, 3), nan_gapped(b, 2)
    out = fastnn.conv2d(xs, ws, bs, padding=1)
    assert_close(out, F.conv2d(x, w, b, padding=1), F.conv2d(x.double(), w.double(), b.double(), padding=1))
    out = fastnn.conv2d(x[0], w, b)
    assert out.shape == (4, 7, 9)
    assert_close(out, F.conv2d(x[0], w, b), F.conv2d(x[0].double(), w.double(), b.double()))
    res = fastnn.conv2d(x.numpy(), w.numpy())
    assert isinstance(res, np.ndarray)
    assert_close(torch.from_numpy(res), F.conv2d(x, w), F.conv2d(x.double(), w.double()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_pointwise_planar_inputs(dtype, rng):
    """1x1 convolutions of planar (NCHW) inputs run as a batched GEMM: strided
    pixels that still merge into one dimension (every other column of a
    NaN-gapped buffer), pixels that do not (a column slice), bias or none."""
    x, w, b = randn((3, 10, 7, 9), dtype, rng), randn((6, 10, 1, 1), dtype, rng), randn((6,), dtype, rng)
    for xv in (x, nan_gapped(x, 2), x[..., 1:]):
        xd = xv.detach().clone()
        for bias in (b, None):
            out = fastnn.conv2d(xv, w, bias)
            ref_b = None if bias is None else bias.double()
            assert_close(out, F.conv2d(xd, w, bias), F.conv2d(xd.double(), w.double(), ref_b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "column_slice"])
def test_conv_pointwise_backward(dtype, layout, rng):
    """The backward of a 1x1 convolution as GEMMs: dX batched over images,
    dW over the pixels of all images (channels-last) or image by image
    (planar float32); pixels that do not merge and planar bf16 dW take the
    kernel. Outputs NaN-filled first; db alongside."""
    x, w = randn((3, 10, 7, 9), dtype, rng), randn((6, 10, 1, 1), dtype, rng)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "column_slice":
        x = randn((3, 10, 7, 10), dtype, rng)[..., 1:]
    g = randn((3, 6, 7, 9), dtype, rng)
    if layout == "channels_last":
        g = g.to(memory_format=torch.channels_last)
    geo = ((1, 1), (0, 0), (0, 0), (1, 1), 1)
    gx, gw, gb = poisoned(x.shape, dtype), poisoned(w.shape, dtype), poisoned((6,), dtype)
    _C.conv2d_backward(x, w, g, gx, gw, gb, *geo)
    results = []
    for t in (dtype, torch.float64):
        xt, wt = x.detach().to(t).requires_grad_(), w.detach().to(t).requires_grad_()
        bt = torch.zeros(6, dtype=t, requires_grad=True)
        F.conv2d(xt, wt, bt).backward(g.to(t))
        results.append((xt.grad, wt.grad, bt.grad))
    for name, ours, base, ref in zip(("dx", "dw", "db"), (gx, gw, gb), *results):
        assert_close(ours, base, ref, name)


def test_conv_weight_only_and_input_only_grads(rng):
    x, w = randn((1, 4, 6, 6), torch.float32, rng), randn((3, 4, 3, 3), torch.float32, rng).requires_grad_()
    fastnn.conv2d(x, w).sum().backward()
    x.requires_grad_()
    w2 = w.detach()
    fastnn.conv2d(x, w2, padding=1).sum().backward()
    ref = torch.autograd.grad(F.conv2d(x, w2, padding=1).sum(), x)[0]
    torch.testing.assert_close(x.grad, ref)


@settings(max_examples=8, deadline=None)
@given(N=st.integers(1, 2), G=st.sampled_from([1, 2, 3]), cg=st.integers(1, 6), kg=st.integers(1, 6),
       H=st.integers(3, 12), W=st.integers(3, 12), R=st.integers(1, 3), S=st.integers(1, 3), sh=st.integers(1, 3),
       sw=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2), cl=st.booleans(),
       seed=fresh_seeds())
def test_conv_random(N, G, cg, kg, H, W, R, S, sh, sw, p, d, cl, seed):
    if H + 2 * p < d * (R - 1) + 1 or W + 2 * p < d * (S - 1) + 1:
        return
    def trial(gen, sample):
        x, w, b = (torch.randn(s, generator=gen) for s in [(N, G * cg, H, W), (G * kg, cg, R, S), (G * kg,)])
        check(x, w, b, cl, gen, sample, stride=(sh, sw), padding=p, dilation=d, groups=G)

    check_sampled(trial, seed)


@pytest.mark.parametrize("channels", [8, 16], ids=["direct", "winograd"])
def test_conv_deterministic_and_zero_batch(channels, rng):
    x = randn((2, channels, 10, 10), torch.float32, rng).requires_grad_()
    w = randn((channels, channels, 3, 3), torch.float32, rng).requires_grad_()
    grads = []
    for _ in range(2):
        x.grad = w.grad = None
        fastnn.conv2d(x, w, padding=1).square().sum().backward()
        grads.append((x.grad.clone(), w.grad.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert fastnn.conv2d(torch.empty(0, channels, 5, 5), w.detach()).shape == (0, channels, 3, 3)


def test_conv_bad_inputs():
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        fastnn.conv2d(x.double(), w.double())
    with pytest.raises(TypeError, match="weight must have the dtype of x"):
        fastnn.conv2d(x, w.bfloat16())
    with pytest.raises(ValueError, match=r"weight must be \(K, C / groups, R, S\)"):
        fastnn.conv2d(x, torch.randn(6, 3, 3, 3))
    with pytest.raises(ValueError, match="not divisible by groups"):
        fastnn.conv2d(x, torch.randn(5, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="groups must be >= 1"):
        fastnn.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        fastnn.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="dilation must be >= 1"):
        fastnn.conv2d(x, w, dilation=(1, -1))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        fastnn.conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="padding='same' requires stride 1"):
        fastnn.conv2d(x, w, padding="same", stride=2)
    with pytest.raises(ValueError, match="padding must be an int, a pair"):
        fastnn.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match=r"bias must be \(K,\)"):
        fastnn.conv2d(x, w, torch.randn(5))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        fastnn.conv2d(torch.randn(1, 4, 2, 2), w)
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\)"):
        fastnn.conv2d(x[0, 0], w)
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        fastnn.conv2d(x, w, stride=(1, 2, 3))
