"""Functional ops. Each takes any DLPack array (torch, numpy, ...) without
copying, allocates its output with the input's framework unless out= is
given, and runs on the input's device."""

from .activation import (gelu, gelu_backward, relu, relu_backward, sigmoid, sigmoid_backward, silu,
                         silu_backward, tanh, tanh_backward)
from .dropout import dropout, dropout_backward
from .loss import cross_entropy, cross_entropy_backward, mse_loss, mse_loss_backward
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward

__all__ = ["relu", "relu_backward", "gelu", "gelu_backward", "silu", "silu_backward", "sigmoid",
           "sigmoid_backward", "tanh", "tanh_backward", "softmax", "softmax_backward", "log_softmax",
           "log_softmax_backward", "cross_entropy", "cross_entropy_backward", "mse_loss", "mse_loss_backward",
           "dropout", "dropout_backward"]
