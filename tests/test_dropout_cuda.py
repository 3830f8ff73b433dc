"""Dropout on CUDA (fastnn._cuda.dropout_forward / _backward): the mask, and
every output value, bit-identical to the CPU path's (the Philox4x32-10
mapping of fastnn/dropout.h) for any size, layout, seed and offset."""

from __future__ import annotations

import pytest
import torch

from fastnn import _C
from helpers import nan_gapped, poisoned, randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

DTYPES = [torch.float32, torch.bfloat16]
SEED, OFFSET = 0x1234_5678_9ABC_DEF0, 2**33 + 5


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


def cuda_dropout(x, p, seed, offset, out=None, backward=False):
    out = poisoned(x.shape, x.dtype, "cuda") if out is None else out
    (kernels().dropout_backward if backward else kernels().dropout_forward)(x, out, p, seed, offset, stream())
    return out


def cpu_dropout(x, p, seed, offset):
    out = torch.empty_like(x)
    _C.dropout_forward(x, out, p, seed, offset)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 63, 64, 65, 200, 1031, 1000003])
def test_same_values_as_cpu(n, dtype, rng):
    x = randn((n,), dtype, rng)
    expected = cpu_dropout(x, 0.3, SEED, OFFSET)
    assert torch.equal(cuda_dropout(x.cuda(), 0.3, SEED, OFFSET).cpu(), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_keep_rates_and_extremes_as_cpu(p, dtype, rng):
    x = randn((70001,), dtype, rng)
    x[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0])
    got = cuda_dropout(x.cuda(), p, 7, 0).cpu()
    expected = cpu_dropout(x, p, 7, 0)
    assert torch.equal(got.isnan(), expected.isnan())
    assert torch.equal(got[~got.isnan()], expected[~expected.isnan()])


@pytest.mark.parametrize("seed,offset", [(0, 0), (1, 0), (0, 1), (2**64 - 1, 2**64 - 1), (SEED, OFFSET)])
def test_seeds_and_offsets(seed, offset, rng):
    x = randn((4099,), torch.float32, rng)
    assert torch.equal(cuda_dropout(x.cuda(), 0.5, seed, offset).cpu(), cpu_dropout(x, 0.5, seed, offset))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["transposed", "gapped", "sliced_3d", "offset_by_one"])
def test_strided_same_as_cpu_contiguous(layout, dtype, rng):
    # The mask is a function of the logical index: any layout of the same
    # values gives the same result as the contiguous CPU tensor.
    x = randn((37, 129), dtype, rng)
    if layout == "transposed":
        xv = x.t().contiguous().cuda().t()
    elif layout == "gapped":
        xv = nan_gapped(x.cuda(), 3)
    elif layout == "sliced_3d":
        x = randn((5, 7, 33), dtype, rng)
        xv = torch.full((5, 9, 40), float("nan"), dtype=dtype, device="cuda")[:, 1:8, 2:35]
        xv.copy_(x)
    else:
        buf = torch.full((x.numel() + 1,), float("nan"), dtype=dtype, device="cuda")
        xv = buf[1:].view(x.shape)
        xv.copy_(x)
    expected = cpu_dropout(x, 0.4, SEED, OFFSET)
    out = nan_gapped(poisoned(x.shape, dtype, "cuda"), 2, True) if layout != "offset_by_one" else None
    got = cuda_dropout(xv, 0.4, SEED, OFFSET, out=out)
    assert torch.equal(got.cpu(), expected)


def test_backward_is_the_same_map_and_in_place_works(rng):
    x = randn((100000,), torch.bfloat16, rng, "cuda")
    forward = cuda_dropout(x, 0.25, 11, 3)
    assert torch.equal(cuda_dropout(x, 0.25, 11, 3, backward=True), forward)
    y = x.clone()
    cuda_dropout(y, 0.25, 11, 3, out=y)
    assert torch.equal(y, forward)


def test_zero_size():
    x = torch.empty(0, 5, device="cuda")
    assert cuda_dropout(x, 0.5, 1, 1).shape == (0, 5)


def test_bad_arguments():
    k, s = kernels(), stream()
    x, out = torch.randn(8, device="cuda"), torch.empty(8, device="cuda")
    cases = [
        (ValueError, "p must be in", lambda: k.dropout_forward(x, out, 1.5, 0, 0, s)),
        (ValueError, "x must be on a CUDA device", lambda: k.dropout_forward(x.cpu(), out.cpu(), 0.5, 0, 0, s)),
        (ValueError, "out must be on the device of grad_out", lambda: k.dropout_backward(x, out.cpu(), 0.5, 0, 0, s)),
        (TypeError, "x must be float32 or bfloat16", lambda: k.dropout_forward(x.double(), out.double(), 0.5, 0, 0, s)),
        (ValueError, "out overlaps x", lambda: k.dropout_forward(x[:7], x[1:], 0.5, 0, 0, s)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
