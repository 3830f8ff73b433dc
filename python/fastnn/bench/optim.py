"""Bench cases for the fused optimizers (--op adam,adamw,sgd,rmsprop).

One optimizer step over N float32 parameters split into T tensors, grads
preset. Bytes are the minimum traffic per element: AdamW/Adam read p, g, m, v
and write p, m, v (28 B); SGD with momentum reads p, g, buf and writes p, buf
(20 B); RMSprop reads p, g, square_avg and writes p, square_avg (20 B).
torch is its fastest CPU path: fused=True where torch has one (Adam, AdamW,
SGD), the for-loop for RMSprop (no fused kernel; foreach is slower on CPU);
the other torch paths are timed as extra backends (torch_foreach_ms, ...).
"""

from __future__ import annotations

from .harness import Case, Workload, register

# name -> (torch class name, kwargs, bytes per element, torch has fused)
_OPTIMIZERS = {
    "adam": ("Adam", {}, 28, True),
    "adamw": ("AdamW", {}, 28, True),
    "sgd": ("SGD", {"lr": 1e-3, "momentum": 0.9}, 20, True),
    "rmsprop": ("RMSprop", {}, 20, False),
}


def _layouts(quick: bool):
    # (total elements, tensors): 10M in 100 is the case.
    if quick:
        return [(10_000_000, 100)]
    return [(1_000_000, 10), (10_000_000, 1), (10_000_000, 100), (10_000_000, 2000)]


def _register(name: str):
    @register(name)
    def cases(device: str, quick: bool):
        for total, tensors in _layouts(quick):
            yield Case(name, name, "step", "float32", f"{total // 1_000_000}M/{tensors}",
                       lambda t=total, n=tensors: _step_workload(name, device, t, n))
    return cases


for _name in _OPTIMIZERS:
    _register(_name)


def _sizes(total: int, tensors: int) -> list[int]:
    """Uneven sizes summing to total, as a model's layers are."""
    import torch

    gen = torch.Generator().manual_seed(tensors)
    weights = torch.rand(tensors, generator=gen, dtype=torch.float64) + 0.25
    sizes = (weights / weights.sum() * total).long()
    sizes[0] += total - int(sizes.sum())
    return sizes.tolist()


def _params(sizes: list[int], device: str):
    import torch

    params = [torch.randn(n, device=device) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def _step_workload(name: str, device: str, total: int, tensors: int) -> Workload:
    import torch

    import fastnn.optim as fo

    cls_name, kwargs, bytes_per, has_fused = _OPTIMIZERS[name]
    torch_cls, fast_cls = getattr(torch.optim, cls_name), getattr(fo, cls_name)
    sizes = _sizes(total, tensors)
    fast = fast_cls(_params(sizes, device), **kwargs)
    backends = {"loop": {"foreach": False}, "foreach": {"foreach": True}}
    if has_fused:
        backends = {"fused": {"fused": True}, **backends}
    torch_opts = {k: torch_cls(_params(sizes, device), **kwargs, **extra) for k, extra in backends.items()}
    best = "fused" if has_fused else "loop"

    def accuracy():
        # 10 steps on 1M elements: float32 fastnn and torch against torch in float64.
        from fastnn.testing import compare

        small = _sizes(1_000_000, 10)
        pf = _params(small, device)
        pt = [p.detach().clone() for p in pf]
        p64 = [p.detach().double() for p in pf]
        for p, q, r in zip(pf, pt, p64):
            q.grad, r.grad = p.grad.clone(), p.grad.double()
        opts = [fast_cls(pf, **kwargs), torch_cls(pt, **kwargs, **backends[best]), torch_cls(p64, **kwargs)]
        for _ in range(10):
            for o in opts:
                o.step()
        return compare(torch.cat(pf), torch.cat(pt), torch.cat(p64))

    return Workload(
        fastnn=lambda i: fast.step(),
        torch=lambda i: torch_opts[best].step(),
        torch_backends={k: (lambda i, o=o: o.step()) for k, o in torch_opts.items() if k != best},
        bytes=float(bytes_per) * total, rotations=1, accuracy=accuracy)
