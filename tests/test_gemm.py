"""GEMM (fastnn.matmul) against PyTorch in float64, on every ISA path:
odd shapes, every transpose and stride pattern, batches with broadcast,
the fused epilogue, bf16, bad inputs, determinism and threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _C
from fastnn.testing import assert_close
from helpers import check_sampled, fresh_seeds, nan_gapped, poisoned, randn

ACTIVATIONS = {
    None: lambda x: x,
    "relu": torch.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


def mm_ref(a, b):
    return torch.matmul(a.double(), b.double())


def fused_ref(a, b, c, bias, alpha, beta, activation, dtype=torch.float64):
    """The fused expression evaluated by torch at `dtype` (fp32: torch's own
    rounding, the baseline; float64: the reference)."""
    y = alpha * torch.matmul(a.to(dtype), b.to(dtype))
    if beta != 0.0:
        y = y + beta * c.to(dtype)
    if bias is not None:
        y = y + bias.to(dtype)
    return ACTIVATIONS[activation](y)


def general_strided(t: torch.Tensor) -> torch.Tensor:
    """A view of t's values with no unit stride at all (NaN in the gaps)."""
    buf = torch.full((t.shape[0] * 2, t.shape[1] * 3), float("nan"), dtype=t.dtype)
    view = buf[::2, ::3]
    view.copy_(t)
    return view


SHAPES = [  # (M, N, K)
    (1, 1, 1), (1, 97, 1), (97, 1, 33), (7, 8, 15), (17, 31, 33), (63, 65, 97), (14, 32, 256),
    (15, 33, 257), (1023, 17, 5), (5, 1025, 7), (3, 5, 1025), (2000, 2, 64), (2, 3, 2000), (129, 131, 300),
]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_gemm_shapes(m, n, k, rng):
    a, b = randn((m, k), gen=rng), randn((k, n), gen=rng)
    out = poisoned((m, n))
    fastnn.matmul(a, b, out=out)
    assert_close(out, a @ b, mm_ref(a, b))


def test_gemm_every_row_remainder(rng):
    """M = 15..28 leaves every remainder of the AVX-512 tile's 14 rows (and
    of the AVX2 tile's 6) for the last row tile, which takes a 4- or 8-row
    tile where it fits; each with a bias so the rows' epilogue shows too."""
    n, k = 33, 70
    b, bias = randn((k, n), gen=rng), randn((n,), gen=rng)
    for m in range(15, 29):
        a = randn((m, k), gen=rng)
        out = poisoned((m, n))
        fastnn.matmul(a, b, out=out, bias=bias)
        assert_close(out, torch.addmm(bias, a, b), fused_ref(a, b, None, bias, 1.0, 0.0, None))


@pytest.mark.parametrize("m,n,k", [(0, 5, 3), (5, 0, 3), (0, 0, 0), (4, 5, 0), (0, 5, 0)])
def test_gemm_zero_size(m, n, k, rng):
    a, b = randn((m, k), gen=rng), randn((k, n), gen=rng)
    out = fastnn.matmul(a, b)
    assert out.shape == (m, n)
    assert_close(out, a @ b, mm_ref(a, b))  # K == 0: zeros
    c = randn((m, n), gen=rng)
    bias = randn((n,), gen=rng)
    got = fastnn.matmul(a, b, out=c.clone(), beta=0.5, bias=bias, activation="relu")
    assert_close(got, torch.relu(0.5 * c + bias), torch.relu(0.5 * c.double() + bias.double()))


def layout_view(t, layout, rng):
    if layout == "row":
        return t
    if layout == "col":
        return t.T.contiguous().T
    if layout == "gapped":
        return nan_gapped(t, 2, transpose=bool(rng.initial_seed() % 2))
    return general_strided(t)


@pytest.mark.parametrize("layout_a", ["row", "col", "gapped", "general"])
@pytest.mark.parametrize("layout_b", ["row", "col", "gapped", "general"])
@pytest.mark.parametrize("layout_c", ["row", "col", "general"])
def test_gemm_layouts(layout_a, layout_b, layout_c, rng):
    m, n, k = 37, 45, 300
    a, b = randn((m, k), gen=rng), randn((k, n), gen=rng)

    def view(t, layout):
        return layout_view(t, layout, rng)

    out = view(poisoned((m, n)), layout_c)
    ptr, strides = out.data_ptr(), out.stride()
    fastnn.matmul(view(a, layout_a), view(b, layout_b), out=out)
    assert out.data_ptr() == ptr and out.stride() == strides
    assert_close(out, a @ b, mm_ref(a, b))


def test_gemm_numpy_negative_strides_and_offsets(rng):
    a = randn((33, 70), gen=rng).numpy()
    b = randn((70, 19), gen=rng).numpy()
    buf = np.zeros(70 * 19 + 1, dtype=np.float32)
    b_off = np.frombuffer(buf.tobytes(), np.float32, offset=4).reshape(70, 19).copy()
    b_off[:] = b
    a_neg = a[::-1, ::-1]
    out = fastnn.matmul(a_neg, b_off)
    assert isinstance(out, np.ndarray)
    ta, tb = torch.from_numpy(a_neg.copy()), torch.from_numpy(b)
    assert_close(out, ta @ tb, mm_ref(ta, tb))


@pytest.mark.parametrize("case", ["both", "a_broadcast", "b_broadcast", "b_2d", "a_2d", "expanded"])
def test_gemm_batched(case, rng):
    batch, m, n, k = 5, 19, 23, 41
    a, b = randn((batch, m, k), gen=rng), randn((batch, k, n), gen=rng)
    if case == "a_broadcast":
        a = a[:1]
    elif case == "b_broadcast":
        b = b[:1]
    elif case == "b_2d":
        b = b[0]
    elif case == "a_2d":
        a = a[0]
    elif case == "expanded":
        b = b[0].expand(batch, k, n)  # batch stride 0
    out = fastnn.matmul(a, b)
    assert out.shape == (batch, m, n)
    assert_close(out, torch.matmul(a, b), mm_ref(a, b))


def test_gemm_batched_strided_views(rng):
    a = randn((4, 30, 50), gen=rng)
    b = randn((4, 20, 50), gen=rng).mT  # batch of transposed views
    out = poisoned((30, 4, 20)).transpose(0, 1)  # batch stride smaller than row stride
    fastnn.matmul(a, b, out=out)
    assert_close(out, torch.matmul(a, b), mm_ref(a, b))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)])
def test_gemm_epilogue(activation, with_bias, alpha, beta, rng):
    m, n, k = 45, 71, 300
    a, b = randn((m, k), gen=rng), randn((k, n), gen=rng)
    bias = randn((n,), gen=rng) if with_bias else None
    c = randn((m, n), gen=rng)
    out = c.clone() if beta != 0.0 else poisoned((m, n))  # beta == 0: NaN in C is ignored
    fastnn.matmul(a, b, out=out, alpha=alpha, beta=beta, bias=bias, activation=activation)
    assert_close(out, fused_ref(a, b, c, bias, alpha, beta, activation, torch.float32),
                 fused_ref(a, b, c, bias, alpha, beta, activation))


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "silu"])
def test_gemm_epilogue_column_major_and_strided_out(activation, rng):
    m, n, k = 30, 40, 20
    a, b, bias = randn((m, k), gen=rng), randn((k, n), gen=rng), randn((n,), gen=rng)
    expect = fused_ref(a, b, None, bias, 1.0, 0.0, activation, torch.float32)
    ref = fused_ref(a, b, None, bias, 1.0, 0.0, activation)
    for out in (poisoned((n, m)).T, general_strided(poisoned((m, n)))):
        fastnn.matmul(a, b, out=out, bias=bias, activation=activation)
        assert_close(out, expect, ref)


def test_gemm_extreme_values(rng):
    a, b = randn((20, 40), gen=rng), randn((40, 30), gen=rng)
    a[3, 5], a[7, 0], b[2, 9] = float("nan"), float("inf"), -float("inf")
    assert_close(fastnn.matmul(a, b), a @ b, mm_ref(a, b))
    big = torch.full((4, 8), 3e38)
    assert_close(fastnn.matmul(big, torch.ones(8, 4)), big @ torch.ones(8, 4), mm_ref(big, torch.ones(8, 4)))


@pytest.fixture(params=[True, False], ids=["amx", "no_amx"])
def bf16_kernel(request, isa):
    """Runs a bf16 GEMM test on the AMX kernel (where the CPU and OS have
    it) and on the kernel below it; checks dispatch picked it."""
    if request.param and _C.bf16_gemm_variant() != "amx":
        pytest.skip("no AMX on this path (CPU, OS grant or compiler)")
    _C.set_bf16_amx(request.param)
    try:
        below = "avx512_bf16" if isa == "avx512" and _C.cpu_features()["avx512_bf16"] else isa
        assert _C.bf16_gemm_variant() == ("amx" if request.param else below)
        yield request.param
    finally:
        _C.set_bf16_amx(True)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (17, 33, 7), (63, 65, 97), (129, 47, 515), (5, 1025, 64)])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_gemm_bf16(m, n, k, out_dtype, bf16_kernel, rng):
    a, b = randn((m, k), torch.bfloat16, rng), randn((k, n), torch.bfloat16, rng)
    out = poisoned((m, n), out_dtype)
    fastnn.matmul(a, b, out=out)
    baseline = a @ b if out_dtype == torch.bfloat16 else a.float() @ b.float()
    assert_close(out, baseline, mm_ref(a, b))


@pytest.mark.parametrize("activation", [None, "gelu", "silu"])
@pytest.mark.parametrize("bias_dtype", [torch.bfloat16, torch.float32])
def test_gemm_bf16_epilogue_and_layouts(activation, bias_dtype, bf16_kernel, rng):
    m, n, k = 37, 50, 301
    a, b = randn((m, k), torch.bfloat16, rng), randn((n, k), torch.bfloat16, rng)
    bias = randn((n,), bias_dtype, rng)
    out = fastnn.matmul(nan_gapped(a, 2), b.T, bias=bias, activation=activation)
    assert out.dtype == torch.bfloat16
    baseline = ACTIVATIONS[activation](F.linear(a, b, bias.to(torch.bfloat16)))
    assert_close(out, baseline, fused_ref(a, b.T, None, bias, 1.0, 0.0, activation))


def test_gemm_bf16_batched_broadcast(bf16_kernel, rng):
    a, b = randn((3, 20, 33), torch.bfloat16, rng), randn((33, 40), torch.bfloat16, rng)
    out = fastnn.matmul(a, b.expand(3, 33, 40))
    assert_close(out, torch.matmul(a, b), mm_ref(a, b))


# Every packing path of A and B (row-major, transposed, general strides) and
# K within one KC block and past one (KC is at most 2048 bf16 values for the
# vdpbf16ps kernel, 2048-4096 for AMX with a 1-2 MiB L2; odd K: a padded pair, K % 32 != 0: a padded AMX chunk; K > 256 into
# float32 C: the AMX kernel's blocks of tile sums), into float32 and bfloat16 C.
@pytest.mark.parametrize("layout_a", ["row", "col", "general"])
@pytest.mark.parametrize("layout_b", ["row", "col", "general"])
@pytest.mark.parametrize("k", [31, 64, 701, 4500])
def test_gemm_bf16_layouts_and_k_blocks(layout_a, layout_b, k, bf16_kernel, rng):
    m, n = 70, 45
    a, b = randn((m, k), torch.bfloat16, rng), randn((k, n), torch.bfloat16, rng)
    for out_dtype in (torch.float32, torch.bfloat16):
        out = poisoned((m, n), out_dtype)
        fastnn.matmul(layout_view(a, layout_a, rng), layout_view(b, layout_b, rng), out=out)
        baseline = a @ b if out_dtype == torch.bfloat16 else a.float() @ b.float()
        assert_close(out, baseline, mm_ref(a, b))


@pytest.mark.parametrize("m,k,n,a_transposed", [(300, 257, 500, False), (96, 2048, 96, True), (1000, 64, 40, False)])
def test_gemm_deterministic_across_calls_and_threads(rng, m, k, n, a_transposed):
    """The threads' rectangles change with the thread count (and with the
    shape: row or column splits); every C element's sum does not."""
    a = randn((k, m), gen=rng).T if a_transposed else randn((m, k), gen=rng)
    b = randn((k, n), gen=rng)
    first = fastnn.matmul(a, b)
    assert torch.equal(first, fastnn.matmul(a, b))
    threads = fastnn.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3, 4):
            fastnn.set_num_threads(t)
            results.append(fastnn.matmul(a, b))
    finally:
        fastnn.set_num_threads(threads)
    assert all(torch.equal(first, r) for r in results)


@pytest.mark.parametrize("m,k,n", [(96, 2048, 96), (100, 300, 70), (13, 64, 31)])
def test_gemm_in_place_slivers_match_packed(rng, m, k, n):
    """A with unit row stride and B with unit column stride, k steps less
    than 2 KiB apart, are read where they lie (whole slivers; the edge ones
    packed): the same sums as the packed path, which operands whose k steps
    are 2 KiB (512 floats) or farther (640) apart take. All layouts bitwise
    against each other and against float64."""
    a_values, b_values = randn((m, k), gen=rng), randn((k, n), gen=rng)

    def rows_apart(values, step):  # values (k, cols) as rows `step` floats apart
        buffer = torch.zeros(k, step)[:, :values.shape[1]]
        buffer.copy_(values)
        return buffer

    near_a = a_values.T.contiguous().T              # (m, k), k steps m floats apart
    far_a, aligned_a = rows_apart(a_values.T, 640).T, rows_apart(a_values.T, 512).T
    near_b = b_values                                # k steps n floats apart
    far_b, aligned_b = rows_apart(b_values, 640), rows_apart(b_values, 512)
    in_place = fastnn.matmul(near_a, near_b)
    for a, b in [(far_a, far_b), (near_a, far_b), (far_a, near_b), (aligned_a, aligned_b), (aligned_a, near_b),
                 (near_a, aligned_b)]:
        assert torch.equal(in_place, fastnn.matmul(a, b))
    assert_close(in_place, a_values @ b_values, mm_ref(a_values, b_values))


# Few rows (or columns) of C with A's rows and B's columns contiguous along K
# (a Linear layer at a few tokens: x @ weight.T) are dot products of
# K-vectors read in place (gemm_dots.h), for M <= 8 with K >= 16 M and M <=
# 16 (two groups of rows) with K >= 32 M: K within one register block (256)
# and past it, K not a multiple of the vector width, the transposed case
# (N <= 8 < M), and shapes just outside the path.
ROW_DOT_SHAPES = [  # (M, N, K)
    (1, 1000, 16), (1, 17, 4099), (2, 37, 33), (3, 50, 1025), (4, 8, 64), (5, 97, 300), (7, 48, 112),
    (8, 130, 4096), (300, 5, 200), (9, 8, 257), (9, 40, 300), (13, 33, 1000), (16, 50, 520), (70, 16, 600),
    (8, 40, 127), (16, 40, 500), (17, 40, 700),
]


@pytest.mark.parametrize("m,n,k", ROW_DOT_SHAPES)
def test_gemm_row_dots(m, n, k, rng):
    a, w = randn((m, k), gen=rng), randn((n, k), gen=rng)
    out = poisoned((m, n))
    fastnn.matmul(a, w.T, out=out)
    assert_close(out, a @ w.T, mm_ref(a, w.T))
    threads = fastnn.get_num_threads()
    try:
        for t in (1, 3):
            fastnn.set_num_threads(t)
            assert torch.equal(fastnn.matmul(a, w.T), out)
    finally:
        fastnn.set_num_threads(threads)


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"])
@pytest.mark.parametrize("layout_c", ["row", "col", "general"])
@pytest.mark.parametrize("m,n", [(3, 70), (70, 3)])
def test_gemm_row_dots_epilogue(activation, layout_c, m, n, rng):
    k = 300
    a, w, bias = randn((m, k), gen=rng), randn((n, k), gen=rng), randn((n,), gen=rng)
    c = randn((m, n), gen=rng)
    out = layout_view(c.clone(), layout_c, rng)
    fastnn.matmul(a, w.T, out=out, alpha=0.5, beta=2.0, bias=bias, activation=activation)
    baseline = fused_ref(a, w.T, c, bias, 0.5, 2.0, activation, torch.float32)
    assert_close(out, baseline, fused_ref(a, w.T, c, bias, 0.5, 2.0, activation))


def test_gemm_row_dots_batched(rng):
    a, w = randn((4, 3, 130), gen=rng), randn((70, 130), gen=rng)
    out = fastnn.matmul(a, w.T.expand(4, 130, 70))
    assert_close(out, a @ w.T, mm_ref(a, w.T))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_gemm_row_dots_bf16(out_dtype, bf16_kernel, rng):
    a, w = randn((3, 515), torch.bfloat16, rng), randn((50, 515), torch.bfloat16, rng)
    bias = randn((50,), gen=rng)
    out = poisoned((3, 50), out_dtype)
    fastnn.matmul(a, w.T, out=out, bias=bias)
    baseline = F.linear(a, w, bias.to(torch.bfloat16)) if out_dtype == torch.bfloat16 else \
        F.linear(a.float(), w.float(), bias)
    assert_close(out, baseline, fused_ref(a, w.T, None, bias, 1.0, 0.0, None))


def test_gemm_concurrent_python_threads(rng):
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(randn((70, 90), gen=rng), randn((90, 60), gen=rng)) for _ in range(8)]
    serial = [fastnn.matmul(a, b) for a, b in pairs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda p: fastnn.matmul(*p), pairs))
    assert all(torch.equal(s, p) for s, p in zip(serial, parallel))


@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(0, 300), ta=st.booleans(), tb=st.booleans(),
       tc=st.booleans(), seed=fresh_seeds())
def test_gemm_hypothesis(m, n, k, ta, tb, tc, seed):
    def trial(gen, sample):
        a, b = randn((m, k), gen=gen), randn((k, n), gen=gen)
        av = a.T.contiguous().T if ta else a
        bv = b.T.contiguous().T if tb else b
        out = poisoned((n, m)).T if tc else poisoned((m, n))
        fastnn.matmul(av, bv, out=out)
        sample.add("c", out, a @ b, mm_ref(a, b))

    check_sampled(trial, seed)


@pytest.mark.single_isa
def test_gemm_bad_inputs():
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    cases = [
        (lambda: fastnn.matmul(a, torch.randn(4, 6)), ValueError, "b must have 5 rows"),
        (lambda: fastnn.matmul(a.double(), b.double()), TypeError, "a must be float32 or bfloat16"),
        (lambda: fastnn.matmul(a, b.bfloat16()), TypeError, "b must have the dtype of a"),
        (lambda: fastnn.matmul(a, b, out=torch.empty(4, 7)), ValueError, "out must have shape \\(4, 6\\)"),
        (lambda: fastnn.matmul(a, b, out=torch.empty(4, 6, dtype=torch.bfloat16)), TypeError, "out must be float32"),
        (lambda: fastnn.matmul(a, b, out=torch.empty(4, 6, dtype=torch.float64)), TypeError, "out must be float32"),
        (lambda: fastnn.matmul(a, b, bias=torch.randn(5)), ValueError, "bias must have shape \\(6,\\)"),
        (lambda: fastnn.matmul(a, b, bias=torch.randn(6).double()), TypeError, "bias must be float32"),
        (lambda: fastnn.matmul(a, b, activation="tanh"), ValueError, "activation must be one of"),
        (lambda: fastnn.matmul(a, b, activation=1), TypeError, "activation must be None or a str"),
        (lambda: fastnn.matmul(a, b, beta=1.0), ValueError, "beta != 0 reads out"),
        (lambda: fastnn.matmul(torch.randn(5), b), ValueError, "a must be 2-D"),
        (lambda: fastnn.matmul(a, torch.randn(1, 1, 5, 6)), ValueError, "b must be 2-D"),
        (lambda: fastnn.matmul(torch.randn(2, 4, 5), torch.randn(3, 5, 6)), ValueError, "batch sizes"),
        (lambda: fastnn.matmul(torch.randn(2, 4, 5), b, out=torch.empty(4, 6)), ValueError, "out must have shape"),
        (lambda: fastnn.matmul(a, b, out=torch.empty(1, 6).expand(4, 6)), ValueError, "out is a broadcast view"),
        (lambda: fastnn.matmul(torch.randn(4, 5, requires_grad=True), b), TypeError, "a requires grad"),
        (lambda: fastnn.matmul("x", b), TypeError, "a must be an array"),
        (lambda: fastnn.matmul(a, b, out="x"), TypeError, "out must be a writable array"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()
    buf = torch.randn(40)
    with pytest.raises(ValueError, match="out overlaps a"):
        fastnn.matmul(buf[:20].view(4, 5), torch.randn(5, 5), out=buf[10:35].view(5, 5)[:4])
    with pytest.raises(ValueError, match="out overlaps bias"):
        fastnn.matmul(torch.randn(1, 5), torch.randn(5, 6), out=buf[:6].view(1, 6), bias=buf[:6])
    ro = np.zeros((4, 6), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out is read-only"):
        fastnn.matmul(a.numpy(), b.numpy(), out=ro)
