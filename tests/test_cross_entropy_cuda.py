"""Fused softmax cross-entropy on CUDA (fastnn._cuda.cross_entropy_forward /
_backward) against torch.nn.functional.cross_entropy on the same GPU, within
2x its error of a float64 reference: vocabularies up to 256k, ignore_index,
label smoothing, every reduction, strided logits, poisoned outputs, targets
out of range (NaN rows: the targets stay on the device), determinism and bad
arguments."""

from __future__ import annotations

import pytest
import torch

from fastnn.testing import assert_close
from helpers import nan_gapped, poisoned, randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

F = torch.nn.functional
DTYPES = [torch.float32, torch.bfloat16]
REDUCTIONS = ["mean", "sum", "none"]


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


def loss_shape(reduction, n):
    return (n,) if reduction == "none" else ()


def forward(x, t, reduction, ignore_index=-100, smoothing=0.0):
    loss = poisoned(loss_shape(reduction, x.shape[0]), x.dtype, "cuda")
    stats = poisoned((x.shape[0], 2), torch.float64, "cuda")
    kernels().cross_entropy_forward(x, t, loss, stats, reduction, ignore_index, smoothing, stream())
    return loss, stats


def backward(x, t, stats, g, reduction, ignore_index=-100, smoothing=0.0, out=None):
    out = poisoned(x.shape, x.dtype, "cuda") if out is None else out
    kernels().cross_entropy_backward(x, t, stats, g, out, reduction, ignore_index, smoothing, stream())
    return out


def torch_ce(x, t, reduction, ignore_index=-100, smoothing=0.0):
    return F.cross_entropy(x, t, reduction=reduction, ignore_index=ignore_index, label_smoothing=smoothing)


def torch_ce_grad(x, t, g, reduction, ignore_index=-100, smoothing=0.0):
    x = x.detach().clone().requires_grad_()
    torch_ce(x, t, reduction, ignore_index, smoothing).backward(g.to(x.dtype))
    return x.grad


def check(x, t, reduction, ignore_index=-100, smoothing=0.0, x_view=None, gen=None):
    xv = x if x_view is None else x_view
    loss, stats = forward(xv, t, reduction, ignore_index, smoothing)
    assert loss.dtype == x.dtype
    assert_close(loss, torch_ce(x, t, reduction, ignore_index, smoothing),
                 torch_ce(x.double(), t, reduction, ignore_index, smoothing), "loss")
    g = randn(loss.shape, x.dtype, gen, "cuda")
    got = backward(xv, t, stats, g, reduction, ignore_index, smoothing)
    assert_close(got, torch_ce_grad(x, t, g, reduction, ignore_index, smoothing),
                 torch_ce_grad(x.double(), t, g.double(), reduction, ignore_index, smoothing), "dlogits")


def targets(n, c, gen, ignore_index=None, ignored_every=0):
    t = torch.randint(0, c, (n,), generator=gen)
    if ignored_every:
        t[::ignored_every] = ignore_index
    return t.cuda()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 17), (33, 65), (4, 1025), (3, 4099), (257, 1000)])
def test_cross_entropy(shape, dtype, reduction, rng):
    x = randn(shape, dtype, rng, "cuda") * 3
    check(x, targets(shape[0], shape[1], rng), reduction, gen=rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vocab", [32000, 50257, 131072, 262144])
def test_large_vocabularies(vocab, dtype, rng):
    rows = 16 if vocab > 100000 else 32
    x = randn((rows, vocab), dtype, rng, "cuda") * 2
    for reduction in ("mean", "none"):
        check(x, targets(rows, vocab, rng), reduction, gen=rng)
    check(x, targets(rows, vocab, rng, -100, 5), "mean", smoothing=0.1, gen=rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_ignore_index_and_smoothing(reduction, smoothing, dtype, rng):
    x = randn((67, 129), dtype, rng, "cuda") * 2
    check(x, targets(67, 129, rng, -100, 3), reduction, smoothing=smoothing, gen=rng)
    # An ignore_index inside [0, C): those rows are ignored, not scored.
    check(x, targets(67, 129, rng, 5, 4), reduction, ignore_index=5, smoothing=smoothing, gen=rng)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_rows_ignored(reduction):
    x = torch.randn(5, 9, device="cuda")
    t = torch.full((5,), -100, device="cuda")
    loss, stats = forward(x, t, reduction)
    expect = torch_ce(x, t, reduction)
    torch.testing.assert_close(loss, expect, equal_nan=True)  # mean of none: NaN, as torch
    g = torch.ones(loss.shape, device="cuda")
    assert torch.equal(backward(x, t, stats, g, reduction), torch.zeros_like(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_extremes(dtype, smoothing, rng):
    x = randn((6, 300), torch.float32, rng) * 2
    x[0] = 1e4 + x[0]                 # large magnitude: lse - x_t must not cancel badly
    x[1, :150] = -float("inf")        # masked classes
    x[2, 7] = 90.0                    # one dominant class
    x[3] = -1e4 + x[3]
    x[4, 3] = 3e38
    x = x.to(dtype).cuda()
    t = torch.tensor([0, 200, 7, 1, 3, 299], device="cuda")
    check(x, t, "none", smoothing=smoothing, gen=rng)


def test_nan_rows_as_torch():
    x = torch.randn(3, 10, device="cuda")
    x[1, 4] = float("nan")
    t = torch.tensor([1, 2, 3], device="cuda")
    loss, _ = forward(x, t, "none")
    torch.testing.assert_close(loss, torch_ce(x, t, "none"), equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_targets_out_of_range_give_nan_rows(reduction):
    x = torch.randn(4, 6, device="cuda")
    t = torch.tensor([0, 6, -3, 2], device="cuda")  # rows 1 and 2 neither in [0, 6) nor ignore_index
    loss, stats = forward(x, t, reduction)
    if reduction == "none":
        assert loss[[1, 2]].isnan().all() and not loss[[0, 3]].isnan().any()
    else:
        assert loss.isnan()
    grad = backward(x, t, stats, torch.ones(loss.shape, device="cuda"), reduction)
    assert grad[[1, 2]].isnan().all() and not grad[[0, 3]].isnan().any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_strided_logits_and_grad(dtype, transpose, rng):
    x = randn((45, 3000), dtype, rng, "cuda")
    t = targets(45, 3000, rng)
    check(x, t, "mean", x_view=nan_gapped(x, 2, transpose), gen=rng)
    loss, stats = forward(x, t, "sum")
    out = nan_gapped(poisoned((45, 3000), dtype, "cuda"), 3, not transpose)
    ptr = out.data_ptr()
    g = torch.ones((), dtype=dtype, device="cuda")
    backward(x, t, stats, g, "sum", out=out)
    assert out.data_ptr() == ptr
    assert_close(out, torch_ce_grad(x, t, g, "sum"), torch_ce_grad(x.double(), t, g.double(), "sum"))


def test_misaligned_rows(rng):
    base = randn((20, 5001), torch.bfloat16, rng, "cuda")
    x = base[:, 1:]  # rows one element in, 5001 apart: no 16-byte packs
    check(x.contiguous(), targets(20, 5000, rng), "none", x_view=x, gen=rng)


def test_stats_are_max_and_log_sum_exp(rng):
    x = randn((9, 777), torch.float32, rng, "cuda") * 5
    _, stats = forward(x, targets(9, 777, rng), "mean")
    x64 = x.double()
    m = x64.max(-1).values
    torch.testing.assert_close(stats[:, 0], m, rtol=0, atol=0)
    torch.testing.assert_close(stats[:, 1], (x64 - m[:, None]).exp().sum(-1).log(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_deterministic(reduction, rng):
    x = randn((4096, 3000), torch.bfloat16, rng, "cuda")
    t = targets(4096, 3000, rng, -100, 7)
    runs = [forward(x, t, reduction, smoothing=0.1) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    g = randn(runs[0][0].shape, torch.bfloat16, rng, "cuda")
    assert torch.equal(backward(x, t, runs[0][1], g, reduction, smoothing=0.1),
                       backward(x, t, runs[0][1], g, reduction, smoothing=0.1))


def test_zero_rows():
    x = torch.empty(0, 5, device="cuda")
    t = torch.empty(0, dtype=torch.int64, device="cuda")
    for reduction in REDUCTIONS:
        loss, stats = forward(x, t, reduction)
        torch.testing.assert_close(loss, torch_ce(x, t, reduction), equal_nan=True)
        g = torch.ones(loss.shape, device="cuda")
        assert backward(x, t, stats, g, reduction).shape == (0, 5)


def test_bad_arguments():
    k, s = kernels(), stream()
    x, t = torch.randn(4, 5, device="cuda"), torch.tensor([0, 1, 2, 2], device="cuda")
    loss, stats = torch.empty((), device="cuda"), torch.empty(4, 2, dtype=torch.float64, device="cuda")
    cases = [
        (ValueError, "logits must be on a CUDA device",
         lambda: k.cross_entropy_forward(x.cpu(), t.cpu(), loss.cpu(), stats.cpu(), "mean", -100, 0.0, s)),
        (ValueError, "target must be on the device of logits",
         lambda: k.cross_entropy_forward(x, t.cpu(), loss, stats, "mean", -100, 0.0, s)),
        (TypeError, "target must be int64",
         lambda: k.cross_entropy_forward(x, t.int(), loss, stats, "mean", -100, 0.0, s)),
        (ValueError, r"target must be \(N,\)",
         lambda: k.cross_entropy_forward(x, t[:3], loss, stats, "mean", -100, 0.0, s)),
        (TypeError, "logits must be float32 or bfloat16",
         lambda: k.cross_entropy_forward(x.double(), t, loss.double(), stats, "mean", -100, 0.0, s)),
        (ValueError, "reduction must be", lambda: k.cross_entropy_forward(x, t, loss, stats, "avg", -100, 0.0, s)),
        (ValueError, "label_smoothing must be in",
         lambda: k.cross_entropy_forward(x, t, loss, stats, "mean", -100, 1.5, s)),
        (TypeError, "stats must be float64",
         lambda: k.cross_entropy_forward(x, t, loss, stats.float(), "mean", -100, 0.0, s)),
        (ValueError, "out must be a 0-dimensional array",
         lambda: k.cross_entropy_forward(x, t, torch.empty(4, device="cuda"), stats, "mean", -100, 0.0, s)),
        (ValueError, "grad_loss must be on the device of logits",
         lambda: k.cross_entropy_backward(x, t, stats, loss.cpu(), torch.empty_like(x), "mean", -100, 0.0, s)),
        (ValueError, "out overlaps logits",
         lambda: k.cross_entropy_backward(x, t, stats, loss, x, "mean", -100, 0.0, s)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
