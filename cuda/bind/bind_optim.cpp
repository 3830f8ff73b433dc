// fastnn._cuda optimizers: adam_step, sgd_step and rmsprop_step with the CPU
// module's names, arguments and checks (csrc/bind/optim_args.h) plus a
// trailing stream; every tensor, step counts and GradScaler scalars included,
// on one CUDA device. Clipping differs from the CPU module where a value
// would have to come back to the host: grad_norm writes the norm (root
// applied) to a device tensor instead of returning the sum of powers, and
// grad_scale_ takes its coefficient as a device tensor.
#include <nanobind/stl/vector.h>

#include "../../csrc/bind/optim_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

using namespace optim_args;

void run_step(OptimStepParams p, const nb::list& params, const nb::list& grads, const std::vector<StateList>& states,
              nb::handle steps, nb::handle masters, nb::handle grad_scale, nb::handle found_inf, uintptr_t stream) {
    const StepTable table(p, require_cuda, params, grads, states, steps, masters, grad_scale, found_inf);
    if (p.num_tensors == 0) return;
    DeviceGuard guard(table.device_id());
    check_cuda(cuda::optim_step(p, as_stream(stream)), "optim_step");
}

void adam_step(const nb::list& params, const nb::list& grads, const nb::list& exp_avgs, const nb::list& exp_avg_sqs,
               nb::handle max_exp_avg_sqs, const nb::list& steps, nb::handle masters, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool amsgrad, bool maximize,
               bool decoupled_weight_decay, nb::handle grad_scale, nb::handle found_inf, uintptr_t stream) {
    std::vector<StateList> states;
    const OptimStepParams p = adam_params(exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, beta2, eps, weight_decay,
                                          amsgrad, maximize, decoupled_weight_decay, &states);
    run_step(p, params, grads, states, steps, masters, grad_scale, found_inf, stream);
}

void sgd_step(const nb::list& params, const nb::list& grads, nb::handle momentum_buffers, nb::handle masters,
              double lr, double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
              bool momentum_init, nb::handle grad_scale, nb::handle found_inf, uintptr_t stream) {
    std::vector<StateList> states;
    const OptimStepParams p = sgd_params(momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize,
                                         momentum_init, &states);
    run_step(p, params, grads, states, nb::none(), masters, grad_scale, found_inf, stream);
}

void rmsprop_step(const nb::list& params, const nb::list& grads, const nb::list& square_avgs,
                  nb::handle momentum_buffers, nb::handle grad_avgs, const nb::list& steps, nb::handle masters,
                  double lr, double alpha, double eps, double weight_decay, double momentum, bool centered,
                  bool maximize, nb::handle grad_scale, nb::handle found_inf, uintptr_t stream) {
    std::vector<StateList> states;
    const OptimStepParams p = rmsprop_params(square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay,
                                             momentum, centered, maximize, &states);
    run_step(p, params, grads, states, steps, masters, grad_scale, found_inf, stream);
}

void grad_norm(const nb::list& grads, double norm_type, nb::handle out, uintptr_t stream) {
    require_norm_type(norm_type);
    TensorLists lists;
    const std::vector<GradNormTensor> rows = grad_rows(lists, grads, false, require_cuda);
    const ArrayArg norm(out, "out", true);
    require_cuda(norm);
    require_dtype(norm, {DType::f32, DType::bf16});
    if (norm.numel() != 1) throw_value_error(cat("out must hold one element, got shape ", norm.shape_str()));
    for (const ArrayArg& grad : lists.args()) {
        require_same_device(grad, norm);
        require_output(norm, {&grad}, Alias::forbidden);
    }
    DeviceGuard guard(norm.device_id());
    const GradNormParams p{rows.data(), static_cast<int64_t>(rows.size()), norm_type};
    check_cuda(cuda::grad_norm(p, norm.view(), as_stream(stream)), "grad_norm");
}

void grad_scale_(const nb::list& grads, nb::handle coef, uintptr_t stream) {
    TensorLists lists;
    const std::vector<GradNormTensor> rows = grad_rows(lists, grads, true, require_cuda);
    const ArrayArg c(coef, "coef", false);
    require_cuda(c);
    require_dtype(c, {DType::f32, DType::bf16});
    if (c.numel() != 1) throw_value_error(cat("coef must hold one element, got shape ", c.shape_str()));
    for (const ArrayArg& grad : lists.args()) {
        require_same_device(grad, c);
        require_output(grad, {&c}, Alias::forbidden);
    }
    DeviceGuard guard(c.device_id());
    check_cuda(cuda::grad_scale(rows.data(), static_cast<int64_t>(rows.size()), c.view(), as_stream(stream)),
               "grad_scale_");
}

}  // namespace

void bind_optim(nb::module_& m) {
    m.def("adam_step", &adam_step, nb::arg("params"), nb::arg("grads"), nb::arg("exp_avgs"), nb::arg("exp_avg_sqs"),
          nb::arg("max_exp_avg_sqs").none(), nb::arg("steps"), nb::arg("masters").none(), nb::arg("lr"),
          nb::arg("beta1"), nb::arg("beta2"), nb::arg("eps"), nb::arg("weight_decay"), nb::arg("amsgrad"),
          nb::arg("maximize"), nb::arg("decoupled_weight_decay"), nb::arg("grad_scale").none(),
          nb::arg("found_inf").none(), nb::arg("stream"),
          "One Adam (decoupled_weight_decay: AdamW) step over every tensor of the lists, as torch.optim.Adam; "
          "steps are float32 CUDA scalars, incremented on the device (unless found_inf).");
    m.def("sgd_step", &sgd_step, nb::arg("params"), nb::arg("grads"), nb::arg("momentum_buffers").none(),
          nb::arg("masters").none(), nb::arg("lr"), nb::arg("momentum"), nb::arg("dampening"),
          nb::arg("weight_decay"), nb::arg("nesterov"), nb::arg("maximize"), nb::arg("momentum_init"),
          nb::arg("grad_scale").none(), nb::arg("found_inf").none(), nb::arg("stream"),
          "One SGD step, as torch.optim.SGD. momentum_init: the buffers are new and are set to the gradient.");
    m.def("rmsprop_step", &rmsprop_step, nb::arg("params"), nb::arg("grads"), nb::arg("square_avgs"),
          nb::arg("momentum_buffers").none(), nb::arg("grad_avgs").none(), nb::arg("steps"), nb::arg("masters").none(),
          nb::arg("lr"), nb::arg("alpha"), nb::arg("eps"), nb::arg("weight_decay"), nb::arg("momentum"),
          nb::arg("centered"), nb::arg("maximize"), nb::arg("grad_scale").none(), nb::arg("found_inf").none(),
          nb::arg("stream"), "One RMSprop step, as torch.optim.RMSprop.");
    m.def("grad_norm", &grad_norm, nb::arg("grads"), nb::arg("norm_type"), nb::arg("out"), nb::arg("stream"),
          "out (one element, float32 or bfloat16) = the norm_type-norm of all elements of all grads, root "
          "applied, reduced in a fixed order; nothing returns to the host.");
    m.def("grad_scale_", &grad_scale_, nb::arg("grads"), nb::arg("coef"), nb::arg("stream"),
          "grads *= coef in place, coef a one-element float32 or bfloat16 CUDA tensor; a no-op when coef is 1.");
}

}  // namespace fastnn::bind
