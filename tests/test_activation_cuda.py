"""Activations on CUDA (fastnn._cuda.<kind>_forward/_backward for relu, gelu,
gelu_tanh, silu, sigmoid, tanh) and the fused bias_activation_forward /
_backward, against PyTorch on the same GPU within 2x its error of a float64
reference: sizes around the 16-byte packs, accuracy by input range, special
values, strided and in-place use, and a bias gradient that is the same bits
on every run."""

from __future__ import annotations

import pytest
import torch

from fastnn.testing import assert_close
from helpers import nan_gapped, poisoned, randn

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

F = torch.nn.functional
DTYPES = [torch.float32, torch.bfloat16]


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def stream():
    return torch.cuda.current_stream().cuda_stream


# PyTorch's GELU formulas cancel to exactly 0 in float64 as well once erf or
# tanh rounds to -1 (x < -8.3, x < -13); these equal forms keep the tail.
def gelu_ref(x):
    return 0.5 * x * torch.special.erfc(-x * 0.7071067811865476)


def gelu_tanh_ref(x):
    return x * torch.sigmoid(2 * 0.7978845608028654 * (x + 0.044715 * x**3))


# kind: (torch function, float64 reference, whether the backward reads y)
OPS = {
    "relu": (torch.relu, torch.relu, True),
    "gelu": (F.gelu, gelu_ref, False),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), gelu_tanh_ref, False),
    "silu": (F.silu, F.silu, False),
    "sigmoid": (torch.sigmoid, torch.sigmoid, True),
    "tanh": (torch.tanh, torch.tanh, True),
}


def forward(kind, x, out=None):
    out = poisoned(x.shape, x.dtype, "cuda") if out is None else out
    getattr(kernels(), kind + "_forward")(x, out, stream())
    return out


def backward(kind, g, saved, out=None):
    out = poisoned(g.shape, g.dtype, "cuda") if out is None else out
    getattr(kernels(), kind + "_backward")(g, saved, out, stream())
    return out


def grad_of(fn, x, g):
    x = x.detach().clone().requires_grad_()
    fn(x).backward(g)
    return x.grad


def check(kind, x, g, x_view=None, g_view=None):
    fn, ref, saves_output = OPS[kind]
    xv = x if x_view is None else x_view
    assert_close(forward(kind, xv), fn(x), ref(x.double()), f"{kind} forward")
    saved = fn(xv) if saves_output else xv
    got = backward(kind, g if g_view is None else g_view, saved)
    assert_close(got, grad_of(fn, x, g), grad_of(ref, x.double(), g.double()), f"{kind} backward")


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [4099, 2 * 16384 + 5, (1 << 22) + 3])
def test_accuracy(kind, n, dtype, rng):
    check(kind, randn((n,), dtype, rng, "cuda") * 3, randn((n,), dtype, rng, "cuda"))


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 17, 33, 65, 1023])
def test_sizes_give_the_bits_of_the_dense_path(kind, n, dtype, rng):
    # Every element goes through the same float32 formula whatever the size
    # and the path (16-byte packs or the tail), so a small tensor gives the
    # bits of the same values inside a large one, whose accuracy
    # test_accuracy measures (the largest error over few elements is
    # rounding noise, not a statistic).
    fn, _, saves_output = OPS[kind]
    big_x, big_g = randn((8192 + n,), dtype, rng, "cuda") * 3, randn((8192 + n,), dtype, rng, "cuda")
    big_saved = fn(big_x) if saves_output else big_x
    x, g, saved = big_x[:n].clone(), big_g[:n].clone(), big_saved[:n].clone()
    assert torch.equal(forward(kind, x), forward(kind, big_x)[:n])
    assert torch.equal(backward(kind, g, saved), backward(kind, big_g, big_saved)[:n])


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


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("region", list(REGIONS))
def test_accuracy_by_range(kind, region, rng):
    x = REGIONS[region](4099, rng).cuda()
    check(kind, x, randn((4099,), torch.float32, rng, "cuda"))


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(kind, dtype):
    fn, _, saves_output = OPS[kind]
    x = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 3.0e38, -3.0e38, 1e-45]).to(dtype).cuda()
    torch.testing.assert_close(forward(kind, x), fn(x), equal_nan=True, rtol=0, atol=0)
    g = torch.ones_like(x)
    saved = fn(x) if saves_output else x
    got, theirs = backward(kind, g, saved), grad_of(fn, x, g)
    # Where torch's gradient is finite or NaN, ours is the same kind of value.
    torch.testing.assert_close(got.isnan(), theirs.isnan())


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transpose", [False, True])
def test_strided(kind, dtype, transpose, rng):
    x, g = randn((67, 131), dtype, rng, "cuda"), randn((67, 131), dtype, rng, "cuda")
    check(kind, x, g, x_view=nan_gapped(x, 2, transpose), g_view=nan_gapped(g, 3, not transpose))
    out = nan_gapped(poisoned((67, 131), dtype, "cuda"), 2, transpose)
    ptr, strides = out.data_ptr(), out.stride()
    forward(kind, x, out)
    assert out.data_ptr() == ptr and out.stride() == strides
    assert torch.equal(out, forward(kind, x))


@pytest.mark.parametrize("kind", OPS)
def test_in_place_and_deterministic(kind, rng):
    x = randn((1 << 20,), torch.bfloat16, rng, "cuda")
    expected = forward(kind, x)
    assert torch.equal(expected, forward(kind, x))
    y = x.clone()
    forward(kind, y, y)
    assert torch.equal(y, expected)


# ---- bias + activation ------------------------------------------------------

def bias_forward(kind, x, b, out=None):
    out = poisoned(x.shape, x.dtype, "cuda") if out is None else out
    kernels().bias_activation_forward(x, b, kind, out, stream())
    return out


def bias_backward(kind, g, x, b, want_bias=True):
    out = poisoned(x.shape, x.dtype, "cuda")
    db = poisoned(b.shape, b.dtype, "cuda") if want_bias else None
    kernels().bias_activation_backward(g, x, b, kind, out, db, stream())
    return out, db


def torch_bias_act(kind, x, b):
    return OPS[kind][0](x + b).to(x.dtype)


def check_bias(kind, x, b, g, x_view=None, g_view=None):
    xv, gv = (x if x_view is None else x_view), (g if g_view is None else g_view)
    ref = OPS[kind][1]
    assert_close(bias_forward(kind, xv, b), torch_bias_act(kind, x, b), ref(x.double() + b.double()), "forward")
    dx, db = bias_backward(kind, gv, xv, b)
    leaves = [x.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()]
    torch_bias_act(kind, *leaves).backward(g)
    leaves64 = [x.double().requires_grad_(), b.double().requires_grad_()]
    ref(leaves64[0] + leaves64[1]).backward(g.double())
    assert_close(dx, leaves[0].grad, leaves64[0].grad, "grad_x")
    assert db.dtype == b.dtype
    assert_close(db, leaves[1].grad, leaves64[1].grad, "grad_bias")


@pytest.mark.parametrize("kind", OPS)
@pytest.mark.parametrize("dtype,bias_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                              (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("shape", [(4099, 1), (1, 4099), (7, 33), (300, 1025), (4096, 4096), (3, 5, 129)])
def test_bias_activation(kind, dtype, bias_dtype, shape, rng):
    x, g = randn(shape, dtype, rng, "cuda") * 2, randn(shape, dtype, rng, "cuda")
    check_bias(kind, x, randn(shape[-1:], bias_dtype, rng, "cuda"), g)


@pytest.mark.parametrize("kind", ["gelu", "silu"])
@pytest.mark.parametrize("transpose", [False, True])
def test_bias_activation_strided(kind, transpose, rng):
    x, g = randn((65, 333), torch.bfloat16, rng, "cuda"), randn((65, 333), torch.bfloat16, rng, "cuda")
    b = randn((333,), torch.float32, rng, "cuda")
    check_bias(kind, x, b, g, x_view=nan_gapped(x, 2, transpose), g_view=nan_gapped(g, 3, not transpose))


def test_bias_activation_in_place_deterministic_and_optional_grad(rng):
    x, g = randn((3001, 777), torch.float32, rng, "cuda"), randn((3001, 777), torch.float32, rng, "cuda")
    b = randn((777,), torch.float32, rng, "cuda")
    runs = [bias_backward("gelu_tanh", g, x, b) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    dx, db = bias_backward("gelu_tanh", g, x, b, want_bias=False)
    assert db is None and torch.equal(dx, runs[0][0])
    expected = bias_forward("silu", x, b)
    bias_forward("silu", x, b, out=x)
    assert torch.equal(x, expected)


def test_bias_activation_zero_rows_give_zero_bias_grad():
    x = torch.empty(0, 9, device="cuda")
    b = torch.randn(9, device="cuda")
    _, db = bias_backward("relu", x, x, b)
    assert torch.equal(db, torch.zeros(9, device="cuda"))


def test_bad_arguments():
    k, s = kernels(), stream()
    x, out = torch.randn(4, 8, device="cuda"), torch.empty(4, 8, device="cuda")
    b = torch.randn(8, device="cuda")
    shared = torch.randn(32, device="cuda")  # a bias inside the output's memory
    cases = [
        (ValueError, "x must be on a CUDA device", lambda: k.gelu_forward(x.cpu(), out.cpu(), s)),
        (ValueError, "out must be on the device of x", lambda: k.silu_forward(x, out.cpu(), s)),
        (TypeError, "x must be float32 or bfloat16", lambda: k.tanh_forward(x.double(), out.double(), s)),
        (ValueError, "out overlaps x", lambda: k.sigmoid_forward(x[:3], x[1:], s)),
        (ValueError, "y must be on the device of grad_out", lambda: k.tanh_backward(x, out.cpu(), out, s)),
        (ValueError, "activation must be one of", lambda: k.bias_activation_forward(x, b, "swish", out, s)),
        (ValueError, "bias must have shape", lambda: k.bias_activation_forward(x, b[:7], "relu", out, s)),
        (ValueError, "bias must be on the device of x", lambda: k.bias_activation_forward(x, b.cpu(), "relu", out, s)),
        (TypeError, "bias must have the dtype of x",
         lambda: k.bias_activation_forward(x.bfloat16(), b.half(), "relu", out.bfloat16(), s)),
        (ValueError, "out overlaps bias",
         lambda: k.bias_activation_forward(x, shared[:8], "relu", shared.view(4, 8), s)),
        (ValueError, "grad_bias must have the shape of bias",
         lambda: k.bias_activation_backward(x, x, b, "relu", out, torch.empty(9, device="cuda"), s)),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
