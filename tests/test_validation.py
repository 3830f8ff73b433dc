"""Bad input raises a TypeError/ValueError naming the argument; never a crash.
ReLU is the vehicle: every op shares this validation layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fastnn


def test_wrong_dtype():
    with pytest.raises(TypeError, match="x must be float32 or bfloat16, got float64"):
        fastnn.relu(torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="out must have the dtype of x"):
        fastnn.relu(torch.ones(3), out=torch.empty(3, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="y must have the dtype of grad_out"):
        fastnn.relu_backward(torch.ones(3), torch.ones(3, dtype=torch.bfloat16))


def test_not_an_array():
    with pytest.raises(TypeError, match="x must be an array"):
        fastnn.relu([1.0, 2.0])
    with pytest.raises(TypeError, match="x must be an array"):
        fastnn.relu(None)
    with pytest.raises(TypeError, match="out must be"):
        fastnn.relu(torch.ones(3), out=[0.0, 0.0, 0.0])


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"out must have the shape of x \(3,\), got \(4,\)"):
        fastnn.relu(torch.ones(3), out=torch.empty(4))
    with pytest.raises(ValueError, match="y must have the shape of grad_out"):
        fastnn.relu_backward(torch.ones(3, 2), torch.ones(2, 3))


def test_too_many_dims():
    with pytest.raises(ValueError, match="x has 9 dimensions; at most 8"):
        fastnn.relu(torch.ones([1] * 9))


def test_read_only_input_ok_read_only_output_refused():
    a = np.linspace(-1, 1, 11, dtype=np.float32)
    a.flags.writeable = False
    np.testing.assert_array_equal(fastnn.relu(a), np.maximum(a, 0))
    out = np.zeros(11, np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        fastnn.relu(np.ones(11, np.float32), out=out)


def test_misaligned_data_pointer_refused():
    buf = bytearray(4 * 17)
    x = np.frombuffer(buf, np.float32, count=16, offset=2)
    with pytest.raises(ValueError, match="x is not aligned"):
        fastnn.relu(x)


def test_output_overlapping_input_refused():
    x = torch.randn(10)
    with pytest.raises(ValueError, match="out overlaps x"):
        fastnn.relu(x[1:], out=x[:-1])
    g = torch.randn(10)
    with pytest.raises(ValueError, match="out overlaps y"):
        fastnn.relu_backward(g[:5], x[:5], out=x[2:7])


def test_broadcast_and_self_overlapping_output_refused():
    with pytest.raises(ValueError, match="out is a broadcast view"):
        fastnn.relu(torch.ones(4, 3), out=torch.empty(1, 3).expand(4, 3))
    base = torch.empty(10)
    with pytest.raises(ValueError, match="out has overlapping strides"):
        fastnn.relu(torch.ones(4, 3), out=base.as_strided((4, 3), (2, 1)))


def test_nan_filled_output_has_no_effect():
    x = torch.randn(100)
    out = torch.full((100,), float("nan"))
    assert torch.equal(fastnn.relu(x, out=out), torch.relu(x))


def test_wrong_device_refused():
    meta = torch.empty(3, device="meta")
    with pytest.raises((TypeError, ValueError), match="x"):
        fastnn.relu(meta)


@pytest.mark.cuda
@pytest.mark.single_isa
def test_mixed_devices_refused():
    with pytest.raises(ValueError, match="out must be on the device of x"):
        fastnn.relu(torch.ones(3, device="cuda"), out=torch.empty(3))


def test_requires_grad_output_refused():
    with pytest.raises(ValueError, match="out requires grad"):
        fastnn.relu(torch.ones(3), out=torch.empty(3, requires_grad=True))


class _ForeignCudaArray:
    """An object that claims to live on a CUDA device but exports nothing."""

    def __dlpack_device__(self):
        return (2, 0)


@pytest.mark.single_isa
def test_cuda_array_without_usable_cuda_module():
    if fastnn.info()["cuda_built"]:
        with pytest.raises(TypeError, match="x must be an array supporting DLPack"):
            fastnn.relu(_ForeignCudaArray(), out=_ForeignCudaArray())
    else:
        with pytest.raises(RuntimeError, match="CUDA kernels are not available"):
            fastnn.relu(_ForeignCudaArray(), out=_ForeignCudaArray())
