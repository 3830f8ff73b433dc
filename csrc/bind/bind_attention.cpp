#include <cmath>
#include <optional>

#include "bindings.h"
#include "checks.h"
#include "fastnn/attention.h"

namespace fastnn::bind {
namespace {

constexpr const char* kQueryShape = "(B, Hq, Sq, D)";
constexpr const char* kKeyShape = "(B, Hkv, Skv, D)";

void require_shape(const ArrayArg& a, std::initializer_list<int64_t> shape, const char* layout) {
    bool same = a.ndim() == static_cast<int>(shape.size());
    int d = 0;
    for (int64_t s : shape) same = same && a.size(d++) == s;
    if (!same) {
        std::string want = "(";
        d = 0;
        for (int64_t s : shape) want += cat(d++ ? ", " : "", s);
        throw_value_error(cat(a.name(), " must be ", layout, " = ", want, want.size() == 2 ? ",)" : ")", ", got ",
                              a.shape_str()));
    }
}

// Checks q, k, v (and everything shaped like them) and returns the mask view.
struct Shapes {
    int64_t B, Hq, Sq, D, Hkv, Skv;
};

Shapes check_qkv(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v) {
    for (const ArrayArg* a : {&q, &k, &v}) {
        require_cpu(*a);
        if (a->ndim() != 4)
            throw_value_error(cat(a->name(), " must have 4 dimensions ", a == &q ? kQueryShape : kKeyShape, ", got ",
                                  a->shape_str()));
    }
    require_dtype(q, {DType::f32, DType::bf16});
    require_same_dtype(q, k);
    require_same_dtype(q, v);
    const Shapes s{q.size(0), q.size(1), q.size(2), q.size(3), k.size(1), k.size(2)};
    if (k.size(0) != s.B || k.size(3) != s.D)
        throw_value_error(cat("k must be (B, Hkv, Skv, D) with B = ", s.B, " and D = ", s.D, " (from q), got ",
                              k.shape_str()));
    require_same_shape(k, v);
    if (s.Hkv == 0 ? s.Hq != 0 : s.Hq % s.Hkv != 0)
        throw_value_error(cat("k has ", s.Hkv, " heads, which must divide q's ", s.Hq, " heads"));
    if (s.D == 0) throw_value_error(cat("q must have a head dimension D >= 1, got ", q.shape_str()));
    return s;
}

TensorView check_mask(nb::handle mask, std::optional<ArrayArg>& holder, const ArrayArg& q,
                      const Shapes& s) {
    if (mask.is_none()) return TensorView{};
    holder.emplace(mask, "attn_mask", false);
    const ArrayArg& m = *holder;
    require_cpu(m);
    require_dtype(m, {DType::boolean, q.dtype()});
    require_shape(m, {s.B, s.Hq, s.Sq, s.Skv}, "(B, Hq, Sq, Skv) (broadcast it first)");
    return m.view();
}

// out_float: None, or a float32 tensor shaped like q (and out), for
// bfloat16 attention.
TensorView check_out_float(nb::handle out_float, std::optional<ArrayArg>& holder, const ArrayArg& q, bool output) {
    if (out_float.is_none()) return TensorView{};
    holder.emplace(out_float, "out_float", output);
    const ArrayArg& f = *holder;
    require_cpu(f);
    if (q.dtype() != DType::bf16)
        throw_value_error(cat("out_float is for bfloat16 attention only; pass None for ", dtype_name(q.dtype())));
    require_dtype(f, {DType::f32});
    require_same_shape(q, f);
    return f.view();
}

void check_scale(double scale) {
    if (!std::isfinite(scale)) throw_value_error(cat("scale must be finite, got ", scale));
}

void attention_forward_py(nb::handle q, nb::handle k, nb::handle v, nb::handle mask, nb::handle out,
                          nb::handle lse, nb::handle out_float, double scale, bool causal) {
    const ArrayArg Q(q, "q", false), K(k, "k", false), V(v, "v", false);
    const ArrayArg O(out, "out", true), L(lse, "lse", true);
    const Shapes s = check_qkv(Q, K, V);
    std::optional<ArrayArg> mask_holder;
    const TensorView mask_view = check_mask(mask, mask_holder, Q, s);
    check_scale(scale);
    require_same_device(Q, O);
    require_same_dtype(Q, O);
    require_same_shape(Q, O);
    require_dtype(L, {DType::f32});
    require_shape(L, {s.B, s.Hq, s.Sq}, "(B, Hq, Sq)");
    std::initializer_list<const ArrayArg*> inputs = {&Q, &K, &V};
    require_output(O, inputs, Alias::forbidden);
    require_output(L, inputs, Alias::forbidden);
    require_output(L, {&O}, Alias::forbidden);
    if (mask_holder) {
        require_output(O, {&*mask_holder}, Alias::forbidden);
        require_output(L, {&*mask_holder}, Alias::forbidden);
    }
    std::optional<ArrayArg> float_holder;
    const TensorView float_view = check_out_float(out_float, float_holder, Q, true);
    if (float_holder) {
        require_output(*float_holder, {&Q, &K, &V, &O, &L}, Alias::forbidden);
        if (mask_holder) require_output(*float_holder, {&*mask_holder}, Alias::forbidden);
    }
    const AttentionParams p{Q.view(), K.view(), V.view(), mask_view, O.view(), L.view(), float_view,
                            static_cast<float>(scale), causal};
    nb::gil_scoped_release release;
    attention_forward(p);
}

void attention_backward_py(nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle grad_out,
                           nb::handle lse, nb::handle mask, nb::handle out_float, nb::handle dq,
                           nb::handle dk, nb::handle dv, double scale, bool causal) {
    const ArrayArg Q(q, "q", false), K(k, "k", false), V(v, "v", false), O(out, "out", false);
    const ArrayArg G(grad_out, "grad_out", false), L(lse, "lse", false);
    const ArrayArg DQ(dq, "dq", true), DK(dk, "dk", true), DV(dv, "dv", true);
    const Shapes s = check_qkv(Q, K, V);
    std::optional<ArrayArg> mask_holder;
    const TensorView mask_view = check_mask(mask, mask_holder, Q, s);
    check_scale(scale);
    for (const ArrayArg* a : {&O, &G, &DQ}) {
        require_same_device(Q, *a);
        require_same_dtype(Q, *a);
        require_same_shape(Q, *a);
    }
    for (const ArrayArg* a : {&DK, &DV}) {
        require_same_device(K, *a);
        require_same_dtype(K, *a);
        require_same_shape(K, *a);
    }
    require_dtype(L, {DType::f32});
    require_shape(L, {s.B, s.Hq, s.Sq}, "(B, Hq, Sq)");
    std::optional<ArrayArg> float_holder;
    const TensorView float_view = check_out_float(out_float, float_holder, Q, false);
    for (const ArrayArg* w : {&DQ, &DK, &DV}) {
        require_output(*w, {&Q, &K, &V, &O, &G, &L}, Alias::forbidden);
        if (mask_holder) require_output(*w, {&*mask_holder}, Alias::forbidden);
        if (float_holder) require_output(*w, {&*float_holder}, Alias::forbidden);
    }
    require_output(DQ, {&DK, &DV}, Alias::forbidden);
    require_output(DK, {&DV}, Alias::forbidden);
    const AttentionBackwardParams p{Q.view(),  K.view(),  V.view(),  O.view(),
                                    G.view(),  L.view(),  mask_view, float_view,
                                    DQ.view(), DK.view(), DV.view(), static_cast<float>(scale), causal};
    nb::gil_scoped_release release;
    attention_backward(p);
}

}  // namespace

void bind_attention(nb::module_& m) {
    m.def("attention_forward", &attention_forward_py, nb::arg("q"), nb::arg("k"), nb::arg("v"),
          nb::arg("mask").none(), nb::arg("out"), nb::arg("lse"), nb::arg("out_float").none(), nb::arg("scale"),
          nb::arg("causal"),
          "out = softmax(scale q k^T + mask) v per head (flash style); lse = the row log-sum-exp; out_float "
          "(None, or float32 like out, bfloat16 attention only) = out before its rounding, for the backward. "
          "All views (B, H, S, D); mask None or (B, Hq, Sq, Skv), bool or q's dtype.");
    m.def("attention_backward", &attention_backward_py, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"),
          nb::arg("grad_out"), nb::arg("lse"), nb::arg("mask").none(), nb::arg("out_float").none(), nb::arg("dq"),
          nb::arg("dk"), nb::arg("dv"),
          nb::arg("scale"), nb::arg("causal"), "Gradients of attention_forward with respect to q, k and v.");
}

}  // namespace fastnn::bind
