"""Bench cases for the losses (--op cross_entropy,mse_loss).

cross_entropy: logits (N, C) against int64 targets, mean reduction, 32k
(and in the full sweep 128k) vocabularies. "fwd" is the loss alone (torch
under no_grad); "fwd+bwd" is the loss and dlogits through autograd on both
sides, as in training, timed end to end (every buffer allocated per call).
torch is F.cross_entropy (log_softmax + nll_loss). Bytes are fastnn's
floor: the logits read once per pass and dlogits written once (3 N C
elements for fwd+bwd), plus the targets.
mse_loss: mean reduction; "bwd" is the gradient kernel alone
(aten.mse_loss_backward on the torch side).
"""

from __future__ import annotations

from .harness import Case, Workload, register, rotations_for


def _ce_shapes(quick: bool):
    return [(4096, 32768)] if quick else [(1024, 32768), (4096, 32768), (512, 128256)]


def _cases(op: str, shapes, passes, build, device: str):
    """One case per dtype, (rows, cols) shape and (pass name, backward) pair;
    build(device, rows, cols, dtype, backward) makes its workload."""
    for dtype in ("float32", "bfloat16"):
        for rows, cols in shapes:
            for pass_name, backward in passes:
                yield Case(op, op, pass_name, dtype, f"{rows}x{cols}",
                           lambda r=rows, c=cols, d=dtype, b=backward: build(device, r, c, d, b))


@register("cross_entropy")
def ce_cases(device: str, quick: bool):
    yield from _cases("cross_entropy", _ce_shapes(quick), [("fwd", False), ("fwd+bwd", True)], _cross_entropy,
                      device)


def _cross_entropy(device, rows, cols, dtype_name, backward):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    logit_bytes = rows * cols * dtype.itemsize
    passes = 3 if backward else 1
    n = rotations_for(passes * logit_bytes, budget=1.1e9, cap=2)
    sets = [((4 * torch.randn(rows, cols, device=device)).to(dtype).requires_grad_(backward),
             torch.randint(0, cols, (rows,), device=device)) for _ in range(n)]

    def run(fn, i):
        logits, target = sets[i % n]
        if not backward:
            with torch.no_grad():
                return (fn(logits, target),)
        loss = fn(logits, target)
        return loss, torch.autograd.grad(loss, logits)[0]

    def accuracy():
        logits, target = sets[0]
        ref_logits = logits.detach().double().requires_grad_(backward)
        loss64 = F.cross_entropy(ref_logits, target)
        ref = (loss64, torch.autograd.grad(loss64, ref_logits)[0]) if backward else (loss64,)
        return max((compare(a, t, r) for a, t, r in zip(run(fastnn.cross_entropy, 0), run(F.cross_entropy, 0),
                                                         ref)),
                   key=lambda e: (e[0] + e[2]) / (e[1] + e[2]))

    return Workload(fastnn=lambda i: run(fastnn.cross_entropy, i), torch=lambda i: run(F.cross_entropy, i),
                    bytes=passes * logit_bytes + 8.0 * rows * (2 if backward else 1), rotations=n,
                    accuracy=accuracy)


@register("mse_loss")
def mse_cases(device: str, quick: bool):
    shapes = [(8192, 1024)] if quick else [(1024, 1024), (8192, 1024)]
    yield from _cases("mse_loss", shapes, [("fwd", False), ("bwd", True)], _mse, device)


def _mse(device, rows, cols, dtype_name, backward):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    dtype = getattr(torch, dtype_name)
    nbytes = rows * cols * dtype.itemsize
    n = rotations_for((3 if backward else 2) * nbytes)
    sets = [tuple(torch.randn(rows, cols, device=device).to(dtype) for _ in range(2)) for _ in range(n)]
    grad = torch.ones((), device=device, dtype=dtype)
    mse_backward = torch.ops.aten.mse_loss_backward
    mean = 1  # aten's Reduction::Mean

    if backward:
        def fast(i):
            return fastnn.mse_loss_backward(grad, *sets[i % n])

        def theirs(i):
            return mse_backward(grad, *sets[i % n], mean)

        def reference():
            return mse_backward(grad.double(), *(t.double() for t in sets[0]), mean)
    else:
        def fast(i):
            return fastnn.mse_loss(*sets[i % n])

        def theirs(i):
            with torch.no_grad():
                return F.mse_loss(*sets[i % n])

        def reference():
            return F.mse_loss(*(t.double() for t in sets[0]))

    return Workload(fastnn=fast, torch=theirs, bytes=(3.0 if backward else 2.0) * nbytes, rotations=n,
                    accuracy=lambda: compare(fast(0), theirs(0), reference()))
