"""fastnn's fused CUDA attention kernels (fastnn._cuda.flash_attention_forward /
attention_backward), called directly: forward output, log-sum-exp and every
gradient against torch's SDPA in float64, with the 2x-of-torch's-own-error
rule (torch's bf16/fp16 SDPA on the same inputs sets the scale). Outputs are
NaN-poisoned before each run, so an unwritten element fails."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastnn import _backend
from fastnn.testing import assert_close

from helpers import randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

DTYPES = [torch.bfloat16, torch.float16]
LENGTHS = [(1, 1), (17, 113), (113, 17), (1000, 1000), (2049, 1000)]


def kernels():
    return _backend.cuda_kernels()


def stream() -> int:
    return torch.cuda.current_stream().cuda_stream


@dataclass
class Case:
    """Inputs in (B, S, H, D) form (possibly views of other layouts), packed
    (total, H, D) with cu_seqlens for varlen."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    causal: bool = False
    key_padding_mask: Optional[torch.Tensor] = None  # (B, S_kv) bool, True = attend
    cu_q: Optional[torch.Tensor] = None
    cu_kv: Optional[torch.Tensor] = None
    scale: Optional[float] = None

    @property
    def varlen(self) -> bool:
        return self.cu_q is not None

    def kwargs(self) -> dict:
        kw = dict(stream=stream(), causal=self.causal, scale=self.scale, key_padding_mask=self.key_padding_mask)
        if self.varlen:
            lq, lk = self.cu_q.diff(), self.cu_kv.diff()
            kw.update(cu_seqlens_q=self.cu_q, cu_seqlens_kv=self.cu_kv,
                      max_seqlen_q=int(lq.max()), max_seqlen_kv=int(lk.max()))
        return kw

    def lse_shape(self):
        hq = self.q.shape[-2]
        return (hq, self.q.shape[0]) if self.varlen else (self.q.shape[0], hq, self.q.shape[1])


def make_case(gen, dtype, b, sq, skv, hq, hkv, d, *, layout="bshd", **kw) -> Case:
    def make(s, h):
        if layout == "bhsd":  # (B, H, S, D) storage, passed as its (B, S, H, D) view
            return randn((b, h, s, d), dtype, gen, "cuda").transpose(1, 2)
        if layout == "gapped":  # NaN between rows and heads; rows not 16-byte aligned
            buf = torch.full((b, s, h + 1, d + 3), float("nan"), dtype=dtype, device="cuda")
            view = buf[:, :, 1:, :d]
            view.copy_(randn((b, s, h, d), dtype, gen, "cuda"))
            return view
        return randn((b, s, h, d), dtype, gen, "cuda")

    return Case(make(sq, hq), make(skv, hkv), make(skv, hkv), **kw)


def visible(case: Case, b: int, sq: int, skv: int) -> torch.Tensor:
    """(S_q, S_kv) bool: which keys each query of batch b sees."""
    i = torch.arange(sq, device="cuda")[:, None]
    j = torch.arange(skv, device="cuda")[None, :]
    mask = torch.ones(sq, skv, dtype=torch.bool, device="cuda")
    if case.causal:
        mask &= j <= i + skv - sq
    if case.key_padding_mask is not None:
        mask &= case.key_padding_mask[b, :skv][None, :]
    return mask


def batches(case: Case):
    """Per batch: (b, q, k, v) slices in (S, H, D) form."""
    if not case.varlen:
        for b in range(case.q.shape[0]):
            yield b, case.q[b], case.k[b], case.v[b]
        return
    cq, ck = case.cu_q.tolist(), case.cu_kv.tolist()
    for b in range(len(cq) - 1):
        yield b, case.q[cq[b]:cq[b + 1]], case.k[ck[b]:ck[b + 1]], case.v[ck[b]:ck[b + 1]]


def sdpa(case: Case, b, q, k, v, mask):
    """torch SDPA on one batch of (S, H, D) tensors; out (S, H, D)."""
    qh, kh, vh = (t.transpose(0, 1)[None] for t in (q, k, v))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask[None, None], scale=case.scale,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return out[0].transpose(0, 1)


def torch_attention(case: Case, dtype, dout=None):
    """(out, lse, grads) from torch: float64 when dtype is float64 (the
    reference), else torch's own SDPA at the working precision. Rows without a
    visible key are where torch's fused kernels differ (NaN or 0); the MATH
    backend returns 0 with finite gradients there, as fastnn does."""
    leaves = [t.detach().to(dtype).requires_grad_(dout is not None) for t in (case.q, case.k, case.v)]
    sub = Case(*leaves, case.causal, case.key_padding_mask, case.cu_q, case.cu_kv, case.scale)
    outs, lses, any_empty = [], [], False
    for b, q, k, v in batches(sub):
        mask = visible(case, b, q.shape[0], k.shape[0])
        any_empty |= mask.shape[0] > 0 and not bool(mask.any(dim=1).all())
        outs.append((b, q, k, v, mask))
    backends = [SDPBackend.MATH] if any_empty and dtype != torch.float64 else None
    with sdpa_kernel(backends) if backends else contextlib.nullcontext():
        results = [sdpa(case, b, q, k, v, mask) for b, q, k, v, mask in outs]
    for b, q, k, v, mask in outs:
        scale = case.scale if case.scale is not None else 1 / math.sqrt(q.shape[-1])
        group = q.shape[1] // k.shape[1]
        s = torch.einsum("qhd,khd->hqk", q.double(), k.double().repeat_interleave(group, dim=1)) * scale
        lses.append(torch.logsumexp(s.masked_fill(~mask, -math.inf), dim=-1).detach())  # (H, S_q)
    out = torch.cat(results, dim=0) if case.varlen else torch.stack(results)
    lse = torch.cat(lses, dim=1) if case.varlen else torch.stack(lses)
    grads = torch.autograd.grad(out, leaves, dout.to(dtype)) if dout is not None else None
    return out.detach(), lse, grads


def fastnn_forward(case: Case):
    out = torch.full_like(case.q, float("nan"))
    lse = torch.full(case.lse_shape(), float("nan"), dtype=torch.float32, device="cuda")
    kernels().flash_attention_forward(case.q, case.k, case.v, out, lse, **case.kwargs())
    return out, lse


def fastnn_backward(case: Case, out, lse, dout, deterministic=False):
    dq, dk, dv = (torch.full_like(t, float("nan")) for t in (case.q, case.k, case.v))
    size = kernels().flash_attention_backward_workspace_size(case.q, cu_seqlens_q=case.cu_q,
                                                             deterministic=deterministic)
    workspace = torch.full((size,), 0xFF, dtype=torch.uint8, device="cuda")  # NaN bit patterns as float32
    kernels().flash_attention_backward(case.q, case.k, case.v, out, dout, lse, dq, dk, dv, workspace,
                                 deterministic=deterministic, **case.kwargs())
    return dq, dk, dv


def check_lse(lse, ref):
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref)), "lse: -inf rows differ"
    finite = torch.isfinite(ref)
    assert torch.isfinite(lse[finite]).all(), "lse: non-finite where the reference is finite"
    err = (lse[finite].double() - ref[finite]).abs()
    # lse feeds only the backward (checked by the 2x rule); here: float32 accuracy of a log-sum.
    assert err.numel() == 0 or float((err / (1 + ref[finite].abs())).max()) < 1e-5, "lse inaccurate"


def check(case: Case, dtype, backward=False, deterministic=False, gen=None):
    out, lse = fastnn_forward(case)
    dout = randn(out.shape, torch.float32, gen, "cuda").to(dtype) if backward else None
    ref_out, ref_lse, ref_grads = torch_attention(case, torch.float64, dout)
    t_out, _, t_grads = torch_attention(case, dtype, dout)
    assert_close(out, t_out, ref_out, "out")
    check_lse(lse, ref_lse)
    if backward:
        grads = fastnn_backward(case, out, lse, dout, deterministic)
        for name, g, tg, rg in zip(("dq", "dk", "dv"), grads, t_grads, ref_grads):
            assert_close(g, tg, rg, name)
        return out, lse, grads
    return out, lse, None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 96, 128, 256, 40, 59])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS)
def test_forward(dtype, head_dim, causal, lengths, rng):
    sq, skv = lengths
    check(make_case(rng, dtype, 2, sq, skv, 2, 2, head_dim, causal=causal), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 96, 128, 256, 59])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS[1:])
@pytest.mark.parametrize("deterministic", [False, True])
def test_backward(dtype, head_dim, causal, lengths, deterministic, rng):
    sq, skv = lengths
    case = make_case(rng, dtype, 2, sq, skv, 2, 2, head_dim, causal=causal)
    check(case, dtype, backward=True, deterministic=deterministic, gen=rng)


@pytest.mark.parametrize("layout", ["bshd", "bhsd", "gapped"])
@pytest.mark.parametrize("causal", [False, True])
def test_layouts(layout, causal, rng):
    case = make_case(rng, torch.bfloat16, 2, 113, 257, 3, 3, 64, layout=layout, causal=causal)
    check(case, torch.bfloat16, backward=True, gen=rng)


@pytest.mark.parametrize("heads", [(8, 2), (6, 1)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_grouped_query(heads, deterministic, rng):
    hq, hkv = heads
    case = make_case(rng, torch.float16, 2, 200, 300, hq, hkv, 128, causal=True)
    check(case, torch.float16, backward=True, deterministic=deterministic, gen=rng)


@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_mask(causal, rng):
    case = make_case(rng, torch.bfloat16, 3, 130, 190, 2, 2, 64, causal=causal)
    mask = torch.rand(3, 190, generator=rng).to("cuda") > 0.3
    mask[1] = False  # a batch with no visible key: zero output, -inf lse, zero gradients
    mask[2, :100] = False  # whole kv tiles hidden
    case.key_padding_mask = mask
    out, lse, (dq, dk, dv) = check(case, torch.bfloat16, backward=True, gen=rng)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    assert torch.isneginf(lse[1]).all()
    assert torch.equal(dq[1], torch.zeros_like(dq[1])) and torch.equal(dk[1], torch.zeros_like(dk[1]))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("deterministic", [False, True])
def test_varlen(causal, deterministic, rng):
    lens_q, lens_kv = [1, 17, 0, 113, 1000], [5, 17, 33, 200, 1000]
    cu = lambda lens: torch.tensor([0] + lens, device="cuda").cumsum(0).to(torch.int32)  # noqa: E731
    q = randn((sum(lens_q), 4, 96), torch.bfloat16, rng, "cuda")
    k = randn((sum(lens_kv), 2, 96), torch.bfloat16, rng, "cuda")
    v = randn((sum(lens_kv), 2, 96), torch.bfloat16, rng, "cuda")
    case = Case(q, k, v, causal=causal, cu_q=cu(lens_q), cu_kv=cu(lens_kv))
    check(case, torch.bfloat16, backward=True, deterministic=deterministic, gen=rng)


def test_rows_without_keys(rng):
    """Causal with S_q > S_kv, bottom-right aligned: the first S_q - S_kv
    queries see no key."""
    case = make_case(rng, torch.float16, 1, 100, 30, 2, 2, 64, causal=True)
    out, lse, (dq, _, _) = check(case, torch.float16, backward=True, gen=rng)
    assert torch.equal(out[:, :70], torch.zeros_like(out[:, :70]))
    assert torch.isneginf(lse[:, :, :70]).all()
    assert torch.equal(dq[:, :70], torch.zeros_like(dq[:, :70]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_logits_do_not_overflow(dtype, rng):
    case = make_case(rng, dtype, 1, 257, 257, 2, 2, 64)
    # Scaled logits spread over ~100s: exp() overflows without the running max.
    case.q = (case.q.float() * 20).to(dtype)
    case.k = (case.k.float() * 5).to(dtype)
    check(case, dtype, backward=True, gen=rng)


def test_custom_scale(rng):
    case = make_case(rng, torch.bfloat16, 1, 64, 96, 2, 2, 64, scale=0.3)
    check(case, torch.bfloat16, backward=True, gen=rng)


def test_deterministic_is_bit_identical(rng):
    case = make_case(rng, torch.bfloat16, 2, 300, 300, 4, 2, 128, causal=True)
    out, lse = fastnn_forward(case)
    dout = randn(out.shape, torch.bfloat16, rng, "cuda")
    first = fastnn_backward(case, out, lse, dout, deterministic=True)
    second = fastnn_backward(case, out, lse, dout, deterministic=True)
    assert torch.equal(fastnn_forward(case)[0], out)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_zero_length_sequences(rng):
    case = make_case(rng, torch.bfloat16, 2, 0, 17, 2, 2, 64)
    out, lse = fastnn_forward(case)
    assert out.numel() == 0
    case = make_case(rng, torch.bfloat16, 2, 17, 0, 2, 2, 64)
    out, lse = fastnn_forward(case)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    dq, dk, dv = fastnn_backward(case, out, lse, torch.ones_like(out))
    assert torch.equal(dq, torch.zeros_like(dq))


def test_runs_on_current_stream(rng):
    case = make_case(rng, torch.bfloat16, 2, 1000, 1000, 4, 4, 64)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out, _ = fastnn_forward(case)
    torch.cuda.current_stream().wait_stream(side)
    ref, _, _ = torch_attention(case, torch.float64)
    t_out, _, _ = torch_attention(case, torch.bfloat16)
    assert_close(out, t_out, ref)


def test_bad_arguments_raise_naming_them(rng):
    case = make_case(rng, torch.bfloat16, 1, 16, 16, 4, 2, 64)
    out = torch.empty_like(case.q)
    lse = torch.empty(case.lse_shape(), dtype=torch.float32, device="cuda")
    fwd = kernels().flash_attention_forward
    with pytest.raises(TypeError, match="k must have the dtype of q"):
        fwd(case.q, case.k.half(), case.v, out, lse, stream=stream())
    with pytest.raises(ValueError, match=r"q must be \(B, S, H, D\)"):
        fwd(case.q[0], case.k, case.v, out, lse, stream=stream())
    with pytest.raises(ValueError, match="q's head count"):
        fwd(case.q[:, :, :3], case.k, case.v, out[:, :, :3], lse[:, :3], stream=stream())
    with pytest.raises(ValueError, match="head dim"):
        big = torch.empty(1, 16, 4, 264, dtype=torch.bfloat16, device="cuda")
        fwd(big, big[:, :, :2], big[:, :, :2], torch.empty_like(big), lse, stream=stream())
    with pytest.raises(ValueError, match="q must be on a CUDA device"):
        fwd(case.q.cpu(), case.k, case.v, out, lse, stream=stream())
    with pytest.raises(ValueError, match="lse must be float32"):
        fwd(case.q, case.k, case.v, out, lse[:, :, :8], stream=stream())
    with pytest.raises(ValueError, match="out overlaps q"):
        fwd(case.q, case.k, case.v, case.q, lse, stream=stream())
    with pytest.raises(ValueError, match="contiguous last dimension"):
        fwd(case.q, case.k, case.v, out.transpose(1, 3).contiguous().transpose(1, 3), lse, stream=stream())
    with pytest.raises(ValueError, match="cu_seqlens_q and cu_seqlens_kv must be given together"):
        cu = torch.tensor([0, 16], dtype=torch.int32, device="cuda")
        fwd(case.q[0], case.k[0], case.v[0], out[0], lse[0], stream=stream(), cu_seqlens_q=cu)
    with pytest.raises(ValueError, match="scale must be positive"):
        fwd(case.q, case.k, case.v, out, lse, stream=stream(), scale=-1.0)
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        fwd(case.q, case.k, case.v, out, lse, stream=stream(),
            key_padding_mask=torch.ones(1, 15, dtype=torch.bool, device="cuda"))
    with pytest.raises(ValueError, match="workspace must hold"):
        dq, dk, dv = torch.empty_like(case.q), torch.empty_like(case.k), torch.empty_like(case.v)
        kernels().flash_attention_backward(case.q, case.k, case.v, out, out.clone(), lse, dq, dk, dv,
                                     torch.empty(16, dtype=torch.uint8, device="cuda"), stream=stream())
