"""`fastnn demo`: a small model trained with fastnn and with plain PyTorch
side by side (same architecture, initial weights and batches), then
quantized to int8. models.py defines the models once over a layer
namespace, data.py the shipped corpus and the drawn image set, train.py the
training loop shared by both runs, report.py the tables and the plot,
run.py the sequence."""

from .run import DEFAULT_STEPS, run_demo

__all__ = ["run_demo", "DEFAULT_STEPS"]
