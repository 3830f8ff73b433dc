"""The runtime: ISA detection and override, threads (fastnn's own workers,
or the team of the OpenMP runtime torch loaded), concurrency, fork, leaks,
and no OpenMP runtime of our own."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

import fastnn
from fastnn import _C

from conftest import ISAS

pytestmark = pytest.mark.single_isa


def run_python(code: str, env=None) -> str:
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=full_env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_detected_isa_matches_cpuinfo():
    flags = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma"} <= flags:
        expected = "avx2"
    else:
        expected = "generic"
    assert _C.isa_detected() == expected
    features = _C.cpu_features()
    assert features["avx512_bf16"] == ("avx512_bf16" in flags)
    assert features["avx512_vnni"] == ("avx512_vnni" in flags)


def test_set_isa_bounds():
    with pytest.raises(ValueError, match="isa must be one of"):
        _C.set_isa("sse9")
    previous = _C.isa_active()
    _C.set_isa("generic")
    assert _C.isa_active() == "generic"
    _C.set_isa(previous)
    if _C.isa_detected() != "avx512":
        with pytest.raises(ValueError, match="not supported"):
            _C.set_isa("avx512")


@pytest.mark.parametrize("requested", ["generic", "avx2", "avx512"])
def test_fastnn_isa_environment_variable(requested):
    order = ["generic", "avx2", "avx512"]
    expected = order[min(order.index(requested), order.index(_C.isa_detected()))]
    out = run_python("import fastnn; d = fastnn.info(); print(d['isa_active'], d['isa_requested'])",
                     {"FASTNN_ISA": requested})
    assert out == f"{expected} {requested}"


def test_info_reports_build_and_threads():
    d = fastnn.info()
    assert d["version"] == fastnn.__version__
    assert d["threads"] == fastnn.get_num_threads()
    assert isinstance(d["cuda_built"], bool)
    caches = d["cpu_caches"]
    assert caches == _C.cache_sizes() and 0 < caches["l1d"] < caches["l2"] <= caches["l3"]
    if not d["gpus"]:
        assert d["cuda_unavailable_reason"]


def test_threads_default_to_affinity():
    assert _C.default_num_threads() == len(os.sched_getaffinity(0))
    out = run_python("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
                     "import fastnn; print(fastnn.get_num_threads())")
    assert out == "1"


def test_set_num_threads():
    n = fastnn.get_num_threads()
    try:
        for k in (1, 3, n):
            fastnn.set_num_threads(k)
            assert fastnn.get_num_threads() == k
            x = torch.randn(100_000)
            assert torch.equal(fastnn.relu(x), torch.relu(x))
    finally:
        fastnn.set_num_threads(n)
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastnn.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastnn.set_num_threads(2.0)


def test_concurrent_calls_match_serial():
    xs = [torch.randn(300_000) for _ in range(8)]
    expected = [torch.relu(x) for x in xs]
    results = [None] * len(xs)

    def work(i):
        for _ in range(20):
            results[i] = fastnn.relu(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(torch.equal(r, e) for r, e in zip(results, expected))


def test_fork_after_use_does_not_deadlock():
    out = run_python("""
        import os, numpy as np, fastnn
        x = np.random.randn(1_000_000).astype(np.float32)
        fastnn.relu(x)
        pid = os.fork()
        if pid == 0:
            ok = np.array_equal(fastnn.relu(x), np.maximum(x, 0))
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert out == "0"


def test_no_openmp_runtime_linked():
    """fastnn's modules bring no OpenMP runtime of their own next to torch's."""
    import shutil

    if shutil.which("ldd") is None:
        pytest.skip("ldd not available")
    for module in [_C] + ([fastnn._backend._cuda] if fastnn._backend._cuda else []):
        deps = subprocess.run(["ldd", module.__file__], capture_output=True, text=True).stdout
        assert not any(lib in deps for lib in ("libgomp", "libiomp", "libomp")), deps


TEAM_CHECK = """
    import sys, numpy as np, torch, fastnn
    torch.manual_seed(0)
    a, b = torch.randn(300, 257), torch.randn(257, 190)
    q, k, v = torch.randn(3, 2, 4, 70, 40).unbind(0)
    x = torch.randn(64, 1000)
    fastnn.set_num_threads(2)
    outs = [fastnn.matmul(a, b), fastnn.matmul(a.T.contiguous().T, b.T.contiguous().T),
            fastnn.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
            fastnn.softmax(x), fastnn.layer_norm(x, (1000,)), fastnn.gelu(x)]
    np.savez(sys.argv[1], *[o.numpy() for o in outs])
    print(fastnn._C.thread_runtime())
"""


def run_team_check(path, env=None) -> tuple[str, list]:
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(TEAM_CHECK), str(path)], capture_output=True,
                         text=True, env=full_env, timeout=120)
    assert out.returncode == 0, out.stderr
    with np.load(path) as f:
        return out.stdout.strip(), [f[k] for k in sorted(f.files, key=lambda n: int(n.split("_")[1]))]


@pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info().split("ATen parallel backend:")[-1],
                    reason="this torch build does not run its ops on OpenMP")
def test_jobs_run_on_torchs_openmp_team_with_the_same_results(tmp_path):
    """With torch's OpenMP runtime loaded, fastnn's jobs run on its team (a
    pool of fastnn's own beside it would fight torch's spinning workers for
    the cores); FASTNN_THREAD_POOL=own keeps fastnn's workers. Chunks and
    sums do not depend on which threads run them: bitwise the same outputs."""
    team, team_outs = run_team_check(tmp_path / "team.npz")
    own, own_outs = run_team_check(tmp_path / "own.npz", {"FASTNN_THREAD_POOL": "own"})
    assert team.startswith("OpenMP team of lib"), team
    assert own == "fastnn's own workers"
    assert len(team_outs) == len(own_outs) == 6
    for t, o in zip(team_outs, own_outs):
        assert np.isfinite(t).all() and np.array_equal(t, o)


def test_own_workers_without_an_openmp_runtime():
    """A process that never loaded an OpenMP runtime (NumPy arrays, torch
    blocked from importing) runs on fastnn's own workers, and its parallel
    results match the single-threaded ones."""
    out = run_python("""
        import sys
        sys.modules["torch"] = None
        import numpy as np, fastnn
        from fastnn import _C
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((400, 300), np.float32), rng.standard_normal((300, 200), np.float32)
        fastnn.set_num_threads(2)
        many = fastnn.matmul(a, b)
        fastnn.set_num_threads(1)
        print(_C.thread_runtime(), np.array_equal(many, fastnn.matmul(a, b)))
    """)
    assert out == "fastnn's own workers True"


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine holds freed memory, so RSS is not flat")
def test_repeated_calls_do_not_leak():
    x = np.random.randn(1000).astype(np.float32)
    t = torch.randn(1000)
    out = torch.empty(1000)
    refs = (sys.getrefcount(x), sys.getrefcount(t), sys.getrefcount(out))
    for _ in range(200):
        fastnn.relu(x)
        fastnn.relu(t, out=out)
    gc.collect()

    def rss_kb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    before = rss_kb()
    for _ in range(1000):
        fastnn.relu(x)
        fastnn.relu(t, out=out)
        fastnn.relu_backward(t, out, out=torch.empty(1000))
    gc.collect()
    assert rss_kb() - before < 2048
    assert (sys.getrefcount(x), sys.getrefcount(t), sys.getrefcount(out)) == refs


@pytest.mark.parametrize("path", ISAS)
def test_roofline_probes_follow_the_active_path(path):
    """Each compute probe runs where its instruction is available on the
    active path and reports 0.0 (not a made-up figure) where it is not."""
    previous = _C.isa_active()
    try:
        _C.set_isa(path)
        assert _C.fma_peak_gflops(0.01) > 0
        bf16 = _C.bf16_dot_peak_gflops(0.01)
        if path == "avx512" and "avx512_bf16" in cpu_flags():
            assert bf16 > 0
        else:
            assert bf16 == 0.0
    finally:
        _C.set_isa(previous)
