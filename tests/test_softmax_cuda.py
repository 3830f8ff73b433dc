"""Softmax / log-softmax on CUDA (fastnn._cuda.*softmax_forward/backward)
against PyTorch on the same GPU within 2x its own error of a float64
reference: warp rows, block rows and chunked rows (vocabulary sizes up to
256k), strided and misaligned views, extremes, poisoned outputs,
determinism and bad inputs."""

from __future__ import annotations

import pytest
import torch

from fastnn.testing import assert_close
from helpers import ODD_SIZES, nan_gapped, poisoned, randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

DTYPES = [torch.float32, torch.bfloat16]
LOG = [False, True]
# Warp rows up to 512, block rows up to 16384 in registers, chunks beyond.
LONG = [512, 513, 4096, 16384, 16385, 50000, 131072, 262144]


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


def forward(x, log, out=None):
    out = poisoned(x.shape, x.dtype, "cuda") if out is None else out
    (kernels().log_softmax_forward if log else kernels().softmax_forward)(x, out, stream())
    return out


def backward(g, y, log):
    out = poisoned(g.shape, g.dtype, "cuda")
    (kernels().log_softmax_backward if log else kernels().softmax_backward)(g, y, out, stream())
    return out


def torch_fwd(x, log):
    return x.log_softmax(-1) if log else x.softmax(-1)


def torch_bwd(g, y, log):
    """PyTorch's backward kernel on the same (grad_out, y); the float64
    reference gets these same inputs (from float64 x the rounding of y, common
    to both libraries, would dominate)."""
    fn = torch._log_softmax_backward_data if log else torch._softmax_backward_data
    return fn(g, y, -1, y.dtype)


def check(x, g, log, x_view=None, g_view=None):
    y = forward(x if x_view is None else x_view, log)
    assert_close(y, torch_fwd(x, log), torch_fwd(x.double(), log), "forward")
    y_t = torch_fwd(x, log)
    got = backward(g if g_view is None else g_view, y_t, log)
    assert_close(got, torch_bwd(g, y_t, log), torch_bwd(g.double(), y_t.double(), log), "backward")


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", ODD_SIZES + [4099])
def test_row_lengths(cols, dtype, log, rng):
    x, g = randn((37, cols), dtype, rng, "cuda") * 4, randn((37, cols), dtype, rng, "cuda")
    check(x, g, log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", LONG)
def test_long_rows(cols, dtype, log, rng):
    rows = max(2, min(64, (1 << 21) // cols))
    x, g = randn((rows, cols), dtype, rng, "cuda") * 4, randn((rows, cols), dtype, rng, "cuda")
    check(x, g, log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape", [(1031,), (1, 1), (2, 3, 7), (4, 1, 1000), (3, 2, 20000)])
def test_shapes(shape, log, rng):
    check(randn(shape, torch.float32, rng, "cuda"), randn(shape, torch.float32, rng, "cuda"), log)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [129, 1031, 20000])
@pytest.mark.parametrize("transpose", [False, True])
def test_strided_rows(cols, dtype, log, transpose, rng):
    x, g = randn((33, cols), dtype, rng, "cuda"), randn((33, cols), dtype, rng, "cuda")
    check(x, g, log, x_view=nan_gapped(x, 2, transpose), g_view=nan_gapped(g, 3, not transpose))


@pytest.mark.parametrize("log", LOG)
def test_misaligned_rows(log, rng):
    base = randn((40, 1001), torch.bfloat16, rng, "cuda")
    x = base[:, 1:]  # rows 1001 elements apart, each starting one element in
    check(x.contiguous(), randn((40, 1000), torch.bfloat16, rng, "cuda"), log, x_view=x)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [4, 700, 30000])
def test_extremes(log, dtype, cols):
    inf, nan = float("inf"), float("nan")
    x = torch.zeros(7, cols)
    x[0, 1] = inf                                     # +inf in the row: NaN everywhere
    x[1, 2] = nan                                     # NaN: NaN everywhere
    x[2] = -inf                                       # only -inf: NaN everywhere
    x[3, : cols // 2] = -inf                          # some -inf: probability 0 there
    x[4, 0], x[4, 1] = 3e38, -3e38                    # huge spread
    x[5] = 1e30                                       # constant, large
    x[6, -1] = 80.0                                   # one dominant element
    x = x.to(dtype).cuda()
    y = forward(x, log)
    y_t, ref = torch_fwd(x, log), torch_fwd(x.double(), log)
    assert_close(y, y_t, ref)
    torch.testing.assert_close(y.isnan(), y_t.isnan())


@pytest.mark.parametrize("log", LOG)
def test_deterministic_and_poisoned_output_fully_written(log, rng):
    x = randn((300, 5000), torch.float32, rng, "cuda")
    first = forward(x, log)
    assert not first.isnan().any()
    assert torch.equal(first, forward(x, log))
    g = randn((300, 5000), torch.float32, rng, "cuda")
    assert torch.equal(backward(g, first, log), backward(g, first, log))


@pytest.mark.parametrize("shape", [(0,), (0, 7), (3, 0), (2, 0, 5)])
def test_zero_size(shape):
    x = torch.empty(shape, device="cuda")
    for log in LOG:
        assert forward(x, log).shape == x.shape
        assert backward(x, x, log).shape == x.shape


def test_bad_arguments():
    k, s = kernels(), stream()
    x, y = torch.randn(4, 8, device="cuda"), torch.empty(4, 8, device="cuda")
    cases = [
        (ValueError, "x must be on a CUDA device", lambda: k.softmax_forward(x.cpu(), y.cpu(), s)),
        (ValueError, "out must be on the device of x", lambda: k.softmax_forward(x, y.cpu(), s)),
        (TypeError, "x must be float32 or bfloat16", lambda: k.softmax_forward(x.double(), y.double(), s)),
        (TypeError, "out must have the dtype of x", lambda: k.log_softmax_forward(x, y.bfloat16(), s)),
        (ValueError, "out must have the shape of x", lambda: k.softmax_forward(x, y[:3], s)),
        (ValueError, "x must have at least 1 dimension", lambda: k.softmax_forward(x[0, 0], y[0, 0], s)),
        (ValueError, "out overlaps x", lambda: k.softmax_forward(x, x, s)),
        (ValueError, "y must be on the device of grad_out", lambda: k.softmax_backward(x, y.cpu(), y, s)),
        (ValueError, "out overlaps y", lambda: k.log_softmax_backward(x, y, y, s)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
