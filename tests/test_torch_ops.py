"""fastnn's torch custom operators (torch.ops.fastnn.*): torch.library.opcheck
on every registered op (schema, autograd registration, fake implementation
against the kernel, AOT dispatch with dynamic shapes), torch.compile with
fullgraph=True of each family forward and backward against eager fastnn
(bit for bit: the graph runs the same kernels) and against torch in float64,
and the one launcher that sends kernels to _C or _cuda with the caller's
stream."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

import fastnn
from fastnn import _backend, _C
from fastnn.testing import assert_close
from helpers import check_sampled, nan_gapped, randn

pytestmark = pytest.mark.single_isa


def _leaf(t):
    return t.requires_grad_()


def _transposed(shape, gen):
    """A non-contiguous (shape) view: the transpose of a contiguous tensor."""
    return randn(shape[::-1], gen=gen).t()


def _packed_weight(mode, n, k, gen):
    w = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    packed = torch.empty(_C.quant_packed_weight_bytes(mode, n, k), dtype=torch.uint8)
    _C.quant_pack_weight(w, mode, packed)
    return packed


def _unary_cases():
    """Activations and softmax: (x) forward, (grad_out, saved) backward."""
    cases = {}
    for kind in ("relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "softmax", "log_softmax"):
        cases[kind] = lambda g: (_leaf(_transposed((5, 6), g)),)
        cases[kind + "_backward"] = lambda g: (nan_gapped(randn((5, 6), gen=g), 2), torch.sigmoid(randn((5, 6),
                                                                                                         gen=g)))
    return cases


def _norm_cases():
    def layer_norm_backward(g):
        x, w, b = randn((4, 9), gen=g), randn((9,), gen=g), randn((9,), gen=g)
        _, mean, rstd = torch.ops.fastnn.layer_norm(x, w, b, 1e-5)
        return nan_gapped(randn((4, 9), gen=g), 3), x, mean, rstd, w, b, True, False

    def rms_norm_backward(g):
        x, w = _transposed((4, 9), g), randn((9,), gen=g)
        _, rstd = torch.ops.fastnn.rms_norm(x, w, 1e-6)
        return randn((4, 9), gen=g), x, rstd, w, True

    return {
        "layer_norm": lambda g: (_leaf(nan_gapped(randn((2, 3, 9), gen=g), 2)), _leaf(randn((9,), gen=g)),
                                 _leaf(randn((9,), gen=g)), 1e-5),
        "layer_norm_backward": layer_norm_backward,
        "rms_norm": lambda g: (_leaf(_transposed((4, 9), g)), _leaf(randn((9,), gen=g)), 1e-6),
        "rms_norm_backward": rms_norm_backward,
    }


def _loss_cases():
    target = torch.tensor([3, -100, 0, 6, 2])
    ce_args = ("mean", -100, 0.1)

    def cross_entropy_backward(g):
        logits = _transposed((5, 7), g)
        _, stats = torch.ops.fastnn.cross_entropy(logits, target, *ce_args)
        return torch.tensor(0.7), logits, target, stats, *ce_args

    return {
        "cross_entropy": lambda g: (_leaf(_transposed((5, 7), g)), target, *ce_args),
        "cross_entropy_backward": cross_entropy_backward,
        "mse_loss": lambda g: (_leaf(_transposed((4, 6), g)), _leaf(randn((4, 6), gen=g)), "sum"),
        "mse_loss_backward": lambda g: (randn((4, 6), gen=g), _transposed((4, 6), g), randn((4, 6), gen=g),
                                        "none"),
    }


def _linear_cases():
    return {
        "matmul": lambda g: (_transposed((5, 7), g), randn((7, 3), gen=g), randn((3,), gen=g), 0.5, "gelu"),
        "linear": lambda g: (_leaf(nan_gapped(randn((2, 3, 7), gen=g), 2)), _leaf(randn((4, 7), gen=g)),
                             _leaf(randn((4,), gen=g))),
        "linear_backward": lambda g: (randn((2, 3, 4), gen=g), nan_gapped(randn((2, 3, 7), gen=g), 2),
                                      randn((4, 7), gen=g), True, False, True),
    }


def _dropout_cases():
    seed = torch.tensor(1234, dtype=torch.int64)
    return {
        "dropout": lambda g: (_leaf(_transposed((6, 9), g)), 0.3, seed, 5),
        "dropout_backward": lambda g: (_transposed((6, 9), g), 0.3, seed, 5),
    }


def _attention_cases():
    def qkv(g):
        q = randn((1, 5, 2, 8), gen=g).transpose(1, 2)  # (B, H, S, D) over a (B, S, H, D) buffer
        return q, randn((1, 1, 7, 8), gen=g), randn((1, 1, 7, 8), gen=g)

    def backward(g):
        q, k, v = qkv(g)
        mask = (torch.rand((5, 7), generator=g) > 0.3).expand(1, 2, 5, 7)
        # float32: the forward's out_float is a placeholder; the backward takes None.
        out, lse, _ = torch.ops.fastnn.scaled_dot_product_attention(q, k, v, mask, 0.3, False, "bhsd")
        return randn(out.shape, gen=g), q, k, v, out, lse, mask, None, 0.3, False, "bhsd"

    return {
        "scaled_dot_product_attention": lambda g: (*map(_leaf, qkv(g)), None, 0.35, True, "bhsd"),
        "scaled_dot_product_attention_backward": backward,
    }


def _spatial_cases():
    geometry = ([2, 1], [1, 0], [1, 1], [1, 2], 2)
    window = ([3, 2], [2, 1], [1, 0], [1, 2])

    def channels_last(g, shape):
        return randn(shape, gen=g).to(memory_format=torch.channels_last)

    def conv2d_backward(g):
        x, w = channels_last(g, (2, 4, 7, 6)), randn((6, 2, 3, 2), gen=g)
        out = torch.ops.fastnn.conv2d(x, w, None, *geometry)
        return randn(out.shape, gen=g), x, w, *geometry, True, True, False

    def max_pool2d_backward(g):
        x = channels_last(g, (2, 3, 7, 8))
        out, indices = torch.ops.fastnn.max_pool2d(x, *window, True)
        return randn(out.shape, gen=g), indices, list(x.shape), True, *window, True

    avg = ([3, 3], [2, 2], [1, 1], True, False, 0)
    return {
        "conv2d": lambda g: (_leaf(channels_last(g, (2, 4, 7, 6))), _leaf(randn((6, 2, 3, 2), gen=g)),
                             _leaf(randn((6,), gen=g)), *geometry),
        "conv2d_backward": conv2d_backward,
        "max_pool2d": lambda g: (_leaf(channels_last(g, (2, 3, 7, 8))), *window, True),
        "max_pool2d_backward": max_pool2d_backward,
        "avg_pool2d": lambda g: (_leaf(nan_gapped(randn((2, 3, 7, 8), gen=g), 2)), *avg),
        "avg_pool2d_backward": lambda g: (randn((2, 3, 4, 5), gen=g), [2, 3, 7, 8], False, *avg),
        "adaptive_avg_pool2d": lambda g: (_leaf(channels_last(g, (1, 3, 7, 9))), [3, 4]),
        "adaptive_avg_pool2d_backward": lambda g: (randn((1, 3, 3, 4), gen=g), [1, 3, 7, 9], True),
    }


def _quant_cases():
    def int8(shape, g):
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)

    return {
        "quantize": lambda g: (_transposed((5, 6), g), torch.full((6,), 0.02), 1),
        "dequantize": lambda g: (int8((6, 5), g).t(), torch.rand((5,), generator=g) + 0.1, 0, torch.bfloat16),
        "quantize_rows": lambda g: (_transposed((5, 9), g), torch.rand((9,), generator=g) + 0.5),
        "int8_mm": lambda g: (int8((9, 4), g).t(), int8((9, 3), g)),
        "int8_mm_dequant": lambda g: (int8((4, 9), g), int8((3, 9), g).t(), torch.rand(4, generator=g),
                                      torch.rand(3, generator=g), randn((3,), gen=g), torch.float32),
        "quant_linear": lambda g: (nan_gapped(randn((2, 3, 16), gen=g), 2), _packed_weight("dynamic", 5, 16, g),
                                   "dynamic", torch.rand(5, generator=g) * 0.01, randn((5,), gen=g), None),
    }


OPCHECK_CASES = {**_unary_cases(), **_norm_cases(), **_loss_cases(), **_linear_cases(), **_dropout_cases(),
                 **_attention_cases(), **_spatial_cases(), **_quant_cases()}


def test_every_registered_op_has_an_opcheck_case():
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("fastnn::")}
    assert registered == set(OPCHECK_CASES)


@pytest.mark.parametrize("name", sorted(OPCHECK_CASES))
def test_opcheck(name, rng):
    torch.library.opcheck(getattr(torch.ops.fastnn, name).default, OPCHECK_CASES[name](rng))


def test_opcheck_attention_bfloat16(rng):
    # The bfloat16 forward also returns out_float, which its backward reads.
    q, k, v = (randn((1, 2, 5, 8), gen=rng).bfloat16() for _ in range(3))
    torch.library.opcheck(torch.ops.fastnn.scaled_dot_product_attention.default,
                          (*(_leaf(x.clone()) for x in (q, k, v)), None, 0.35, True, "bhsd"))
    out, lse, out_float = torch.ops.fastnn.scaled_dot_product_attention(q, k, v, None, 0.35, True, "bhsd")
    assert out_float.dtype == torch.float32 and out_float.shape == q.shape
    torch.library.opcheck(torch.ops.fastnn.scaled_dot_product_attention_backward.default,
                          (randn(out.shape, gen=rng).bfloat16(), q, k, v, out, lse, None, out_float, 0.35, True, "bhsd"))


# ---- torch.compile(fullgraph=True), forward and backward ---------------------
#
# Each family: (fastnn function, the torch function it matches, inputs). A
# function returns a tuple of outputs; inputs that are floating point require
# grad, and every floating output gets a random gradient.

def _activations(x, fn):
    return (fn.relu(x), fn.gelu(x), fn.gelu(x, approximate="tanh"), fn.silu(x), fn.sigmoid(x), fn.tanh(x),
            fn.softmax(x, -1) if fn is F else fn.softmax(x), fn.log_softmax(x, -1) if fn is F else fn.log_softmax(x))


def _norms(x, w, b, fn):
    return (fn.layer_norm(x, (x.shape[-1],), w, b, 1e-5), fn.rms_norm(x, (x.shape[-1],), w, 1e-6))


def _losses(logits, target, x, t, fn):
    return (fn.cross_entropy(logits, target, label_smoothing=0.1),
            fn.cross_entropy(logits, target, reduction="none"), fn.mse_loss(x, t, reduction="sum"))


def _attention(q, k, v, mask, fn):
    return (fn.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
            fn.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))


def _pools(x, fn):
    return (fn.max_pool2d(x, 3, 2, 1), fn.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
            fn.adaptive_avg_pool2d(x, (3, 5)))


FAMILIES = {
    "activations": (lambda x: _activations(x, fastnn), lambda x: _activations(x, F),
                    lambda g: [_transposed((5, 33), g)]),
    "linear": (lambda x, w, b: (fastnn.linear(x, w, b),), lambda x, w, b: (F.linear(x, w, b),),
               lambda g: [nan_gapped(randn((2, 3, 17), gen=g), 2), randn((6, 17), gen=g), randn((6,), gen=g)]),
    "norm": (lambda x, w, b: _norms(x, w, b, fastnn), lambda x, w, b: _norms(x, w, b, F),
             lambda g: [_transposed((7, 33), g) * 2 + 1, randn((33,), gen=g), randn((33,), gen=g)]),
    "loss": (lambda *a: _losses(*a, fastnn), lambda *a: _losses(*a, F),
             lambda g: [randn((9, 13), gen=g) * 3, torch.tensor([0, 12, -100, 2, 5, 2, 7, 1, 11]),
                        _transposed((4, 6), g), randn((4, 6), gen=g)]),
    "attention": (lambda *a: _attention(*a, fastnn), lambda *a: _attention(*a, F),
                  lambda g: [randn((1, 4, 9, 16), gen=g), randn((1, 2, 11, 16), gen=g),
                             randn((1, 2, 11, 16), gen=g), torch.rand((9, 11), generator=g) > 0.2]),
    "conv": (lambda x, w, b: (fastnn.conv2d(x, w, b, stride=2, padding=1, groups=2),),
             lambda x, w, b: (F.conv2d(x, w, b, stride=2, padding=1, groups=2),),
             lambda g: [randn((2, 4, 9, 8), gen=g).to(memory_format=torch.channels_last), randn((6, 2, 3, 3), gen=g),
                        randn((6,), gen=g)]),
    "pool": (lambda x: _pools(x, fastnn), lambda x: _pools(x, F), lambda g: [randn((2, 3, 9, 8), gen=g)]),
}


def _leaves(inputs, dtype=None):
    """Fresh leaves with the inputs' values and strides; floating ones require grad."""
    out = []
    for t in inputs:
        if t.is_floating_point():
            t = t.detach().to(dtype or t.dtype).clone(memory_format=torch.preserve_format).requires_grad_()
        out.append(t)
    return out


def _forward_backward(fn, inputs, grads_gen_seed, dtype=None):
    leaves = _leaves(inputs, dtype)
    outputs = fn(*leaves)
    gen = torch.Generator().manual_seed(grads_gen_seed)
    floating = [o for o in outputs if o.is_floating_point()]
    grad_outputs = [randn(o.shape, gen=gen).to(o.dtype) for o in floating]
    wrt = [t for t in leaves if t.requires_grad]
    return [o.detach() for o in outputs], list(torch.autograd.grad(floating, wrt, grad_outputs))


def _recording_backend(graphs: dict):
    """aot_eager that keeps the ops of the forward and backward graphs."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    def recorder(kind):
        def compile_graph(gm, example_inputs):
            graphs[kind] = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
            return make_boxed_func(gm.forward)
        return compile_graph

    return aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compile_fullgraph_forward_backward(family, rng):
    fast_fn, torch_fn, make_inputs = FAMILIES[family]
    inputs = make_inputs(rng)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    graphs = {}
    compiled = torch.compile(fast_fn, backend=_recording_backend(graphs), fullgraph=True)
    got = _forward_backward(compiled, inputs, seed)
    eager = _forward_backward(fast_fn, inputs, seed)
    base = _forward_backward(torch_fn, inputs, seed)
    ref = _forward_backward(torch_fn, inputs, seed, torch.float64)
    for i, (c, e, b, r) in enumerate(zip(got[0] + got[1], eager[0] + eager[1], base[0] + base[1], ref[0] + ref[1])):
        assert torch.equal(c, e), f"{family}: compiled result {i} differs from eager"
        assert_close(c, b, r, f"{family} result {i}")
    _check_backward_graph(graphs)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_eager_autograd_calls_no_custom_operator(family, monkeypatch, rng):
    """Outside torch.compile, a call autograd records runs as a
    torch.autograd.Function and its backward formula launches the kernels
    directly (torch.library's wrapping costs ~20-45 us per call): with every
    operator made to fail, forward and backward still run (their bits equal
    the compiled graph's: test_compile_fullgraph_forward_backward). A
    backward that is itself differentiated (create_graph) goes through the
    operators, as before."""
    from fastnn.ops import _torch_ops

    def refuse(*args):
        raise AssertionError("custom operator called")

    for op in _torch_ops._ops.values():
        monkeypatch.setattr(op, "operator", refuse)
    fast_fn, _, make_inputs = FAMILIES[family]
    outputs, grads = _forward_backward(fast_fn, make_inputs(rng), 0)
    assert outputs and grads
    leaves = _leaves(make_inputs(rng))
    floating = [o for o in fast_fn(*leaves) if o.is_floating_point()]
    with pytest.raises(AssertionError, match="custom operator called"):
        torch.autograd.grad(floating, [t for t in leaves if t.requires_grad],
                            [torch.ones_like(o) for o in floating], create_graph=True)


# Besides fastnn's ops a backward graph may only unpack their tuples, detach,
# and add the gradients of an input used twice: no torch kernel computes a
# gradient.
_BOOKKEEPING = {"<built-in function getitem>", "aten.detach.default", "aten.add.Tensor"}


def _check_backward_graph(graphs):
    forward = {op for op in graphs["forward"] if op.startswith("fastnn.")}
    backward = {op for op in graphs["backward"] if op.startswith("fastnn.")}
    assert forward, graphs["forward"]
    assert backward == {op.replace(".default", "_backward.default") for op in forward}
    assert graphs["backward"] - backward <= _BOOKKEEPING, graphs["backward"]


def test_compile_dropout_draws_a_fresh_seed_per_call(rng):
    x = randn((33, 17), gen=rng).requires_grad_()
    g = randn((33, 17), gen=rng)
    compiled = torch.compile(lambda t: fastnn.dropout(t, 0.4), backend="aot_eager", fullgraph=True)
    runs = []
    for fn in (lambda t: fastnn.dropout(t, 0.4), compiled):
        torch.manual_seed(7)  # the seed comes from torch's generator, in eager and in the graph alike
        y = fn(x)
        runs.append((y.detach(), torch.autograd.grad(y, x, g)[0]))
    (y, grad), (y_compiled, grad_compiled) = runs
    assert torch.equal(y_compiled, y) and torch.equal(grad_compiled, grad)
    assert torch.equal(grad != 0, y != 0)  # the backward regenerated the forward's mask
    assert not torch.equal(compiled(x), y_compiled)  # the seed is a graph value, not a constant
    explicit = torch.compile(lambda t: fastnn.dropout(t, 0.4, seed=5, offset=3), backend="aot_eager", fullgraph=True)
    assert torch.equal(explicit(x).detach(), fastnn.dropout(x.detach(), 0.4, seed=5, offset=3))


def test_dropout_op_takes_the_whole_uint64_range(rng):
    """The kernels' seed and offset are uint64; the operators carry them as
    int64 bit patterns."""
    seed, offset, p = 2**64 - 3, 2**63 + 1, 0.3
    x, g = randn((7, 65), gen=rng), randn((7, 65), gen=rng)
    y = fastnn.dropout(x.requires_grad_(), p, seed=seed, offset=offset)
    assert torch.equal(y.detach(), fastnn.dropout(x.detach(), p, seed=seed, offset=offset))
    assert torch.equal(torch.autograd.grad(y, x, g)[0], fastnn.dropout_backward(g, p, seed, offset))
    with pytest.raises(ValueError, match=r"offset must be in \[0, 2\^64\)"):
        fastnn.dropout(x, p, seed=1, offset=2**64)


def _inference_ops(a, b, bias, x, col_scale, packed, weight_scale):
    q = fastnn.quantize_per_tensor(x, 0.05)
    q_rows, row_scale = fastnn.quantize_rows(x)
    w8 = fastnn.quantize_per_channel(b.t(), torch.full((b.shape[1],), 0.01), 0).t()
    return (fastnn.matmul(a, b, bias=bias, alpha=0.5, activation="gelu_tanh"), q, fastnn.dequantize(q, 0.05),
            q_rows, row_scale, fastnn.int8_mm(q_rows, w8),
            fastnn.int8_mm_dequant(q_rows, w8, row_scale, col_scale, bias, dtype="bfloat16"),
            fastnn.ops.quant.quant_linear(x[None], packed, "dynamic", weight_scale))


def test_compile_fullgraph_inference_ops(rng):
    """matmul and the int8 ops (no autograd) trace as fastnn's operators."""
    inputs = (_transposed((6, 9), rng), randn((9, 5), gen=rng), randn((5,), gen=rng), randn((6, 9), gen=rng),
              torch.rand(5, generator=rng), _packed_weight("dynamic", 4, 9, rng), torch.rand(4, generator=rng))
    graphs = {}
    compiled = torch.compile(_inference_ops, backend=_recording_backend(graphs), fullgraph=True)
    for got, want in zip(compiled(*inputs), _inference_ops(*inputs)):
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert graphs["forward"] >= {"fastnn.matmul.default", "fastnn.quantize.default", "fastnn.dequantize.default",
                                 "fastnn.quantize_rows.default", "fastnn.int8_mm.default",
                                 "fastnn.int8_mm_dequant.default", "fastnn.quant_linear.default"}


class _SmallCNN(torch.nn.Module):
    """Every trainable fastnn family in one model, through the functional ops."""

    def __init__(self, gen):
        super().__init__()
        self.conv = torch.nn.Parameter(randn((8, 3, 3, 3), gen=gen) * 0.3)
        self.fc = torch.nn.Parameter(randn((10, 8 * 4), gen=gen) * 0.2)
        self.norm = torch.nn.Parameter(torch.ones(10))

    def forward(self, x, target):
        h = fastnn.max_pool2d(fastnn.relu(fastnn.conv2d(x, self.conv, padding=1)), 2)
        h = fastnn.adaptive_avg_pool2d(fastnn.silu(h), (2, 2)).flatten(1)
        h = fastnn.layer_norm(fastnn.linear(fastnn.dropout(h, 0.1, seed=3), self.fc), 10, self.norm)
        return fastnn.cross_entropy(h, target)


def test_compile_dynamic_shapes_compiles_once(rng):
    model = _SmallCNN(rng)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    # Symbolic sizes: the second shape must reuse the first graph.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch, size in ((2, 9), (5, 12)):
            x = randn((batch, 3, size, size), gen=rng)
            target = torch.randint(0, 10, (batch,), generator=rng)
            results = []
            for fn in (model, compiled):
                loss = fn(x, target)
                results.append((loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))))
            assert all(torch.equal(c, e) for c, e in zip(*results))


def test_compile_default_backend(rng):
    """Inductor around graphs of fastnn's operators (no generated kernels to
    build: the ops are opaque and the views are free)."""
    def mlp(x, target, w1, b1, w2):
        h = fastnn.layer_norm(fastnn.gelu(fastnn.linear(x, w1, b1)), 16)
        return fastnn.cross_entropy(fastnn.linear(h, w2), target)

    compiled = torch.compile(mlp, fullgraph=True)

    def reference(x, target, params):
        h = F.layer_norm(F.gelu(F.linear(x, *params[:2])), (16,))
        loss = F.cross_entropy(F.linear(h, params[2]), target)
        return (loss.detach(), *torch.autograd.grad(loss, params))

    # The loss is one number per draw: the accuracy rule is applied over many
    # draws (check_sampled), not to one rounding that torch may win by luck.
    def trial(gen, sample):
        x, target = randn((7, 12), gen=gen), torch.randint(0, 5, (7,), generator=gen)
        params = [randn(s, gen=gen).requires_grad_() for s in ((16, 12), (16,), (5, 16))]
        results = []
        for fn in (mlp, compiled):
            loss = fn(x, target, *params)
            results.append((loss.detach(), *torch.autograd.grad(loss, params)))
        assert all(torch.equal(c, e) for c, e in zip(*results))
        base = reference(x, target, [t.detach().clone().requires_grad_() for t in params])
        ref = reference(x.double(), target, [t.detach().double().requires_grad_() for t in params])
        for name, got, b, r in zip(("loss", "grad w1", "grad b1", "grad w2"), results[1], base, ref):
            sample.add(name, got, b, r)

    check_sampled(trial, rng, min_elements=64)


# ---- the launcher: _C for CPU arrays, _cuda plus the caller's stream --------

class _CudaArray:
    """Claims to live on CUDA device 0 (DLPack device type 2)."""

    def __dlpack_device__(self):
        return (2, 0)


def test_launch_passes_the_cpu_arguments_plus_a_stream_to_cuda(monkeypatch):
    calls = []
    kernels = types.SimpleNamespace(**{name: (lambda *args, name=name: calls.append((name, args)))
                                       for name in ("relu_forward", "dropout_forward", "mse_backward")})
    monkeypatch.setattr(_backend, "_cuda", kernels)
    x, out, target, grad = _CudaArray(), _CudaArray(), _CudaArray(), _CudaArray()
    assert fastnn.relu(x, out=out) is out
    assert fastnn.dropout(x, 0.25, seed=9, offset=2, out=out) is out
    assert fastnn.mse_loss_backward(grad, x, target, "sum", out=out) is out
    # Not a torch or cupy array: the legacy default stream, 0.
    assert calls == [("relu_forward", (x, out, 0)), ("dropout_forward", (x, out, 0.25, 9, 2, 0)),
                     ("mse_backward", (x, target, grad, out, "sum", 0))]


def test_launch_names_the_kernel_cuda_lacks(monkeypatch):
    monkeypatch.setattr(_backend, "_cuda", types.SimpleNamespace())
    with pytest.raises(RuntimeError, match="softmax_forward has no CUDA kernel yet; move the arrays to the CPU"):
        fastnn.softmax(_CudaArray(), out=_CudaArray())


@pytest.mark.cuda
def test_cuda_relu_custom_op(rng):
    x = randn((37, 65), gen=rng, device="cuda").t().requires_grad_()
    torch.library.opcheck(torch.ops.fastnn.relu.default, (x,))
    compiled = torch.compile(lambda t: fastnn.relu(t) * 2, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert torch.equal(y, torch.relu(x) * 2) and torch.equal(grad, (x > 0).float() * 2)
