"""fastnn.nn's layers against their torch twins: forward, input and parameter
gradients by the accuracy rule (float64 reference) in float32 and bfloat16,
odd shapes, NaN-gapped and channels-last inputs, the no-grad (eval) path,
initialization and state_dict in both directions, refused configurations.
The kernels themselves are tested on every ISA path in their own files; the
layers add no ISA-dependent code, so these run on the active path only."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

import fastnn
from fastnn.testing import assert_close
from helpers import check_sampled, nan_gapped, randn

pytestmark = [pytest.mark.single_isa,
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")]

DTYPES = [torch.float32, torch.bfloat16]


def floats(*shapes, scale=1.0):
    return lambda rng, dtype: [randn(s, dtype, rng) * scale for s in shapes]


def logits_and_classes(shape, ignore_index=None):
    """Logits (N, C, ...) or (C,) and int64 class targets; every fourth target
    is ignore_index when given."""
    def build(rng, dtype):
        classes = shape[1] if len(shape) > 1 else shape[0]
        target_shape = (shape[0],) + tuple(shape[2:]) if len(shape) > 1 else ()
        target = torch.randint(0, classes, target_shape, generator=rng)
        if ignore_index is not None:
            target.view(-1)[::4] = ignore_index
        return [randn(shape, dtype, rng) * 3, target]
    return build


CASES = {
    "linear": (lambda nn: nn.Linear(33, 17), floats((3, 5, 33))),
    "linear_1x1_nobias": (lambda nn: nn.Linear(1, 1, bias=False), floats((7, 1))),
    "linear_unbatched": (lambda nn: nn.Linear(65, 8), floats((65,))),
    "conv_stride_pad": (lambda nn: nn.Conv2d(3, 5, 3, stride=2, padding=1), floats((2, 3, 15, 17))),
    "conv_groups_dilation": (lambda nn: nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=2, groups=2),
                             floats((1, 4, 9, 11))),
    "conv_same_nobias": (lambda nn: nn.Conv2d(3, 7, 4, padding="same", bias=False), floats((3, 3, 8, 7))),
    "conv_depthwise_unbatched": (lambda nn: nn.Conv2d(5, 5, 3, groups=5), floats((5, 7, 9))),
    "maxpool": (lambda nn: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), floats((2, 3, 17, 15))),
    "maxpool_dilation_unbatched": (lambda nn: nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(2, 1)),
                                   floats((3, 9, 10))),
    "avgpool": (lambda nn: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), floats((2, 3, 17, 15))),
    "avgpool_ceil_divisor": (lambda nn: nn.AvgPool2d(2, ceil_mode=True, divisor_override=3), floats((1, 2, 7, 9))),
    "adaptive_avgpool": (lambda nn: nn.AdaptiveAvgPool2d((3, None)), floats((2, 3, 10, 7))),
    "adaptive_avgpool_global": (lambda nn: nn.AdaptiveAvgPool2d(1), floats((2, 33, 5, 5))),
    "layernorm": (lambda nn: nn.LayerNorm(65), floats((4, 7, 65))),
    "layernorm_2d_nobias": (lambda nn: nn.LayerNorm((3, 17), bias=False), floats((5, 3, 17))),
    "layernorm_noaffine": (lambda nn: nn.LayerNorm(31, elementwise_affine=False, eps=1e-3), floats((8, 31))),
    "rmsnorm": (lambda nn: nn.RMSNorm(97), floats((6, 97))),
    "rmsnorm_2d_eps": (lambda nn: nn.RMSNorm((4, 15), eps=1e-4), floats((3, 4, 15))),
    "rmsnorm_noaffine": (lambda nn: nn.RMSNorm(8, elementwise_affine=False), floats((33, 8))),
    "relu": (lambda nn: nn.ReLU(), floats((7, 1025))),
    "gelu": (lambda nn: nn.GELU(), floats((7, 1025), scale=3.0)),
    "gelu_tanh": (lambda nn: nn.GELU("tanh"), floats((3, 65), scale=3.0)),
    "silu": (lambda nn: nn.SiLU(), floats((7, 1025), scale=3.0)),
    "cross_entropy": (lambda nn: nn.CrossEntropyLoss(), logits_and_classes((17, 33))),
    "cross_entropy_sum_ignore_smooth": (
        lambda nn: nn.CrossEntropyLoss(reduction="sum", ignore_index=3, label_smoothing=0.1),
        logits_and_classes((40, 97), ignore_index=3)),
    "cross_entropy_spatial_none": (lambda nn: nn.CrossEntropyLoss(reduction="none"),
                                   logits_and_classes((2, 5, 3, 4))),
    "cross_entropy_spatial_mean_ignore": (lambda nn: nn.CrossEntropyLoss(ignore_index=-100),
                                          logits_and_classes((3, 7, 5), ignore_index=-100)),
    "cross_entropy_unbatched": (lambda nn: nn.CrossEntropyLoss(label_smoothing=0.2), logits_and_classes((9,))),
}


def run(layer, inputs, grad_out, pick):
    """(output, input grads, parameter grads) of one forward and backward."""
    leaves = [x.detach().requires_grad_() if x.is_floating_point() else x for x in inputs]
    out = pick(layer(*leaves))
    out.backward(grad_out)
    return [out.detach()] + [x.grad for x in leaves if x.is_floating_point()] + \
        [p.grad for p in layer.parameters()]


def randomize_parameters(layer, rng):
    """Fresh random values, so that a mixed-up or dropped parameter shows
    (norm layers start at weight 1, bias 0). Matrices and filters get
    1/sqrt(fan_in) scale, as initializers do: unit-variance activations
    keep softmax and GELU away from saturation, where every implementation's
    error is rounding noise."""
    with torch.no_grad():
        for p in layer.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(randn(p.shape, p.dtype, rng) / fan_in**0.5)


def check_layer(torch_layer, fast_layer, inputs, rng, pick=lambda out: out, fast_inputs=None, sample=None):
    """fast_layer, loaded from torch_layer's state_dict, against torch_layer at
    its precision and against a float64 copy: output, every input grad and
    every parameter grad (into `sample`, an ErrorSample, when given; else the
    accuracy rule on this one draw). fast_inputs (views with inputs' values)
    default to inputs. Then the no-grad eval path must give the same output
    bits."""
    fast_layer.load_state_dict(torch_layer.state_dict())
    reference = copy.deepcopy(torch_layer).double()
    fast_inputs = inputs if fast_inputs is None else fast_inputs
    out = pick(torch_layer(*inputs))
    grad_out = randn(out.shape, out.dtype, rng)
    names = ["output"] + [f"grad input {i}" for i, x in enumerate(inputs) if x.is_floating_point()] + \
        [f"grad {n}" for n, _ in torch_layer.named_parameters()]
    mine = run(fast_layer, fast_inputs, grad_out, pick)
    base = run(torch_layer, inputs, grad_out, pick)
    ref = run(reference, [x.double() if x.is_floating_point() else x for x in inputs], grad_out.double(), pick)
    for name, a, b, r in zip(names, mine, base, ref, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if sample is None:
            assert_close(a, b, r, name)
        else:
            sample.add(name, a, b, r)
    fast_layer.eval()
    with torch.no_grad():
        again = pick(fast_layer(*fast_inputs))
    assert again.grad_fn is None and torch.equal(again, mine[0])


def check_layer_sampled(make, rng, pick=lambda out: out):
    """check_layer over fresh draws: make(gen) gives (torch_layer, fast_layer,
    inputs, fast_inputs or None). A layer's gradients at these sizes are tens
    to thousands of elements, too few for the largest error to be more than
    one rounding's luck (helpers.ErrorSample)."""
    def trial(gen, sample):
        torch_layer, fast_layer, inputs, fast_inputs = make(gen)
        check_layer(torch_layer, fast_layer, inputs, gen, pick, fast_inputs, sample)

    check_sampled(trial, rng)


def build(case, dtype, rng):
    make, make_inputs = CASES[case]
    torch_layer = make(torch.nn).to(dtype)
    randomize_parameters(torch_layer, rng)
    return torch_layer, make(fastnn.nn).to(dtype), make_inputs(rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_layer_matches_torch(case, dtype, rng):
    check_layer_sampled(lambda gen: (*build(case, dtype, gen), None), rng)


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("cross_entropy_unbatched")])
def test_layer_nan_gapped_input(case, rng):
    def make(gen):
        torch_layer, fast_layer, inputs = build(case, torch.float32, gen)
        return torch_layer, fast_layer, inputs, [nan_gapped(x, 3) if x.is_floating_point() else x for x in inputs]

    check_layer_sampled(make, rng)


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith(("conv", "maxpool", "avgpool", "adaptive"))
                                  and "unbatched" not in c])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_channels_last_input(case, dtype, rng):
    def make(gen):
        torch_layer, fast_layer, inputs = build(case, dtype, gen)
        return torch_layer, fast_layer, [inputs[0].to(memory_format=torch.channels_last)], None

    check_layer_sampled(make, rng)


def test_max_pool_indices(rng):
    x = randn((2, 3, 11, 13), torch.float32, rng)
    torch_layer = torch.nn.MaxPool2d(3, 2, padding=1, return_indices=True)
    fast_layer = fastnn.nn.MaxPool2d(3, 2, padding=1, return_indices=True)
    check_layer(torch_layer, fast_layer, [x], rng, pick=lambda out: out[0])
    assert torch.equal(fast_layer(x)[1], torch_layer(x)[1])


@pytest.mark.parametrize("case", CASES)
def test_init_and_state_dict_both_ways(case, rng):
    make, make_inputs = CASES[case]
    torch.manual_seed(1234)
    torch_layer = make(torch.nn)
    torch.manual_seed(1234)
    fast_layer = make(fastnn.nn)
    # Same constructor and initialization: the same draws give the same state.
    assert list(fast_layer.state_dict()) == list(torch_layer.state_dict())
    for (name, a), b in zip(fast_layer.state_dict().items(), torch_layer.state_dict().values()):
        assert torch.equal(a, b), name
    # fastnn -> torch -> fastnn: the state survives bit for bit, the torch
    # copy computes what fastnn computes (accuracy rule), the fastnn copy
    # the same bits.
    randomize_parameters(fast_layer, rng)
    back_to_torch = make(torch.nn)
    back_to_torch.load_state_dict(fast_layer.state_dict())
    fast_again = make(fastnn.nn)
    fast_again.load_state_dict(back_to_torch.state_dict())
    for (name, a), b in zip(fast_layer.state_dict().items(), fast_again.state_dict().values()):
        assert torch.equal(a, b), name
    inputs = make_inputs(rng, torch.float32)
    with torch.no_grad():
        out = fast_layer(*inputs)
        assert torch.equal(fast_again(*inputs), out)
        ref = copy.deepcopy(back_to_torch).double()(*[x.double() if x.is_floating_point() else x for x in inputs])
        assert_close(out, back_to_torch(*inputs), ref)


@pytest.mark.parametrize("name", ["Linear", "Conv2d", "LayerNorm", "RMSNorm", "GELU", "Dropout", "CrossEntropyLoss",
                                  "MultiheadAttention", "MaxPool2d", "AdaptiveAvgPool2d"])
def test_twin_is_a_torch_layer_with_torch_constructor(name):
    twin, torch_type = getattr(fastnn.nn, name), getattr(torch.nn, name)
    assert issubclass(twin, torch_type) and twin.torch_type is torch_type
    assert inspect.signature(twin) == inspect.signature(torch_type)


def test_twin_can_be_subclassed(rng):
    class Scaled(fastnn.nn.Linear):
        def __init__(self, in_features, out_features, scale):
            super().__init__(in_features, out_features)
            self.scale = scale

        def forward(self, input):
            return super().forward(input) * self.scale

    layer = Scaled(6, 3, 2.0)
    x = randn((4, 6), torch.float32, rng)
    assert Scaled.torch_type is torch.nn.Linear
    assert torch.equal(layer(x), fastnn.nn.functional.linear(x, layer.weight, layer.bias) * 2.0)
    assert fastnn.convert(torch.nn.Sequential(layer)).skipped[0].reason == "already a fastnn layer"


def test_from_torch_shares_parameters_and_hooks(rng):
    layer = torch.nn.Linear(9, 4)
    calls = []
    layer.register_forward_hook(lambda module, args, out: calls.append(type(module)))
    twin = fastnn.nn.Linear.from_torch(layer)
    assert type(layer) is torch.nn.Linear
    assert twin.weight is layer.weight and twin.bias is layer.bias
    x = randn((3, 9), torch.float32, rng)
    out, expected = twin(x), layer(x)
    assert calls == [fastnn.nn.Linear, torch.nn.Linear]
    assert_close(out, expected, copy.deepcopy(layer).double()(x.double()))
    twin.register_buffer("extra", torch.zeros(1))
    assert "extra" not in dict(layer.named_buffers())


def test_refused_configurations():
    for make, match in [
        (lambda nn: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (lambda nn: nn.CrossEntropyLoss(weight=torch.ones(3)), "per-class weights"),
        (lambda nn: nn.GELU("sigmoid"), "approximate"),
        (lambda nn: nn.MultiheadAttention(8, 2, add_bias_kv=True), "add_bias_kv"),
        (lambda nn: nn.MultiheadAttention(8, 2, add_zero_attn=True), "add_zero_attn"),
    ]:
        torch_layer = make(torch.nn)
        twin = fastnn.nn.TWINS[type(torch_layer)]
        assert match in twin.unsupported_reason(torch_layer)
        with pytest.raises(ValueError, match=match):
            make(fastnn.nn)
        with pytest.raises(ValueError, match=match):
            twin.from_torch(torch_layer)
    with pytest.raises(TypeError, match="module must be a torch.nn.modules.linear.Linear"):
        fastnn.nn.Linear.from_torch(torch.nn.Conv2d(1, 1, 1))
    assert "float64" in fastnn.nn.Linear.unsupported_reason(torch.nn.Linear(2, 2, dtype=torch.float64))
    assert "meta" in fastnn.nn.LayerNorm.unsupported_reason(torch.nn.LayerNorm(2, device="meta"))
    assert fastnn.nn.Linear.unsupported_reason(torch.nn.Linear(2, 2, dtype=torch.bfloat16)) is None


def test_cross_entropy_refuses_what_the_kernel_lacks(rng):
    logits = randn((4, 5), torch.float32, rng)
    with pytest.raises(ValueError, match="class probabilities"):
        fastnn.nn.CrossEntropyLoss()(logits, torch.softmax(logits, -1))
    with pytest.raises(ValueError, match="weight"):
        fastnn.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.int64), torch.ones(5))
    with pytest.raises(ValueError, match=r"target must have shape \(2, 3\)"):
        fastnn.nn.CrossEntropyLoss()(randn((2, 5, 3), torch.float32, rng), torch.zeros(2, 4, dtype=torch.int64))
    target = torch.randint(0, 5, (4,), generator=rng)
    legacy = fastnn.nn.functional.cross_entropy(logits, target, size_average=False)
    assert torch.equal(legacy, fastnn.nn.functional.cross_entropy(logits, target, reduction="sum"))


def test_normalized_shape_must_be_trailing_dims(rng):
    x = randn((3, 4, 5), torch.float32, rng)
    with pytest.raises(ValueError, match="trailing dims"):
        fastnn.nn.functional.layer_norm(x, (5, 4))
    with pytest.raises(ValueError, match="weight must have shape"):
        fastnn.nn.functional.rms_norm(x, (4, 5), torch.ones(20))


@pytest.mark.parametrize("name", ["relu", "silu"])
def test_inplace_activation(name, rng):
    layer = getattr(fastnn.nn, {"relu": "ReLU", "silu": "SiLU"}[name])(inplace=True)
    x = randn((5, 33), torch.float32, rng)
    expected = getattr(torch.nn.functional, name)(x)
    y = x.clone()
    out = layer(y)
    assert out.data_ptr() == y.data_ptr() and torch.equal(y, out)
    assert_close(out, expected, getattr(torch.nn.functional, name)(x.double()))
    # While autograd records, the result is a new tensor and the input is kept.
    leaf = x.clone().requires_grad_()
    out = layer(leaf * 1)
    out.sum().backward()
    assert leaf.grad is not None and torch.equal(out.detach(), layer(x.clone()))
    with torch.no_grad():  # a tensor that requires grad is never written in place
        assert torch.equal(layer(leaf), out) and torch.equal(leaf, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_layer(dtype, rng):
    p, layer = 0.3, fastnn.nn.Dropout(0.3)
    x = randn((64, 257), dtype, rng)
    torch.manual_seed(5)
    y = layer(x)
    torch.manual_seed(5)
    assert torch.equal(layer(x), y)  # the seed comes from torch's generator
    assert not torch.equal(layer(x), y)  # and is fresh on every call
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * ((p * (1 - p)) / x.numel()) ** 0.5
    assert_close(y, x * kept / (1 - p), x.double() * kept / (1 - p))
    # Backward regenerates the forward's mask from the same seed.
    leaf, grad_out = x.clone().requires_grad_(), randn(x.shape, dtype, rng)
    torch.manual_seed(5)
    layer(leaf).backward(grad_out)
    assert_close(leaf.grad, grad_out * kept / (1 - p), grad_out.double() * kept / (1 - p))
    layer.eval()
    assert layer(x) is x


def test_dropout_in_place_and_extremes(rng):
    x = randn((5, 17), torch.float32, rng)
    y = x.clone()
    torch.manual_seed(0)
    out = fastnn.nn.Dropout(0.5, inplace=True)(y)
    torch.manual_seed(0)
    assert out.data_ptr() == y.data_ptr() and torch.equal(out, fastnn.nn.Dropout(0.5)(x))
    assert torch.equal(fastnn.nn.Dropout(1.0)(x), torch.zeros_like(x))
    assert fastnn.nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        fastnn.nn.Dropout(1.5)
