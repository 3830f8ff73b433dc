"""The `fastnn` command: info, check and bench run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastnn import cli

pytestmark = pytest.mark.single_isa


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "CPU ISA detected" in out and "threads" in out
    assert cli.main(["info", "--json"]) == 0
    assert "isa_active" in json.loads(capsys.readouterr().out)


def test_check_passes(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out and "relu fwd float32" in out


def test_bench_quick_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--op", "activations", "--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["roofline"]["copy_GBps"] > 0 and report["roofline"]["fp32_GFLOPs"] > 0
    rows = report["results"]
    assert {r["pass"] for r in rows} == {"fwd", "bwd"}
    for r in rows:
        assert r["fastnn_ms"] > 0 and r["torch_ms"] > 0 and r["err_ratio"] is not None
        assert set(r) >= {"op", "pass", "device", "dtype", "shape", "fastnn_ms", "torch_ms", "numpy_ms",
                          "speedup_vs_torch", "throughput", "unit", "roofline_frac", "err_ratio"}
    assert "vs torch" in capsys.readouterr().out


def test_bench_rejects_unknown_op(capsys):
    assert cli.main(["bench", "--op", "nosuchop"]) == 2
    assert "unknown --op nosuchop" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "fastnn.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for sub in ("info", "bench", "check"):
        assert sub in out.stdout


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedups.png"
    assert cli.main(["bench", "--op", "activations", "--quick", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
