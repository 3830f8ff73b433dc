// Dispatch front of the optimizer family: turns torch.optim's hyperparameters
// into the float32 coefficients of one step (bias corrections in double, the
// way torch.optim's Python computes them), honours found_inf, and runs the
// active ISA's kernels.
#include <cmath>
#include <vector>

#include "fastnn/optim.h"

namespace fastnn {

OptimCoeffs optim_coeffs(const OptimStepParams& p) {
    OptimCoeffs c{};
    c.grad_sign = p.maximize ? -1.0f : 1.0f;
    c.inv_grad_scale = 1.0f;
    const bool decay = p.weight_decay != 0.0;
    c.decoupled = decay && p.kind == OptimKind::adam && p.decoupled_weight_decay;
    c.l2 = decay && !c.decoupled;
    c.weight_decay = static_cast<float>(p.weight_decay);
    c.decay_factor = c.decoupled ? static_cast<float>(1.0 - p.lr * p.weight_decay) : 1.0f;
    c.eps = static_cast<float>(p.eps);
    c.momentum = static_cast<float>(p.momentum);
    c.one_minus_dampening = static_cast<float>(1.0 - p.dampening);
    c.neg_step_size = static_cast<float>(-p.lr);
    if (p.kind == OptimKind::adam) {
        c.lerp_weight = static_cast<float>(1.0 - p.beta1);
        c.beta2 = static_cast<float>(p.beta2);
        c.one_minus_beta2 = static_cast<float>(1.0 - p.beta2);
    } else if (p.kind == OptimKind::rmsprop) {
        c.lerp_weight = static_cast<float>(1.0 - p.alpha);
        c.beta2 = static_cast<float>(p.alpha);
        c.one_minus_beta2 = static_cast<float>(1.0 - p.alpha);
    }
    return c;
}

namespace {

// Increments every row's step count and, for Adam, derives the bias
// corrections from it: in double, as torch.optim's Python does, once per
// distinct count (almost always once per call).
std::vector<AdamRowCoeffs> advance_steps(const OptimStepParams& p) {
    std::vector<AdamRowCoeffs> rows(p.kind == OptimKind::adam ? p.num_tensors : 0);
    float last_step = -1.0f;
    AdamRowCoeffs last{};
    for (int64_t r = 0; r < p.num_tensors; ++r) {
        float* step = p.tensors[r].step;
        if (!step) continue;
        *step += 1.0f;
        if (p.kind != OptimKind::adam) continue;
        if (*step != last_step) {
            last_step = *step;
            const double bias_correction1 = 1.0 - std::pow(p.beta1, static_cast<double>(last_step));
            const double bias_correction2 = 1.0 - std::pow(p.beta2, static_cast<double>(last_step));
            last = {static_cast<float>(-(p.lr / bias_correction1)), static_cast<float>(std::sqrt(bias_correction2))};
        }
        rows[r] = last;
    }
    return rows;
}

}  // namespace

void optim_step(const OptimStepParams& p) {
    if (p.found_inf && *p.found_inf != 0.0f) return;
    OptimCoeffs c = optim_coeffs(p);
    if (p.grad_scale) c.inv_grad_scale = 1.0f / *p.grad_scale;
    const std::vector<AdamRowCoeffs> adam_rows = advance_steps(p);
    c.adam_rows = adam_rows.data();
    FASTNN_SELECT_KERNELS(optim_kernels).step(p, c);
}

double grad_norm_reduce(const GradNormParams& p) { return FASTNN_SELECT_KERNELS(optim_kernels).norm_reduce(p); }

void grad_scale(const GradScaleParams& p) { FASTNN_SELECT_KERNELS(optim_kernels).scale(p); }

}  // namespace fastnn
