"""Fused attention forward/backward against torch's scaled_dot_product_attention
in float64, on every ISA path: odd lengths, head dims 59/96/128, GQA/MQA,
boolean and additive masks (with fully masked rows), causal with Sq != Skv,
both layouts, strided NaN-gapped inputs, bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn.testing import assert_close
from helpers import check_sampled, fresh_seeds, nan_gapped, randn

DTYPES = [torch.float32, torch.bfloat16]


def run_both(q, k, v, g, layout="bhsd", **kw):
    """fastnn's (out, dq, dk, dv), torch's at q's dtype, and torch's in float64.
    torch always sees (B, H, S, D) tensors; fastnn sees `layout`."""
    gqa = q.shape[1] != k.shape[1] if layout == "bhsd" else q.shape[2] != k.shape[2]

    def torch_run(dtype):
        ts = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
        if layout == "bshd":
            ts_in = [x.transpose(1, 2) for x in ts]
        else:
            ts_in = ts
        mask = kw.get("attn_mask")
        kw2 = dict(kw, attn_mask=None if mask is None else (mask if mask.dtype == torch.bool else mask.to(dtype)))
        out = F.scaled_dot_product_attention(*ts_in, enable_gqa=gqa, **kw2)
        if layout == "bshd":
            out = out.transpose(1, 2)
        out.backward(g.to(dtype))
        return [out.detach()] + [x.grad for x in ts]

    fq, fk, fv = (x.detach().requires_grad_() for x in (q, k, v))
    out = fastnn.scaled_dot_product_attention(fq, fk, fv, enable_gqa=gqa, layout=layout, **kw)
    out.backward(g)
    mine = [out.detach(), fq.grad, fk.grad, fv.grad]
    return mine, torch_run(q.dtype), torch_run(torch.float64)


def check(q, k, v, g, layout="bhsd", sample=None, **kw):
    """The accuracy rule on out, dq, dk, dv; with an ErrorSample, the
    outputs are added to it instead (the rule is applied over all trials)."""
    mine, base, ref = run_both(q, k, v, g, layout, **kw)
    for name, a, b, r in zip(("out", "dq", "dk", "dv"), mine, base, ref):
        assert a.shape == r.shape and a.dtype == b.dtype
        if sample is None:
            assert_close(a, b, r, name)
        else:
            sample.add(name, a, b, r)
    return mine


def qkv(rng, B, Hq, Hkv, Sq, Skv, D, dtype):
    return (randn((B, Hq, Sq, D), dtype, rng), randn((B, Hkv, Skv, D), dtype, rng),
            randn((B, Hkv, Skv, D), dtype, rng), randn((B, Hq, Sq, D), dtype, rng))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,Hq,Hkv,Sq,Skv,D", [
    (1, 1, 1, 1, 1, 32), (2, 2, 2, 17, 17, 59), (1, 4, 2, 113, 65, 96), (1, 3, 1, 65, 130, 128),
    (1, 2, 2, 200, 31, 64), (1, 1, 1, 1000, 1000, 64)])
def test_attention_shapes(B, Hq, Hkv, Sq, Skv, D, causal, dtype, rng):
    q, k, v, g = qkv(rng, B, Hq, Hkv, Sq, Skv, D, dtype)
    check(q, k, v, g, is_causal=causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_bshd_strided_nan_gapped(dtype, rng):
    B, Hq, Hkv, Sq, Skv, D = 2, 4, 2, 37, 70, 59
    q, k, v, g = (randn(s, dtype, rng) for s in [(B, Sq, Hq, D), (B, Skv, Hkv, D), (B, Skv, Hkv, D), (B, Sq, Hq, D)])
    q, k, v = nan_gapped(q, 2), nan_gapped(k, 3, transpose=True), nan_gapped(v, 2)
    check(q, k, v, nan_gapped(g, 2), layout="bshd", is_causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_key_padding_mask_with_fully_masked_rows(dtype, rng):
    B, H, Sq, Skv, D = 3, 2, 19, 33, 64
    q, k, v, g = qkv(rng, B, H, H, Sq, Skv, D, dtype)
    keep = torch.rand(B, 1, 1, Skv, generator=rng) > 0.3
    keep[1] = False  # every key of batch 1 masked: zeros, zero gradients
    mine = check(q, k, v, g, attn_mask=keep)
    assert all(torch.isfinite(t).all() for t in mine)
    assert (mine[0][1] == 0).all() and (mine[1][1] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_full_bool_and_additive_masks(dtype, rng):
    B, Hq, Hkv, Sq, Skv, D = 2, 4, 1, 23, 41, 96
    q, k, v, g = qkv(rng, B, Hq, Hkv, Sq, Skv, D, dtype)
    keep = torch.rand(Sq, Skv, generator=rng) > 0.5
    keep[3] = False
    check(q, k, v, g, attn_mask=keep)
    bias = randn((B, Hq, Sq, Skv), dtype, rng)
    bias[0, 1, 5] = float("-inf")
    bias[1, :, :, 7] = float("-inf")
    mine = check(q, k, v, g, attn_mask=bias)
    assert all(torch.isfinite(t).all() for t in mine)
    check(q, k, v, g, attn_mask=nan_gapped(randn((1, Hq, 1, Skv), dtype, rng), 2))


def test_attention_scale_and_large_logits(rng):
    q, k, v, g = qkv(rng, 1, 2, 2, 40, 50, 32, torch.float32)
    check(q, k, v, g, scale=0.37)
    # Logits up to ~1e5, far outside exp's float range unless each row's
    # running maximum is subtracted. q and k are integers and the scale a
    # power of two, so every logit is exact in float32 in any summation order:
    # with rounded logits of that size, one near-tied pair in a row decides
    # the largest output error, and which library rounded that pair closer is
    # chance (either one's error was up to 30x the other's on single trials).
    qi, ki = (torch.randint(-300, 301, x.shape, generator=rng).float() for x in (q, k))
    for dtype in DTYPES:
        mine = check(qi.to(dtype), ki.to(dtype), v.to(dtype), g.to(dtype), is_causal=True, scale=0.125)
        assert all(torch.isfinite(t).all() for t in mine)


def test_attention_bfloat16_peaked_rows_at_rounding_level(rng):
    # q, k scaled by 3: most rows put 0.9-0.999 of their weight on one key,
    # where dS = P (dP - delta) nearly cancels. delta = dO . O from the
    # output rounded to bfloat16 gave dq and dk errors up to 2.1x those of
    # rounding the exact gradients to bfloat16; from the float output the
    # forward saves, they are at that rounding level.
    worst = {"dq": [0.0, 0.0], "dk": [0.0, 0.0]}
    for _ in range(8):
        q, k, v, g = qkv(rng, 1, 4, 4, 64, 64, 32, torch.float32)
        q, k, v, g = (x.to(torch.bfloat16) for x in (q * 3, k * 3, v, g))
        mine, _, ref = run_both(q, k, v, g)
        for name, a, r in zip(("dq", "dk"), mine[1:3], ref[1:3]):
            worst[name][0] = max(worst[name][0], (a.double() - r).abs().max().item())
            worst[name][1] = max(worst[name][1], (r.to(torch.bfloat16).double() - r).abs().max().item())
    for name, (err, rounding) in worst.items():
        assert err <= 1.25 * rounding, (name, err, rounding)


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 2), Hkv=st.integers(1, 2), group=st.integers(1, 3), Sq=st.integers(1, 150),
       Skv=st.integers(1, 150), D=st.sampled_from([32, 33, 59, 80, 128, 160]), causal=st.booleans(),
       layout=st.sampled_from(["bhsd", "bshd"]), seed=fresh_seeds())
def test_attention_random(B, Hkv, group, Sq, Skv, D, causal, layout, seed):
    def trial(gen, sample):
        q, k, v, g = qkv(gen, B, Hkv * group, Hkv, Sq, Skv, D, torch.float32)
        if layout == "bshd":
            q, k, v, g = (x.transpose(1, 2).contiguous() for x in (q, k, v, g))
        check(q, k, v, g, layout=layout, sample=sample, is_causal=causal)

    check_sampled(trial, seed)


def test_attention_deterministic(rng):
    q, k, v, g = qkv(rng, 1, 2, 1, 150, 300, 64, torch.float32)
    a = run_both(q, k, v, g, is_causal=True)[0]
    b = run_both(q, k, v, g, is_causal=True)[0]
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_attention_numpy_and_no_grad(rng):
    # NumPy arrays run the torch tensors' kernel: the same bits. (Accuracy at
    # sizes this small is checked over many draws, check_sampled above: on a
    # single draw either library exceeds twice the other's error on ~1% of
    # seeds, e.g. 208336488 here, 1.25e-6 against torch's 2.7e-7.)
    q, k, v, _ = qkv(rng, 1, 2, 2, 9, 11, 32, torch.float32)
    out = fastnn.scaled_dot_product_attention(q.numpy(), k.numpy(), v.numpy())
    assert isinstance(out, np.ndarray)
    assert torch.equal(torch.from_numpy(out), fastnn.scaled_dot_product_attention(q, k, v))
    with torch.no_grad():
        assert fastnn.scaled_dot_product_attention(q.requires_grad_(), k, v).grad_fn is None


def test_attention_zero_size(rng):
    q, k, v, _ = qkv(rng, 1, 2, 2, 0, 5, 32, torch.float32)
    assert fastnn.scaled_dot_product_attention(q, k, v).shape == (1, 2, 0, 32)
    q, k, v, _ = qkv(rng, 0, 2, 2, 3, 5, 32, torch.float32)
    assert fastnn.scaled_dot_product_attention(q, k, v).shape == (0, 2, 3, 32)
    q, k, v, g = qkv(rng, 1, 1, 1, 0, 4, 32, torch.float32)
    k.requires_grad_()
    fastnn.scaled_dot_product_attention(q, k, v).sum().backward()
    assert torch.equal(k.grad, torch.zeros_like(k))


def test_attention_bad_inputs():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="dropout_p"):
        fastnn.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="layout"):
        fastnn.scaled_dot_product_attention(q, q, q, layout="sbhd")
    with pytest.raises(ValueError, match="k must have 4 dimensions"):
        fastnn.scaled_dot_product_attention(q, q[0], q)
    with pytest.raises(TypeError, match="q must be float32 or bfloat16"):
        fastnn.scaled_dot_product_attention(q.double(), q.double(), q.double())
    with pytest.raises(TypeError, match="v must have the dtype of q"):
        fastnn.scaled_dot_product_attention(q, q, q.bfloat16())
    with pytest.raises(ValueError, match="k must be"):
        fastnn.scaled_dot_product_attention(q, torch.randn(1, 2, 4, 9), torch.randn(1, 2, 4, 9))
    with pytest.raises(ValueError, match="v must have the shape of k"):
        fastnn.scaled_dot_product_attention(q, q, torch.randn(1, 2, 5, 8))
    with pytest.raises(ValueError, match="enable_gqa"):
        fastnn.scaled_dot_product_attention(q, q[:, :1], q[:, :1])
    with pytest.raises(ValueError, match="heads, which must divide"):
        fastnn.scaled_dot_product_attention(torch.randn(1, 3, 4, 8), q, q, enable_gqa=True)
    with pytest.raises(ValueError, match="attn_mask"):
        fastnn.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be bool or float32"):
        fastnn.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="attn_mask must be None when is_causal"):
        fastnn.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.bool), is_causal=True)
    with pytest.raises(TypeError, match="q must be"):
        fastnn.scaled_dot_product_attention([1.0], q, q)


def test_attention_out_float_checked():
    # The kernel-level argument the bfloat16 forward saves for its backward.
    q = torch.randn(1, 2, 4, 8)
    out, lse = torch.empty_like(q), torch.empty(1, 2, 4)
    with pytest.raises(ValueError, match="out_float is for bfloat16 attention only"):
        fastnn._C.attention_forward(q, q, q, None, out, lse, torch.empty_like(q), 0.5, False)
    qb = q.bfloat16()
    with pytest.raises(TypeError, match="out_float must be float32"):
        fastnn._C.attention_forward(qb, qb, qb, None, out.bfloat16(), lse, torch.empty_like(qb), 0.5, False)
    with pytest.raises(ValueError, match="out_float must have the shape of q"):
        fastnn._C.attention_forward(qb, qb, qb, None, out.bfloat16(), lse, torch.empty(1, 2, 4, 9), 0.5, False)
    with pytest.raises(ValueError, match="out_float"):
        fastnn._C.attention_forward(qb, qb, qb, None, out.bfloat16(), lse, lse.view(1, 2, 4, 1).expand(1, 2, 4, 8),
                                    0.5, False)
