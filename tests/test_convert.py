"""fastnn.convert swaps supported torch layers for their fastnn twins and
reports why it kept the others."""

from __future__ import annotations

import pytest
import torch

import fastnn

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
