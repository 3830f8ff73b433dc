"""Runs registered cases and writes the table, the JSON and the plot."""

from __future__ import annotations

import json
import math
import platform
import sys
import time

from .harness import REGISTRY, CpuTimer, CudaTimer


def measure_roofline(device: str) -> dict:
    from .. import _backend as B
    from .. import _C

    if device == "cpu":
        return {"copy_GBps": _C.copy_bandwidth_gbps(256 << 20, 10), "fp32_GFLOPs": _C.fma_peak_gflops(0.3)}
    cuda = B.cuda_kernels()
    return {"copy_GBps": cuda.copy_bandwidth_gbps(0, 1 << 30), "fp32_GFLOPs": cuda.fma_peak_gflops(0)}


def machine_info(device: str) -> dict:
    import torch

    import fastnn

    d = fastnn.info()
    m = {
        "fastnn": d["version"], "torch": torch.__version__, "python": d["python"],
        "machine": platform.machine(), "processor": _cpu_name(), "isa": d["isa_active"],
        "threads": d["threads"], "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device == "cuda":
        m["gpu"] = torch.cuda.get_device_name(0)
        m["cuda"] = torch.version.cuda
    return m


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _progress(i: int, n: int, label: str) -> None:
    if not sys.stderr.isatty():
        return
    width = 30
    filled = width * i // max(n, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {i}/{n} {label[:60]:<60}")
    sys.stderr.flush()
    if i == n:
        sys.stderr.write("\n")


def run_bench(ops: list[str] | None = None, device: str = "cpu", quick: bool = False,
              json_path: str | None = None, plot_path: str | None = None, out=None) -> dict:
    import torch

    import fastnn

    unknown = [op for op in (ops or []) if op not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown --op {', '.join(unknown)}; available: {', '.join(sorted(REGISTRY))}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda needs a CUDA GPU visible to torch")
    # Same thread count for both libraries, all of this process's cores.
    torch.set_num_threads(fastnn.get_num_threads())

    roofline = measure_roofline(device)
    timer = CpuTimer(reps=7 if quick else 15, min_sample_s=0.01 if quick else 0.03) if device == "cpu" \
        else CudaTimer(reps=10 if quick else 30)
    cases = [c for fam in (ops or sorted(REGISTRY)) for c in REGISTRY[fam](device, quick)]
    results = []
    for i, case in enumerate(cases):
        _progress(i, len(cases), case.label)
        results.append(_run_case(case, device, timer, roofline))
        _progress(i + 1, len(cases), case.label)
    report = {"machine": machine_info(device), "roofline": roofline, "results": results}
    print(format_table(report), file=out or sys.stdout)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    if plot_path:
        plot_speedups(report, plot_path)
    return report


def _run_case(case, device, timer, roofline) -> dict:
    w = case.build()
    runners = {"fastnn": w.fastnn}
    if w.torch:
        runners["torch"] = w.torch
    if w.numpy:
        runners["numpy"] = w.numpy
    for name, run in w.torch_backends.items():
        runners[f"torch_{name}"] = run
    ms = timer.time(runners, w.rotations)
    seconds = ms["fastnn"] * 1e-3
    if w.flops:
        throughput, unit = w.flops / seconds / 1e9, w.peak_unit if w.peak_gops else "GFLOP/s"
    else:
        throughput, unit = w.bytes / seconds / 1e9, "GB/s"
    compute_peak = w.peak_gops or roofline["fp32_GFLOPs"]
    floor_s = max((w.flops or 0.0) / (compute_peak * 1e9), w.bytes / (roofline["copy_GBps"] * 1e9))
    err_ratio = None
    if w.accuracy:
        fast, base, floor = w.accuracy()
        err_ratio = (fast + floor) / (base + floor)
    row = {
        "family": case.family, "op": case.op, "pass": case.pass_, "device": device, "dtype": case.dtype,
        "shape": case.shape, "fastnn_ms": ms["fastnn"], "torch_ms": ms.get("torch"),
        "numpy_ms": ms.get("numpy"),
        "speedup_vs_torch": ms["torch"] / ms["fastnn"] if "torch" in ms else None,
        "throughput": throughput, "unit": unit, "roofline_frac": floor_s / seconds, "err_ratio": err_ratio,
    }
    row.update({k + "_ms": v for k, v in ms.items() if k.startswith("torch_")})
    if w.peak_gops:
        row["peak_gops"] = w.peak_gops
    row.update(w.extra)
    return row


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(report: dict) -> str:
    m, r = report["machine"], report["roofline"]
    head = (f"fastnn {m['fastnn']} vs torch {m['torch']} | {m.get('gpu') or m['processor']} | isa {m['isa']} | "
            f"threads {m['threads']} | roofline: copy {r['copy_GBps']:.1f} GB/s, "
            f"fp32 FMA {r['fp32_GFLOPs']:.0f} GFLOP/s")
    cols = ["op", "pass", "dtype", "shape", "fastnn ms", "torch ms", "numpy ms", "vs torch", "throughput",
            "roofline", "err ratio"]
    rows = [[x["op"], x["pass"], x["dtype"], x["shape"], _fmt(x["fastnn_ms"], ".4f"), _fmt(x["torch_ms"], ".4f"),
             _fmt(x["numpy_ms"], ".4f"), _fmt(x["speedup_vs_torch"], ".2f") + "x",
             f"{x['throughput']:.1f} {x['unit']}", f"{100 * x['roofline_frac']:.0f}%", _fmt(x["err_ratio"], ".2f")]
            for x in report["results"]]
    widths = [max(len(str(v)) for v in [c] + [row[i] for row in rows]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(str(v).ljust(w) if i < 4 else str(v).rjust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    extras = [f"{x['op']} {x['pass']} {x['shape']}: " + ", ".join(f"{k} = {v:.4g}" for k, v in x.items()
                                                              if k not in _ROW_KEYS and not k.endswith("_ms"))
              for x in report["results"] if set(x) - _ROW_KEYS - {k for k in x if k.endswith("_ms")}]
    return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(row) for row in rows] + extras)


_ROW_KEYS = {"family", "op", "pass", "device", "dtype", "shape", "speedup_vs_torch", "throughput", "unit",
             "roofline_frac", "err_ratio"}


def plot_speedups(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x for x in report["results"] if x["speedup_vs_torch"]]
    labels = [f"{x['op']} {x['pass']} {x['dtype']} {x['shape']}" for x in rows]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    ax.barh(range(len(rows)), [x["speedup_vs_torch"] for x in rows], color="tab:blue")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup vs torch (higher is better)")
    m = report["machine"]
    ax.set_title(f"fastnn {m['fastnn']} vs torch {m['torch']} on {m.get('gpu') or m['processor']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
