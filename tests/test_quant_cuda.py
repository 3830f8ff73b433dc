"""int8 quantization on CUDA (fastnn._cuda.quantize / dequantize /
quantize_rows): bit-identical to the CPU kernels (and so to
torch.quantize_per_tensor / per_channel) for every axis, dtype, layout,
tie, saturation and NaN, and what it produces is what the CUDA int8 GEMM
consumes: the exact int32 product of the quantized activations and weights
equals the CPU one."""

from __future__ import annotations

import pytest
import torch

from fastnn import _C
from helpers import nan_gapped, randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

DTYPES = [torch.float32, torch.bfloat16]


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


def poisoned_int8(shape):
    return torch.full(shape, 77, dtype=torch.int8, device="cuda")


def strided_int8(shape):
    """A poisoned (rows, cols) int8 view, column-major with gaps."""
    return torch.full((shape[1], 2 * shape[0]), 77, dtype=torch.int8, device="cuda")[:, ::2].t()


def cuda_quantize(x, scale, axis):
    q = poisoned_int8(x.shape)
    kernels().quantize(x, scale, axis, q, stream())
    return q


def cpu_quantize(x, scale, axis):
    q = torch.empty(x.shape, dtype=torch.int8)
    _C.quantize(x, scale, axis, q)
    return q


def scales_for(x, axis, gen):
    n = 1 if axis == -1 else x.shape[axis]
    return torch.rand(n, generator=gen) * 0.5 + 0.05


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (65, 257), (3, 1025), (4096, 4099)])
def test_quantize_same_as_cpu(shape, axis, dtype, rng):
    x = (randn(shape, torch.float32, rng) * 40).to(dtype)
    s = scales_for(x, axis, rng)
    assert torch.equal(cuda_quantize(x.cuda(), s.cuda(), axis).cpu(), cpu_quantize(x, s, axis))


def test_quantize_ties_saturation_and_nan():
    # Power-of-two scales make x * (1/scale) exact, so every .5 is a true tie.
    ties = torch.arange(-140, 140, dtype=torch.float32) + 0.5
    extremes = torch.tensor([float("inf"), -float("inf"), 3.4e38, -3.4e38, 1e-45, -0.0, 127.49, -128.5,
                             float("nan")])
    x = (torch.cat([ties, extremes]).reshape(1, -1) * 0.25)
    s = torch.tensor([0.25])
    assert torch.equal(cuda_quantize(x.cuda(), s.cuda(), -1).cpu(), cpu_quantize(x, s, -1))
    xt = x.t().contiguous()
    col = torch.full((xt.shape[0],), 0.25)
    assert torch.equal(cuda_quantize(xt.cuda(), col.cuda(), 0).cpu(), cpu_quantize(xt, col, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_dequantize_same_as_cpu(axis, dtype, rng):
    q = torch.randint(-128, 128, (67, 1031), generator=rng, dtype=torch.int8)
    s = scales_for(q, axis, rng)
    out = torch.full(q.shape, float("nan"), dtype=dtype, device="cuda")
    kernels().dequantize(q.cuda(), s.cuda(), axis, out, stream())
    expected = torch.empty(q.shape, dtype=dtype)
    _C.dequantize(q, s, axis, expected)
    assert torch.equal(out.cpu(), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("shape", [(1, 1), (9, 31), (33, 512), (17, 513), (65, 4096), (5, 20000)])
def test_quantize_rows_same_as_cpu(shape, smooth, dtype, rng):
    x = (randn(shape, torch.float32, rng) * 10).to(dtype)
    x[0] = 0.0                                  # zero row: scale 0, q 0
    if shape[0] > 2:
        x[1, shape[1] // 2] = float("nan")      # NaN row: scale NaN, q 0
        x[2, 0] = float("inf")
    sm = torch.rand(shape[1], generator=rng) + 0.5 if smooth else None
    q, scale = poisoned_int8(shape), torch.full((shape[0],), -1.0, device="cuda")
    kernels().quantize_rows(x.cuda(), None if sm is None else sm.cuda(), q, scale, stream())
    q_cpu, scale_cpu = torch.empty(shape, dtype=torch.int8), torch.empty(shape[0])
    _C.quantize_rows(x, sm, q_cpu, scale_cpu)
    assert torch.equal(q.cpu(), q_cpu)
    assert torch.equal(scale.cpu().isnan(), scale_cpu.isnan())
    assert torch.equal(scale.cpu().nan_to_num(), scale_cpu.nan_to_num())


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_inputs_and_outputs(dtype, rng):
    x = (randn((37, 129), torch.float32, rng) * 10).to(dtype)
    s = scales_for(x, 0, rng)
    expected = cpu_quantize(x, s, 0)
    for view in (nan_gapped(x.cuda(), 2), nan_gapped(x.cuda(), 3, transpose=True)):
        q = strided_int8((37, 129))
        kernels().quantize(view, s.cuda(), 0, q, stream())
        assert torch.equal(q.cpu(), expected)
        q_rows, scale = poisoned_int8((37, 129)), torch.empty(37, device="cuda")
        kernels().quantize_rows(view, None, q_rows, scale, stream())
        q_cpu, scale_cpu = torch.empty((37, 129), dtype=torch.int8), torch.empty(37)
        _C.quantize_rows(x, None, q_cpu, scale_cpu)
        assert torch.equal(q_rows.cpu(), q_cpu) and torch.equal(scale.cpu(), scale_cpu)


def test_feeds_the_cuda_int8_gemm(rng):
    # Dynamic activations (per row) and a per-channel weight (N, K) quantized
    # per row: the GEMM takes q_x, q_w^T (a transposed view) and both scales.
    m, k, n = 129, 1000, 257
    x = randn((m, k), torch.bfloat16, rng, "cuda")
    w = randn((n, k), torch.float32, rng, "cuda")
    q_x, s_x = poisoned_int8((m, k)), torch.empty(m, device="cuda")
    kernels().quantize_rows(x, None, q_x, s_x, stream())
    s_w = (w.abs().amax(1) / 127).clamp_min(1e-8)
    q_w = cuda_quantize(w, s_w, 0)
    exact = torch.empty(m, n, dtype=torch.int32, device="cuda")
    kernels().int8_gemm(q_x, q_w.t(), exact, stream=stream())
    expected = torch.empty(m, n, dtype=torch.int32)
    _C.int8_mm(q_x.cpu(), q_w.t().cpu(), None, None, None, expected)
    assert torch.equal(exact.cpu(), expected)
    out = torch.empty(m, n, device="cuda")
    kernels().int8_gemm(q_x, q_w.t(), out, row_scale=s_x, col_scale=s_w, stream=stream())
    torch.testing.assert_close(out, exact.float() * s_x[:, None] * s_w[None, :], rtol=1e-6, atol=0)


def test_zero_size():
    x = torch.empty(0, 5, device="cuda")
    q, scale = poisoned_int8((0, 5)), torch.empty(0, device="cuda")
    kernels().quantize_rows(x, None, q, scale, stream())
    kernels().quantize(x, torch.ones(1, device="cuda"), -1, q, stream())


def test_bad_arguments():
    k, s = kernels(), stream()
    x, q = torch.randn(4, 8, device="cuda"), torch.empty(4, 8, dtype=torch.int8, device="cuda")
    one = torch.ones(1, device="cuda")
    cases = [
        (ValueError, "x must be on a CUDA device", lambda: k.quantize(x.cpu(), one.cpu(), -1, q.cpu(), s)),
        (ValueError, "scale must be on a CUDA device", lambda: k.quantize(x, one.cpu(), -1, q, s)),
        (ValueError, "out must be on a CUDA device", lambda: k.quantize(x, one, -1, q.cpu(), s)),
        (ValueError, "scale must have 4 elements", lambda: k.quantize(x, one, 0, q, s)),
        (ValueError, "axis must be None, 0 or 1", lambda: k.quantize(x, one, 2, q, s)),
        (TypeError, "x must be float32 or bfloat16", lambda: k.quantize(x.double(), one, -1, q, s)),
        (TypeError, "out must be int8", lambda: k.quantize(x, one, -1, x.clone(), s)),
        (TypeError, "out must be float32 or bfloat16", lambda: k.dequantize(q, one, -1, q.clone(), s)),
        (ValueError, r"scale must have shape \(4,\)",
         lambda: k.quantize_rows(x, None, q, torch.empty(3, device="cuda"), s)),
        (ValueError, "smooth_inv must be on a CUDA device",
         lambda: k.quantize_rows(x, torch.ones(8), q, torch.empty(4, device="cuda"), s)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
