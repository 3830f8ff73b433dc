"""SGD (momentum, dampening, Nesterov, weight decay) on fastnn's fused kernel."""

from __future__ import annotations

import torch

from ._base import FusedOptimizerMixin, _dl, _kernels, _scalar


class SGD(FusedOptimizerMixin, torch.optim.SGD):
    """torch.optim.SGD with one fused kernel call per group.

    Same arguments, defaults, param groups and state ('momentum_buffer');
    foreach and fused are accepted and ignored. Sparse gradients raise (torch's
    for-loop SGD accepts them; use it for sparse embeddings). bfloat16
    parameters keep a float32 momentum buffer, and with master_weights=True a
    float32 master copy.
    """

    _STATE_KEYS = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, master_weights=False):
        self._fastnn_init(master_weights, differentiable)
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov, maximize=maximize)

    def _group_step(self, group, grad_scale, found_inf):
        params = self._params_with_grad(group)
        if not params:
            return
        momentum = group["momentum"]
        allocates = momentum != 0 and any("momentum_buffer" not in self.state[p] for p in params)
        if allocates and found_inf is not None and float(found_inf) != 0.0:
            # The kernel skips the step by itself; a step that would create
            # momentum buffers must also leave them uncreated, as a skipped
            # torch step does, so only then is found_inf read here (on CUDA a
            # synchronization, on the first step alone).
            return
        buffers, fresh = [None] * len(params), [False] * len(params)
        if momentum != 0:
            for i, p in enumerate(params):
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = self._new_state(p)
                    fresh[i] = True
                buffers[i] = buf
        hyper = dict(lr=_scalar(group["lr"]), momentum=momentum, dampening=group["dampening"],
                     weight_decay=_scalar(group["weight_decay"]), nesterov=group["nesterov"],
                     maximize=group["maximize"], grad_scale=grad_scale, found_inf=found_inf)
        key = lambda i: (params[i].device, params[i].dtype, fresh[i])  # noqa: E731
        for idx, (device, _, init) in self._partition(params, key):
            ps = [params[i] for i in idx]
            bufs = _dl([buffers[i] for i in idx]) if momentum != 0 else None
            kernels, extra = _kernels(device)
            kernels.sgd_step(_dl(ps), _dl([p.grad for p in ps]), bufs, self._masters(ps), momentum_init=init, **hyper,
                             **extra)
