// Fused optimizer steps (Adam/AdamW, SGD, RMSprop) and gradient-norm clipping
// over many tensors per call. The binding layer hands the kernels one table of
// rows, each row one parameter with its gradient and optimizer state, all
// dense, of one memory layout, and already validated. The kernels treat the
// table as one flat range of elements and split that range evenly across
// threads, so one huge tensor and a thousand small ones both balance.
//
// Arithmetic follows torch.optim's default CPU path (the single-tensor
// implementation) operation by operation, with the same float32 roundings and
// the same fused multiply-adds, so results agree to the last bit or two.
// Parameters and gradients are float32 or bfloat16; optimizer state is always
// float32 (for bfloat16 parameters this is the mixed-precision recipe), and a
// bfloat16 parameter may keep a float32 master copy that the step updates and
// rounds to the parameter.
#pragma once

#include <cstdint>

#include "fastnn/dispatch.h"
#include "fastnn/tensor.h"

namespace fastnn {

inline constexpr int kOptimMaxState = 3;

// One parameter. state[k] meaning per optimizer:
//   adam:    exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only)
//   sgd:     momentum_buffer (momentum != 0 only)
//   rmsprop: square_avg, momentum_buffer (momentum > 0), grad_avg (centered)
struct OptimTensor {
    void* param = nullptr;        // param dtype; read unless master is set, written
    void* grad = nullptr;         // param dtype; written only when grad_scale is set
    float* state[kOptimMaxState] = {};
    float* master = nullptr;      // float32 copy of a bfloat16 param, or null
    float* step = nullptr;        // adam, rmsprop: state['step'], incremented by the step
    int64_t numel = 0;
};

enum class OptimKind : uint8_t { adam, sgd, rmsprop };

// What the caller asks for, in torch.optim's terms (doubles, as Python holds
// them). optim_step turns these into the float32 per-step coefficients.
struct OptimStepParams {
    OptimKind kind = OptimKind::adam;
    DType param_dtype = DType::f32;  // f32 or bf16; grads have the same dtype
    bool master_weights = false;     // every row has a master (bf16 params only)
    const OptimTensor* tensors = nullptr;
    int64_t num_tensors = 0;

    double lr = 0.0;
    double weight_decay = 0.0;
    double eps = 0.0;
    bool maximize = false;
    // adam
    double beta1 = 0.0, beta2 = 0.0;
    bool amsgrad = false;
    bool decoupled_weight_decay = false;  // AdamW
    // sgd, rmsprop
    double momentum = 0.0;
    double dampening = 0.0;
    bool nesterov = false;
    bool momentum_init = false;  // sgd: buffers are new, this step sets buf = grad
    // rmsprop
    double alpha = 0.0;
    bool centered = false;

    // torch.amp.GradScaler: when *found_inf != 0 the step does nothing (step
    // counts included, as torch's fused optimizers leave them); when
    // grad_scale is set, grads are multiplied by 1 / *grad_scale first and
    // the unscaled grads are written back (as GradScaler.unscale_ does).
    const float* grad_scale = nullptr;
    const float* found_inf = nullptr;
};

// Adam's step-count-dependent scalars, per row (rows may be at different
// step counts: a parameter without a gradient on some steps lags behind).
struct AdamRowCoeffs {
    float neg_step_size;          // -lr / (1 - beta1^t)
    float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};

// The per-step float32 coefficients the element loops read. Computed once
// per call from OptimStepParams (bias corrections in double, as torch does).
struct OptimCoeffs {
    float grad_sign;       // -1 when maximizing
    float inv_grad_scale;  // 1 without a GradScaler
    float weight_decay;    // L2 term added to the grad; 0 when decoupled or off
    bool l2;               // weight_decay applies to the grad
    float decay_factor;    // AdamW: p *= 1 - lr * wd (1 when off)
    bool decoupled;
    float lerp_weight;     // adam: 1 - beta1; rmsprop centered: 1 - alpha
    float beta2;           // adam: beta2; rmsprop: alpha
    float one_minus_beta2; // adam: 1 - beta2; rmsprop: 1 - alpha
    float neg_step_size;   // sgd, rmsprop: -lr
    const AdamRowCoeffs* adam_rows;  // adam: one per row
    float eps;
    float momentum;
    float one_minus_dampening;
};

struct GradNormTensor {
    const void* data = nullptr;
    DType dtype = DType::f32;  // f32 or bf16
    int64_t numel = 0;
};

struct GradNormParams {
    const GradNormTensor* tensors = nullptr;
    int64_t num_tensors = 0;
    double norm_type = 2.0;  // > 0, or +inf
};

struct GradScaleParams {
    const GradNormTensor* tensors = nullptr;  // written in place
    int64_t num_tensors = 0;
    float coef = 1.0f;
};

void optim_step(const OptimStepParams& p);
// The coefficients of p that depend on the hyperparameters only: everything
// but inv_grad_scale (1 here) and adam_rows (null), which read tensors. The
// CUDA optimizers share it with the CPU path.
OptimCoeffs optim_coeffs(const OptimStepParams& p);
// sum |g|^p over all elements (max |g| for inf), before the 1/p root. The
// reduction order depends on the element count and the ISA, never on the
// thread count.
double grad_norm_reduce(const GradNormParams& p);
void grad_scale(const GradScaleParams& p);

struct OptimKernels {
    void (*step)(const OptimStepParams&, const OptimCoeffs&);
    double (*norm_reduce)(const GradNormParams&);
    void (*scale)(const GradScaleParams&);
};
FASTNN_DECLARE_KERNEL_TABLE(OptimKernels, optim_kernels)

}  // namespace fastnn
