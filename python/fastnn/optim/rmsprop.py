"""RMSprop (momentum, centered) on fastnn's fused kernel."""

from __future__ import annotations

import torch

from ._base import FusedOptimizerMixin, _dl, _kernels, _scalar


class RMSprop(FusedOptimizerMixin, torch.optim.RMSprop):
    """torch.optim.RMSprop with one fused kernel call per group.

    Same arguments, defaults, param groups and state ('step', 'square_avg',
    'momentum_buffer', 'grad_avg'); foreach is accepted and ignored. bfloat16
    parameters keep float32 state, and with master_weights=True a float32
    master copy.
    """

    _STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, master_weights=False):
        self._fastnn_init(master_weights, differentiable, capturable)
        super().__init__(params, lr, alpha, eps, weight_decay, momentum, centered, maximize=maximize)

    def _group_step(self, group, grad_scale, found_inf):
        params = self._params_with_grad(group)
        if not params:
            return
        momentum, centered = group["momentum"], group["centered"]
        states = []
        for p in params:
            state = self.state[p]
            if "square_avg" not in state:
                state["step"] = self._new_step(p)
                state["square_avg"] = self._new_state(p)
            if momentum > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = self._new_state(p)
            if centered and "grad_avg" not in state:
                state["grad_avg"] = self._new_state(p)
            states.append(state)
        hyper = dict(lr=_scalar(group["lr"]), alpha=group["alpha"], eps=group["eps"],
                     weight_decay=group["weight_decay"], momentum=momentum, centered=centered,
                     maximize=group["maximize"], grad_scale=grad_scale, found_inf=found_inf)
        for idx, (device, _) in self._partition(params, lambda i: (params[i].device, params[i].dtype)):
            ps, ss = [params[i] for i in idx], [states[i] for i in idx]
            kernels, extra = _kernels(device)
            kernels.rmsprop_step(_dl(ps), _dl([p.grad for p in ps]), _dl([s["square_avg"] for s in ss]),
                                 _dl([s["momentum_buffer"] for s in ss]) if momentum > 0 else None,
                                 _dl([s["grad_avg"] for s in ss]) if centered else None,
                                 _dl([s["step"] for s in ss]), self._masters(ps), **hyper, **extra)
