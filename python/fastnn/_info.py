"""fastnn.info(): what was built and what this machine offers."""

from __future__ import annotations

import platform

from . import _backend as B
from . import _C

__version__ = "0.1.0"


def info() -> dict:
    """Version, build, CPU instruction sets (detected and in use), threads,
    and the CUDA module's state with the GPUs it sees."""
    build = _C.build_info()
    gpus, gpu_error = [], None
    if B._cuda is not None:
        count, gpu_error = B._cuda.device_count()
        gpus = [B._cuda.device_info(i) for i in range(count)]
    return {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "compiler": build["compiler"],
        "build_type": build["build_type"],
        "isa_detected": _C.isa_detected(),
        "isa_active": _C.isa_active(),
        "isa_requested": _C.isa_requested(),
        "cpu_features": [k for k, v in _C.cpu_features().items() if v],
        "cpu_caches": _C.cache_sizes(),
        "threads": _C.num_threads(),
        "thread_runtime": _C.thread_runtime(),
        "cuda_built": B._cuda is not None,
        "cuda_runtime": B._cuda.runtime_version() if B._cuda is not None else None,
        "cuda_unavailable_reason": B._cuda_import_error if B._cuda is None else gpu_error,
        "gpus": gpus,
    }


def _size(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 and nbytes % (1 << 20) == 0 else f"{nbytes >> 10} KiB"


def format_info(d: dict) -> str:
    isa = d["isa_active"]
    if d["isa_requested"] and d["isa_requested"] != isa:
        isa += f" (FASTNN_ISA={d['isa_requested']} is not available here)"
    elif d["isa_requested"]:
        isa += " (forced by FASTNN_ISA)"
    lines = [
        f"fastnn {d['version']}  (Python {d['python']}, {d['machine']}, {d['compiler']}, {d['build_type']})",
        f"CPU ISA detected : {d['isa_detected']}",
        f"CPU ISA in use   : {isa}",
        f"CPU features     : {', '.join(d['cpu_features']) or 'none beyond the baseline'}",
        f"CPU caches       : " + ", ".join(f"{k.upper().replace('D', 'd')} {_size(v)}"
                                            for k, v in d["cpu_caches"].items()),
        f"threads          : {d['threads']} ({d['thread_runtime']})",
    ]
    if d["cuda_built"]:
        rt = d["cuda_runtime"]
        lines.append(f"CUDA module      : built (runtime {rt // 1000}.{rt % 1000 // 10})")
    else:
        lines.append(f"CUDA module      : not built ({d['cuda_unavailable_reason']})")
    if d["gpus"]:
        for i, g in enumerate(d["gpus"]):
            cc = ".".join(map(str, g["capability"]))
            lines.append(f"GPU {i}            : {g['name']} (sm_{cc.replace('.', '')}, "
                         f"{g['total_memory'] / 2**30:.0f} GiB)")
    elif d["cuda_built"]:
        lines.append(f"GPUs             : none ({d['cuda_unavailable_reason']})")
    return "\n".join(lines)
