"""int8 quantization against PyTorch: quantize/dequantize bit-exact with
torch.quantize_per_tensor/per_channel, the int8 GEMM bit-exact with
torch._int_mm on every ISA path and GEMM variant (AMX, VNNI, neither), the fused
epilogue and both QuantLinear modes against float64 references, and the model
swap of fastnn.quantize."""

from __future__ import annotations

import io
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import _C
from fastnn.nn import QuantLinear
from fastnn.testing import assert_close
from helpers import check_sampled, fresh_seeds, nan_gapped, randn

MAX_K = 131071


def randint8(shape, gen):
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)


INT8_MODES = ("amx", "vnni", "no_vnni")


def set_int8_mode(mode: str):
    """Lets dispatch take AMX ("amx"), at most VNNI ("vnni"), or neither."""
    _C.set_int8_amx(mode == "amx")
    _C.set_int8_vnni(mode != "no_vnni")


def expected_variant(isa: str, mode: str) -> str:
    f = _C.cpu_features()
    if mode == "amx" and isa == "avx512" and f["amx_int8"]:
        return "amx_int8"
    if mode != "no_vnni" and isa == "avx512" and f["avx512_vnni"]:
        return "avx512_vnni"
    if mode != "no_vnni" and isa in ("avx2", "avx512") and f["avx_vnni"]:
        return "avx2_vnni"
    return isa


@pytest.fixture(params=INT8_MODES)
def variant(request, isa):
    """Runs a GEMM test on each int8 GEMM variant of the path that this CPU
    has: AMX, VNNI, and the vpmaddwd/portable one; checks dispatch picked it."""
    mode = request.param
    want = expected_variant(isa, mode)
    if mode == "amx" and want != "amx_int8":
        pytest.skip("no AMX variant on this path")
    if mode == "vnni" and want == isa:
        pytest.skip("no VNNI variant on this path")
    set_int8_mode(mode)
    try:
        assert _C.int8_gemm_variant() == want
        yield want
    finally:
        set_int8_mode("amx")


# ---- quantize / dequantize -------------------------------------------------

def torch_q_tensor(x, scale):
    return torch.quantize_per_tensor(x.float(), float(scale), 0, torch.qint8).int_repr()


def torch_q_channel(x, scales, axis):
    zp = torch.zeros(scales.numel(), dtype=torch.long)
    return torch.quantize_per_channel(x.float(), scales.double(), zp, axis, torch.qint8).int_repr()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (65, 257), (3, 1025)])
def test_quantize_matches_torch(shape, dtype, rng):
    x = (randn(shape, torch.float32, rng) * 40).to(dtype)
    scale = 0.37
    assert torch.equal(fastnn.quantize_per_tensor(x, scale), torch_q_tensor(x, scale))
    for axis in (0, 1):
        scales = torch.rand(shape[axis], generator=rng) * 0.5 + 0.05
        assert torch.equal(fastnn.quantize_per_channel(x, scales, axis), torch_q_channel(x, scales, axis))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_ties_saturation_and_nan():
    # Power-of-two scales make x * (1/scale) exact, so every .5 is a true tie.
    ties = torch.arange(-140, 140, dtype=torch.float32) + 0.5
    extremes = torch.tensor([float("inf"), -float("inf"), 3.4e38, -3.4e38, 1e-45, -0.0, 127.49, -128.5])
    x = torch.cat([ties, extremes]).reshape(1, -1) * 0.25
    ref = torch_q_tensor(x, 0.25)
    out = fastnn.quantize_per_tensor(x, 0.25)
    assert torch.equal(out, ref)
    assert out[0, :4].tolist() == [-128, -128, -128, -128] and int(out[0, 140]) == 0  # 0.5 rounds to even 0
    xt = x.t().contiguous()
    assert torch.equal(fastnn.quantize_per_channel(xt, torch.full((xt.shape[0],), 0.25), 0),
                       torch_q_channel(xt, torch.full((xt.shape[0],), 0.25), 0))
    nan = torch.tensor([[float("nan"), 1.0]])
    assert fastnn.quantize_per_tensor(nan, 1.0).tolist() == [[0, 1]]  # documented: NaN -> 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_strided_and_numpy(rng):
    x = randn((37, 129), torch.float32, rng) * 10
    scales = torch.rand(37, generator=rng) + 0.1
    ref = torch_q_channel(x, scales, 0)
    for view in (nan_gapped(x, 3), nan_gapped(x, 2, transpose=True)):
        out = torch.zeros(129 * 2, 37, dtype=torch.int8)[::2].t()
        ptr = out.data_ptr()
        fastnn.quantize_per_channel(view, nan_gapped(scales.reshape(1, -1), 2).reshape(-1), 0, out=out)
        assert out.data_ptr() == ptr and torch.equal(out, ref)
    xn = x.numpy()[::-1]
    q = fastnn.quantize_per_tensor(xn, 0.1)
    assert isinstance(q, np.ndarray) and np.array_equal(q, torch_q_tensor(torch.from_numpy(xn.copy()), 0.1).numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize(dtype, rng):
    q = randint8((33, 65), rng)
    s = torch.rand(65, generator=rng) + 0.01
    assert torch.equal(fastnn.dequantize(q, s, axis=1, dtype=str(dtype)[6:]), (q.float() * s).to(dtype))
    assert torch.equal(fastnn.dequantize(q, 0.3), q.float() * torch.tensor(0.3))
    s0 = torch.rand(33, generator=rng) + 0.01
    assert torch.equal(fastnn.dequantize(q.t(), s0, axis=1), q.t().float() * s0)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_rows(dtype, rng):
    x = (randn((65, 300), torch.float32, rng) * 5).to(dtype)
    x[3] = 0
    x[5, 7] = float("inf")
    q, scale = fastnn.quantize_rows(x)
    absmax = x.float().abs().amax(dim=1)
    ok = torch.isfinite(absmax)
    assert torch.equal(scale[ok], absmax[ok] / 127) and scale[5].isnan() and scale[3] == 0
    assert torch.equal(q[3], torch.zeros(300, dtype=torch.int8)) and torch.equal(q[5], torch.zeros_like(q[5]))
    rows = ok & (scale > 0)
    assert torch.equal(q[rows], torch_q_channel(x[rows], scale[rows], 0))
    smooth_inv = torch.rand(300, generator=rng) + 0.5
    qs, ss = fastnn.quantize_rows(nan_gapped(x, 2), smooth_inv)
    xs = x.float() * smooth_inv
    assert torch.equal(ss[rows], xs[rows].abs().amax(dim=1) / 127)
    assert torch.equal(qs[rows], torch_q_channel(xs[rows], ss[rows], 0))


# ---- int8 GEMM -------------------------------------------------------------

SHAPES = [(1, 1, 1), (1, 4096, 33), (7, 8, 15), (17, 33, 65), (63, 129, 31), (97, 1023, 130), (6, 1025, 64),
          (40, 2100, 33)]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int8_mm_exact(m, k, n, variant, rng):
    a, b = randint8((m, k), rng), randint8((k, n), rng)
    out = torch.full((m, n), 12345, dtype=torch.int32)
    fastnn.int8_mm(a, b, out=out)
    assert torch.equal(out, torch._int_mm(a, b))


@settings(max_examples=15, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(0, 300), n=st.integers(1, 150), seed=fresh_seeds())
def test_int8_mm_random_shapes(m, k, n, seed):
    gen = torch.Generator().manual_seed(seed)
    try:
        for mode in INT8_MODES:
            set_int8_mode(mode)
            a, b = randint8((m, k), gen), randint8((k, n), gen)
            assert torch.equal(fastnn.int8_mm(a, b), (a.long() @ b.long()).int())
    finally:
        set_int8_mode("amx")


def test_int8_mm_extremes_at_max_k(variant):
    a = torch.full((7, MAX_K), -128, dtype=torch.int8)
    b = torch.full((MAX_K, 17), -128, dtype=torch.int8)
    b[:, 1] = 127
    b[::2, 2] = 127
    ref = a.long() @ b.long()
    assert int(ref.max()) == 128 * 128 * MAX_K <= 2**31 - 1
    assert torch.equal(fastnn.int8_mm(a, b).long(), ref)
    with pytest.raises(ValueError, match="K = 131072 exceeds 131071"):
        fastnn.int8_mm(torch.zeros(1, MAX_K + 1, dtype=torch.int8), torch.zeros(MAX_K + 1, 1, dtype=torch.int8))


def test_int8_mm_strided(variant, rng):
    a, b = randint8((45, 70), rng), randint8((70, 50), rng)
    ref = torch._int_mm(a, b)
    a_t = a.t().contiguous().t()
    b_gap = torch.zeros(70, 150, dtype=torch.int8)[:, ::3]
    b_gap.copy_(b)
    out = torch.zeros(50, 45, dtype=torch.int32).t()
    ptr = out.data_ptr()
    fastnn.int8_mm(a_t, b_gap, out=out)
    assert out.data_ptr() == ptr and torch.equal(out, ref)
    an, bn = a.numpy()[::-1], b.numpy()[:, ::-1]
    assert np.array_equal(fastnn.int8_mm(an, bn), an.astype(np.int64) @ bn.astype(np.int64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,k,n", [(1, 64, 1), (33, 257, 65), (100, 512, 130), (9, 2053, 40)])
def test_int8_mm_dequant_epilogue(m, k, n, dtype, variant, rng):
    def trial(gen, sample):
        a, b = randint8((m, k), gen), randint8((k, n), gen)
        rs, cs = torch.rand(m, generator=gen) * 1e-2, torch.rand(n, generator=gen) * 1e-2
        bias = randn((n,), torch.float32, gen)
        out = fastnn.int8_mm_dequant(a, b, rs, cs, bias, dtype=str(dtype)[6:])
        exact = (a.long() @ b.long()).double()
        ref = exact * rs.double()[:, None] * cs.double() + bias.double()
        torch_out = (torch._int_mm(a, b).float() * rs[:, None] * cs + bias).to(dtype)
        assert out.dtype == dtype
        sample.add("with bias", out, torch_out, ref)
        no_bias = fastnn.int8_mm_dequant(a, b, rs, cs, dtype=str(dtype)[6:])
        sample.add("no bias", no_bias, (torch._int_mm(a, b).float() * rs[:, None] * cs).to(dtype),
                   exact * rs.double()[:, None] * cs.double())

    check_sampled(trial, rng)


def test_int8_mm_zero_sizes(variant):
    z = torch.zeros
    assert fastnn.int8_mm(z(0, 5, dtype=torch.int8), z(5, 3, dtype=torch.int8)).shape == (0, 3)
    assert fastnn.int8_mm(z(4, 5, dtype=torch.int8), z(5, 0, dtype=torch.int8)).shape == (4, 0)
    assert torch.equal(fastnn.int8_mm(z(4, 0, dtype=torch.int8), z(0, 3, dtype=torch.int8)),
                       torch.zeros(4, 3, dtype=torch.int32))
    bias = torch.arange(3, dtype=torch.float32)
    out = fastnn.int8_mm_dequant(z(4, 0, dtype=torch.int8), z(0, 3, dtype=torch.int8), torch.ones(4),
                                 torch.ones(3), bias)
    assert torch.equal(out, bias.expand(4, 3))


@pytest.mark.single_isa
def test_int8_mm_bad_inputs():
    a, b = torch.zeros(4, 8, dtype=torch.int8), torch.zeros(8, 3, dtype=torch.int8)
    with pytest.raises(TypeError, match="a must be int8"):
        fastnn.int8_mm(a.float(), b)
    with pytest.raises(ValueError, match=r"b must have shape \(K, N\) with K = a.shape\[1\] = 8"):
        fastnn.int8_mm(a, b[:5])
    with pytest.raises(ValueError, match="a must be 2-D"):
        fastnn.int8_mm(a.reshape(2, 2, 8), b)
    with pytest.raises(TypeError, match="out must be int32"):
        fastnn.int8_mm(a, b, out=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"out must have shape \(4, 3\)"):
        fastnn.int8_mm(a, b, out=torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="broadcast"):
        fastnn.int8_mm(a, b, out=torch.zeros(1, 3, dtype=torch.int32).expand(4, 3))
    buf = np.zeros((4, 3), dtype=np.int32)
    buf.setflags(write=False)
    with pytest.raises(ValueError, match="out is read-only"):
        fastnn.int8_mm(a.numpy(), b.numpy(), out=buf)
    with pytest.raises(ValueError, match=r"row_scale must have shape \(4,\)"):
        fastnn.int8_mm_dequant(a, b, torch.ones(3), torch.ones(3))
    with pytest.raises(TypeError, match="col_scale must be float32"):
        fastnn.int8_mm_dequant(a, b, torch.ones(4), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="overlaps"):
        shared = torch.zeros(100, dtype=torch.float32)
        fastnn.int8_mm_dequant(a, b, shared[:4], torch.ones(3), out=shared[:12].view(4, 3))
    with pytest.raises(ValueError, match="scale must be positive and finite"):
        fastnn.quantize_per_tensor(torch.ones(2, 2), 0.0)
    with pytest.raises(ValueError, match="scale must have 2 elements"):
        fastnn.quantize_per_channel(torch.ones(2, 3), torch.ones(3), axis=0)
    with pytest.raises(ValueError, match="axis must be None, 0 or 1"):
        fastnn.quantize_per_channel(torch.ones(2, 3), torch.ones(3), axis=2)
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        fastnn.quantize_rows(torch.ones(2, 3, dtype=torch.float64))


def test_int8_mm_deterministic_and_thread_safe(variant, rng):
    a, b = randint8((130, 300), rng), randint8((300, 70), rng)
    ref = torch._int_mm(a, b)
    results = [None] * 4

    def work(i):
        results[i] = fastnn.int8_mm(a, b)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, ref) for r in results)


# ---- QuantLinear -----------------------------------------------------------

def make_linear(k, n, gen, bias=True):
    lin = torch.nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(randn((n, k), torch.float32, gen) / k**0.5)
        if bias:
            lin.bias.copy_(randn((n,), torch.float32, gen))
    return lin


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,k,n", [(1, 64, 48), (37, 129, 65), (130, 256, 17)])
def test_quant_linear_dynamic_matches_int8_reference(m, k, n, dtype, variant, rng):
    lin = make_linear(k, n, rng)
    q = QuantLinear.from_float(lin, "dynamic")
    x = randn((m, k), dtype, rng)
    y = q(x)
    qx, xs = fastnn.quantize_rows(x)
    exact = (qx.long() @ q.weight_int8.long().t()).double()
    ref = exact * xs.double()[:, None] * q.weight_scale.double() + q.bias.double()
    torch_out = (torch._int_mm(qx, q.weight_int8.t()).float() * xs[:, None] * q.weight_scale + q.bias).to(dtype)
    assert y.dtype == dtype
    assert_close(y, torch_out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m,k,n", [(1, 64, 48), (16, 129, 65), (70, 33, 200)])
def test_quant_linear_weight_only_matches_dequantized(m, k, n, dtype, rng):
    lin = make_linear(k, n, rng)
    q = QuantLinear.from_float(lin, "weight_only")
    x = randn((m, k), dtype, rng)
    w = q.dequantized_weight()
    ref = x.double() @ w.double().t() + q.bias.double()
    torch_out = torch.nn.functional.linear(x, w.to(dtype), q.bias.to(dtype))
    assert_close(q(x), torch_out, ref)
    assert_close(q(nan_gapped(x, 2, transpose=True)), torch_out, ref)


def error_bound(x, q, mode):
    """Worst-case |y_q - y| of per-channel int8 weights (rounding <= scale/2)
    plus, for dynamic, per-row int8 activations."""
    bound = x.double().abs().sum(dim=1, keepdim=True) * q.weight_scale.double() / 2
    if mode == "dynamic":  # y_q - y = sum x (w_q - w) + (x_q - x) w_q
        r = x.double().abs().amax(dim=1, keepdim=True) / 127
        bound = bound + r / 2 * q.dequantized_weight().double().abs().sum(dim=1)
    return bound


@pytest.mark.single_isa
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_quant_linear_error_is_per_channel_int8_and_beats_torch(mode, rng):
    m, k, n = 64, 512, 256
    lin = make_linear(k, n, rng)
    x = randn((m, k), torch.float32, rng)
    q = QuantLinear.from_float(lin, mode)
    with torch.no_grad():
        y = lin(x)
        err = (q(x) - y).double()
        w_err = x.double() @ (q.dequantized_weight().double() - lin.weight.double()).t()
        torch_q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear},
                                                         dtype=torch.qint8)
        torch_err = (torch_q(x) - y).double()
    assert (err.abs() <= error_bound(x, q, mode) + 1e-5).all()
    # Rounding errors of the weights are ~uniform in +-scale/2: rms s/sqrt(12) * ||x||.
    predicted = (q.weight_scale.double()**2 / 12 * (x.double()**2).sum(dim=1, keepdim=True)).mean().sqrt()
    assert 0.7 < float(w_err.pow(2).mean().sqrt() / predicted) < 1.4
    assert err.pow(2).mean() <= torch_err.pow(2).mean()


@pytest.mark.single_isa
@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_quant_linear_state_dict_round_trip(mode, rng):
    q = QuantLinear.from_float(make_linear(40, 24, rng), mode)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = QuantLinear(40, 24, bias=True, mode=mode)
    fresh.load_state_dict(torch.load(buf))
    x = randn((5, 3, 40), torch.float32, rng)
    assert torch.equal(fresh(x), q(x)) and fresh(x).shape == (5, 3, 24)
    assert "packed" not in q.state_dict()
    other = "weight_only" if mode == "dynamic" else "dynamic"
    with pytest.raises(ValueError, match="saved from a QuantLinear in mode"):
        QuantLinear(40, 24, mode=other).load_state_dict(q.state_dict())


@pytest.mark.single_isa
def test_quant_linear_bad_inputs(rng):
    q = QuantLinear.from_float(make_linear(16, 8, rng), "dynamic")
    with pytest.raises(RuntimeError, match="inference-only"):
        q(torch.randn(2, 16, requires_grad=True))
    with pytest.raises(ValueError, match="16 features"):
        q(torch.randn(2, 15))
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        q(torch.randn(2, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="packed must be a contiguous uint8 vector"):
        _C.quant_linear(torch.randn(2, 16), q.packed[:-1], "dynamic", q.weight_scale, None, None,
                        torch.empty(2, 8))
    with pytest.raises(ValueError, match="mode must be one of"):
        QuantLinear(4, 4, mode="int4")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that initializing a 0-element weight is a no-op
        zero = QuantLinear.from_float(make_linear(0, 3, rng), "dynamic")
    assert torch.equal(zero(torch.zeros(2, 0)), zero.bias.expand(2, 3))
    assert QuantLinear.from_float(make_linear(5, 3, rng), "weight_only")(torch.zeros(0, 5)).shape == (0, 3)


# ---- SmoothQuant and fastnn.quantize ---------------------------------------

@pytest.mark.single_isa
def test_smooth_quant_folds_scales_and_helps_outliers(rng):
    k, n = 256, 128
    lin = make_linear(k, n, rng)
    x = randn((64, k), torch.float32, rng)
    x[:, :4] *= 60  # activation outlier channels, as in LLMs
    s = torch.rand(k, generator=rng) + 0.5
    q = QuantLinear.from_float(lin, "dynamic", smooth_scales=s)
    qx, xs = fastnn.quantize_rows(x, q.smooth_inv)
    ref = (qx.double() @ q.weight_int8.double().t()) * xs.double()[:, None] * q.weight_scale.double() + q.bias
    torch_out = torch._int_mm(qx, q.weight_int8.t()).float() * xs[:, None] * q.weight_scale + q.bias
    assert_close(q(x), torch_out, ref)

    def model():
        return torch.nn.Sequential(torch.nn.Identity(), lin)

    plain, smooth = model(), model()
    fastnn.quantize(plain, calibration=x)
    report = fastnn.quantize(smooth, calibration=x, smooth_alpha=0.5)
    with torch.no_grad():
        y = lin(x)
        assert (smooth(x) - y).norm() < 0.7 * (plain(x) - y).norm()
    assert report.layers[0].rel_rms_error < 0.7 * float((plain(x) - y).norm() / y.norm())


class Block(torch.nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.attn = torch.nn.ModuleDict({"q": make_linear(32, 32, gen), "o": make_linear(32, 32, gen, bias=False)})
        self.mlp = torch.nn.Sequential(make_linear(32, 64, gen), torch.nn.GELU(), make_linear(64, 32, gen))
        self.head = make_linear(32, 10, gen)

    def forward(self, x):
        x = x + self.attn["o"](self.attn["q"](x))
        return self.head(x + self.mlp(x))


@pytest.mark.single_isa
@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_quantize_model_swaps_and_reports(mode, rng):
    model = Block(rng)
    x = randn((4, 7, 32), torch.float32, rng)
    with torch.no_grad():
        y = model(x)
    report = fastnn.quantize(model, mode=mode, exclude=["head"], calibration=[x[:2], x[2:]])
    assert [r.name for r in report.layers] == ["attn.q", "attn.o", "mlp.0", "mlp.2"]
    assert [(r.out_features, r.in_features) for r in report.layers] == [(32, 32), (32, 32), (64, 32), (32, 64)]
    assert report.skipped == ["head"] and isinstance(model.head, torch.nn.Linear)
    assert all(isinstance(model.get_submodule(r.name), QuantLinear) for r in report.layers)
    assert all(0 < r.rel_rms_error < 0.02 and r.max_abs_error > 0 for r in report.layers)
    assert "attn.q" in str(report) and "rel rms err" in str(report)
    with torch.no_grad():
        assert float((model(x) - y).norm() / y.norm()) < 0.03
    only = Block(rng)
    rep = fastnn.quantize(only, mode=mode, include="mlp.*")
    assert [r.name for r in rep.layers] == ["mlp.0", "mlp.2"] and rep.layers[0].max_abs_error is None
    with pytest.raises(TypeError, match="model is itself a Linear"):
        fastnn.quantize(torch.nn.Linear(3, 3))


@pytest.mark.single_isa
def test_quant_linear_memory_flat(rng):
    import resource

    q = QuantLinear.from_float(make_linear(256, 256, rng), "dynamic")
    x = randn((64, 256), torch.float32, rng)
    refs = sys.getrefcount(x)
    for _ in range(50):
        q(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(1000):
        q(x)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 4096  # KiB
    assert sys.getrefcount(x) == refs


@pytest.mark.large
@pytest.mark.single_isa
def test_int8_mm_past_2_31_elements():
    m, k = 16400, MAX_K  # m * k > 2^31: 64-bit offsets in the packed A panels
    a = torch.ones(m, k, dtype=torch.int8)
    a[-1] = -128
    b = torch.ones(k, 3, dtype=torch.int8)
    b[:, 2] = -1
    out = fastnn.int8_mm(a, b)
    assert out[0].tolist() == [k, k, -k] and out[-1].tolist() == [-128 * k, -128 * k, 128 * k]
