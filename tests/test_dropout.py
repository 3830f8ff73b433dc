"""Dropout: the mask against a pure-Python Philox4x32-10 (itself checked on
Random123's known-answer vectors), determinism across threads, ISAs and
layouts, keep rate, scaling, edge cases and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastnn
from helpers import nan_gapped, poisoned, randn

DTYPES = [torch.float32, torch.bfloat16]
M32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c, k = list(ctr), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M32, (p0 >> 32) ^ c[3] ^ k[1], p0 & M32]
        k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
    return c


def test_philox_known_answers():
    # Random123 kat_vectors, philox4x32 10 rounds.
    assert philox4x32_10([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox4x32_10([M32] * 4, [M32, M32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox4x32_10([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def reference_keep(n, p, seed, offset):
    threshold = math.floor((1.0 - p) * 2**24 + 0.5)
    keep = []
    for i in range(n):
        c = 16 * (i // 64) + i % 16
        words = philox4x32_10([c & M32, c >> 32, offset & M32, offset >> 32], [seed & M32, seed >> 32])
        keep.append((words[(i // 16) % 4] >> 8) < threshold)
    return torch.tensor(keep)


@pytest.mark.parametrize("n", [1, 17, 64, 200, 1031])
def test_mask_matches_reference(n):
    seed, offset, p = 0x1234_5678_9ABC_DEF0, 2**33 + 5, 0.3
    y = fastnn.dropout(torch.ones(n), p, seed=seed, offset=offset)
    assert torch.equal(y != 0, reference_keep(n, p, seed, offset))
    assert torch.all((y == 0) | (y == torch.tensor(1 / 0.7, dtype=torch.float32)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_scale(p, dtype):
    n = 1 << 20
    x = torch.ones(n, dtype=dtype)
    y = fastnn.dropout(x, p, seed=7)
    kept = (y != 0).double().mean().item()
    # Binomial: 6 standard deviations.
    assert abs(kept - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1.0 / (1.0 - p)).to(dtype))


@pytest.mark.single_isa
def test_same_mask_across_threads_and_isas(rng):
    x = randn((333, 1001), torch.float32, rng)
    results = []
    previous_threads, previous_isa = fastnn.get_num_threads(), fastnn._C.isa_active()
    isas = [i for i in ["generic", "avx2", "avx512"] if _isa_available(i)]
    try:
        for isa in isas:
            fastnn._C.set_isa(isa)
            for threads in (1, 2):
                fastnn.set_num_threads(threads)
                results.append(fastnn.dropout(x, 0.4, seed=99, offset=3))
    finally:
        fastnn.set_num_threads(previous_threads)
        fastnn._C.set_isa(previous_isa)
    assert all(torch.equal(results[0], r) for r in results[1:])


def _isa_available(name):
    order = ["generic", "avx2", "avx512"]
    return order.index(name) <= order.index(fastnn._C.isa_detected())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_strided_same_mask_as_contiguous(dtype, transpose, rng):
    x = randn((37, 129), dtype, rng)
    expected = fastnn.dropout(x, 0.25, seed=5)
    out = nan_gapped(poisoned((37, 129), dtype), 2, not transpose)
    ptr = out.data_ptr()
    fastnn.dropout(nan_gapped(x, 3, transpose), 0.25, seed=5, out=out)
    assert out.data_ptr() == ptr
    assert torch.equal(out, expected)
    a = x.float().numpy()
    got = fastnn.dropout(a[::-1], 0.25, seed=5)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, fastnn.dropout(np.ascontiguousarray(a[::-1]), 0.25, seed=5))


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_are_x_times_multiplier(dtype, rng):
    x = randn((4097,), dtype, rng)
    y = fastnn.dropout(x, 0.2, seed=11)
    keep = fastnn.dropout(torch.ones(4097), 0.2, seed=11) != 0
    expected = torch.where(keep, x * (1 / 0.8), torch.zeros_like(x))  # PyTorch's bf16 rounding: float opmath
    assert torch.equal(y, expected)


def test_seed_and_offset_change_the_mask():
    x = torch.ones(4096)
    base = fastnn.dropout(x, 0.5, seed=1)
    assert not torch.equal(base, fastnn.dropout(x, 0.5, seed=2))
    assert not torch.equal(base, fastnn.dropout(x, 0.5, seed=1, offset=1))
    assert torch.equal(base, fastnn.dropout(x, 0.5, seed=1))
    torch.manual_seed(0)
    a = fastnn.dropout(x, 0.5)
    torch.manual_seed(0)
    assert torch.equal(a, fastnn.dropout(x, 0.5))


def test_edge_cases_as_torch():
    x = torch.tensor([1.0, float("inf"), float("nan"), -2.0, 0.5])
    torch.testing.assert_close(fastnn.dropout(x, 1.0, seed=3), torch.nn.functional.dropout(x, 1.0), equal_nan=True)
    assert fastnn.dropout(x, 0.0) is x
    assert fastnn.dropout(x, 0.7, training=False) is x
    out = torch.empty_like(x)
    fastnn.dropout(x, 0.7, training=False, out=out)
    torch.testing.assert_close(out, x, equal_nan=True)
    dropped = fastnn.dropout(torch.full((256,), float("inf")), 0.5, seed=4)
    assert torch.equal(dropped.isnan(), fastnn.dropout(torch.ones(256), 0.5, seed=4) == 0)  # inf * 0, as torch
    assert fastnn.dropout(torch.empty(0, 3), 0.5, seed=1).shape == (0, 3)
    y = fastnn.dropout(x.clone(), 0.5, seed=8)
    z = x.clone()
    assert fastnn.dropout(z, 0.5, seed=8, out=z) is z
    torch.testing.assert_close(z, y, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_regenerates_the_mask(dtype, rng):
    x = randn((65, 33), dtype, rng).requires_grad_()
    g = randn((65, 33), dtype, rng)
    y = fastnn.dropout(x, 0.3, seed=21, offset=8)
    assert y.grad_fn is not None
    y.backward(g)
    mult = fastnn.dropout(torch.ones(65, 33), 0.3, seed=21, offset=8)  # float32: the exact multiplier
    assert torch.equal(x.grad, (g.float() * mult).to(dtype))
    assert torch.equal(fastnn.dropout_backward(g, 0.3, 21, 8), x.grad)
    # p = 1: zero gradients, as torch.
    x1 = torch.ones(10, requires_grad=True)
    fastnn.dropout(x1, 1.0, seed=1).sum().backward()
    assert torch.equal(x1.grad, torch.zeros(10))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        fastnn.dropout(torch.ones(3), 1.5)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        fastnn.dropout_backward(torch.ones(3), -0.1, 1)
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        fastnn.dropout(torch.ones(3, dtype=torch.float64), 0.5, seed=1)
    with pytest.raises(ValueError, match="out overlaps x"):
        x = torch.ones(9)
        fastnn.dropout(x[1:], 0.5, seed=1, out=x[:-1])
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\^64\)"):
        fastnn.dropout(torch.ones(3), 0.5, seed=-1)
