"""`fastnn demo` and `fastnn demo --cnn` end to end on the CPU through the
command's entry point, with a few steps, in a temporary --out folder: what
they print, the JSON they write, the plot, and that the two runs started
from the same weights on the same batch."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math

import pytest
import torch

from fastnn import cli
from fastnn.demo import run as demo_run
from fastnn.demo.data import load_corpus
from fastnn.testing import assert_close

pytestmark = [pytest.mark.single_isa, pytest.mark.timeout(300)]

STEPS = 4
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
CORPUS_SHA256 = "87b6540b0e4066751c769117775bfde3d77c1f274e02064cb49ec7e9317c3019"  # data/README.md


def _demo(tmp_path, capsys, *extra):
    assert cli.main(["demo", "--device", "cpu", "--steps", str(STEPS), "--out", str(tmp_path), *extra]) == 0
    captured = capsys.readouterr()
    task = "cnn" if "--cnn" in extra else "text"
    return captured.out, captured.err, json.loads((tmp_path / f"{task}_results.json").read_text())


def _first_step_loss_float64(task: demo_run.Task) -> float:
    """The loss of the demo's initial model (seed 0) on its first batch, in float64."""
    torch.manual_seed(0)
    model = task.make_model().double()
    inputs, targets = next(task.train_batches(0))
    with torch.no_grad():
        return float(model.loss(inputs if inputs.dtype == torch.int64 else inputs.double(), targets))


def _check_common(out, err, results, unit):
    runs = results["runs"]
    for name in ("fastnn", "torch"):
        run = runs[name]
        assert len(run["losses"]) == STEPS and len(run["step_ms"]) == STEPS
        assert all(math.isfinite(v) for v in run["losses"])
        assert run["ms_per_step"] > 0 and run[f"{unit}_per_s"] > 0 and run["wall_s"] > 0
        assert 0.0 <= run["val_accuracy"] <= 1.0
        assert f"{name:>6} [" in err and f"{STEPS:>5}/{STEPS}" in err  # the progress bar reached its end
    assert results["steps"] == STEPS and results["device"] == "cpu"
    for text in ("fastnn demo:", "fastnn speedup", f"{unit}/s", "fastnn.quantize:", "int8 forward speedup"):
        assert text in out

    q = results["quantization"]
    assert q["mode"] == "dynamic" and q["float"]["forward_ms"] > 0 and q["int8"]["forward_ms"] > 0
    # Per-channel int8 weights and per-row int8 activations perturb each
    # logit by about 1% of its scale; the mean loss moves far less. Wrong
    # scales or a wrong layout would move it by much more than 2%.
    assert abs(q["int8"]["loss"] - q["float"]["loss"]) <= 0.02 * q["float"]["loss"]
    assert q["float"]["loss"] == runs["fastnn"]["val_loss"] and q["torch"]["loss"] == runs["torch"]["val_loss"]

    png = f"{results['task']}_loss.png"
    if HAS_MATPLOTLIB:
        assert results["plot"].endswith(png) and results["plot_note"] is None
        with open(results["plot"], "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"loss curves: {results['plot']}" in out
    else:
        assert results["plot"] is None and "matplotlib" in results["plot_note"]
        assert "no plot: matplotlib" in out


def _check_same_start(results, task):
    """Step 1 of both runs is the same model on the same batch: fastnn's loss
    against float64 within twice torch's float32 error."""
    first = {name: torch.tensor(results["runs"][name]["losses"][0], dtype=torch.float32) for name in results["runs"]}
    reference = torch.tensor(_first_step_loss_float64(task), dtype=torch.float64)
    assert_close(first["fastnn"], first["torch"], reference, "first-step loss")


def test_text_demo(tmp_path, capsys):
    out, err, results = _demo(tmp_path, capsys)
    _check_common(out, err, results, "tokens")
    model = results["model"]
    assert results["task"] == "text" and model["model"] == "GPT"
    assert results["items_per_step"] == results["batch_size"] * model["block_size"]
    # Even a few steps must beat predicting every character uniformly.
    assert results["runs"]["fastnn"]["val_loss"] < math.log(model["vocab_size"])
    assert results["quantization"]["int8_layers"] == 4 * model["n_layer"] + 1  # qkv, proj, 2 MLP per block; head
    sample = results["sample"]
    assert sample.startswith(demo_run.SAMPLE_PROMPT)
    assert len(sample) == len(demo_run.SAMPLE_PROMPT) + demo_run.SAMPLE_LENGTH
    assert "sampled from the int8 fastnn model:" in out and sample in out
    _check_same_start(results, demo_run.text_task())


def test_cnn_demo(tmp_path, capsys):
    out, err, results = _demo(tmp_path, capsys, "--cnn")
    _check_common(out, err, results, "images")
    assert results["task"] == "cnn" and results["model"]["model"] == "CNN"
    assert results["items_per_step"] == results["batch_size"]
    assert results["quantization"]["int8_layers"] == 2
    assert "sample" not in results
    _check_same_start(results, demo_run.cnn_task())


def test_corpus_is_the_documented_text():
    text = load_corpus()
    assert hashlib.sha256(text.encode("ascii")).hexdigest() == CORPUS_SHA256
    assert "A Public Domain Text, Copyright Expired" in text[:2000]


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert cli.main(["demo", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "steps must be a positive int" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli.main(["demo", "--device", "cuda", "--steps", "1", "--out", str(tmp_path)]) == 2
        assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
