"""What the demo prints and writes: the side-by-side table of the two runs,
the quantization table, the results JSON and the PNG of the loss curves."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

from .train import RunResult

FINAL_WINDOW = 10  # the "final loss" is the mean over the last steps: one batch is noisy


def final_loss(run: RunResult) -> float:
    tail = run.losses[-FINAL_WINDOW:]
    return sum(tail) / len(tail)


def run_summary(run: RunResult, val: dict) -> dict:
    return {"final_train_loss": final_loss(run), "val_loss": val["loss"], "val_accuracy": val["accuracy"],
            "ms_per_step": run.ms_per_step, f"{run.unit}_per_s": run.items_per_s, "wall_s": run.wall_s,
            "losses": run.losses, "step_ms": [1e3 * s for s in run.step_s]}


def _table(header: tuple, rows: list[tuple]) -> str:
    cells = [header] + rows
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison_table(runs: dict) -> str:
    """runs: {"fastnn": run_summary, "torch": run_summary}."""
    fast, ref = runs["fastnn"], runs["torch"]
    unit = next(k for k in fast if k.endswith("_per_s"))
    rows = [
        (f"train loss (mean of last {min(FINAL_WINDOW, len(fast['losses']))} steps)", f"{fast['final_train_loss']:.4f}",
         f"{ref['final_train_loss']:.4f}", ""),
        ("validation loss", f"{fast['val_loss']:.4f}", f"{ref['val_loss']:.4f}", ""),
        ("validation accuracy", f"{fast['val_accuracy']:.2%}", f"{ref['val_accuracy']:.2%}", ""),
        ("ms per step (median)", f"{fast['ms_per_step']:.1f}", f"{ref['ms_per_step']:.1f}",
         f"{ref['ms_per_step'] / fast['ms_per_step']:.2f}x"),
        (unit.replace("_per_s", "/s"), f"{fast[unit]:,.0f}", f"{ref[unit]:,.0f}", f"{fast[unit] / ref[unit]:.2f}x"),
        ("training wall time (s)", f"{fast['wall_s']:.1f}", f"{ref['wall_s']:.1f}", ""),
    ]
    return _table(("", "fastnn", "torch", "fastnn speedup"), rows)


def quantization_table(q: dict) -> str:
    rows = [
        ("validation loss", f"{q['float']['loss']:.4f}", f"{q['int8']['loss']:.4f}", f"{q['torch']['loss']:.4f}"),
        ("validation accuracy", f"{q['float']['accuracy']:.2%}", f"{q['int8']['accuracy']:.2%}",
         f"{q['torch']['accuracy']:.2%}"),
        (f"forward ms, batch {q['batch_shape']}", f"{q['float']['forward_ms']:.2f}",
         f"{q['int8']['forward_ms']:.2f}", f"{q['torch']['forward_ms']:.2f}"),
    ]
    return _table(("inference (CPU)", "fastnn float32", "fastnn int8", "torch float32"), rows)


def write_json(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=1) + "\n")


def plot_losses(path: Path, runs: dict, title: str) -> str | None:
    """Writes the two runs' training-loss curves, against steps and against
    training time, to path; returns None, or why no plot was written."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install matplotlib), so no plot was written"
    # The object-oriented API with an Agg canvas: no pyplot, so the caller's
    # matplotlib backend and open figures are left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    # torch wide and pale underneath, fastnn thin on top: per step the two
    # curves coincide, and both must stay visible.
    styles = {"torch": dict(color="tab:orange", lw=3, alpha=0.5, zorder=1),
              "fastnn": dict(color="tab:blue", lw=1, zorder=2)}
    for name, run in runs.items():
        losses, step_ms = run["losses"], run["step_ms"]
        elapsed = [ms / 1e3 for ms in itertools.accumulate(step_ms)]
        label = f"{name} ({run['ms_per_step']:.0f} ms/step)"
        by_step.plot(range(1, len(losses) + 1), losses, label=label, **styles[name])
        by_time.plot(elapsed, losses, label=label, **styles[name])
    by_step.set_xlabel("step")
    by_step.set_ylabel("training loss")
    by_time.set_xlabel("training time (s)")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None
