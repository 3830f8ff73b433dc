"""LayerNorm / RMSNorm on CUDA (fastnn._cuda.layer_norm_* / rms_norm_*)
against PyTorch on the same GPU: each result within 2x PyTorch's own error
at the same precision of a float64 reference (fastnn.testing), statistics as
the CPU op saves them, every output NaN-poisoned first, the warp-row, block-row
and chunked paths, strided and misaligned views, and parameter gradients
bit-identical across runs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from fastnn.testing import assert_close
from helpers import ODD_SIZES, nan_gapped, poisoned, randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

KINDS = ["layer", "rms"]
# (x dtype, weight dtype): parameters are float32 or x's dtype.
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)]
EPS = 1e-5
# Warp rows up to 512, block rows beyond, chunks past 16384 (both directions).
HIDDEN = [256, 512, 513, 1024, 4096, 8192, 16384, 16385, 40000]

warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


def cuda_randn(shape, dtype, gen):
    return randn(shape, dtype, gen, device="cuda")


def torch_norm(kind, x, w, b, eps=EPS):
    n = x.shape[-1:]
    return F.layer_norm(x, n, w, b, eps) if kind == "layer" else F.rms_norm(x, n, w, eps)


def double(t):
    return None if t is None else t.detach().double()


def forward(kind, x, w, b, eps=EPS):
    """fastnn's forward into poisoned outputs: (y, mean or None, rstd)."""
    y = poisoned(x.shape, x.dtype, "cuda")
    rstd = poisoned(x.shape[:-1], torch.float32, "cuda")
    if kind == "layer":
        mean = poisoned(x.shape[:-1], torch.float32, "cuda")
        kernels().layer_norm_forward(x, w, b, eps, y, mean, rstd, stream())
        return y, mean, rstd
    kernels().rms_norm_forward(x, w, eps, y, rstd, stream())
    return y, None, rstd


def backward(kind, g, x, mean, rstd, w, b, want_w=True, want_b=True):
    """fastnn's backward into poisoned outputs: (dx, dw or None, db or None)."""
    dx = poisoned(x.shape, x.dtype, "cuda")
    dw = poisoned(w.shape, w.dtype, "cuda") if w is not None and want_w else None
    db = poisoned(b.shape, b.dtype, "cuda") if kind == "layer" and b is not None and want_b else None
    if kind == "layer":
        kernels().layer_norm_backward(g, x, mean, rstd, w, dx, dw, db, stream())
    else:
        kernels().rms_norm_backward(g, x, rstd, w, dx, dw, stream())
    return dx, dw, db


def torch_grads(kind, x, w, b, g, eps):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    torch_norm(kind, *leaves, eps).backward(g)
    return [t.grad if t is not None else None for t in leaves]


def torch_rstd(kind, x, eps):
    """rstd as PyTorch computes it at x's precision (float32 statistics)."""
    if kind == "layer":
        return torch.native_layer_norm(x, x.shape[-1:], None, None, eps)[2].squeeze(-1)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.rsqrt(x.to(acc).square().mean(-1) + eps)


def check(kind, x, w, b, g, eps=EPS, x_view=None, g_view=None, w_view=None):
    """Forward (y and statistics) and backward on the given views against torch."""
    if x.shape[-1] <= (3 if kind == "layer" else 2):
        # grad_x of so short a row is the O(eps / var) remainder the float32
        # statistics decide for every implementation; eps ~ var keeps the
        # comparison about the kernel (as the CPU test does).
        eps = 1.0
    b = b if kind == "layer" else None
    xv = x if x_view is None else x_view
    gv = g if g_view is None else g_view
    wv = w if w_view is None else w_view
    y, mean, rstd = forward(kind, xv, wv, b, eps)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close(y, torch_norm(kind, x, w, b, eps), torch_norm(kind, x.double(), double(w), double(b), eps), "y")
    assert_close(rstd, torch_rstd(kind, x, eps), torch_rstd(kind, x.double(), eps), "rstd")
    if kind == "layer":
        t_mean = torch.native_layer_norm(x, x.shape[-1:], None, None, eps)[1].squeeze(-1)
        assert_close(mean, t_mean, x.double().mean(-1), "mean")
    dx, dw, db = backward(kind, gv, xv, mean, rstd, wv, b)
    exact = torch_grads(kind, x.double(), double(w), double(b), g.double(), eps)
    base = torch_grads(kind, x, w, b, g, eps)
    for name, ours, theirs, ref in zip(("dx", "dw", "db"), (dx, dw, db), base, exact):
        if ref is None:
            assert ours is None, name
            continue
        assert ours.dtype == theirs.dtype, name
        assert_close(ours, theirs, ref, name)


def params(n, dtype, gen, bias=True):
    w = cuda_randn((n,), dtype, gen)
    return w, cuda_randn((n,), dtype, gen) if bias else None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,param_dtype", DTYPES)
@pytest.mark.parametrize("n", ODD_SIZES + [4099])
def test_sizes(kind, n, dtype, param_dtype, rng):
    x, g = cuda_randn((64, n), dtype, rng), cuda_randn((64, n), dtype, rng)
    w, b = params(n, param_dtype, rng)
    check(kind, x, w, b, g)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,param_dtype", DTYPES)
@pytest.mark.parametrize("n", HIDDEN)
def test_hidden_sizes(kind, n, dtype, param_dtype, rng):
    rows = max(4, min(128, (1 << 20) // n))
    x, g = cuda_randn((rows, n), dtype, rng), cuda_randn((rows, n), dtype, rng)
    w, b = params(n, param_dtype, rng)
    check(kind, x, w, b, g)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("affine", ["none", "weight", "bias"])
@pytest.mark.parametrize("shape", [(1031,), (64, 1), (2, 3, 65), (1, 1, 1024), (5, 3001)])
def test_shapes_and_affine(kind, affine, shape, rng):
    if kind == "rms" and affine == "bias":
        pytest.skip("rms_norm has no bias")
    x, g = cuda_randn(shape, torch.float32, rng), cuda_randn(shape, torch.float32, rng)
    w, b = params(shape[-1], torch.float32, rng)
    check(kind, x, w if affine == "weight" else None, b if affine == "bias" else None, g)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [1031, 20011])
def test_large_mean_small_variance(kind, dtype, n, rng):
    # The rows are shifted by their first element: x - x[0] is exact here,
    # where a float32 mean of 1e4 alone is off by its own rounding. The last
    # rows put an outlier first, the worst case for the shift.
    x = 1e4 + randn((6, n), torch.float32, rng)
    x[3] = 1e6 + 1e-2 * randn((n,), torch.float32, rng)
    x[4, 0] = -5e4
    x[5, 0] = 3e5
    x = x.to(dtype).cuda()
    w, b = params(n, dtype, rng)
    check(kind, x, w, b, cuda_randn((6, n), dtype, rng))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_variance_rows_stay_finite(kind, dtype, rng):
    x = torch.tensor([0.0, 1.0, -7.5, 3e38, 1e-40]).repeat_interleave(37).reshape(5, 37).to(dtype).cuda()
    w, b = params(37, dtype, rng)
    y, mean, rstd = forward(kind, x, w, b if kind == "layer" else None)
    assert torch.isfinite(y).all()
    if kind == "layer":
        torch.testing.assert_close(rstd, torch.full((5,), EPS**-0.5, device="cuda"), rtol=1e-6, atol=0)
        torch.testing.assert_close(y, b.expand(5, 37), rtol=0, atol=0)
        dx, dw, db = backward(kind, cuda_randn((5, 37), dtype, rng), x, mean, rstd, w, b)
        assert torch.isfinite(dx).all() and torch.isfinite(dw).all() and torch.isfinite(db).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extremes_match_torch(kind, dtype):
    inf, nan, big, tiny = float("inf"), float("nan"), 3.4e38, 1e-45
    x = torch.tensor([[1.0, 2.0, inf, 4.0], [1.0, nan, 3.0, 4.0], [-inf, 1.0, 2.0, 3.0],
                      [big, -big, big, -big], [tiny, 0.0, tiny, 0.0], [1e30, 1e30, 1e30, 1e30]]).to(dtype).cuda()
    y = forward(kind, x, None, None)[0]
    y_t, ref = torch_norm(kind, x, None, None), torch_norm(kind, x.double(), None, None)
    assert_close(y, y_t, ref)
    same = (torch.isnan(y_t) == torch.isnan(ref)).all(-1) & (torch.isinf(y_t) == torch.isinf(ref)).all(-1)
    torch.testing.assert_close(y[same].isnan(), y_t[same].isnan())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [129, 1031, 17000])
@pytest.mark.parametrize("step,transpose", [(2, False), (3, True), (1, True)])
def test_strided_inputs_and_outputs(kind, dtype, n, step, transpose, rng):
    x, g = cuda_randn((33, n), dtype, rng), cuda_randn((33, n), dtype, rng)
    w, b = params(n, dtype, rng)
    xs, gs, ws = nan_gapped(x, step, transpose), nan_gapped(g, 2, not transpose), nan_gapped(w, 3)
    check(kind, x, w, b, g, x_view=xs, g_view=gs, w_view=ws)
    out = nan_gapped(poisoned((33, n), dtype, "cuda"), 2, transpose)
    ptr, strides = out.data_ptr(), out.stride()
    rstd = poisoned((33,), torch.float32, "cuda")
    if kind == "layer":
        kernels().layer_norm_forward(xs, ws, b, EPS, out, poisoned((33,), torch.float32, "cuda"), rstd, stream())
    else:
        kernels().rms_norm_forward(xs, ws, EPS, out, rstd, stream())
    assert out.data_ptr() == ptr and out.stride() == strides
    bias = b if kind == "layer" else None
    assert_close(out, torch_norm(kind, x, w, bias), torch_norm(kind, x.double(), double(w), double(bias)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [257, 600])
def test_misaligned_rows_and_permuted_leading_dims(kind, n, rng):
    # Rows n + 1 elements apart starting one element in (no 16-byte packs),
    # and leading dims permuted (rows no longer in memory order).
    base = torch.full((4, 6, n + 1), float("nan"), dtype=torch.bfloat16, device="cuda")
    base[:, :, 1:] = cuda_randn((4, 6, n), torch.bfloat16, rng)
    x = base[:, :, 1:].transpose(0, 1)
    g = cuda_randn((6, 4, n), torch.bfloat16, rng)
    w, b = params(n, torch.bfloat16, rng)
    check(kind, x.contiguous(), w, b, g, x_view=x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(0, 16), (3, 0), (2, 0, 5), (0,), (0, 4096)])
def test_zero_size(kind, shape):
    x = torch.empty(shape, device="cuda")
    w, b = torch.ones(shape[-1], device="cuda"), torch.zeros(shape[-1], device="cuda")
    y, mean, rstd = forward(kind, x, w, b if kind == "layer" else None)
    assert y.shape == x.shape and rstd.shape == shape[:-1]
    dx, dw, db = backward(kind, x, x, mean, rstd, w, b)
    torch.cuda.synchronize()
    assert dx.shape == x.shape
    for grad in (dw, db) if kind == "layer" else (dw,):
        assert torch.equal(grad, torch.zeros(shape[-1], device="cuda"))  # a sum over no rows


@pytest.mark.parametrize("kind", KINDS)
def test_in_place(kind, rng):
    x = cuda_randn((300, 1500), torch.float32, rng)
    w, b = params(1500, torch.float32, rng)
    b = b if kind == "layer" else None
    expected = forward(kind, x, w, b)[0]
    rstd = poisoned((300,), torch.float32, "cuda")
    if kind == "layer":
        kernels().layer_norm_forward(x, w, b, EPS, x, poisoned((300,), torch.float32, "cuda"), rstd, stream())
    else:
        kernels().rms_norm_forward(x, w, EPS, x, rstd, stream())
    assert torch.equal(x, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [257, 4096, 20000])
def test_parameter_gradients_bit_identical_across_runs(kind, n, rng):
    rows = 3001 if n < 10000 else 97
    x, g = cuda_randn((rows, n), torch.float32, rng), cuda_randn((rows, n), torch.float32, rng)
    w, b = params(n, torch.float32, rng)
    b = b if kind == "layer" else None
    runs = []
    for _ in range(2):
        y, mean, rstd = forward(kind, x, w, b)
        runs.append((y, mean, rstd, *backward(kind, g, x, mean, rstd, w, b)))
    for a, c in zip(*runs):
        if a is not None:
            assert torch.equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_subsets(kind, rng):
    x, g = cuda_randn((40, 700), torch.bfloat16, rng), cuda_randn((40, 700), torch.bfloat16, rng)
    w, b = params(700, torch.float32, rng)
    b = b if kind == "layer" else None
    _, mean, rstd = forward(kind, x, w, b)
    full = backward(kind, g, x, mean, rstd, w, b)
    for want_w, want_b in ((False, True), (True, False), (False, False)):
        dx, dw, db = backward(kind, g, x, mean, rstd, w, b, want_w, want_b)
        assert torch.equal(dx, full[0])
        assert (dw is None) == (not want_w) and (want_w is False or torch.equal(dw, full[1]))
        if kind == "layer":
            assert (db is None) == (not want_b) and (want_b is False or torch.equal(db, full[2]))


def test_runs_on_the_callers_stream(rng):
    x = cuda_randn((4096, 1024), torch.bfloat16, rng)
    w = cuda_randn((1024,), torch.bfloat16, rng)
    expected = forward("rms", x, w, None)[0]
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y, rstd = torch.empty_like(x), torch.empty(4096, device="cuda")
        kernels().rms_norm_forward(x, w, EPS, y, rstd, s.cuda_stream)
    s.synchronize()
    assert torch.equal(y, expected)


def test_bad_inputs_raise_naming_the_argument():
    k, s = kernels(), stream()
    x, w = torch.randn(4, 8, device="cuda"), torch.randn(8, device="cuda")
    y, mean, rstd = torch.empty(4, 8, device="cuda"), torch.empty(4, device="cuda"), torch.empty(4, device="cuda")
    cases = [
        (ValueError, "x must be on a CUDA device", lambda: k.layer_norm_forward(x.cpu(), w.cpu(), None, EPS,
                                                                                y.cpu(), mean.cpu(), rstd.cpu(), s)),
        (ValueError, "weight must be on the device of x", lambda: k.layer_norm_forward(x, w.cpu(), None, EPS, y,
                                                                                       mean, rstd, s)),
        (ValueError, "out must be on the device of x", lambda: k.rms_norm_forward(x, w, EPS, y.cpu(), rstd, s)),
        (ValueError, "rstd must be on the device of x", lambda: k.rms_norm_forward(x, w, EPS, y, rstd.cpu(), s)),
        (TypeError, "x must be float32 or bfloat16", lambda: k.rms_norm_forward(x.double(), None, EPS, y.double(),
                                                                                rstd, s)),
        (TypeError, "weight must have the dtype of x", lambda: k.rms_norm_forward(x, w.bfloat16(), EPS, y, rstd, s)),
        (ValueError, "weight must have shape", lambda: k.rms_norm_forward(x, w[:7], EPS, y, rstd, s)),
        (TypeError, "rstd must be float32", lambda: k.rms_norm_forward(x, w, EPS, y, rstd.double(), s)),
        (ValueError, "out overlaps x", lambda: k.rms_norm_forward(x[:3], w, EPS, x[1:], rstd[:3], s)),
        (ValueError, "eps must be >= 0", lambda: k.rms_norm_forward(x, w, -1.0, y, rstd, s)),
        (TypeError, "mean must be an array", lambda: k.layer_norm_backward(x, x, None, rstd, w, y, None, None, s)),
        (ValueError, "grad_out must be on the device of x",
         lambda: k.rms_norm_backward(x.cpu(), x, rstd, w, y, None, s)),
        (ValueError, "grad_weight needs weight", lambda: k.rms_norm_backward(x, x, rstd, None, y, w.clone(), s)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
