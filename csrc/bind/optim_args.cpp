#include "optim_args.h"

#include <algorithm>

namespace fastnn::bind::optim_args {
namespace {

// The optimizer kernels run over each tensor as one flat range, so a tensor
// must cover its memory without gaps (any dimension order), and every tensor
// of a row must share the parameter's strides so flat index k is the same
// element in all of them.
bool dense(const TensorView& v) {
    std::pair<int64_t, int64_t> dims[kMaxDims];  // (stride, size) of the dims that move
    int moving = 0;
    for (int d = 0; d < v.ndim; ++d) {
        if (v.shape[d] == 0) return true;
        if (v.shape[d] > 1) dims[moving++] = {v.strides[d], v.shape[d]};
    }
    // Insertion sort by stride: at most kMaxDims entries (and std::sort on a
    // fixed array trips GCC 12's -Warray-bounds).
    for (int k = 1; k < moving; ++k)
        for (int j = k; j > 0 && dims[j].first < dims[j - 1].first; --j) std::swap(dims[j], dims[j - 1]);
    int64_t expected = 1;
    for (int k = 0; k < moving; ++k) {
        if (dims[k].first != expected) return false;
        expected *= dims[k].second;
    }
    return true;
}

void require_dense(const ArrayArg& a) {
    if (!dense(a.view()))
        throw_value_error(cat(a.name(), " must be dense (contiguous in some dimension order, no gaps); got shape ",
                              a.shape_str(), " with other strides"));
}

void require_same_strides(const ArrayArg& a, const ArrayArg& b) {
    for (int d = 0; d < a.ndim(); ++d)
        if (a.size(d) > 1 && a.view().strides[d] != b.view().strides[d])
            throw_value_error(cat(b.name(), " must have the memory layout (strides) of ", a.name()));
}

// No two tensors of a call may share memory unless both are only read: rows
// run concurrently, and within a row an output aliasing an input would change
// the arithmetic. Every tensor is dense (so it cannot overlap itself or
// broadcast) and occupies [data, data + bytes); one sort finds any overlap.
struct Span {
    uintptr_t lo, hi;
    const ArrayArg* arg;
    bool written;
};

void require_disjoint_rows(std::vector<Span>& spans) {
    // Stable, so equal addresses report in argument order (params before state).
    std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.lo < b.lo; });
    const Span* reach = nullptr;  // the span reaching furthest so far
    for (const Span& s : spans) {
        if (reach && s.lo < reach->hi && (s.written || reach->written))
            throw_value_error(cat(s.arg->name(), " overlaps ", reach->arg->name(),
                                  "; every parameter, gradient and state tensor needs its own memory"));
        if (!reach || s.hi > reach->hi) reach = &s;
    }
}

std::size_t require_list(const nb::list& list, const char* name, std::size_t expected) {
    if (list.size() != expected)
        throw_value_error(cat(name, " must have one tensor per parameter (", expected, "), got ", list.size()));
    return expected;
}

const ArrayArg* scalar_arg(TensorLists& lists, nb::handle obj, const char* name, RequireDevice require_device) {
    if (obj.is_none()) return nullptr;
    const ArrayArg& a = lists.add(obj, name, false);
    require_device(a);
    require_dtype(a, {DType::f32});
    if (a.numel() != 1) throw_value_error(cat(name, " must hold one element, got shape ", a.shape_str()));
    return &a;
}

void require_hyper(bool ok, const char* name, double value, const char* rule) {
    if (!ok) throw_value_error(cat(name, " must be ", rule, ", got ", value));
}

}  // namespace

StepTable::StepTable(OptimStepParams& p, RequireDevice require_device, const nb::list& params, const nb::list& grads,
                     const std::vector<StateList>& states, nb::handle steps, nb::handle masters,
                     nb::handle grad_scale, nb::handle found_inf) {
    const std::size_t n = params.size();
    require_list(grads, "grads", n);
    for (const StateList& s : states) require_list(s.tensors, s.name, n);
    const bool has_master = !masters.is_none();
    if (has_master) require_list(nb::cast<nb::list>(masters), "masters", n);
    const bool has_steps = !steps.is_none();
    if (has_steps) require_list(nb::cast<nb::list>(steps), "steps", n);

    const ArrayArg* scale = scalar_arg(lists_, grad_scale, "grad_scale", require_device);
    const ArrayArg* inf = scalar_arg(lists_, found_inf, "found_inf", require_device);
    p.grad_scale = scale ? static_cast<const float*>(scale->view().data) : nullptr;
    p.found_inf = inf ? static_cast<const float*>(inf->view().data) : nullptr;
    const bool grads_written = scale != nullptr;

    rows_.resize(n);
    std::vector<Span> spans;
    auto add_span = [&](const ArrayArg& a, bool written) {
        const auto lo = reinterpret_cast<uintptr_t>(a.view().data);
        if (a.numel() > 0) spans.push_back({lo, lo + a.numel() * dtype_size(a.dtype()), &a, written});
    };
    const ArrayArg* first = nullptr;  // params[0]: every tensor of the call is on its device
    for (std::size_t i = 0; i < n; ++i) {
        const std::string idx = "[" + std::to_string(i) + "]";
        const ArrayArg& param = lists_.add(params[i], "params" + idx, true);
        require_device(param);
        if (!first) first = &param;
        require_same_device(*first, param);
        require_dtype(param, {DType::f32, DType::bf16});
        if (i == 0) p.param_dtype = param.dtype();
        else if (param.dtype() != p.param_dtype)
            throw_type_error(cat(param.name(), " must have the dtype of params[0] (", dtype_name(p.param_dtype),
                                 "), got ", dtype_name(param.dtype()), "; pass one dtype per call"));
        require_dense(param);

        const ArrayArg& grad = lists_.add(grads[i], "grads" + idx, grads_written);
        require_same_device(param, grad);
        require_same_dtype(param, grad);
        require_same_shape(param, grad);
        require_same_strides(param, grad);

        add_span(param, true);
        add_span(grad, grads_written);
        OptimTensor& row = rows_[i];
        row.param = param.view().data;
        row.grad = grad.view().data;
        row.numel = param.numel();
        auto add_written_f32 = [&](nb::handle obj, const std::string& name) -> float* {
            const ArrayArg& a = lists_.add(obj, name, true);
            require_same_device(param, a);
            require_dtype(a, {DType::f32});
            require_same_shape(param, a);
            require_same_strides(param, a);
            add_span(a, true);
            return static_cast<float*>(a.view().data);
        };
        for (std::size_t k = 0; k < states.size(); ++k)
            row.state[states[k].slot] = add_written_f32(states[k].tensors[i], states[k].name + idx);
        if (has_master) {
            if (p.param_dtype != DType::bf16)
                throw_value_error(cat("masters must be None for ", dtype_name(p.param_dtype),
                                      " params; a float32 master copy is kept for bfloat16 params only"));
            row.master = add_written_f32(nb::cast<nb::list>(masters)[i], "masters" + idx);
        }
        if (has_steps) {
            const ArrayArg& step = lists_.add(nb::cast<nb::list>(steps)[i], "steps" + idx, true);
            require_device(step);
            require_same_device(param, step);
            require_dtype(step, {DType::f32});
            if (step.numel() != 1)
                throw_value_error(cat(step.name(), " must hold one element (the step count), got shape ",
                                      step.shape_str()));
            add_span(step, true);
            row.step = static_cast<float*>(step.view().data);
        }
    }
    require_disjoint_rows(spans);
    if (first) {
        device_id_ = first->device_id();
        for (const ArrayArg* scalar : {scale, inf})
            if (scalar) require_same_device(*first, *scalar);
    }
    p.master_weights = has_master;
    p.tensors = rows_.data();
    p.num_tensors = static_cast<int64_t>(n);
}

OptimStepParams adam_params(const nb::list& exp_avgs, const nb::list& exp_avg_sqs, nb::handle max_exp_avg_sqs,
                            double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
                            bool maximize, bool decoupled_weight_decay, std::vector<StateList>* states) {
    require_hyper(lr >= 0.0, "lr", lr, ">= 0");
    require_hyper(beta1 >= 0.0 && beta1 < 1.0, "beta1", beta1, "in [0, 1)");
    require_hyper(beta2 >= 0.0 && beta2 < 1.0, "beta2", beta2, "in [0, 1)");
    require_hyper(eps >= 0.0, "eps", eps, ">= 0");
    require_hyper(weight_decay >= 0.0, "weight_decay", weight_decay, ">= 0");
    if (amsgrad == max_exp_avg_sqs.is_none())
        throw_value_error("max_exp_avg_sqs must be a list exactly when amsgrad is True");
    OptimStepParams p;
    p.kind = OptimKind::adam;
    p.lr = lr, p.beta1 = beta1, p.beta2 = beta2, p.eps = eps, p.weight_decay = weight_decay;
    p.amsgrad = amsgrad, p.maximize = maximize, p.decoupled_weight_decay = decoupled_weight_decay;
    *states = {{0, "exp_avgs", exp_avgs}, {1, "exp_avg_sqs", exp_avg_sqs}};
    if (amsgrad) states->push_back({2, "max_exp_avg_sqs", nb::cast<nb::list>(max_exp_avg_sqs)});
    return p;
}

OptimStepParams sgd_params(nb::handle momentum_buffers, double lr, double momentum, double dampening,
                           double weight_decay, bool nesterov, bool maximize, bool momentum_init,
                           std::vector<StateList>* states) {
    require_hyper(lr >= 0.0, "lr", lr, ">= 0");
    require_hyper(momentum >= 0.0, "momentum", momentum, ">= 0");
    require_hyper(weight_decay >= 0.0, "weight_decay", weight_decay, ">= 0");
    if ((momentum != 0.0) == momentum_buffers.is_none())
        throw_value_error("momentum_buffers must be a list exactly when momentum != 0");
    if (nesterov && (momentum <= 0.0 || dampening != 0.0))
        throw_value_error("nesterov requires momentum > 0 and dampening == 0");
    OptimStepParams p;
    p.kind = OptimKind::sgd;
    p.lr = lr, p.momentum = momentum, p.dampening = dampening, p.weight_decay = weight_decay;
    p.nesterov = nesterov, p.maximize = maximize, p.momentum_init = momentum_init;
    states->clear();
    if (momentum != 0.0) states->push_back({0, "momentum_buffers", nb::cast<nb::list>(momentum_buffers)});
    return p;
}

OptimStepParams rmsprop_params(const nb::list& square_avgs, nb::handle momentum_buffers, nb::handle grad_avgs,
                               double lr, double alpha, double eps, double weight_decay, double momentum,
                               bool centered, bool maximize, std::vector<StateList>* states) {
    require_hyper(lr >= 0.0, "lr", lr, ">= 0");
    require_hyper(alpha >= 0.0, "alpha", alpha, ">= 0");
    require_hyper(eps >= 0.0, "eps", eps, ">= 0");
    require_hyper(weight_decay >= 0.0, "weight_decay", weight_decay, ">= 0");
    require_hyper(momentum >= 0.0, "momentum", momentum, ">= 0");
    if ((momentum > 0.0) == momentum_buffers.is_none())
        throw_value_error("momentum_buffers must be a list exactly when momentum > 0");
    if (centered == grad_avgs.is_none()) throw_value_error("grad_avgs must be a list exactly when centered is True");
    OptimStepParams p;
    p.kind = OptimKind::rmsprop;
    p.lr = lr, p.alpha = alpha, p.eps = eps, p.weight_decay = weight_decay, p.momentum = momentum;
    p.centered = centered, p.maximize = maximize;
    *states = {{0, "square_avgs", square_avgs}};
    if (momentum > 0.0) states->push_back({1, "momentum_buffers", nb::cast<nb::list>(momentum_buffers)});
    if (centered) states->push_back({2, "grad_avgs", nb::cast<nb::list>(grad_avgs)});
    return p;
}

std::vector<GradNormTensor> grad_rows(TensorLists& lists, const nb::list& grads, bool written,
                                      RequireDevice require_device) {
    std::vector<GradNormTensor> rows(grads.size());
    const ArrayArg* first = nullptr;
    for (std::size_t i = 0; i < grads.size(); ++i) {
        const ArrayArg& g = lists.add(grads[i], "grads[" + std::to_string(i) + "]", written);
        require_device(g);
        if (!first) first = &g;
        require_same_device(*first, g);
        require_dtype(g, {DType::f32, DType::bf16});
        require_dense(g);
        rows[i] = {g.view().data, g.dtype(), g.numel()};
    }
    return rows;
}

void require_norm_type(double norm_type) {
    if (!(norm_type > 0.0)) throw_value_error(cat("norm_type must be > 0 or inf, got ", norm_type));
}

}  // namespace fastnn::bind::optim_args
