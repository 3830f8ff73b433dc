"""Adam and AdamW on fastnn's fused multi-tensor kernel."""

from __future__ import annotations

import torch

from ._base import FusedOptimizerMixin, _dl, _kernels, _scalar


class Adam(FusedOptimizerMixin, torch.optim.Adam):
    """torch.optim.Adam with one fused kernel call per group and step.

    Same arguments, defaults, param groups and state (state_dict loads in
    either direction); foreach and fused are accepted and ignored (the step is
    always fused). bfloat16 parameters keep float32 state; with
    master_weights=True they also keep a float32 master copy
    (state['master_param']) that the step updates and rounds to the parameter.
    """

    _STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, master_weights=False):
        self._fastnn_init(master_weights, differentiable, capturable)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay)

    def _group_step(self, group, grad_scale, found_inf):
        params = self._params_with_grad(group)
        if not params:
            return
        amsgrad = group["amsgrad"]
        states = []
        for p in params:
            state = self.state[p]
            if "exp_avg" not in state:
                state["step"] = self._new_step(p)
                state["exp_avg"] = self._new_state(p)
                state["exp_avg_sq"] = self._new_state(p)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = self._new_state(p)
            states.append(state)
        beta1, beta2 = group["betas"]
        hyper = dict(lr=_scalar(group["lr"]), beta1=_scalar(beta1), beta2=_scalar(beta2), eps=group["eps"],
                     weight_decay=group["weight_decay"], amsgrad=amsgrad, maximize=group["maximize"],
                     decoupled_weight_decay=group.get("decoupled_weight_decay", False),
                     grad_scale=grad_scale, found_inf=found_inf)
        for idx, (device, _) in self._partition(params, lambda i: (params[i].device, params[i].dtype)):
            ps, ss = [params[i] for i in idx], [states[i] for i in idx]
            kernels, extra = _kernels(device)
            kernels.adam_step(_dl(ps), _dl([p.grad for p in ps]), _dl([s["exp_avg"] for s in ss]),
                              _dl([s["exp_avg_sq"] for s in ss]),
                              _dl([s["max_exp_avg_sq"] for s in ss]) if amsgrad else None,
                              _dl([s["step"] for s in ss]), self._masters(ps), **hyper, **extra)


class AdamW(Adam):
    """torch.optim.AdamW (decoupled weight decay) on fastnn's fused kernel;
    see fastnn.optim.Adam."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 master_weights=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, master_weights=master_weights)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
