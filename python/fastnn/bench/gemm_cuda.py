"""Bench cases for the CUDA GEMMs (--op gemm_cuda, --op int8_gemm_cuda; --device cuda).

torch at its best: cuBLAS through torch.mm into a preallocated output, with
the weight stored (N, K) as nn.Linear does (B column-major, cuBLAS's "TN"
fast layout); int8 through torch._int_mm with B column-major (its fast path).
fastnn calls the kernel module directly so Python dispatch is not timed."""

from __future__ import annotations

from .harness import Case, Workload, register

# (M, N, K): squares, and a Linear layer over 16384 tokens of width 4096.
_SHAPES = [(2048, 2048, 2048), (4096, 4096, 4096), (8192, 8192, 8192), (16384, 4096, 4096)]
_QUICK = [(4096, 4096, 4096)]
_FLOAT_MATH = ["bfloat16", "float16", "tf32", "float32"]


def _label(mnk):
    return "x".join(str(d) for d in mnk)


@register("gemm_cuda")
def float_cases(device: str, quick: bool):
    if device != "cuda":
        return
    for math in _FLOAT_MATH:
        for mnk in _QUICK if quick else _SHAPES:
            yield Case("gemm_cuda", "gemm", "fwd", math, _label(mnk), lambda m=math, s=mnk: _float_gemm(m, *s))


@register("int8_gemm_cuda")
def int8_cases(device: str, quick: bool):
    if device != "cuda":
        return
    for b_layout in ("b_col_major", "b_row_major"):
        for mnk in _QUICK if quick else _SHAPES[1:]:
            yield Case("int8_gemm_cuda", f"int8_gemm {b_layout}", "fwd", "int8", _label(mnk),
                       lambda layout=b_layout, s=mnk: _int8_gemm(layout, *s))


def _stream():
    import torch

    return torch.cuda.current_stream().cuda_stream


def _float_gemm(math, m, n, k):
    import torch

    from fastnn._backend import cuda_kernels
    from fastnn.testing import compare

    gemm = cuda_kernels().gemm
    dtype = torch.float32 if math == "tf32" else getattr(torch, math)
    tf32 = math == "tf32"
    a = torch.randn(m, k, device="cuda").to(dtype)
    w = torch.randn(n, k, device="cuda").to(dtype)  # the weight, (N, K)
    out_fastnn = torch.empty(m, n, device="cuda", dtype=dtype)
    out_torch = torch.empty_like(out_fastnn)

    def run_torch(_):
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.mm(a, w.t(), out=out_torch)
        torch.backends.cuda.matmul.allow_tf32 = previous

    def accuracy():
        x = torch.randn(m, k, device="cuda").to(dtype)
        y = torch.randn(n, k, device="cuda").to(dtype)
        gemm(x, y.t(), out_fastnn, allow_tf32=tf32, stream=_stream())
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        theirs = torch.mm(x, y.t())
        torch.backends.cuda.matmul.allow_tf32 = previous
        return compare(out_fastnn, theirs, torch.mm(x.double(), y.double().t()))

    return Workload(
        fastnn=lambda _: gemm(a, w.t(), out_fastnn, allow_tf32=tf32, stream=_stream()),
        torch=run_torch,
        flops=2.0 * m * n * k,
        bytes=float((m * k + n * k + m * n) * dtype.itemsize),
        accuracy=accuracy)


def _int8_gemm(b_layout, m, n, k):
    import torch

    from fastnn._backend import cuda_kernels

    int8_gemm = cuda_kernels().int8_gemm
    a = torch.randint(-128, 128, (m, k), device="cuda", dtype=torch.int8)
    w = torch.randint(-128, 128, (n, k), device="cuda", dtype=torch.int8)
    b_fastnn = w.t() if b_layout == "b_col_major" else w.t().contiguous()
    out_fastnn = torch.empty(m, n, device="cuda", dtype=torch.int32)

    def accuracy():
        # Integer results must be exact: torch's error is 0, the floor one
        # integer unit, so the reported ratio is 1.0 exactly when they agree.
        int8_gemm(a, b_fastnn, out_fastnn, stream=_stream())
        theirs = torch._int_mm(a, w.t())
        diff = float((out_fastnn.long() - theirs.long()).abs().max())
        return diff, 0.0, 1.0

    return Workload(
        fastnn=lambda _: int8_gemm(a, b_fastnn, out_fastnn, stream=_stream()),
        torch=lambda _: torch._int_mm(a, w.t()),
        flops=2.0 * m * n * k,
        bytes=float(m * k + n * k + 4 * m * n),
        accuracy=accuracy)
