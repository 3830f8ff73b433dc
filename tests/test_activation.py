"""ReLU forward/backward against PyTorch in float64, on every ISA path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn.testing import assert_close
from helpers import ODD_SIZES, check_sampled, fresh_seeds, nan_gapped, poisoned, randn

DTYPES = [torch.float32, torch.bfloat16]


def relu_ref(x):
    return torch.relu(x.double())


def relu_backward_ref(g, y):
    return torch.ops.aten.threshold_backward(g.double(), y.double(), 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0] + ODD_SIZES + [16384 * 3 + 5])
def test_relu_sizes(n, dtype, rng):
    x = randn((n,), dtype, rng)
    out = poisoned((n,), dtype)
    fastnn.relu(x, out=out)
    assert_close(out, torch.relu(x), relu_ref(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1, 1), (3, 0, 5), (2, 3, 5, 7), (1, 1025, 3)])
def test_relu_forward_backward(shape, dtype, rng):
    x, g = randn(shape, dtype, rng), randn(shape, dtype, rng)
    y = fastnn.relu(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert_close(y, torch.relu(x), relu_ref(x))
    gi = fastnn.relu_backward(g, y)
    y_t = torch.relu(x)
    assert_close(gi, torch.ops.aten.threshold_backward(g, y_t, 0), relu_backward_ref(g, y_t))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_relu_strided_inputs_and_outputs(dtype, transpose, rng):
    x = randn((37, 129), dtype, rng)
    g = randn((37, 129), dtype, rng)
    xs, gs = nan_gapped(x, 3, transpose), nan_gapped(g, 2, not transpose)
    out = nan_gapped(poisoned((37, 129), dtype), 2, transpose)
    ptr, strides = out.data_ptr(), out.stride()
    fastnn.relu(xs, out=out)
    assert out.data_ptr() == ptr and out.stride() == strides
    assert_close(out, torch.relu(x), relu_ref(x))
    y = torch.relu(x)
    gi = fastnn.relu_backward(gs, nan_gapped(y, 2))
    assert_close(gi, torch.ops.aten.threshold_backward(g, y, 0), relu_backward_ref(g, y))


def test_relu_numpy_negative_strides_and_offsets(rng):
    a = randn((33, 65), torch.float32, rng).numpy()
    for view in (a[::-1], a[:, ::-2], a[1:], a.T[5:, ::-1]):
        out = fastnn.relu(view)
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, np.maximum(view, 0))


def test_relu_extremes():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.4028235e38, -3.4028235e38,
                      1e-45, -1e-45, 0.0, -0.0])
    for dtype in DTYPES:
        xd = x.to(dtype)
        assert torch.equal(fastnn.relu(xd).isnan(), torch.relu(xd).isnan())
        torch.testing.assert_close(fastnn.relu(xd), torch.relu(xd), rtol=0, atol=0, equal_nan=True)
        g = torch.ones_like(xd)
        torch.testing.assert_close(fastnn.relu_backward(g, torch.relu(xd)),
                                   torch.ops.aten.threshold_backward(g, torch.relu(xd), 0),
                                   rtol=0, atol=0, equal_nan=True)


def test_relu_in_place(rng):
    x = randn((1000,), torch.float32, rng)
    expected = torch.relu(x)
    y = fastnn.relu(x, out=x)
    assert y is x
    assert torch.equal(x, expected)


def test_relu_autograd_matches_torch(rng):
    x = randn((17, 33), torch.float32, rng).requires_grad_()
    x_t = x.detach().clone().requires_grad_()
    g = randn((17, 33), torch.float32, rng)
    fastnn.relu(x).backward(g)
    torch.relu(x_t).backward(g)
    assert torch.equal(x.grad, x_t.grad)


def test_relu_deterministic(rng):
    x = randn((4096, 257), torch.float32, rng)
    assert torch.equal(fastnn.relu(x), fastnn.relu(x))


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 40), min_size=0, max_size=4),
       dtype=st.sampled_from(DTYPES), step=st.integers(1, 3), transpose=st.booleans(),
       seed=fresh_seeds())
def test_relu_hypothesis(shape, dtype, step, transpose, seed):
    gen = torch.Generator().manual_seed(seed)
    x = randn(tuple(shape), dtype, gen)
    xs = nan_gapped(x, step, transpose) if shape else x
    out = fastnn.relu(xs)
    assert_close(out, torch.relu(x), relu_ref(x))


@pytest.mark.large
@pytest.mark.single_isa
def test_relu_past_2_pow_31_elements():
    n = 2**31 + 17
    x = torch.empty(n, dtype=torch.bfloat16)
    x[:8] = torch.tensor([-1, 2, -3, 4, -5, 6, -7, 8], dtype=torch.bfloat16)
    x[-8:] = torch.tensor([1, -2, 3, -4, 5, -6, 7, -8], dtype=torch.bfloat16)
    x[8:-8] = -1
    fastnn.relu(x, out=x)
    assert x[:8].tolist() == [0, 2, 0, 4, 0, 6, 0, 8]
    assert x[-8:].tolist() == [1, 0, 3, 0, 5, 0, 7, 0]
    assert x[2**31 - 1].item() == 0 and x[2**31 + 3].item() == 0


@pytest.mark.cuda
@pytest.mark.single_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (1025,), (37, 129), (4096, 4097)])
def test_relu_cuda(shape, dtype, rng):
    x = randn(shape, dtype, rng, device="cuda")
    g = randn(shape, dtype, rng, device="cuda")
    out = poisoned(shape, dtype, "cuda")
    fastnn.relu(x, out=out)
    assert_close(out, torch.relu(x), relu_ref(x))
    y = torch.relu(x)
    assert_close(fastnn.relu_backward(g, y), torch.ops.aten.threshold_backward(g, y, 0), relu_backward_ref(g, y))
    if len(shape) == 2:
        xt = nan_gapped(x, 2, True)
        assert_close(fastnn.relu(xt), torch.relu(x), relu_ref(x))


@pytest.mark.cuda
@pytest.mark.single_isa
def test_relu_cuda_runs_on_current_stream(rng):
    x = randn((1 << 20,), torch.float32, rng, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = fastnn.relu(x)
    stream.synchronize()
    assert torch.equal(y, torch.relu(x))


@pytest.mark.single_isa
@pytest.mark.parametrize("kind", ["relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"])
def test_activation_custom_ops_pass_opcheck(kind, rng):
    x = randn((5, 3), torch.float32, rng).requires_grad_()
    torch.library.opcheck(getattr(torch.ops.fastnn, kind).default, (x,))
    saved = torch.sigmoid(randn((5, 3), torch.float32, rng))
    torch.library.opcheck(getattr(torch.ops.fastnn, kind + "_backward").default,
                          (randn((5, 3), torch.float32, rng), saved))


@pytest.mark.single_isa
def test_activation_torch_compile_fullgraph(rng):
    fn = torch.compile(lambda t: fastnn.silu(fastnn.relu(t * 2)).sum(), fullgraph=True)
    x = randn((8, 16), torch.float32, rng).requires_grad_()
    x_t = x.detach().clone().requires_grad_()
    fn(x).backward()
    torch.nn.functional.silu(torch.relu(x_t * 2)).sum().backward()
    torch.testing.assert_close(x.grad, x_t.grad)
# --- gelu (erf and tanh), silu, sigmoid, tanh -------------------------------

F = torch.nn.functional


class Smooth:
    """One smooth activation: fastnn's forward/backward, torch's function,
    whether the backward reads the forward's output (else its input), and the
    float64 reference (torch's function unless that cancels in float64 too)."""

    def __init__(self, name, forward, backward, torch_fn, saves_output, ref_fn=None):
        self.name, self.forward, self.backward = name, forward, backward
        self.torch_fn, self.saves_output = torch_fn, saves_output
        self.ref_fn = ref_fn or torch_fn

    def __repr__(self):
        return self.name

    def saved(self, x):
        return self.torch_fn(x) if self.saves_output else x

    def ref(self, x):
        return self.ref_fn(x.double())

    def torch_grad(self, x, g):
        x = x.detach().clone().requires_grad_()
        self.torch_fn(x).backward(g)
        return x.grad

    def ref_grad(self, x, g):
        x = x.detach().double().requires_grad_()
        self.ref_fn(x).backward(g.double())
        return x.grad


# PyTorch's GELU formulas, x/2 (1 + erf(x/sqrt2)) and x/2 (1 + tanh(u)),
# cancel to exactly 0 in float64 as well once erf or tanh rounds to -1
# (x < -8.3 and x < -13); these equal forms keep the tail's true values.
def gelu_ref(x):
    return 0.5 * x * torch.special.erfc(-x * 0.7071067811865476)


def gelu_tanh_ref(x):
    return x * torch.sigmoid(2 * 0.7978845608028654 * (x + 0.044715 * x**3))


SMOOTH = [
    Smooth("gelu", fastnn.gelu, fastnn.gelu_backward, F.gelu, False, gelu_ref),
    Smooth("gelu_tanh", lambda x, out=None: fastnn.gelu(x, "tanh", out=out),
           lambda g, x, out=None: fastnn.gelu_backward(g, x, "tanh", out=out),
           lambda x: F.gelu(x, approximate="tanh"), False, gelu_tanh_ref),
    Smooth("silu", fastnn.silu, fastnn.silu_backward, F.silu, False),
    Smooth("sigmoid", fastnn.sigmoid, fastnn.sigmoid_backward, torch.sigmoid, True),
    Smooth("tanh", fastnn.tanh, fastnn.tanh_backward, torch.tanh, True),
]


def check_forward_backward(op, x, g):
    """Forward and backward against torch at x's precision and in float64."""
    assert_close(op.forward(x), op.torch_fn(x), op.ref(x), f"{op} forward")
    got = op.backward(g, op.saved(x))
    assert_close(got, op.torch_grad(x, g), op.ref_grad(x, g), f"{op} backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_streaming_stores_past_the_last_level_cache(dtype, rng):
    """A pass touching more bytes than L3 holds writes with non-temporal
    stores after peeling to an aligned vector: an output one element off
    alignment, with an odd length, must hold what the same op computes on
    pieces small enough for ordinary stores."""
    l3 = fastnn._C.cache_sizes()["l3"]
    n = l3 // dtype.itemsize // 2 + 5  # unary: input + output just past L3
    if n > 1 << 25:
        pytest.skip(f"an L3 of {l3 >> 20} MiB needs {n} elements per tensor")
    x, g = randn((n,), dtype, rng), randn((n,), dtype, rng)
    pieces = range(0, n, 1 << 16)
    for forward, backward in ((fastnn.relu, fastnn.relu_backward), (fastnn.sigmoid, fastnn.sigmoid_backward)):
        out = poisoned((n + 1,), dtype)[1:]
        forward(x, out=out)
        assert torch.equal(out, torch.cat([forward(x[i:i + (1 << 16)]) for i in pieces]))
        y = out.clone()
        grad = poisoned((n + 1,), dtype)[1:]
        backward(g, y, out=grad)
        assert torch.equal(grad, torch.cat([backward(g[i:i + (1 << 16)], y[i:i + (1 << 16)]) for i in pieces]))


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 17, 33, 65, 1023, 2 * 16384 + 5])
def test_smooth_sizes(op, n, dtype, rng):
    # The accuracy rule compares largest errors, a stable statistic over
    # thousands of elements but a coin toss over one (near a root of the
    # derivative, float32 rounding decides which library is closer). So the
    # rule is checked on a batch of 4096 + n elements, and the size-n call
    # must reproduce the batch's first n results bit for bit: a tail of n
    # lanes computes exactly what a full vector does.
    batch, g_batch = randn((4096 + n,), dtype, rng) * 3, randn((4096 + n,), dtype, rng)
    check_forward_backward(op, batch, g_batch)
    x, g, saved = batch[:n].clone(), g_batch[:n].clone(), op.saved(batch)[:n].clone()
    out = poisoned((n,), dtype)
    assert op.forward(x, out=out) is out
    assert torch.equal(out, op.forward(batch)[:n])
    grad = poisoned((n,), dtype)
    assert op.backward(g, saved, out=grad) is grad
    assert torch.equal(grad, op.backward(g_batch, op.saved(batch))[:n])


# Ranges where a transcendental kernel typically loses accuracy, each checked
# on its own so that the error floor is at that range's scale.
REGIONS = {
    "tiny": lambda n, gen: torch.randn(n, generator=gen) * 1e-20,
    "subnormal": lambda n, gen: torch.randn(n, generator=gen) * 1e-39,
    "unit": lambda n, gen: torch.rand(n, generator=gen) * 2 - 1,
    "moderate": lambda n, gen: torch.linspace(-12, 12, n),
    "negative_tail": lambda n, gen: -torch.rand(n, generator=gen) * 30 - 0.5,
    "positive_tail": lambda n, gen: torch.rand(n, generator=gen) * 30 + 0.5,
    "hundreds": lambda n, gen: torch.linspace(-200, 200, n),
    "huge": lambda n, gen: torch.randn(n, generator=gen) * 1e30,
}


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
@pytest.mark.parametrize("region", list(REGIONS))
def test_smooth_accuracy_by_range(op, region, rng):
    x = REGIONS[region](4099, rng)
    g = randn(x.shape, torch.float32, rng)
    check_forward_backward(op, x, g)


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_special_values(op, dtype):
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 3.4028235e38, -3.4028235e38,
                      1e-45, -1e-45, 88.7, -88.7, 104.0, -104.0], dtype=torch.float32).to(dtype)
    got = op.forward(x)
    ref = op.ref(x)
    # PyTorch's own float32 gelu turns +inf into NaN and 3.4e38 into inf; the
    # float64 reference (and fastnn) keep inf and the finite value.
    assert_close(got, op.torch_fn(x), ref)
    assert torch.equal(got.isnan(), ref.isnan())
    assert torch.equal(got.signbit()[3:5], ref.signbit()[3:5]), "sign of zero"


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_smooth_strided(op, dtype, transpose, rng):
    x, g = randn((37, 129), dtype, rng) * 3, randn((37, 129), dtype, rng)
    out = nan_gapped(poisoned((37, 129), dtype), 2, transpose)
    ptr = out.data_ptr()
    op.forward(nan_gapped(x, 3, transpose), out=out)
    assert out.data_ptr() == ptr
    assert_close(out, op.torch_fn(x), op.ref(x))
    got = op.backward(nan_gapped(g, 2, not transpose), nan_gapped(op.saved(x), 2))
    assert_close(got, op.torch_grad(x, g), op.ref_grad(x, g))


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
def test_smooth_numpy_negative_strides(op, rng):
    a = (randn((33, 65), torch.float32, rng) * 3).numpy()
    for view in (a[::-1], a[:, ::-2], a[1:], a.T[5:, ::-1]):
        out = op.forward(view)
        assert isinstance(out, np.ndarray)
        t = torch.from_numpy(view.copy())
        assert_close(out, op.torch_fn(t), op.ref(t))


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
def test_smooth_in_place_and_deterministic(op, rng):
    x = randn((4096, 33), torch.float32, rng) * 4
    first = op.forward(x)
    assert torch.equal(first, op.forward(x))
    y = op.forward(x, out=x)
    assert y is x and torch.equal(x, first)


@pytest.mark.parametrize("op", SMOOTH, ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_smooth_autograd_matches_torch(op, dtype, rng):
    x = (randn((17, 33), dtype, rng) * 3).requires_grad_()
    g = randn((17, 33), dtype, rng)
    y = op.forward(x)
    assert y.grad_fn is not None and y.dtype == dtype
    y.backward(g)
    xd = x.detach()
    assert_close(x.grad, op.torch_grad(xd, g), op.ref_grad(xd, g))


def test_smooth_bad_arguments():
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        fastnn.gelu(torch.ones(3), approximate="erf")
    with pytest.raises(TypeError, match="x must be float32 or bfloat16"):
        fastnn.silu(torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="y must have the dtype of grad_out"):
        fastnn.tanh_backward(torch.ones(3), torch.ones(3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="x must have the shape of grad_out"):
        fastnn.gelu_backward(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="out overlaps x"):
        x = torch.ones(8)
        fastnn.sigmoid(x[1:], out=x[:-1])


@settings(max_examples=25, deadline=None)
@given(op=st.sampled_from(SMOOTH), shape=st.lists(st.integers(0, 40), min_size=0, max_size=3),
       dtype=st.sampled_from(DTYPES), step=st.integers(1, 3), transpose=st.booleans(),
       scale=st.sampled_from([1e-3, 1.0, 5.0, 50.0]), seed=fresh_seeds())
def test_smooth_hypothesis(op, shape, dtype, step, transpose, scale, seed):
    def trial(gen, sample):
        x = randn(tuple(shape), dtype, gen) * scale
        g = randn(tuple(shape), dtype, gen)
        xs = nan_gapped(x, step, transpose) if shape else x
        sample.add("forward", op.forward(xs), op.torch_fn(x), op.ref(x))
        sample.add("backward", op.backward(g, op.saved(x)), op.torch_grad(x, g), op.ref_grad(x, g))

    check_sampled(trial, seed)
