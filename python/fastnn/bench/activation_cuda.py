"""Bench cases for the CUDA activations, bias + activation and dropout
(--op activations_cuda --device cuda) at 16384 x 4096, fp32 and bf16.
fastnn's kernels are called directly into preallocated outputs; torch is
its own functional op (forward) and the aten backward kernel of the same op.
Bytes: forward reads x and writes y, backward reads grad_out and the saved
tensor and writes grad_in; bias + activation adds the (N,) bias."""

from __future__ import annotations

from .harness import Case, Workload, register

_SHAPE = (16384, 4096)
_KINDS = ("relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh")


@register("activations_cuda")
def cases(device: str, quick: bool):
    if device != "cuda":
        return
    rows, cols = _SHAPE
    shape = f"{rows}x{cols}"
    for dtype in ("bfloat16",) if quick else ("bfloat16", "float32"):
        for kind in ("gelu",) if quick else _KINDS:
            for pass_ in ("fwd", "bwd"):
                yield Case("activations_cuda", kind, pass_, dtype, shape,
                           lambda k=kind, d=dtype, p=pass_: _activation(k, d, p == "bwd"))
        yield Case("activations_cuda", "bias_gelu", "fwd", dtype, shape, lambda d=dtype: _bias_gelu(d))
        yield Case("activations_cuda", "dropout", "fwd", dtype, shape, lambda d=dtype: _dropout(d))


def _stream():
    import torch

    return torch.cuda.current_stream().cuda_stream


def _torch_fn(kind):
    import torch
    import torch.nn.functional as F

    return {"relu": torch.relu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
            "silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[kind]


def _torch_backward(kind):
    """aten's backward kernel of the op: (grad_out, saved) -> grad_in."""
    import torch

    aten = torch.ops.aten
    return {"relu": lambda g, y: aten.threshold_backward(g, y, 0),
            "gelu": lambda g, x: aten.gelu_backward(g, x),
            "gelu_tanh": lambda g, x: aten.gelu_backward(g, x, approximate="tanh"),
            "silu": aten.silu_backward, "sigmoid": aten.sigmoid_backward, "tanh": aten.tanh_backward}[kind]


_SAVES_OUTPUT = {"relu": True, "sigmoid": True, "tanh": True, "gelu": False, "gelu_tanh": False, "silu": False}


def _activation(kind, dtype, backward):
    import torch

    from .._backend import cuda_kernels
    from ..testing import compare

    kernels = cuda_kernels()
    x = torch.randn(*_SHAPE, device="cuda").to(getattr(torch, dtype))
    fn = _torch_fn(kind)
    saved = fn(x) if _SAVES_OUTPUT[kind] else x
    g, out = torch.randn_like(x), torch.empty_like(x)
    forward_kernel, backward_kernel = getattr(kernels, kind + "_forward"), getattr(kernels, kind + "_backward")

    def accuracy():
        xs = x[:256]
        got = torch.empty_like(xs)
        if not backward:
            forward_kernel(xs, got, _stream())
            return compare(got, fn(xs), fn(xs.double()))
        gs, ss = g[:256], saved[:256]
        backward_kernel(gs, ss, got, _stream())
        return compare(got, _torch_backward(kind)(gs, ss), _torch_backward(kind)(gs.double(), ss.double()))

    nbytes = x.numel() * x.element_size()
    if backward:
        return Workload(fastnn=lambda _i: backward_kernel(g, saved, out, _stream()),
                        torch=lambda _i: _torch_backward(kind)(g, saved), bytes=3.0 * nbytes, accuracy=accuracy)
    return Workload(fastnn=lambda _i: forward_kernel(x, out, _stream()), torch=lambda _i: fn(x),
                    bytes=2.0 * nbytes, accuracy=accuracy)


def _bias_gelu(dtype):
    import torch
    import torch.nn.functional as F

    from .._backend import cuda_kernels
    from ..testing import compare

    kernels = cuda_kernels()
    dt = getattr(torch, dtype)
    x = torch.randn(*_SHAPE, device="cuda").to(dt)
    b = torch.randn(_SHAPE[1], device="cuda").to(dt)
    out = torch.empty_like(x)

    def accuracy():
        got = torch.empty_like(x[:256])
        kernels.bias_activation_forward(x[:256], b, "gelu", got, _stream())
        return compare(got, F.gelu(x[:256] + b), F.gelu(x[:256].double() + b.double()))

    return Workload(fastnn=lambda _i: kernels.bias_activation_forward(x, b, "gelu", out, _stream()),
                    torch=lambda _i: F.gelu(x + b), bytes=2.0 * x.numel() * x.element_size(), accuracy=accuracy)


def _dropout(dtype):
    import torch
    import torch.nn.functional as F

    from .._backend import cuda_kernels

    kernels = cuda_kernels()
    x = torch.randn(*_SHAPE, device="cuda").to(getattr(torch, dtype))
    out = torch.empty_like(x)
    # torch's dropout also writes its mask (one byte per element); its
    # values come from another generator, so there is no error ratio here.
    return Workload(fastnn=lambda i: kernels.dropout_forward(x, out, 0.1, 1234, i, _stream()),
                    torch=lambda _i: F.dropout(x, 0.1, training=True), bytes=2.0 * x.numel() * x.element_size())
