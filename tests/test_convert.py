"""fastnn.convert swaps supported torch layers for their fastnn twins and
reports why it kept the others."""

from __future__ import annotations

import copy

import pytest
import torch

import fastnn
from fastnn.testing import assert_close

pytestmark = pytest.mark.single_isa


class Custom(torch.nn.ReLU):
    """A subclass: its forward could be anything, so convert must keep it."""


def make_model():
    return torch.nn.Sequential(
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Tanh(), torch.nn.ReLU(inplace=True)),
        Custom(),
    )


def test_convert_swaps_and_reports():
    model = make_model()
    x = torch.randn(4, 8)
    expected = model(x.clone())
    report = fastnn.convert(model)
    assert isinstance(model[0], fastnn.nn.ReLU) and isinstance(model[1][1], fastnn.nn.ReLU)
    assert model[1][1].inplace
    assert type(model[1][0]) is torch.nn.Tanh and type(model[2]) is Custom
    assert [e.name for e in report.swapped] == ["0", "1.1"]
    reasons = {e.name: e.reason for e in report.skipped}
    assert reasons == {"1.0": "no fastnn twin for this layer type", "2": "no fastnn twin for this layer type"}
    assert torch.equal(model(x.clone()), expected)
    assert "2 swapped" in str(report)


def test_convert_include_exclude():
    model = make_model()
    report = fastnn.convert(model, include=["1.*"])
    assert [e.name for e in report.swapped] == ["1.1"]
    model = make_model()
    report = fastnn.convert(model, exclude=[torch.nn.ReLU])
    assert report.swapped == []


def test_convert_twice_is_a_no_op():
    model = make_model()
    fastnn.convert(model)
    report = fastnn.convert(model)
    assert report.swapped == [] and {e.reason for e in report.skipped} >= {"already a fastnn layer"}


def test_convert_rejects_non_modules():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fastnn.convert([torch.nn.ReLU()])


def test_relu_layer_state_and_grad():
    layer = fastnn.nn.ReLU()
    assert layer.state_dict() == torch.nn.ReLU().state_dict()
    x = torch.randn(5, 7, requires_grad=True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, (x > 0).float())


class Block(torch.nn.Module):
    """A user container: convert walks into it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.reflect = torch.nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.bn = torch.nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.reflect(self.pool(self.act(self.conv(x)))))


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.noisy = torch.nn.MultiheadAttention(16, 2, dropout=0.1, batch_first=True)
        self.norm = torch.nn.RMSNorm(16)

    def forward(self, x):
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return self.norm(x + self.noisy(x, x, x, need_weights=False)[0])


class Mixed(torch.nn.Module):
    """Supported and unsupported layers side by side."""

    def __init__(self):
        super().__init__()
        self.features = Block()
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 16),
                                        torch.nn.GELU(approximate="tanh"), torch.nn.Dropout(0.2),
                                        torch.nn.LayerNorm(16))
        self.mixer = Attention()
        self.out = torch.nn.Linear(16, 5)
        self.loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
        self.weighted_loss = torch.nn.CrossEntropyLoss(weight=torch.ones(5))

    def forward(self, x, target):
        h = self.head(self.features(x))
        logits = self.out(self.mixer(h.view(h.shape[0], 4, 4).repeat(1, 1, 4)))
        return self.loss(logits.flatten(0, 1), target)


EXPECTED_KEPT = {
    "features.reflect": "padding_mode='reflect': fastnn's conv2d pads with zeros only",
    "features.bn": "no fastnn twin for this layer type",
    "head.1": "no fastnn twin for this layer type",
    "mixer.noisy": "dropout=0.1: fastnn's fused attention has no dropout, so the layer could not train",
    "weighted_loss": "weight= (per-class weights): fastnn's cross_entropy has no class weights",
}


def loss_and_grads(model, x, target):
    model.zero_grad()
    loss = model(x, target)
    loss.backward()
    return [loss.detach()] + [p.grad for p in model.parameters()]


def test_convert_mixed_model_computes_what_torch_computes():
    torch.manual_seed(0)
    model = Mixed().eval()  # eval: Dropout is the identity, BatchNorm uses its running statistics
    x, target = torch.randn(2, 3, 9, 9), torch.randint(0, 5, (8,))
    reference = copy.deepcopy(model).double()
    expected = loss_and_grads(model, x, target)
    parameters = list(model.parameters())
    report = fastnn.convert(model)

    assert {e.name: e.reason for e in report.skipped} == EXPECTED_KEPT
    assert [e.name for e in report.swapped] == [
        "features.conv", "features.act", "features.pool", "head.0", "head.2", "head.3", "head.4", "head.5",
        "mixer.attn", "mixer.norm", "out", "loss"]
    # The attention layer is one unit: its out_proj is not reported apart.
    assert not any(e.name.startswith("mixer.attn.") for e in report.entries)
    assert type(model.mixer.noisy) is torch.nn.MultiheadAttention
    assert isinstance(model.features.conv, fastnn.nn.Conv2d) and isinstance(model.head[3], fastnn.nn.GELU)
    assert model.head[3].approximate == "tanh" and not model.head[4].training
    assert all(a is b for a, b in zip(model.parameters(), parameters))
    assert "12 swapped, 5 left as torch" in str(report)

    got = loss_and_grads(model, x, target)
    ref = loss_and_grads(reference, x.double(), target)
    names = ["loss"] + [f"grad {n}" for n, _ in model.named_parameters()]
    for name, a, b, r in zip(names, got, expected, ref, strict=True):
        assert_close(a, b, r, name)


def test_convert_keeps_training_working():
    torch.manual_seed(0)
    model = Mixed()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fastnn.convert(model)
    x, target = torch.randn(2, 3, 9, 9), torch.randint(0, 5, (8,))
    before = model.out.weight.detach().clone()
    model(x, target).backward()
    optimizer.step()
    assert not torch.equal(model.out.weight, before)


def test_convert_patterns_on_a_mixed_model():
    model = Mixed()
    report = fastnn.convert(model, include=["head.*", torch.nn.MultiheadAttention], exclude=["head.5"])
    assert {e.name for e in report.swapped} == {"head.0", "head.2", "head.3", "head.4", "mixer.attn"}
    reasons = {e.name: e.reason for e in report.skipped}
    assert reasons["head.5"] == "excluded" and reasons["out"] == "not included"
    assert reasons["mixer.noisy"] == EXPECTED_KEPT["mixer.noisy"]
    report = fastnn.convert(model, exclude=["*.attn", torch.nn.Linear])
    assert {e.name for e in report.swapped} == {"features.conv", "features.act", "features.pool", "head.5",
                                                "mixer.norm", "loss"}
    assert {e.name: e.reason for e in report.skipped}["head.2"] == "already a fastnn layer"


def test_convert_shared_module_once():
    shared = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    report = fastnn.convert(model)
    assert model[0] is model[2] and isinstance(model[0], fastnn.nn.Linear)
    assert [e.name for e in report.entries] == ["0", "1"]


def test_convert_leaves_quantized_and_float64_layers():
    model = torch.nn.Sequential(fastnn.nn.QuantLinear(4, 4), torch.nn.Linear(4, 4, dtype=torch.float64))
    reasons = {e.name: e.reason for e in fastnn.convert(model).skipped}
    assert reasons == {"0": "already a fastnn layer",
                       "1": "weight is torch.float64; fastnn's Linear kernels run float32 and bfloat16"}


def test_convert_transformer_layer_notes_torch_fast_path():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, dim_feedforward=24, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    original, reference = copy.deepcopy(layer), copy.deepcopy(layer).double()
    report = fastnn.convert(layer)
    assert isinstance(layer.self_attn, fastnn.nn.MultiheadAttention) and isinstance(layer.norm2, fastnn.nn.LayerNorm)
    assert len(report.notes) == 1 and "set_fastpath_enabled(False)" in str(report)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            out, expected, ref = layer(x), original(x), reference(x.double())
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    assert_close(out, expected, ref)
