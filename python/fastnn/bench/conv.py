"""Bench cases for convolution (--op conv2d) and pooling (--op pool):
ResNet-style layers at batch 8, NCHW and channels-last, forward (torch under
no_grad) and backward (autograd: dX, dW, db on both sides). Convolution FLOPs
are counted as direct convolution, 2 N K OH OW C R S per pass (x2 for
backward: dX and dW), as torch's are; fastnn's Winograd F(2x2, 3x3) path
(3x3 stride-1 layers) does 2.25x fewer multiplications, so its fraction of
the FMA roofline can pass 100%."""

from __future__ import annotations

from .harness import Case, Workload, register, rotations_for

# (C, K, H, R, stride, groups): ResNet-50/18 layer shapes, 56x56 down to
# 7x7, and MobileNetV2-style depthwise 3x3 layers (groups = C: memory-bound,
# their roofline is the copy bandwidth).
_CONV_FULL = [(64, 64, 56, 3, 1, 1), (128, 128, 28, 3, 1, 1), (256, 256, 14, 3, 1, 1), (512, 512, 7, 3, 1, 1),
              (64, 256, 56, 1, 1, 1), (256, 64, 56, 1, 1, 1), (512, 128, 28, 1, 1, 1), (1024, 256, 14, 1, 1, 1),
              (2048, 512, 7, 1, 1, 1), (128, 128, 56, 3, 2, 1),
              (32, 32, 112, 3, 1, 32), (144, 144, 56, 3, 2, 144), (384, 384, 14, 3, 1, 384)]
_CONV_QUICK = [(64, 64, 56, 3, 1, 1), (256, 256, 14, 3, 1, 1), (256, 64, 56, 1, 1, 1), (144, 144, 56, 3, 1, 144)]
_BATCH = 8


def _layouts():
    return (("nchw", False), ("nhwc", True))


@register("conv2d")
def conv_cases(device: str, quick: bool):
    for C, K, H, R, stride, groups in (_CONV_QUICK if quick else _CONV_FULL):
        for name, cl in _layouts():
            kind = " dw" if groups > 1 else ""
            shape = f"N8 C{C} K{K} {H}x{H} {R}x{R}{' s2' if stride == 2 else ''}{kind} {name}"
            yield Case("conv2d", "conv2d", "fwd", "float32", shape,
                       lambda C=C, K=K, H=H, R=R, s=stride, g=groups, cl=cl: _conv(C, K, H, R, s, g, cl, False))
            if not quick or (C, R) == (64, 3) or groups > 1:
                yield Case("conv2d", "conv2d", "bwd", "float32", shape,
                           lambda C=C, K=K, H=H, R=R, s=stride, g=groups, cl=cl: _conv(C, K, H, R, s, g, cl, True))


def _conv(C, K, H, R, stride, groups, channels_last, backward):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    pad = R // 2
    OH = (H + 2 * pad - R) // stride + 1
    flops = 2.0 * _BATCH * K * OH * OH * (C // groups) * R * R * (2 if backward else 1)
    nbytes = 4.0 * (_BATCH * C * H * H + K * (C // groups) * R * R + _BATCH * K * OH * OH) * (2 if backward else 1)
    n = rotations_for(nbytes)

    def make():
        x = torch.randn(_BATCH, C, H, H).to(memory_format=fmt)
        w, b = torch.randn(K, C // groups, R, R) * (C // groups * R * R) ** -0.5, torch.randn(K)
        return x, w, b

    sets = [make() for _ in range(n)]

    def accuracy():
        x, w, b = (t[:2] if t.dim() == 4 and t.shape[0] == _BATCH else t for t in sets[0])
        args = dict(stride=stride, padding=pad, groups=groups)
        return compare(fastnn.conv2d(x, w, b, **args), F.conv2d(x, w, b, **args),
                       F.conv2d(x.double(), w.double(), b.double(), **args))

    if not backward:
        def torch_fwd(i):
            with torch.no_grad():
                return F.conv2d(*sets[i % n], stride=stride, padding=pad, groups=groups)

        return Workload(fastnn=lambda i: fastnn.conv2d(*sets[i % n], stride=stride, padding=pad, groups=groups),
                        torch=torch_fwd,
                        flops=flops, bytes=nbytes, rotations=n, accuracy=accuracy)

    def graph(fn, i):
        x, w, b = (t.detach().clone(memory_format=torch.preserve_format).requires_grad_() for t in sets[i])
        out = fn(x, w, b, stride=stride, padding=pad, groups=groups)
        return out, (x, w, b), torch.randn_like(out)

    ours = [graph(fastnn.conv2d, i) for i in range(n)]
    theirs = [graph(F.conv2d, i) for i in range(n)]

    def run(g):
        out, inputs, grad = g
        return torch.autograd.grad(out, inputs, grad, retain_graph=True)

    return Workload(fastnn=lambda i: run(ours[i % n]), torch=lambda i: run(theirs[i % n]), flops=flops,
                    bytes=nbytes, rotations=n, accuracy=accuracy)


# (op, N, C, H, kwargs): the ResNet stem pool, a 2x2 average, the global average.
_POOL = [("max_pool2d", 8, 64, 112, dict(kernel_size=3, stride=2, padding=1)),
         ("avg_pool2d", 8, 256, 28, dict(kernel_size=2)),
         ("adaptive_avg_pool2d", 8, 2048, 7, dict(output_size=1))]


@register("pool")
def pool_cases(device: str, quick: bool):
    for op, N, C, H, kw in (_POOL[:1] if quick else _POOL):
        for name, cl in _layouts():
            shape = f"N{N} C{C} {H}x{H} {name}"
            for backward in (False, True):
                yield Case("pool", op, "bwd" if backward else "fwd", "float32", shape,
                           lambda op=op, N=N, C=C, H=H, kw=kw, cl=cl, b=backward: _pool(op, N, C, H, kw, cl, b))


def _pool(op, N, C, H, kw, channels_last, backward):
    import torch
    import torch.nn.functional as F

    import fastnn
    from fastnn.testing import compare

    ours_fn, torch_fn = getattr(fastnn, op), getattr(F, op)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    probe = torch_fn(torch.empty(1, 1, H, H), **kw)
    out_elems = N * C * probe.shape[-1] * probe.shape[-2]
    nbytes = 4.0 * (N * C * H * H + out_elems) * (1 + backward)
    n = rotations_for(nbytes)
    xs = [torch.randn(N, C, H, H).to(memory_format=fmt) for _ in range(n)]

    def accuracy():
        x = xs[0][:1]
        return compare(ours_fn(x, **kw), torch_fn(x, **kw), torch_fn(x.double(), **kw))

    if not backward:
        def torch_fwd(i):
            with torch.no_grad():
                return torch_fn(xs[i % n], **kw)

        return Workload(fastnn=lambda i: ours_fn(xs[i % n], **kw), torch=torch_fwd, bytes=nbytes, rotations=n,
                        accuracy=accuracy)

    def graph(fn, i):
        x = xs[i].detach().clone(memory_format=torch.preserve_format).requires_grad_()
        out = fn(x, **kw)
        return out, x, torch.randn_like(out)

    ours, theirs = [graph(ours_fn, i) for i in range(n)], [graph(torch_fn, i) for i in range(n)]

    def run(g):
        out, x, grad = g
        return torch.autograd.grad(out, x, grad, retain_graph=True)

    return Workload(fastnn=lambda i: run(ours[i % n]), torch=lambda i: run(theirs[i % n]), bytes=nbytes,
                    rotations=n, accuracy=accuracy)
