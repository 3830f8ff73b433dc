"""Bench cases for the multi-tensor optimizers on CUDA (--op optim_cuda
--device cuda): one step over 100M float32 parameters in 100 tensors of
uneven sizes, grads preset, fastnn.optim's step() end to end (tensor lists,
table launches) against torch.optim's fused and foreach CUDA steps. Bytes
per parameter: Adam/AdamW 28 (read p, g, m, v; write p, m, v), SGD with
momentum and RMSprop 20."""

from __future__ import annotations

from .harness import Case, Workload, register
from .optim import _sizes

# name -> (torch class name, kwargs, bytes per element, torch has fused)
_OPTIMIZERS = {
    "adamw": ("AdamW", {}, 28, True),
    "adam": ("Adam", {}, 28, True),
    "sgd": ("SGD", {"lr": 1e-3, "momentum": 0.9}, 20, True),
    "rmsprop": ("RMSprop", {}, 20, False),
}


@register("optim_cuda")
def cases(device: str, quick: bool):
    if device != "cuda":
        return
    for name in ("adamw",) if quick else tuple(_OPTIMIZERS):
        yield Case("optim_cuda", name, "step", "float32", "100M/100", lambda n=name: _step(n, 100_000_000, 100))


def _params(sizes):
    import torch

    params = [torch.randn(n, device="cuda") for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _step(name, total, tensors):
    import torch

    import fastnn.optim as fo
    from ..testing import compare

    cls_name, kwargs, bytes_per, has_fused = _OPTIMIZERS[name]
    torch_cls, fast_cls = getattr(torch.optim, cls_name), getattr(fo, cls_name)
    sizes = _sizes(total, tensors)
    fast = fast_cls(_params(sizes), **kwargs)
    backends = {"foreach": {"foreach": True}}
    if has_fused:
        backends = {"fused": {"fused": True}, **backends}
    torch_opts = {k: torch_cls(_params(sizes), **kwargs, **extra) for k, extra in backends.items()}
    best = next(iter(backends))

    def accuracy():
        # 10 steps on 1M elements in 10 tensors, against torch.optim in float64.
        small = _sizes(1_000_000, 10)
        pf = _params(small)
        pt = [p.detach().clone() for p in pf]
        p64 = [p.detach().double() for p in pf]
        for p, q, r in zip(pf, pt, p64):
            q.grad, r.grad = p.grad.clone(), p.grad.double()
        opts = [fast_cls(pf, **kwargs), torch_cls(pt, **kwargs, **backends[best]),
                torch_cls(p64, foreach=False, **kwargs)]
        for _ in range(10):
            for o in opts:
                o.step()
        return compare(torch.cat(pf), torch.cat(pt), torch.cat(p64))

    return Workload(
        fastnn=lambda _i: fast.step(),
        torch=lambda _i: torch_opts[best].step(),
        torch_backends={k: (lambda _i, o=o: o.step()) for k, o in torch_opts.items() if k != best},
        bytes=float(bytes_per) * total, accuracy=accuracy)
