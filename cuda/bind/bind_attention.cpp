// fastnn._cuda.flash_attention_forward / flash_attention_backward: validate every argument
// (errors name it), fill cuda::AttentionParams, launch on the caller's stream.
//
// Layouts: q, out, grad_out, dq are (B, S_q, H_q, D) and k, v, dk, dv are
// (B, S_kv, H_kv, D) with any strides but a contiguous head dim, so a
// (B, H, S, D) tensor is passed as its .transpose(1, 2) view, never copied.
// With cu_seqlens_q/cu_seqlens_kv (int32, B + 1) the batch is packed: q is
// (total_q, H_q, D), k and v (total_kv, H_kv, D), and max_seqlen_q/kv bound
// the per-batch lengths. lse is float32 (B, H_q, S_q), or (H_q, total_q)
// packed. key_padding_mask is bool or uint8 (B, S_kv), true = attend. The
// contents of cu_seqlens (nondecreasing, ending at the packed totals, each
// length within the maxima) are the caller's contract: checking them would
// need a device synchronization.
#include <nanobind/stl/optional.h>

#include <climits>
#include <cmath>
#include <optional>

#include "cuda_checks.h"
#include "fastnn_cuda/attention.h"

namespace fastnn::bind {
namespace {

using cuda::AttentionParams;
using cuda::AttentionStrides;

struct Options {
    std::optional<double> scale;
    bool causal = false;
    nb::handle key_padding_mask, cu_seqlens_q, cu_seqlens_kv;
    std::optional<int64_t> max_seqlen_q, max_seqlen_kv;
};

// Optional array arguments: absent when None.
struct OptionalArrays {
    std::optional<ArrayArg> mask, cu_q, cu_kv;
    explicit OptionalArrays(const Options& o) {
        if (!o.key_padding_mask.is_none()) mask.emplace(o.key_padding_mask, "key_padding_mask", false);
        if (!o.cu_seqlens_q.is_none()) cu_q.emplace(o.cu_seqlens_q, "cu_seqlens_q", false);
        if (!o.cu_seqlens_kv.is_none()) cu_kv.emplace(o.cu_seqlens_kv, "cu_seqlens_kv", false);
    }
    bool varlen() const { return cu_q.has_value(); }
};

void require_unit_last_stride(const ArrayArg& a) {
    const int last = a.ndim() - 1;
    if (last >= 0 && a.size(last) > 1 && a.view().strides[last] != 1)
        throw_value_error(cat(a.name(), " must have a contiguous last dimension (stride 1), got stride ",
                              a.view().strides[last]));
}

int checked_int(int64_t value, const char* what) {
    if (value < 0 || value > INT_MAX) throw_value_error(cat(what, " must be in [0, 2^31), got ", value));
    return static_cast<int>(value);
}

// A q/k/v-shaped argument: rank, dtype, device and a contiguous head dim.
void check_qkv_like(const ArrayArg& a, const ArrayArg& q, bool varlen) {
    const int rank = varlen ? 3 : 4;
    if (a.ndim() != rank)
        throw_value_error(cat(a.name(), varlen ? " must be (total, H, D) with cu_seqlens" :
                              " must be (B, S, H, D) (pass a (B, H, S, D) tensor as .transpose(1, 2))",
                              ", got shape ", a.shape_str()));
    require_cuda(a);
    require_dtype(a, {DType::bf16, DType::f16});
    require_same_device(q, a);
    require_same_dtype(q, a);
    require_unit_last_stride(a);
}

AttentionStrides qkv_strides(const ArrayArg& a, bool varlen) {
    const TensorView& v = a.view();
    return varlen ? AttentionStrides{0, v.strides[1], v.strides[0]}
                  : AttentionStrides{v.strides[0], v.strides[2], v.strides[1]};
}

// Shapes, the optional mask and varlen offsets, and the scale; q, k, v checked.
AttentionParams common_params(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v, const OptionalArrays& opt,
                              const Options& o) {
    if (opt.cu_q.has_value() != opt.cu_kv.has_value())
        throw_value_error("cu_seqlens_q and cu_seqlens_kv must be given together");
    const bool varlen = opt.varlen();
    for (const ArrayArg* a : {&q, &k, &v}) check_qkv_like(*a, q, varlen);
    require_same_shape(k, v);
    const int r = varlen ? 0 : 1;  // the sequence dimension
    AttentionParams p;
    p.head_dim = checked_int(q.size(r + 2), "the head dim");
    if (p.head_dim < 1 || p.head_dim > 256)
        throw_value_error(cat("q must have a head dim in [1, 256], got ", p.head_dim));
    if (k.size(r + 2) != p.head_dim)
        throw_value_error(cat("k must have q's head dim (", p.head_dim, "), got ", k.size(r + 2),
                              "; different value head dims are not supported"));
    p.heads_q = checked_int(q.size(r + 1), "the number of q heads");
    p.heads_kv = checked_int(k.size(r + 1), "the number of k heads");
    if (p.heads_kv == 0 || p.heads_q % p.heads_kv != 0)
        throw_value_error(cat("q's head count (", p.heads_q, ") must be a multiple of k's (", p.heads_kv, ")"));
    if (p.heads_q > 65535) throw_value_error(cat("q may have at most 65535 heads, got ", p.heads_q));

    if (varlen) {
        for (const ArrayArg* cu : {&*opt.cu_q, &*opt.cu_kv}) {
            require_cuda(*cu);
            require_same_device(q, *cu);
            require_dtype(*cu, {DType::i32});
            if (cu->ndim() != 1 || cu->size(0) < 1)
                throw_value_error(cat(cu->name(), " must be 1-D with B + 1 entries, got shape ", cu->shape_str()));
            require_unit_last_stride(*cu);
        }
        if (opt.cu_kv->size(0) != opt.cu_q->size(0))
            throw_value_error(cat("cu_seqlens_kv must have the length of cu_seqlens_q (", opt.cu_q->size(0),
                                  "), got ", opt.cu_kv->size(0)));
        if (!o.max_seqlen_q || !o.max_seqlen_kv)
            throw_value_error("max_seqlen_q and max_seqlen_kv are required with cu_seqlens");
        p.batch = checked_int(opt.cu_q->size(0) - 1, "the batch size");
        p.total_q = checked_int(q.size(0), "q's packed length");
        p.seqlen_q = checked_int(*o.max_seqlen_q, "max_seqlen_q");
        p.seqlen_kv = checked_int(*o.max_seqlen_kv, "max_seqlen_kv");
        if (p.seqlen_q > p.total_q)
            throw_value_error(cat("max_seqlen_q (", p.seqlen_q, ") exceeds q's packed length (", p.total_q, ")"));
        if (p.seqlen_kv > k.size(0))
            throw_value_error(cat("max_seqlen_kv (", p.seqlen_kv, ") exceeds k's packed length (", k.size(0), ")"));
        p.cu_seqlens_q = static_cast<const int32_t*>(opt.cu_q->view().data);
        p.cu_seqlens_kv = static_cast<const int32_t*>(opt.cu_kv->view().data);
    } else {
        if (o.max_seqlen_q || o.max_seqlen_kv)
            throw_value_error("max_seqlen_q and max_seqlen_kv apply only with cu_seqlens_q and cu_seqlens_kv");
        if (k.size(0) != q.size(0))
            throw_value_error(cat("k must have q's batch size (", q.size(0), "), got ", k.size(0)));
        p.batch = checked_int(q.size(0), "the batch size");
        p.seqlen_q = checked_int(q.size(1), "S_q");
        p.seqlen_kv = checked_int(k.size(1), "S_kv");
    }
    if (p.batch > 65535) throw_value_error(cat("the batch size may be at most 65535, got ", p.batch));

    if (opt.mask) {
        const ArrayArg& m = *opt.mask;
        require_cuda(m);
        require_same_device(q, m);
        require_dtype(m, {DType::boolean, DType::u8});
        if (m.ndim() != 2 || m.size(0) != p.batch || m.size(1) != p.seqlen_kv)
            throw_value_error(cat("key_padding_mask must be (B, S_kv) = (", p.batch, ", ", p.seqlen_kv,
                                  varlen ? ") with S_kv = max_seqlen_kv" : ")", ", got shape ", m.shape_str()));
        require_unit_last_stride(m);
        p.key_padding_mask = static_cast<const uint8_t*>(m.view().data);
        p.key_padding_mask_batch_stride = m.view().strides[0];
    }

    const double scale = o.scale.value_or(1.0 / std::sqrt(double(p.head_dim)));
    if (!(scale > 0.0) || !std::isfinite(scale)) throw_value_error(cat("scale must be positive and finite, got ", scale));
    p.scale = static_cast<float>(scale);
    p.causal = o.causal;
    p.dtype = q.dtype() == DType::bf16 ? cuda::AttentionDType::bf16 : cuda::AttentionDType::f16;
    p.q = q.view().data;
    p.k = k.view().data;
    p.v = v.view().data;
    p.q_strides = qkv_strides(q, varlen);
    p.k_strides = qkv_strides(k, varlen);
    p.v_strides = qkv_strides(v, varlen);
    return p;
}

// lse: float32 (B, H_q, S_q), or (H_q, total_q) packed.
void set_lse(AttentionParams& p, const ArrayArg& lse, const ArrayArg& q, bool varlen) {
    require_cuda(lse);
    require_same_device(q, lse);
    require_dtype(lse, {DType::f32});
    const bool ok = varlen ? lse.ndim() == 2 && lse.size(0) == p.heads_q && lse.size(1) == p.total_q
                           : lse.ndim() == 3 && lse.size(0) == p.batch && lse.size(1) == p.heads_q &&
                                 lse.size(2) == p.seqlen_q;
    if (!ok)
        throw_value_error(cat("lse must be float32 ",
                              varlen ? cat("(H_q, total_q) = (", p.heads_q, ", ", p.total_q, ")")
                                     : cat("(B, H_q, S_q) = (", p.batch, ", ", p.heads_q, ", ", p.seqlen_q, ")"),
                              ", got shape ", lse.shape_str()));
    require_unit_last_stride(lse);
    const TensorView& v = lse.view();
    p.lse = static_cast<float*>(v.data);
    p.lse_batch_stride = varlen ? 0 : v.strides[0];
    p.lse_head_stride = varlen ? v.strides[0] : v.strides[1];
}

void require_like(const ArrayArg& a, const ArrayArg& like) {
    require_cuda(a);
    require_same_device(like, a);
    require_same_dtype(like, a);
    require_same_shape(like, a);
    require_unit_last_stride(a);
}

void flash_attention_forward(nb::handle q_, nb::handle k_, nb::handle v_, nb::handle out_, nb::handle lse_,
                       uintptr_t stream, const Options& o) {
    const ArrayArg q(q_, "q", false), k(k_, "k", false), v(v_, "v", false);
    const ArrayArg out(out_, "out", true), lse(lse_, "lse", true);
    const OptionalArrays opt(o);
    AttentionParams p = common_params(q, k, v, opt, o);
    require_like(out, q);
    set_lse(p, lse, q, opt.varlen());
    const ArrayArg* mask = opt.mask ? &*opt.mask : &q;  // q stands in when absent (already listed)
    require_output(out, {&q, &k, &v, &lse, mask}, Alias::forbidden);
    require_output(lse, {&q, &k, &v, mask}, Alias::forbidden);
    p.o = out.view().data;
    p.o_strides = qkv_strides(out, opt.varlen());
    DeviceGuard guard(q.device_id());
    cudaError_t status;
    {
        nb::gil_scoped_release release;
        status = cuda::attention_forward(p, reinterpret_cast<cudaStream_t>(stream));
    }
    check_cuda(status, "attention_forward");
}

int64_t workspace_size(nb::handle q_, nb::handle cu_seqlens_q, bool deterministic) {
    const ArrayArg q(q_, "q", false);
    const bool varlen = !cu_seqlens_q.is_none();
    if (q.ndim() != (varlen ? 3 : 4))
        throw_value_error(cat("q must be ", varlen ? "(total, H, D)" : "(B, S, H, D)", ", got shape ", q.shape_str()));
    AttentionParams p;
    int32_t cu_placeholder = 0;  // only its presence matters for the size
    p.cu_seqlens_q = varlen ? &cu_placeholder : nullptr;
    p.cu_seqlens_kv = p.cu_seqlens_q;
    p.batch = varlen ? 1 : checked_int(q.size(0), "the batch size");
    p.seqlen_q = checked_int(q.size(varlen ? 0 : 1), "S_q");
    p.total_q = varlen ? p.seqlen_q : 0;
    p.heads_q = p.heads_kv = checked_int(q.size(varlen ? 1 : 2), "the number of q heads");
    p.head_dim = checked_int(q.size(varlen ? 2 : 3), "the head dim");
    p.scale = 1.0f;
    p.deterministic = deterministic;
    if (p.head_dim < 1 || p.head_dim > 256)
        throw_value_error(cat("q must have a head dim in [1, 256], got ", p.head_dim));
    return static_cast<int64_t>(cuda::attention_backward_workspace_size(p));
}

void attention_backward(nb::handle q_, nb::handle k_, nb::handle v_, nb::handle out_, nb::handle grad_out_,
                        nb::handle lse_, nb::handle dq_, nb::handle dk_, nb::handle dv_, nb::handle workspace_,
                        uintptr_t stream, const Options& o, bool deterministic) {
    const ArrayArg q(q_, "q", false), k(k_, "k", false), v(v_, "v", false);
    const ArrayArg out(out_, "out", false), grad_out(grad_out_, "grad_out", false), lse(lse_, "lse", false);
    const ArrayArg dq(dq_, "dq", true), dk(dk_, "dk", true), dv(dv_, "dv", true);
    const ArrayArg workspace(workspace_, "workspace", true);
    const OptionalArrays opt(o);
    AttentionParams p = common_params(q, k, v, opt, o);
    require_like(out, q);
    require_like(grad_out, q);
    require_like(dq, q);
    require_like(dk, k);
    require_like(dv, k);
    set_lse(p, lse, q, opt.varlen());
    const ArrayArg* mask = opt.mask ? &*opt.mask : &q;
    for (const ArrayArg* w : {&dq, &dk, &dv, &workspace})
        require_output(*w, {&q, &k, &v, &out, &grad_out, &lse, mask}, Alias::forbidden);
    require_output(dq, {&dk, &dv, &workspace}, Alias::forbidden);
    require_output(dk, {&dv, &workspace}, Alias::forbidden);
    require_output(dv, {&workspace}, Alias::forbidden);

    p.deterministic = deterministic;
    p.o = out.view().data;
    p.do_ = grad_out.view().data;
    p.dq = dq.view().data;
    p.dk = dk.view().data;
    p.dv = dv.view().data;
    const bool varlen = opt.varlen();
    p.o_strides = qkv_strides(out, varlen);
    p.do_strides = qkv_strides(grad_out, varlen);
    p.dq_strides = qkv_strides(dq, varlen);
    p.dk_strides = qkv_strides(dk, varlen);
    p.dv_strides = qkv_strides(dv, varlen);

    require_cuda(workspace);
    require_same_device(q, workspace);
    const size_t need = cuda::attention_backward_workspace_size(p);
    const size_t have = size_t(workspace.numel()) * dtype_size(workspace.dtype());
    if (workspace.ndim() != 1 || (workspace.numel() > 1 && workspace.view().strides[0] != 1))
        throw_value_error(cat("workspace must be a contiguous 1-D array, got shape ", workspace.shape_str()));
    if (have < need)
        throw_value_error(cat("workspace must hold at least ", need,
                              " bytes (flash_attention_backward_workspace_size), got ",
                              have));
    if (reinterpret_cast<uintptr_t>(workspace.view().data) % 256 != 0)
        throw_value_error("workspace must be 256-byte aligned (a fresh allocation is)");
    p.workspace = workspace.view().data;

    DeviceGuard guard(q.device_id());
    cudaError_t status;
    {
        nb::gil_scoped_release release;
        status = cuda::attention_backward(p, reinterpret_cast<cudaStream_t>(stream));
    }
    check_cuda(status, "attention_backward");
}

}  // namespace

void bind_attention(nb::module_& m) {
    m.def("flash_attention_forward",
          [](nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle lse, uintptr_t stream,
             std::optional<double> scale, bool causal, nb::handle key_padding_mask, nb::handle cu_seqlens_q,
             nb::handle cu_seqlens_kv, std::optional<int64_t> max_seqlen_q, std::optional<int64_t> max_seqlen_kv) {
              flash_attention_forward(q, k, v, out, lse, stream,
                                {scale, causal, key_padding_mask, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q,
                                 max_seqlen_kv});
          },
          nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"), nb::kw_only(),
          nb::arg("stream"), nb::arg("scale") = nb::none(), nb::arg("causal") = false,
          nb::arg("key_padding_mask") = nb::none(), nb::arg("cu_seqlens_q") = nb::none(),
          nb::arg("cu_seqlens_kv") = nb::none(), nb::arg("max_seqlen_q") = nb::none(),
          nb::arg("max_seqlen_kv") = nb::none(),
          "Fused attention forward: writes out and lse (see cuda/bind/bind_attention.cpp for layouts).");
    m.def("flash_attention_backward_workspace_size", &workspace_size, nb::arg("q"), nb::kw_only(),
          nb::arg("cu_seqlens_q") = nb::none(), nb::arg("deterministic") = false,
          "Bytes of device scratch attention_backward needs for this q.");
    m.def("flash_attention_backward",
          [](nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle grad_out, nb::handle lse,
             nb::handle dq, nb::handle dk, nb::handle dv, nb::handle workspace, uintptr_t stream,
             std::optional<double> scale, bool causal, nb::handle key_padding_mask, nb::handle cu_seqlens_q,
             nb::handle cu_seqlens_kv, std::optional<int64_t> max_seqlen_q, std::optional<int64_t> max_seqlen_kv,
             bool deterministic) {
              attention_backward(q, k, v, out, grad_out, lse, dq, dk, dv, workspace, stream,
                                 {scale, causal, key_padding_mask, cu_seqlens_q, cu_seqlens_kv, max_seqlen_q,
                                  max_seqlen_kv},
                                 deterministic);
          },
          nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("grad_out"), nb::arg("lse"),
          nb::arg("dq"), nb::arg("dk"), nb::arg("dv"), nb::arg("workspace"), nb::kw_only(), nb::arg("stream"),
          nb::arg("scale") = nb::none(), nb::arg("causal") = false, nb::arg("key_padding_mask") = nb::none(),
          nb::arg("cu_seqlens_q") = nb::none(), nb::arg("cu_seqlens_kv") = nb::none(),
          nb::arg("max_seqlen_q") = nb::none(), nb::arg("max_seqlen_kv") = nb::none(),
          nb::arg("deterministic") = false,
          "Fused attention backward: writes dq, dk, dv; workspace holds "
          "flash_attention_backward_workspace_size bytes.");
}

}  // namespace fastnn::bind
