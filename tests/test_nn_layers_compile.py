"""torch.compile(fullgraph=True) over fastnn.nn's layers, forward and backward:
each layer alone (a failure names the op that breaks the graph) and a small
model with a loss. The aot_eager backend traces exactly what inductor would
(dynamo, then AOTAutograd's joint graph) without compiling kernels, so the
tests stay cheap; fastnn's ops are opaque custom ops either way, so the
compiled run must reproduce the eager run's bits."""

from __future__ import annotations

import pytest
import torch

import fastnn
from helpers import randn

pytestmark = pytest.mark.single_isa

nn = fastnn.nn

LAYERS = {
    "linear": (lambda: nn.Linear(16, 8), [(4, 16)]),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), [(2, 3, 7, 7)]),
    "max_pool2d": (lambda: nn.MaxPool2d(2), [(2, 3, 7, 7)]),
    "avg_pool2d": (lambda: nn.AvgPool2d(3, 2, 1), [(2, 3, 7, 7)]),
    "adaptive_avg_pool2d": (lambda: nn.AdaptiveAvgPool2d(2), [(2, 3, 7, 7)]),
    "layer_norm": (lambda: nn.LayerNorm(16), [(4, 16)]),
    "rms_norm": (lambda: nn.RMSNorm(16), [(4, 16)]),
    "relu": (lambda: nn.ReLU(), [(4, 16)]),
    "gelu": (lambda: nn.GELU(), [(4, 16)]),
    "silu": (lambda: nn.SiLU(), [(4, 16)]),
    "dropout": (lambda: nn.Dropout(0.25), [(4, 16)]),
    "cross_entropy": (lambda: nn.CrossEntropyLoss(label_smoothing=0.1), [(6, 16), "classes"]),
}


class SelfAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


LAYERS["multihead_attention"] = (SelfAttention, [(2, 5, 16)])


def make_inputs(specs, rng):
    inputs = []
    for spec in specs:
        if spec == "classes":
            inputs.append(torch.randint(0, inputs[0].shape[-1], inputs[0].shape[:1], generator=rng))
        else:
            inputs.append(randn(spec, torch.float32, rng).requires_grad_())
    return inputs


def forward_backward(fn, module, inputs, grad_out):
    for t in [*inputs, *module.parameters()]:
        t.grad = None
    torch.manual_seed(0)  # dropout draws its seed from torch's generator
    out = fn(*inputs)
    out.backward(grad_out)
    return [out.detach()] + [t.grad for t in inputs if t.is_floating_point()] + [p.grad for p in module.parameters()]


@pytest.mark.parametrize("case", LAYERS)
def test_layer_compiles_fullgraph(case, rng):
    make, specs = LAYERS[case]
    layer = make()
    inputs = make_inputs(specs, rng)
    with torch.no_grad():
        out_shape = layer(*inputs).shape
    grad_out = randn(out_shape, torch.float32, rng)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    got = forward_backward(compiled, layer, inputs, grad_out)
    expected = forward_backward(layer, layer, inputs, grad_out)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_small_model_compiles_fullgraph(rng):
    model = torch.nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.LayerNorm(32), nn.Dropout(0.1), nn.Linear(32, 7))
    loss_fn = nn.CrossEntropyLoss()
    x, target = randn((9, 12), torch.float32, rng).requires_grad_(), torch.randint(0, 7, (9,), generator=rng)

    def step(x, target):
        return loss_fn(model(x), target)

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got = forward_backward(compiled, model, [x, target], torch.ones(()))
    expected = forward_backward(step, model, [x, target], torch.ones(()))
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
