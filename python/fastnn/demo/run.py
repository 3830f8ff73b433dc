"""`fastnn demo`: train one model twice from the same initial weights on the
same batches, with fastnn (fastnn.nn layers, fastnn.optim.AdamW) and with
plain PyTorch (torch.nn, torch.optim.AdamW), compare losses and speed, then
quantize the fastnn model to int8 and compare inference."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

import fastnn

from .data import SHAPES, CharData, ShapeData, load_corpus
from .models import CNN, GPT, CNNConfig, GPTConfig
from .report import comparison_table, plot_losses, quantization_table, run_summary, write_json
from .train import FASTNN, TORCH, Schedule, evaluate, sample_text, time_forward, train

SAMPLE_PROMPT = "LOVE, n.  "
SAMPLE_LENGTH = 200
VAL_TEXT_BATCHES = 4  # 256 windows of 64 characters: the first 16K of the 38K held-out characters


@dataclass
class Task:
    name: str
    title: str
    unit: str
    batch_size: int
    lr: float
    make_model: Callable[[], torch.nn.Module]  # the torch.nn model, initialized from torch's global RNG
    train_batches: Callable[[int], Iterator]  # seed -> endless (inputs, targets) batches
    val_batches: list
    inference_batch: torch.Tensor
    data: object


def text_task(batch_size: int = 32, block_size: int = 64) -> Task:
    data = CharData(load_corpus())
    cfg = GPTConfig(data.vocab_size, block_size=block_size)
    val = data.val_batches(64, block_size)[:VAL_TEXT_BATCHES]
    return Task("text", "character-level GPT on The Devil's Dictionary (Ambrose Bierce, 1911)", "tokens",
                batch_size, 6e-3, lambda: GPT(cfg), lambda seed: data.train_batches(batch_size, block_size, seed),
                val, val[0][0][:32], data)


def cnn_task(batch_size: int = 64) -> Task:
    data = ShapeData()
    cfg = CNNConfig(data.num_classes, image_size=data.image_size)
    val = data.val_batches(256)
    return Task("cnn", f"CNN on {len(data.train[1])} procedurally drawn {data.image_size}x{data.image_size} images "
                f"of {len(SHAPES)} shapes ({', '.join(SHAPES)})", "images", batch_size, 2e-3, lambda: CNN(cfg),
                lambda seed: data.train_batches(batch_size, seed), val, val[0][0], data)


DEFAULT_STEPS = {"text": 300, "cnn": 300}


def _fastnn_runs_on(device: torch.device, task: Task) -> str | None:
    """None when one fastnn training step of the task's model runs on device,
    else why not (a layer or the optimizer without a kernel there)."""
    model = task.make_model().to(device).twin(FASTNN.nn)
    inputs, targets = (t[:2].to(device) for t in next(task.train_batches(0)))
    try:
        model.loss(inputs, targets).backward()
        FASTNN.adamw(model.parameters()).step()
    except (RuntimeError, ValueError, TypeError) as exc:
        return str(exc)
    return None


def resolve_device(requested: str, task: Task) -> tuple[torch.device, str | None]:
    """The device to train on and, when auto fell back to the CPU, why."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu"), None
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise RuntimeError("--device cuda: torch sees no CUDA GPU")
        return torch.device("cpu"), None
    cuda = torch.device("cuda")
    reason = _fastnn_runs_on(cuda, task)
    if reason is None:
        return cuda, None
    if requested == "cuda":
        raise RuntimeError(f"--device cuda: fastnn cannot train this model on the GPU: {reason}")
    return torch.device("cpu"), f"training on the CPU: fastnn cannot train this model on the GPU ({reason})"


def _inference_on_cpu(fast: torch.nn.Module, reference: torch.nn.Module, task: Task) -> tuple[dict, object]:
    """Validation and forward timing of the trained models on the CPU, where
    QuantLinear's kernels run: the fastnn model in float32 and with every
    Linear in int8 (dynamic: per-token activations, per-channel weights),
    and the torch model. Returns the results and the int8 model."""
    cpu = torch.device("cpu")
    models = {"float": fast.twin(fastnn.nn, cpu), "int8": fast.twin(fastnn.nn, cpu),
              "torch": reference.twin(torch.nn, cpu)}
    report = fastnn.quantize(models["int8"], mode="dynamic")
    result = {"mode": report.mode, "int8_layers": len(report.layers),
              "batch_shape": "x".join(map(str, task.inference_batch.shape))}
    for name, model in models.items():
        result[name] = {**evaluate(model, task.val_batches, cpu),
                        "forward_ms": time_forward(model, task.inference_batch)}
    result["int8_speedup_vs_fastnn_float"] = result["float"]["forward_ms"] / result["int8"]["forward_ms"]
    result["int8_speedup_vs_torch_float"] = result["torch"]["forward_ms"] / result["int8"]["forward_ms"]
    return result, models["int8"]


def _say(*parts) -> None:
    print(*parts, flush=True)


def run_demo(task_name: str = "text", steps: int | None = None, device: str = "auto", out: str | Path = "fastnn-demo",
             seed: int = 0, show_progress: bool = True) -> dict:
    """Runs the demo, prints its report, writes out/<task>_results.json and
    out/<task>_loss.png; returns the results dict (the JSON's content)."""
    started = time.perf_counter()
    if task_name not in DEFAULT_STEPS:
        raise ValueError(f"task_name must be one of {sorted(DEFAULT_STEPS)}, got {task_name!r}")
    steps = DEFAULT_STEPS[task_name] if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = text_task() if task_name == "text" else cnn_task()
    train_device, fallback = resolve_device(device, task)
    schedule = Schedule(steps, task.lr)

    torch.manual_seed(seed)
    reference = task.make_model().to(train_device)
    fast = reference.twin(FASTNN.nn)
    info = fastnn.info()
    results = {
        "task": task.name, "title": task.title, "device": str(train_device), "device_note": fallback,
        "fastnn": {"version": fastnn.__version__, "isa": info["isa_active"], "threads": fastnn.get_num_threads()},
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads()},
        "model": reference.describe(), "steps": steps, "batch_size": task.batch_size, "lr": task.lr, "seed": seed,
    }
    _say(f"fastnn demo: {task.title}")
    shape = ", ".join(f"{k}={v}" for k, v in results["model"].items() if k not in ("model", "parameters"))
    _say(f"  {results['model']['model']}: {shape}; {results['model']['parameters']:,} parameters")
    torch_in_fastnn = "; torch's ops between them on 1 thread" if train_device.type == "cpu" else ""
    _say(f"  {steps} steps of batch {task.batch_size} on {train_device}; fastnn {fastnn.__version__} "
         f"({info['isa_active']}, {results['fastnn']['threads']} threads{torch_in_fastnn}), torch {torch.__version__} "
         f"({results['torch']['threads']} threads)")
    if fallback:
        _say(f"  {fallback}")

    _say("fastnn: fastnn.nn layers + fastnn.optim.AdamW")
    fast_run = train(fast, FASTNN, task.train_batches(seed), schedule, train_device, task.unit, show_progress)
    _say("torch: torch.nn layers + torch.optim.AdamW, same initial weights and batches")
    ref_run = train(reference, TORCH, task.train_batches(seed), schedule, train_device, task.unit, show_progress)
    results["quantization"], int8_model = _inference_on_cpu(fast, reference, task)
    q = results["quantization"]
    results["runs"] = {"fastnn": run_summary(fast_run, q["float"]), "torch": run_summary(ref_run, q["torch"])}
    results["items_per_step"] = fast_run.items_per_step
    _say()
    _say(comparison_table(results["runs"]))
    _say()
    _say(f"fastnn.quantize: {q['int8_layers']} Linear layers -> int8 ({q['mode']}: per-token activations, "
         "per-channel weights)")
    _say(quantization_table(q))
    _say(f"int8 forward speedup: {q['int8_speedup_vs_fastnn_float']:.2f}x vs fastnn float32, "
         f"{q['int8_speedup_vs_torch_float']:.2f}x vs torch float32")

    if task.name == "text":
        results["sample"] = sample_text(int8_model, task.data, SAMPLE_PROMPT, SAMPLE_LENGTH, seed)
        _say()
        _say("sampled from the int8 fastnn model:")
        _say(results["sample"])

    plot_path = out / f"{task.name}_loss.png"
    why_not = plot_losses(plot_path, results["runs"], f"fastnn demo: {task.title}")
    results["plot"] = None if why_not else str(plot_path)
    results["plot_note"] = why_not
    results["wall_s"] = time.perf_counter() - started
    json_path = out / f"{task.name}_results.json"
    write_json(json_path, results)
    _say()
    _say(f"loss curves: {plot_path}" if why_not is None else f"no plot: {why_not}")
    _say(f"results: {json_path}")
    _say(f"done in {results['wall_s']:.0f} s")
    return results
