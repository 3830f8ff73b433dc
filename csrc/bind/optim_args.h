// Validation of the optimizer bindings' tensor lists and hyperparameters,
// shared by the CPU module (csrc/bind/bind_optim.cpp) and the CUDA one
// (cuda/bind/bind_optim.cpp): every tensor of every list is checked (device
// by the module's own check, dtype, shape, layout, writability, aliasing)
// before a row of the kernels' table is filled; the kernels trust the table
// completely.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "checks.h"
#include "fastnn/optim.h"

namespace fastnn::bind::optim_args {

// Names ("params[3]") outlive the ArrayArgs that point at them; the arrays
// stay held as long as the lists.
class TensorLists {
public:
    const ArrayArg& add(nb::handle obj, const std::string& name, bool written) {
        names_.push_back(name);
        args_.emplace_back(obj, names_.back().c_str(), written);
        return args_.back();
    }
    const std::deque<ArrayArg>& args() const { return args_; }

private:
    std::deque<std::string> names_;
    std::deque<ArrayArg> args_;
};

struct StateList {
    int slot;  // index into OptimTensor::state
    const char* name;
    nb::list tensors;
};

// One optimizer call's rows: validates params, grads, the state lists,
// steps, masters, grad_scale and found_inf (each on the device of params[0])
// and points p's table at them. p stays valid while the table lives.
class StepTable {
public:
    StepTable(OptimStepParams& p, RequireDevice require_device, const nb::list& params, const nb::list& grads,
              const std::vector<StateList>& states, nb::handle steps, nb::handle masters, nb::handle grad_scale,
              nb::handle found_inf);
    int device_id() const { return device_id_; }

private:
    TensorLists lists_;
    std::vector<OptimTensor> rows_;
    int device_id_ = 0;
};

// Hyperparameter checks of each optimizer: the params of its call (without
// the table) and, in *states, the state lists it updates.
OptimStepParams adam_params(const nb::list& exp_avgs, const nb::list& exp_avg_sqs, nb::handle max_exp_avg_sqs,
                            double lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
                            bool maximize, bool decoupled_weight_decay, std::vector<StateList>* states);
OptimStepParams sgd_params(nb::handle momentum_buffers, double lr, double momentum, double dampening,
                           double weight_decay, bool nesterov, bool maximize, bool momentum_init,
                           std::vector<StateList>* states);
OptimStepParams rmsprop_params(const nb::list& square_avgs, nb::handle momentum_buffers, nb::handle grad_avgs,
                               double lr, double alpha, double eps, double weight_decay, double momentum,
                               bool centered, bool maximize, std::vector<StateList>* states);

// The gradients of a norm or scaling call (float32 or bfloat16, dense, all
// on one device), held by `lists`.
std::vector<GradNormTensor> grad_rows(TensorLists& lists, const nb::list& grads, bool written,
                                      RequireDevice require_device);
void require_norm_type(double norm_type);

}  // namespace fastnn::bind::optim_args
