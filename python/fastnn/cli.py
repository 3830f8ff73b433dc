"""The `fastnn` command: info, bench, check, demo."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    from ._info import format_info, info

    d = info()
    print(json.dumps(d, indent=1) if args.json else format_info(d))
    return 0


def _cmd_bench(args) -> int:
    from .bench import run_bench

    ops = args.op.split(",") if args.op else None
    run_bench(ops=ops, device=args.device, quick=args.quick, json_path=args.json, plot_path=args.plot)
    return 0


def _cmd_check(args) -> int:
    """Every op's quick cases once, error against float64 vs PyTorch's error."""
    from .bench.harness import REGISTRY

    rows, failed = [], 0
    for family in sorted(REGISTRY):
        for case in REGISTRY[family](args.device, True):
            w = case.build()
            if w.accuracy is None:
                continue
            fast, base, floor = w.accuracy()
            ok = fast <= 2.0 * base + floor
            failed += not ok
            rows.append((case.label, fast, base, (fast + floor) / (base + floor), "ok" if ok else "FAIL"))
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'case':<{width}}  {'fastnn err':>10}  {'torch err':>10}  {'ratio':>6}  result")
    for label, fast, base, ratio, verdict in rows:
        print(f"{label:<{width}}  {fast:10.3e}  {base:10.3e}  {ratio:6.2f}  {verdict}")
    print(f"{len(rows) - failed} passed, {failed} failed (rule: fastnn error <= 2 x torch error + 1 ulp)")
    return 1 if failed else 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo("cnn" if args.cnn else "text", steps=args.steps, device=args.device, out=args.out, seed=args.seed)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastnn", description="fastnn: hand-written CPU and CUDA NN kernels")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="version, build, CPU ISA detected and in use, threads, CUDA and GPUs")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("bench", help="time fastnn against PyTorch and NumPy on this machine")
    p.add_argument("--op", help="comma-separated op families (default: all registered)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="representative mid-size shapes, fewer repetitions")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the speedups (needs matplotlib)")
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("check", help="run every op once against PyTorch and print the error table")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.set_defaults(fn=_cmd_check)

    p = sub.add_parser("demo", help="train a small GPT (or --cnn: a CNN) with fastnn and with PyTorch side by side, "
                                    "then quantize it to int8")
    p.add_argument("--steps", type=int, help="optimizer steps per run (default: 300)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when there is a GPU fastnn can train on, else the CPU")
    p.add_argument("--out", default="fastnn-demo", metavar="DIR",
                   help="folder for the loss-curve PNG and the results JSON (default: ./fastnn-demo)")
    p.add_argument("--cnn", action="store_true", help="a small CNN on procedurally drawn shapes instead of the GPT")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the batches and the sample")
    p.set_defaults(fn=_cmd_demo)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, RuntimeError, ImportError) as exc:
        print(f"fastnn {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
