// Bindings of the optimizer family; the checks are csrc/bind/optim_args.h.
#include <nanobind/stl/vector.h>

#include "bindings.h"
#include "optim_args.h"

namespace fastnn::bind {
namespace {

using namespace optim_args;

void run_step(OptimStepParams p, const nb::list& params, const nb::list& grads, const std::vector<StateList>& states,
              nb::handle steps, nb::handle masters, nb::handle grad_scale, nb::handle found_inf) {
    const StepTable table(p, require_cpu, params, grads, states, steps, masters, grad_scale, found_inf);
    nb::gil_scoped_release release;
    optim_step(p);
}

void adam_step_py(const nb::list& params, const nb::list& grads, const nb::list& exp_avgs,
                  const nb::list& exp_avg_sqs, nb::handle max_exp_avg_sqs, const nb::list& steps, nb::handle masters,
                  double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
                  bool maximize, bool decoupled_weight_decay, nb::handle grad_scale, nb::handle found_inf) {
    std::vector<StateList> states;
    const OptimStepParams p = adam_params(exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, beta2, eps, weight_decay,
                                          amsgrad, maximize, decoupled_weight_decay, &states);
    run_step(p, params, grads, states, steps, masters, grad_scale, found_inf);
}

void sgd_step_py(const nb::list& params, const nb::list& grads, nb::handle momentum_buffers, nb::handle masters,
                 double lr, double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
                 bool momentum_init, nb::handle grad_scale, nb::handle found_inf) {
    std::vector<StateList> states;
    const OptimStepParams p = sgd_params(momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize,
                                         momentum_init, &states);
    run_step(p, params, grads, states, nb::none(), masters, grad_scale, found_inf);
}

void rmsprop_step_py(const nb::list& params, const nb::list& grads, const nb::list& square_avgs,
                     nb::handle momentum_buffers, nb::handle grad_avgs, const nb::list& steps, nb::handle masters,
                     double lr, double alpha, double eps, double weight_decay, double momentum, bool centered,
                     bool maximize, nb::handle grad_scale, nb::handle found_inf) {
    std::vector<StateList> states;
    const OptimStepParams p = rmsprop_params(square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay,
                                             momentum, centered, maximize, &states);
    run_step(p, params, grads, states, steps, masters, grad_scale, found_inf);
}

double grad_norm_py(const nb::list& grads, double norm_type) {
    require_norm_type(norm_type);
    TensorLists lists;
    const std::vector<GradNormTensor> rows = grad_rows(lists, grads, false, require_cpu);
    GradNormParams p{rows.data(), static_cast<int64_t>(rows.size()), norm_type};
    nb::gil_scoped_release release;
    return grad_norm_reduce(p);
}

void grad_scale_py(const nb::list& grads, double coef) {
    TensorLists lists;
    const std::vector<GradNormTensor> rows = grad_rows(lists, grads, true, require_cpu);
    GradScaleParams p{rows.data(), static_cast<int64_t>(rows.size()), static_cast<float>(coef)};
    nb::gil_scoped_release release;
    grad_scale(p);
}

}  // namespace

void bind_optim(nb::module_& m) {
    m.def("adam_step", &adam_step_py, nb::arg("params"), nb::arg("grads"), nb::arg("exp_avgs"),
          nb::arg("exp_avg_sqs"), nb::arg("max_exp_avg_sqs").none(), nb::arg("steps"), nb::arg("masters").none(),
          nb::arg("lr"), nb::arg("beta1"), nb::arg("beta2"), nb::arg("eps"), nb::arg("weight_decay"),
          nb::arg("amsgrad"), nb::arg("maximize"), nb::arg("decoupled_weight_decay"),
          nb::arg("grad_scale").none(), nb::arg("found_inf").none(),
          "One Adam (decoupled_weight_decay: AdamW) step over every tensor of the lists, as torch.optim.Adam. "
          "steps: each param's float32 step count, incremented here (unless found_inf).");
    m.def("sgd_step", &sgd_step_py, nb::arg("params"), nb::arg("grads"), nb::arg("momentum_buffers").none(),
          nb::arg("masters").none(), nb::arg("lr"), nb::arg("momentum"), nb::arg("dampening"),
          nb::arg("weight_decay"), nb::arg("nesterov"), nb::arg("maximize"), nb::arg("momentum_init"),
          nb::arg("grad_scale").none(), nb::arg("found_inf").none(),
          "One SGD step, as torch.optim.SGD. momentum_init: the buffers are new and are set to the gradient.");
    m.def("rmsprop_step", &rmsprop_step_py, nb::arg("params"), nb::arg("grads"), nb::arg("square_avgs"),
          nb::arg("momentum_buffers").none(), nb::arg("grad_avgs").none(), nb::arg("steps"), nb::arg("masters").none(),
          nb::arg("lr"), nb::arg("alpha"), nb::arg("eps"), nb::arg("weight_decay"), nb::arg("momentum"),
          nb::arg("centered"), nb::arg("maximize"), nb::arg("grad_scale").none(), nb::arg("found_inf").none(),
          "One RMSprop step, as torch.optim.RMSprop.");
    m.def("grad_norm_reduce", &grad_norm_py, nb::arg("grads"), nb::arg("norm_type"),
          "sum |g|^p over all elements of all grads (max |g| for p = inf), accumulated in double; "
          "the order is independent of the thread count.");
    m.def("grad_scale_", &grad_scale_py, nb::arg("grads"), nb::arg("coef"), "grads *= coef in place.");
}

}  // namespace fastnn::bind
