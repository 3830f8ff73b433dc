"""CUDA GEMM kernels (fastnn._cuda.gemm and int8_gemm) against torch.

Each float result is checked with the shared rule (fastnn.testing.assert_close):
fastnn's error against a float64 reference at most 2x the error of torch at
the same precision (cuBLAS with the same input and output dtypes, fp32
epilogue, one rounding) plus one ulp. int8 products must be exact. Outputs are
NaN-poisoned before every call, inputs are fresh random values."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from fastnn.testing import assert_close
from helpers import nan_gapped, poisoned

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

FLOAT_MATH = ["bfloat16", "float16", "float32", "tf32"]
ACTIVATIONS = {
    "none": lambda v: v,
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
    "silu": F.silu,
}


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


def input_dtype(math):
    return torch.float32 if math == "tf32" else getattr(torch, math)


def rand(shape, dtype, gen):
    return torch.randn(shape, generator=gen).to(device="cuda", dtype=dtype)


@contextlib.contextmanager
def tf32(enabled):
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def torch_product(a, b, math):
    """A @ B in float32 as cuBLAS computes it for this math (tensor cores for
    16-bit and tf32 inputs, fp32 FMA otherwise)."""
    if a.dtype == torch.float32:
        with tf32(math == "tf32"):
            return torch.matmul(a, b)
    if a.dim() == 2 and b.dim() == 2:
        return torch.mm(a, b, out_dtype=torch.float32)
    batch = max(a.shape[0] if a.dim() == 3 else 1, b.shape[0] if b.dim() == 3 else 1)
    a3 = a.expand(batch, *a.shape[-2:]) if a.dim() == 2 or a.shape[0] == 1 else a
    b3 = b.expand(batch, *b.shape[-2:]) if b.dim() == 2 or b.shape[0] == 1 else b
    return torch.stack([torch.mm(a3[i], b3[i], out_dtype=torch.float32) for i in range(batch)])


def epilogue(prod, c0, bias, alpha, beta, activation):
    v = alpha * prod
    if beta != 0.0:
        v = v + beta * c0.to(prod.dtype)
    if bias is not None:
        v = v + bias.to(prod.dtype)
    return ACTIVATIONS[activation](v)


def check_gemm(a, b, out, math, bias=None, alpha=1.0, beta=0.0, activation="none"):
    c0 = out.clone()
    kernels().gemm(a, b, out, bias=bias, alpha=alpha, beta=beta, activation=activation,
                   allow_tf32=math == "tf32", stream=stream())
    torch.cuda.synchronize()
    ours = torch_product(a, b, math)
    torch_out = epilogue(ours, c0, bias, alpha, beta, activation).to(out.dtype)
    ref = epilogue(torch.matmul(a.double(), b.double()), c0, bias, alpha, beta, activation)
    assert_close(out, torch_out, ref)


@pytest.mark.parametrize("math", FLOAT_MATH)
@pytest.mark.parametrize("mnk", [(1, 1, 1), (17, 127, 1000), (127, 1000, 17), (1000, 17, 127),
                                 (1, 4097, 17), (4097, 1, 127), (256, 384, 4097), (300, 257, 1),
                                 (1, 17, 1024), (4097, 300, 520), (999, 264, 136)])
@pytest.mark.parametrize("b_t", [False, True])
def test_gemm_shapes(math, mnk, b_t, rng):
    # b_t: B stored (N, K) like an nn.Linear weight, the layout of the sm_90a kernel.
    m, n, k = mnk
    dtype = input_dtype(math)
    a = rand((m, k), dtype, rng)
    b = rand((n, k), dtype, rng).t() if b_t else rand((k, n), dtype, rng)
    check_gemm(a, b, poisoned((m, n), dtype, "cuda"), math)


@pytest.mark.parametrize("math", FLOAT_MATH)
@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("b_t", [False, True])
@pytest.mark.parametrize("mnk", [(128, 256, 64), (127, 1000, 17), (65, 33, 4097)])
def test_gemm_transposes(math, a_t, b_t, mnk, rng):
    m, n, k = mnk
    dtype = input_dtype(math)
    a = rand((k, m), dtype, rng).t() if a_t else rand((m, k), dtype, rng)
    b = rand((n, k), dtype, rng).t() if b_t else rand((k, n), dtype, rng)
    check_gemm(a, b, poisoned((m, n), dtype, "cuda"), math)


@pytest.mark.parametrize("math, out_dtype", [("bfloat16", torch.float32), ("float16", torch.float32),
                                             ("bfloat16", torch.float16), ("float32", torch.bfloat16),
                                             ("tf32", torch.bfloat16)])
def test_gemm_output_dtypes(math, out_dtype, rng):
    dtype = input_dtype(math)
    a, b = rand((200, 300), dtype, rng), rand((300, 129), dtype, rng)
    check_gemm(a, b, poisoned((200, 129), out_dtype, "cuda"), math)


@pytest.mark.parametrize("math", FLOAT_MATH)
@pytest.mark.parametrize("layout", ["both", "a_broadcast", "b_broadcast", "b_expanded", "b_transposed"])
@pytest.mark.parametrize("mnk", [(97, 65, 130), (97, 72, 136)])  # rows unaligned / 16-byte aligned (TMA)
def test_gemm_batched(math, layout, mnk, rng):
    batch, (m, n, k) = 5, mnk
    dtype = input_dtype(math)
    a = rand((m, k) if layout == "a_broadcast" else (batch, m, k), dtype, rng)
    if layout == "b_broadcast":
        b = rand((k, n), dtype, rng)
    elif layout == "b_expanded":
        b = rand((1, k, n), dtype, rng).expand(batch, k, n)
    elif layout == "b_transposed":
        b = rand((batch, n, k), dtype, rng).transpose(1, 2)
    else:
        b = rand((batch, k, n), dtype, rng)
    check_gemm(a, b, poisoned((batch, m, n), dtype, "cuda"), math)


@pytest.mark.parametrize("math", FLOAT_MATH)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_gemm_epilogue(math, activation, rng):
    m, n, k = 150, 260, 333
    dtype = input_dtype(math)
    a, b = rand((m, k), dtype, rng), rand((k, n), dtype, rng)
    bias = rand((n,), torch.float32, rng)
    check_gemm(a, b, poisoned((m, n), dtype, "cuda"), math, bias=bias, alpha=0.75, activation=activation)
    out = rand((m, n), dtype, rng)
    check_gemm(a, b, out, math, bias=bias.to(dtype), alpha=-1.5, beta=0.5, activation=activation)


@pytest.mark.parametrize("math", FLOAT_MATH)
def test_gemm_strided_and_misaligned(math, rng):
    m, n, k = 70, 90, 110
    dtype = input_dtype(math)
    a, b = rand((m, k), dtype, rng), rand((k, n), dtype, rng)
    # No unit stride anywhere (NaN in the gaps): the SIMT path.
    check_gemm(nan_gapped(a, 2), nan_gapped(b, 3), poisoned((m, n), dtype, "cuda"), math)
    # Unit stride, rows not 16-byte aligned: element loads on the tensor-core path.
    a_off = rand((m * k + 1,), dtype, rng)[1:].view(m, k)
    b_off = rand((n, k + 1), dtype, rng)[:, 1:].t()
    check_gemm(a_off, b_off, poisoned((m, n), dtype, "cuda"), math)
    # A transposed output view keeps its strides and pointer.
    out = poisoned((n, m), dtype, "cuda").t()
    ptr, strides = out.data_ptr(), out.stride()
    check_gemm(a, b, out, math)
    assert out.data_ptr() == ptr and out.stride() == strides


@pytest.mark.parametrize("math", FLOAT_MATH)
def test_gemm_zero_sizes(math, rng):
    dtype = input_dtype(math)
    for m, n in [(0, 5), (5, 0)]:
        kernels().gemm(rand((m, 7), dtype, rng), rand((7, n), dtype, rng), torch.empty((m, n), dtype=dtype,
                       device="cuda"), stream=stream())
    # K == 0: act(beta * C + bias).
    a, b = rand((9, 0), dtype, rng), rand((0, 11), dtype, rng)
    check_gemm(a, b, rand((9, 11), dtype, rng), math, bias=rand((11,), dtype, rng), beta=2.0, activation="relu")


@pytest.mark.parametrize("math", FLOAT_MATH)
def test_gemm_deterministic(math, rng):
    dtype = input_dtype(math)
    a, b = rand((513, 1031), dtype, rng), rand((1031, 257), dtype, rng)
    outs = [poisoned((513, 257), dtype, "cuda") for _ in range(2)]
    for out in outs:
        kernels().gemm(a, b, out, allow_tf32=math == "tf32", stream=stream())
    assert torch.equal(outs[0], outs[1])


def test_gemm_runs_on_callers_stream(rng):
    a, b = rand((1024, 1024), torch.bfloat16, rng), rand((1024, 1024), torch.bfloat16, rng)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = poisoned((1024, 1024), torch.bfloat16, "cuda")
        kernels().gemm(a, b, out, stream=side.cuda_stream)
    side.synchronize()
    assert not out.isnan().any()


def test_gemm_rejects_bad_arguments(rng):
    g = kernels().gemm
    a, b = rand((8, 16), torch.bfloat16, rng), rand((16, 4), torch.bfloat16, rng)
    out = torch.empty((8, 4), dtype=torch.bfloat16, device="cuda")
    with pytest.raises(TypeError, match="a must be"):
        g(a.to(torch.int32), b, out)
    with pytest.raises(TypeError, match="b must have the dtype of a"):
        g(a, b.half(), out)
    with pytest.raises(ValueError, match="b has shape"):
        g(a, rand((15, 4), torch.bfloat16, rng), out)
    with pytest.raises(ValueError, match="out has shape"):
        g(a, b, torch.empty((8, 5), dtype=torch.bfloat16, device="cuda"))
    with pytest.raises(ValueError, match="must be on a CUDA device"):
        g(a.cpu(), b, out)
    with pytest.raises(ValueError, match="bias has shape"):
        g(a, b, out, bias=torch.zeros(5, device="cuda"))
    with pytest.raises(ValueError, match="activation must be one of"):
        g(a, b, out, activation="tanh")
    with pytest.raises(ValueError, match="out overlaps a"):
        g(a, b, a[:, :4])
    with pytest.raises(ValueError, match="broadcast"):
        g(a, b, torch.empty((1, 4), dtype=torch.bfloat16, device="cuda").expand(8, 4))
    with pytest.raises(ValueError, match="batch"):
        g(rand((2, 8, 16), torch.bfloat16, rng), rand((3, 16, 4), torch.bfloat16, rng),
          torch.empty((3, 8, 4), dtype=torch.bfloat16, device="cuda"))


# ---------------------------------------------------------------------------
# int8


def rand_int8(shape, gen, low=-128, high=128):
    return torch.randint(low, high, shape, generator=gen, dtype=torch.int8).cuda()


def int64_product(a, b):
    return (a.cpu().long() @ b.cpu().long()).cuda()


@pytest.mark.parametrize("mnk", [(1, 1, 1), (17, 127, 1000), (127, 1000, 17), (1000, 17, 127),
                                 (33, 4097, 64), (256, 256, 4097)])
@pytest.mark.parametrize("b_col_major", [False, True])
def test_int8_gemm_exact(mnk, b_col_major, rng):
    m, n, k = mnk
    a = rand_int8((m, k), rng)
    b = rand_int8((n, k), rng).t() if b_col_major else rand_int8((k, n), rng)
    out = torch.full((m, n), -7, dtype=torch.int32, device="cuda")
    kernels().int8_gemm(a, b, out, stream=stream())
    assert torch.equal(out.long(), int64_product(a, b))


def test_int8_gemm_matches_torch_int_mm(rng):
    a, b = rand_int8((64, 256), rng), rand_int8((128, 256), rng).t()
    out = torch.empty((64, 128), dtype=torch.int32, device="cuda")
    kernels().int8_gemm(a, b, out, stream=stream())
    assert torch.equal(out, torch._int_mm(a, b))


def test_int8_gemm_extreme_k():
    k = 131071  # the largest K whose all -128 product fits int32
    a = torch.full((32, k), -128, dtype=torch.int8, device="cuda")
    b = torch.full((k, 24), -128, dtype=torch.int8, device="cuda")
    out = torch.empty((32, 24), dtype=torch.int32, device="cuda")
    kernels().int8_gemm(a, b, out, stream=stream())
    assert torch.equal(out, torch.full_like(out, 128 * 128 * k))
    with pytest.raises(ValueError, match="K = 131072"):
        kernels().int8_gemm(torch.zeros((1, k + 1), dtype=torch.int8, device="cuda"),
                            torch.zeros((k + 1, 1), dtype=torch.int8, device="cuda"),
                            torch.empty((1, 1), dtype=torch.int32, device="cuda"))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", ["none", "relu", "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_int8_gemm_dequant_epilogue(out_dtype, activation, with_bias, rng):
    m, n, k = 129, 250, 515
    a, b = rand_int8((m, k), rng), rand_int8((n, k), rng).t()
    row = torch.rand(m, generator=rng).cuda() * 0.01 + 1e-3
    col = torch.rand(n, generator=rng).cuda() * 0.01 + 1e-3
    bias = torch.randn(n, generator=rng).cuda() if with_bias else None
    out = poisoned((m, n), out_dtype, "cuda")
    kernels().int8_gemm(a, b, out, row_scale=row, col_scale=col, bias=bias, activation=activation, stream=stream())
    prod = int64_product(a, b)
    act = ACTIVATIONS[activation]

    def deq(p, dt):
        v = p.to(dt) * row.to(dt)[:, None] * col.to(dt)[None, :]
        return act(v + bias.to(dt) if bias is not None else v)

    assert_close(out, deq(prod, torch.float32).to(out_dtype), deq(prod, torch.float64))


def test_int8_gemm_rejects_bad_arguments(rng):
    g = kernels().int8_gemm
    a, b = rand_int8((8, 16), rng), rand_int8((16, 4), rng)
    out = torch.empty((8, 4), dtype=torch.int32, device="cuda")
    scale8, scale4 = torch.ones(8, device="cuda"), torch.ones(4, device="cuda")
    with pytest.raises(TypeError, match="a must be int8"):
        g(a.float(), b, out)
    with pytest.raises(TypeError, match="out must be int32"):
        g(a, b, out.float())
    with pytest.raises(TypeError, match="out must be float32 or bfloat16"):
        g(a, b, out, row_scale=scale8, col_scale=scale4)
    with pytest.raises(ValueError, match="together"):
        g(a, b, out.float(), row_scale=scale8)
    with pytest.raises(ValueError, match="col_scale has shape"):
        g(a, b, out.float(), row_scale=scale8, col_scale=scale8)
    with pytest.raises(ValueError, match="unit stride"):
        g(rand_int8((8, 32), rng)[:, ::2], b, out)
    with pytest.raises(ValueError, match="bias needs row_scale"):
        g(a, b, out, bias=scale4)
