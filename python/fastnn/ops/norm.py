"""LayerNorm and RMSNorm over the last dimension, in layers: kernel
launchers (any DLPack array, out=), then for torch tensors the custom
operators fastnn::layer_norm / rms_norm (which also return the float32 row
statistics the backward reads) and their backwards, whose autograd formula
runs fastnn's own kernels. Semantics follow torch.nn.functional.layer_norm
and rms_norm with normalized_shape = (x.shape[-1],)."""

from __future__ import annotations

from .. import _backend as B
from . import _torch_ops as T

# torch.nn.functional.rms_norm's default eps: the machine epsilon of the type
# it computes in, float32 for float32 and bfloat16 inputs alike (not
# finfo(bfloat16).eps, which would swamp rows of mean square below ~1e-2).
_RMS_DEFAULT_EPS = 2.0**-23


def _check_normalized_shape(x, normalized_shape) -> None:
    if normalized_shape is None:
        return
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    last = tuple(getattr(x, "shape", (None,))[-1:])
    if shape != last:
        raise ValueError(
            f"normalized_shape must be the last dim of x {last} (fastnn normalizes over the last dim only), "
            f"got {shape}")


def _stats(x):
    """float32 with x's leading shape: one statistic per normalized row."""
    return B.empty(x, tuple(x.shape[:-1]), "float32")


def _layer_norm_outputs(x, out):
    return B.output_like(x, out), _stats(x), _stats(x)


def _layer_norm(x, weight, bias, eps, out):
    y, mean, rstd = _layer_norm_outputs(x, out)
    B.launch("layer_norm_forward", x, x, weight, bias, eps, y, mean, rstd)
    return y, mean, rstd


def _rms_norm_outputs(x, out):
    return B.output_like(x, out), _stats(x)


def _rms_norm(x, weight, eps, out):
    y, rstd = _rms_norm_outputs(x, out)
    B.launch("rms_norm_forward", x, x, weight, eps, y, rstd)
    return y, rstd


def layer_norm(x, normalized_shape=None, weight=None, bias=None, eps: float = 1e-5, *, out=None,
               return_stats: bool = False):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dim of x.

    x: (..., N) float32 or bfloat16, any strides. weight, bias: (N,) or None,
    float32 or x's dtype. Returns y in x's dtype, or (y, mean, rstd) with
    return_stats (float32, x's leading shape), which layer_norm_backward takes.
    out may be x itself. For torch tensors that require grad (or under
    torch.compile) this is the custom operator fastnn::layer_norm, whose
    backward runs layer_norm_backward.
    """
    _check_normalized_shape(x, normalized_shape)
    if out is None and B.needs_torch_op(x, weight, bias):
        y, mean, rstd = T.torch_op("layer_norm")(x, weight, bias, float(eps))
    else:
        y, mean, rstd = _layer_norm(x, weight, bias, eps, out)
    return (y, mean, rstd) if return_stats else y


def layer_norm_backward(grad_out, x, mean, rstd, weight=None, bias=None, *, out=None,
                        weight_grad: bool = True, bias_grad: bool = True):
    """Gradients of layer_norm: (grad_x, grad_weight, grad_bias).

    mean and rstd are the statistics layer_norm returned for x. grad_weight is
    computed when weight is given and weight_grad; grad_bias when bias is given
    (only its dtype is read) and bias_grad; otherwise they are None. The sums
    over rows are the same for any thread count.
    """
    wanted = (True, weight is not None and bool(weight_grad), bias is not None and bool(bias_grad))
    if out is None and B.needs_torch_op(grad_out, x, mean, rstd, weight):
        grads = T.torch_op("layer_norm_backward")(grad_out, x, mean, rstd, weight, bias, *wanted[1:])
        return B.absent_as_none(grads, wanted)
    return _layer_norm_backward(grad_out, x, mean, rstd, weight, bias, wanted, out)


def _layer_norm_backward_outputs(x, weight, bias, wanted, out):
    grad_x = B.output_like(x, out)
    grad_weight = B.empty_like(weight, "weight") if wanted[1] else None
    grad_bias = B.empty_like(bias, "bias") if wanted[2] else None
    return grad_x, grad_weight, grad_bias


def _layer_norm_backward(grad_out, x, mean, rstd, weight, bias, wanted, out):
    grads = _layer_norm_backward_outputs(x, weight, bias, wanted, out)
    B.launch("layer_norm_backward", grad_out, grad_out, x, mean, rstd, weight, *grads, name="grad_out")
    return grads


def rms_norm(x, normalized_shape=None, weight=None, eps: float | None = None, *, out=None,
             return_stats: bool = False):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim of x.

    eps=None means the machine epsilon of x's dtype (as torch). Returns y in
    x's dtype, or (y, rstd) with return_stats. out may be x itself. For torch
    tensors that require grad (or under torch.compile) this is the custom
    operator fastnn::rms_norm, whose backward runs rms_norm_backward.
    """
    _check_normalized_shape(x, normalized_shape)
    if eps is None:
        eps = _RMS_DEFAULT_EPS
    if out is None and B.needs_torch_op(x, weight):
        y, rstd = T.torch_op("rms_norm")(x, weight, float(eps))
    else:
        y, rstd = _rms_norm(x, weight, eps, out)
    return (y, rstd) if return_stats else y


def rms_norm_backward(grad_out, x, rstd, weight=None, *, out=None, weight_grad: bool = True):
    """Gradients of rms_norm: (grad_x, grad_weight); grad_weight is None
    without weight or with weight_grad=False."""
    wanted = (True, weight is not None and bool(weight_grad))
    if out is None and B.needs_torch_op(grad_out, x, rstd, weight):
        return B.absent_as_none(T.torch_op("rms_norm_backward")(grad_out, x, rstd, weight, wanted[1]), wanted)
    return _rms_norm_backward(grad_out, x, rstd, weight, wanted, out)


def _rms_norm_backward_outputs(x, weight, wanted, out):
    return B.output_like(x, out), B.empty_like(weight, "weight") if wanted[1] else None


def _rms_norm_backward(grad_out, x, rstd, weight, wanted, out):
    grads = _rms_norm_backward_outputs(x, weight, wanted, out)
    B.launch("rms_norm_backward", grad_out, grad_out, x, rstd, weight, *grads, name="grad_out")
    return grads


def register_torch_ops(torch):
    @T.custom_op("layer_norm",
                 schema="(Tensor x, Tensor? weight, Tensor? bias, float eps) "
                        "-> (Tensor y, Tensor mean, Tensor rstd)")
    def layer_norm_op(x, weight, bias, eps):
        return _layer_norm(x, weight, bias, eps, None)

    @layer_norm_op.register_fake
    def _(x, weight, bias, eps):
        return _layer_norm_outputs(x, None)

    @T.custom_op("layer_norm_backward",
                 schema="(Tensor grad_out, Tensor x, Tensor mean, Tensor rstd, Tensor? weight, "
                        "Tensor? bias, bool weight_grad, bool bias_grad) "
                        "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)")
    def layer_norm_backward_op(grad_out, x, mean, rstd, weight, bias, weight_grad, bias_grad):
        wanted = (True, weight_grad, bias_grad)
        return B.absent_as_empty(_layer_norm_backward(grad_out, x, mean, rstd, weight, bias, wanted, None), x)

    @layer_norm_backward_op.register_fake
    def _(grad_out, x, mean, rstd, weight, bias, weight_grad, bias_grad):
        return B.absent_as_empty(_layer_norm_backward_outputs(x, weight, bias, (True, weight_grad, bias_grad), None),
                                 x)

    def layer_norm_setup(ctx, inputs, output):
        x, weight, bias, _ = inputs
        _, mean, rstd = output
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.mark_non_differentiable(mean, rstd)
        ctx.set_materialize_grads(False)

    def layer_norm_autograd(ctx, grad_y, _grad_mean, _grad_rstd):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        grads = layer_norm_backward_op(grad_y, x, mean, rstd, weight, bias, need_w, need_b)
        return (*B.absent_as_none(grads, (need_x, need_w, need_b)), None)

    layer_norm_op.register_autograd(layer_norm_autograd, setup_context=layer_norm_setup)

    @T.custom_op("rms_norm", schema="(Tensor x, Tensor? weight, float eps) -> (Tensor y, Tensor rstd)")
    def rms_norm_op(x, weight, eps):
        return _rms_norm(x, weight, eps, None)

    @rms_norm_op.register_fake
    def _(x, weight, eps):
        return _rms_norm_outputs(x, None)

    @T.custom_op("rms_norm_backward",
                 schema="(Tensor grad_out, Tensor x, Tensor rstd, Tensor? weight, bool weight_grad) "
                        "-> (Tensor grad_x, Tensor grad_weight)")
    def rms_norm_backward_op(grad_out, x, rstd, weight, weight_grad):
        return B.absent_as_empty(_rms_norm_backward(grad_out, x, rstd, weight, (True, weight_grad), None), x)

    @rms_norm_backward_op.register_fake
    def _(grad_out, x, rstd, weight, weight_grad):
        return B.absent_as_empty(_rms_norm_backward_outputs(x, weight, (True, weight_grad), None), x)

    def rms_norm_setup(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)

    def rms_norm_autograd(ctx, grad_y, _grad_rstd):
        x, weight, rstd = ctx.saved_tensors
        need_x, need_w, _ = ctx.needs_input_grad
        grads = rms_norm_backward_op(grad_y, x, rstd, weight, need_w)
        return (*B.absent_as_none(grads, (need_x, need_w)), None)

    rms_norm_op.register_autograd(rms_norm_autograd, setup_context=rms_norm_setup)
