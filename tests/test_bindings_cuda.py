"""fastnn._cuda's contract with the op launchers, checked without a GPU
wherever the CUDA module is built: every kernel that has a fastnn._C
counterpart takes that function's arguments in the same order plus a
trailing `stream`, and refuses host arrays by name before touching a device
(so the checks of a bad call never depend on the GPU)."""

from __future__ import annotations

import re

import pytest
import torch

import fastnn
from fastnn import _C

pytestmark = pytest.mark.single_isa

# The kernels that follow the contract. Attention's CUDA kernels have their
# own, CUDA-only contract (varlen, key padding) under other names; the
# roofline probes are not kernels.
SHARED = [
    "gemm", "relu_forward", "relu_backward", "gelu_forward", "gelu_backward", "gelu_tanh_forward", "gelu_tanh_backward",
    "silu_forward", "silu_backward", "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
    "dropout_forward", "dropout_backward", "layer_norm_forward", "layer_norm_backward", "rms_norm_forward",
    "rms_norm_backward", "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward", "quantize", "dequantize", "quantize_rows", "adam_step",
    "sgd_step", "rmsprop_step", "grad_scale_",
]


def cuda_module():
    module = fastnn._backend._cuda
    if module is None:
        pytest.skip(f"fastnn._cuda is not built: {fastnn._backend._cuda_import_error}")
    return module


def argument_names(fn) -> list[str]:
    signature = fn.__doc__.split("\n", 1)[0]
    inner = signature[signature.index("(") + 1: signature.rindex(")")]
    return [part.split(":")[0].strip() for part in re.split(r",\s*(?![^\[]*\])", inner) if part.strip()]


def defaulted(fn) -> list[bool]:
    signature = fn.__doc__.split("\n", 1)[0]
    inner = signature[signature.index("(") + 1: signature.rindex(")")]
    return ["=" in part for part in re.split(r",\s*(?![^\[]*\])", inner) if part.strip()]


@pytest.mark.parametrize("name", SHARED)
def test_same_arguments_plus_stream(name):
    """The launcher passes _C's arguments and the stream positionally; a CUDA
    kernel may take further options after them only with defaults."""
    cuda, cpu = getattr(cuda_module(), name), getattr(_C, name)
    expected = argument_names(cpu) + ["stream"]
    assert argument_names(cuda)[: len(expected)] == expected
    assert all(defaulted(cuda)[len(expected):])


def test_no_other_shared_name():
    """A _cuda function named like a _C kernel is what the launcher calls for
    CUDA arrays, so each such name must be in SHARED (and so follow the
    contract); a CUDA kernel with another contract needs another name."""
    cuda = cuda_module()
    probes = {"fma_peak_gflops", "copy_bandwidth_gbps"}
    common = {n for n in dir(cuda) if not n.startswith("_") and callable(getattr(cuda, n)) and hasattr(_C, n)}
    assert common - probes == set(SHARED)


def test_host_arrays_are_refused_by_name():
    cuda = cuda_module()
    x = torch.randn(4, 8)
    scalar, stats = torch.empty(()), torch.empty(4, 2, dtype=torch.float64)
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                 decoupled_weight_decay=False, grad_scale=None, found_inf=None, stream=0)
    calls = [
        ("x", lambda: cuda.layer_norm_forward(x, None, None, 1e-5, x.clone(), torch.empty(4), torch.empty(4), 0)),
        ("x", lambda: cuda.rms_norm_forward(x, None, 1e-5, x.clone(), torch.empty(4), 0)),
        ("x", lambda: cuda.softmax_forward(x, x.clone(), 0)),
        ("grad_out", lambda: cuda.log_softmax_backward(x, x.clone(), x.clone(), 0)),
        ("logits", lambda: cuda.cross_entropy_forward(x, torch.zeros(4, dtype=torch.long), scalar, stats, "mean",
                                                      -100, 0.0, 0)),
        ("x", lambda: cuda.gelu_forward(x, x.clone(), 0)),
        ("x", lambda: cuda.bias_activation_forward(x, torch.zeros(8), "gelu", x.clone(), 0)),
        ("x", lambda: cuda.dropout_forward(x, x.clone(), 0.5, 1, 2, 0)),
        ("x", lambda: cuda.quantize(x, torch.ones(1), -1, torch.empty(4, 8, dtype=torch.int8), 0)),
        ("x", lambda: cuda.quantize_rows(x, None, torch.empty(4, 8, dtype=torch.int8), torch.empty(4), 0)),
        ("params\\[0\\]", lambda: cuda.adam_step([x], [x.clone()], [x.clone()], [x.clone()], None,
                                                 [torch.zeros(())], None, **hyper)),
        ("grads\\[0\\]", lambda: cuda.grad_norm([x], 2.0, scalar, 0)),
    ]
    for name, call in calls:
        with pytest.raises(ValueError, match=f"{name} must be on a CUDA device, got cpu"):
            call()
