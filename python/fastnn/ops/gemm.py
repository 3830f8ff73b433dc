"""GEMM and Linear, in layers: kernel launchers (any DLPack array), then for
torch tensors the custom operators fastnn::matmul (no autograd),
fastnn::linear and fastnn::linear_backward, whose autograd formula is
fastnn's own GEMMs.

Transposes are views: `fastnn.matmul(a.T, b)` reads a's memory in place (the
kernel packs from any strides), so there is never a `.contiguous()` here."""

from __future__ import annotations

from .. import _C
from .. import _backend as B
from . import _torch_ops as T


def matmul(a, b, *, out=None, alpha: float = 1.0, beta: float = 0.0, bias=None, activation: str | None = None):
    """activation(alpha * a @ b + beta * out + bias), one fused pass.

    a (M, K) or (batch, M, K); b (K, N) or (batch, K, N); batch sizes equal or
    1 (broadcast, also through a stride-0 view). float32, or bfloat16 with a
    bfloat16 or float32 `out`; accumulation is float32. Any strides: pass
    transposes as views (`x.T`, `x.mT`), never copies. `bias` is (N,).
    activation: None, "relu", "gelu" (erf), "gelu_tanh" or "silu", as
    torch.nn.functional. beta != 0 needs out=; beta == 0 never reads out.
    No autograd (use fastnn.linear for a trainable layer).
    """
    for name, x in (("a", a), ("b", b), ("bias", bias)):
        if getattr(x, "requires_grad", False) and B.torch_module().is_grad_enabled():
            raise TypeError(f"{name} requires grad, and fastnn.matmul has no autograd: use fastnn.linear, "
                            "or detach it")
    if out is None:
        if beta != 0.0:
            raise ValueError("beta != 0 reads out, so it needs out=")
        for name, x in (("a", a), ("b", b)):
            if getattr(x, "ndim", None) not in (2, 3):
                if not hasattr(x, "shape"):
                    raise TypeError(f"{name} must be an array (torch.Tensor, numpy.ndarray, ...), "
                                    f"got {type(x).__name__}")
                raise ValueError(f"{name} must be 2-D (rows, cols) or 3-D (batch, rows, cols), "
                                 f"got shape {tuple(x.shape)}")
        if B.needs_torch_op(a, b):
            return T.torch_op("matmul")(a, b, bias, float(alpha), activation)
        return _matmul(a, b, bias, alpha, activation)
    B.check_out(out)
    B.launch("gemm", a, a, b, out, bias, alpha, beta, activation, name="a")
    return out


def _matmul_output(a, b):
    if a.ndim == 3 or b.ndim == 3:
        batch = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
        return B.empty(a, (batch, a.shape[-2], b.shape[-1]), name="a")
    return B.empty(a, (a.shape[0], b.shape[1]), name="a")


def _matmul(a, b, bias, alpha, activation):
    out = _matmul_output(a, b)
    B.launch("gemm", a, a, b, out, bias, alpha, 0.0, activation, name="a")
    return out


def _check_weight(weight):
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")


def _linear_output(x, weight):
    return B.empty(x, (*x.shape[:-1], weight.shape[0]))


def _linear(x, weight, bias):
    _check_weight(weight)
    if x.ndim == 2:  # the common case, without the reshapes
        y = B.empty(x, (x.shape[0], weight.shape[0]))
        B.launch("linear", x, x, weight, bias, y)
        return y
    x2 = B.flat_rows(x, "x")
    y = _linear_output(x, weight)
    B.launch("linear", x, x2, weight, bias, B.flat_rows(y, "out"))
    return y


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, as torch.nn.functional.linear.

    x (..., in_features), weight (out_features, in_features), bias
    (out_features,) or None; float32 or bfloat16. For torch tensors that
    require grad (or under torch.compile) this is the custom operator
    fastnn::linear, whose backward runs linear_backward.
    """
    if B.direct_cpu_call(x, weight, bias) and x.ndim == 2 and getattr(weight, "ndim", None) == 2:
        y = x.new_empty(x.shape[0], weight.shape[0])  # sizes unpacked: see _backend.empty
        _C.linear(x, weight, bias, y)
        return y
    if B.needs_torch_op(x, weight, bias):
        return T.torch_op("linear")(x, weight, bias)
    return _linear(x, weight, bias)


def linear_backward(grad_out, x, weight, *, input_grad: bool = True, weight_grad: bool = True,
                    bias_grad: bool = True):
    """Gradients of y = x @ weight.T + bias: (grad_x, grad_weight, grad_bias),
    None where not asked for.

    grad_x = grad_out @ weight, grad_weight = grad_out.T @ x, grad_bias =
    grad_out summed over all rows; grad_out (..., out_features) like y.
    """
    wanted = (bool(input_grad), bool(weight_grad), bool(bias_grad))
    if B.needs_torch_op(grad_out, x, weight):
        return B.absent_as_none(T.torch_op("linear_backward")(grad_out, x, weight, *wanted), wanted)
    return _linear_backward(grad_out, x, weight, wanted)


def _linear_backward_outputs(grad_out, x, weight, wanted):
    grad_x = B.empty(grad_out, tuple(x.shape), name="grad_out") if wanted[0] else None
    grad_w = B.empty(grad_out, tuple(weight.shape), name="grad_out") if wanted[1] else None
    grad_b = B.empty(grad_out, (grad_out.shape[-1],), name="grad_out") if wanted[2] else None
    return grad_x, grad_w, grad_b


def _linear_backward(grad_out, x, weight, wanted):
    _check_weight(weight)
    g2, x2 = B.flat_rows(grad_out, "grad_out"), B.flat_rows(x, "x")
    grad_x, grad_w, grad_b = _linear_backward_outputs(grad_out, x, weight, wanted)
    B.launch("linear_backward", grad_out, g2, x2, weight, None if grad_x is None else B.flat_rows(grad_x, "grad_x"),
             grad_w, grad_b, name="grad_out")
    return grad_x, grad_w, grad_b


def register_torch_ops(torch):
    @T.custom_op("matmul", schema="(Tensor a, Tensor b, Tensor? bias, float alpha, str? activation) -> Tensor")
    def matmul_op(a, b, bias, alpha, activation):
        return _matmul(a, b, bias, alpha, activation)

    @matmul_op.register_fake
    def _(a, b, bias, alpha, activation):
        return _matmul_output(a, b)

    @T.custom_op("linear", schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
    def linear_op(x, weight, bias):
        return _linear(x, weight, bias)

    @linear_op.register_fake
    def _(x, weight, bias):
        return _linear_output(x, weight)

    @T.custom_op("linear_backward",
                 schema="(Tensor grad_out, Tensor x, Tensor weight, bool input_grad, bool weight_grad, "
                        "bool bias_grad) -> (Tensor, Tensor, Tensor)")
    def linear_backward_op(grad_out, x, weight, *wanted):
        return B.absent_as_empty(_linear_backward(grad_out, x, weight, wanted), grad_out)

    @linear_backward_op.register_fake
    def _(grad_out, x, weight, *wanted):
        return B.absent_as_empty(_linear_backward_outputs(grad_out, x, weight, wanted), grad_out)

    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        return B.absent_as_none(linear_backward_op(grad, x, weight, *wanted), wanted)

    linear_op.register_autograd(backward, setup_context=setup_context)
