"""Bench cases for int8 quantization (--op int8_gemm, quant_linear).

int8_gemm: fastnn.int8_mm (packing of both operands included, as
torch._int_mm receives unpacked operands too) against torch._int_mm, reported
in GOP/s against the VNNI peak measured by fastnn's vpdpbusd probe; the fp32
matmul of the same shape is timed as torch_fp32_mm (in the JSON).
quant_linear: QuantLinear "dynamic" (activation quantization inside the op)
against torch's dynamic-quantized Linear, with torch's fp32 Linear as
torch_fp32; "weight_only" against torch's fp32 Linear. Throughput counts
2*M*N*K equivalent ops. err ratio: fastnn's max error against the float64
Linear over the error of torch's dynamic-quantized Linear on the same weights.
"""

from __future__ import annotations

import functools

from .harness import Case, Workload, register, rotations_for


@functools.cache
def int8_peak_gops() -> float | None:
    from .. import _C

    peak = _C.int8_peak_gops(0.3)
    return peak or None


@register("int8_gemm")
def gemm_cases(device: str, quick: bool):
    if device != "cpu":
        return
    for n in ((1024, 2048) if quick else (256, 512, 1024, 2048, 4096)):
        yield Case("int8_gemm", "int8_mm", "fwd", "int8", f"{n}x{n}x{n}", lambda n=n: _int8_mm(n, n, n))


def _int8_mm(m, k, n):
    import torch

    import fastnn
    from fastnn.testing import compare

    rot = rotations_for(m * k + k * n)
    gen = torch.Generator().manual_seed(0)
    a = [torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gen) for _ in range(rot)]
    b = [torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=gen) for _ in range(rot)]
    af, bf = a[0].float(), b[0].float()

    def accuracy():
        ref = (a[0].double() @ b[0].double())
        return compare(fastnn.int8_mm(a[0], b[0]).double(), torch._int_mm(a[0], b[0]).double(), ref)

    return Workload(
        fastnn=lambda i: fastnn.int8_mm(a[i % rot], b[i % rot]),
        torch=lambda i: torch._int_mm(a[i % rot], b[i % rot]),
        torch_backends={"fp32_mm": lambda i: torch.mm(af, bf)},
        flops=2.0 * m * n * k, bytes=m * k + k * n + 4 * m * n, rotations=rot, peak_gops=int8_peak_gops(),
        accuracy=accuracy)


@register("quant_linear")
def linear_cases(device: str, quick: bool):
    if device != "cpu":
        return
    if quick:
        dynamic, weight_only = [(512, 2048, 2048)], [(1, 4096, 4096)]
    else:
        sizes = [(1024, 1024), (2048, 2048), (4096, 4096)]
        dynamic = [(t, k, n) for k, n in sizes for t in (1, 16, 128, 512, 4096)]
        weight_only = [(t, k, n) for k, n in sizes for t in (1, 4, 16)]
    for t, k, n in dynamic:
        yield Case("quant_linear", "quant_linear", "dynamic", "float32", f"{t}x{k}x{n}",
                   lambda t=t, k=k, n=n: _quant_linear("dynamic", t, k, n))
    for t, k, n in weight_only:
        yield Case("quant_linear", "quant_linear", "weight_only", "float32", f"{t}x{k}x{n}",
                   lambda t=t, k=k, n=n: _quant_linear("weight_only", t, k, n))


def _quant_linear(mode, tokens, k, n):
    import copy
    import warnings

    import torch

    from fastnn.nn import QuantLinear
    from fastnn.testing import compare

    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(k, n)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, k, generator=gen) / k**0.5)
        linear.bias.copy_(torch.randn(n, generator=gen))
    # Weights rotate too: at few tokens reading the weight is the cost, and a
    # weight left in the last-level cache would be timed at cache speed.
    n_int8, n_fp32, n_x = rotations_for(n * k), rotations_for(4 * n * k), rotations_for(4 * tokens * k)
    ours = [QuantLinear.from_float(linear, mode) for _ in range(n_int8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        theirs = [torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear},
                                                         dtype=torch.qint8) for _ in range(n_int8)]
    fp32 = [copy.deepcopy(linear) for _ in range(n_fp32)]
    xs = [torch.randn(tokens, k, generator=gen) for _ in range(n_x)]

    def accuracy():
        with torch.no_grad():
            x = xs[0]
            ref = torch.nn.functional.linear(x.double(), linear.weight.double(), linear.bias.double())
            return compare(ours[0](x), theirs[0](x), ref)

    def timed(modules):
        def run(i):
            with torch.no_grad():
                return modules[i % len(modules)](xs[i % n_x])
        return run

    if mode == "dynamic":
        runners = dict(torch=timed(theirs), torch_backends={"fp32": timed(fp32)}, peak_gops=int8_peak_gops())
    else:
        runners = dict(torch=timed(fp32), torch_backends={"dynamic_int8": timed(theirs)})
    return Workload(fastnn=timed(ours), flops=2.0 * tokens * n * k, bytes=n * k + 4 * tokens * (k + n),
                    rotations=max(n_int8, n_fp32, n_x), accuracy=accuracy, **runners)
