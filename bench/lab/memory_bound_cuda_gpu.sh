#!/usr/bin/env bash
# One call on a lent GPU for the memory-bound CUDA kernels (norms, softmax,
# cross-entropy, activations, dropout, quantization, optimizers): build for
# the GPU's own architecture with the resource report, test, sanitize, bench.
# Logs and the bench JSON go under $OUT; the last lines printed are the
# summaries.
#   bench/lab/memory_bound_cuda_gpu.sh [test|sanitize|bench|quick|all]   (default all)
# quick: the tests, then `fastnn bench --quick` (one shape per family).
set -uo pipefail
OUT=${OUT:-/tmp/memory_bound_cuda_out}
mkdir -p "$OUT"
step=${1:-all}
arch=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}a' if m == 9 else f'{m}{n}')")
TESTS="test_bindings_cuda.py test_norm_cuda.py test_softmax_cuda.py test_cross_entropy_cuda.py test_activation_cuda.py
       test_dropout_cuda.py test_quant_cuda.py test_optim_cuda.py test_activation.py::test_relu_cuda
       test_activation.py::test_relu_cuda_runs_on_current_stream"

start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python3 -m pip install --no-build-isolation --no-deps -v . -Cbuild-dir=build/gpu \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="${arch}-real" \
    -Ccmake.define.CMAKE_CUDA_FLAGS="-Xptxas=-v" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
grep -E "warning|error" "$OUT/build.log" | grep -v "^ptxas info" > "$OUT/build_warnings.txt"
grep -E "Compiling entry|Used [0-9]+ registers|spill" "$OUT/build.log" > "$OUT/ptxas.txt"
echo "build: $(( $(date +%s) - start )) s, $(wc -l < "$OUT/build_warnings.txt") warning/error lines (sm_${arch}); ptxas report in ptxas.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt"

if [[ $step == test || $step == quick || $step == all ]]; then
    start=$(date +%s)
    # shellcheck disable=SC2086  # TESTS is a list of files
    (cd tests && python3 -m pytest $TESTS -q -p no:cacheprovider -rf --durations=15) \
        > "$OUT/test.log" 2>&1
    echo "tests: $(tail -1 "$OUT/test.log") ($(( $(date +%s) - start )) s)"
fi
if [[ $step == sanitize || $step == all ]]; then
    # 65 tests of small shapes that still reach every kernel and path: warp
    # rows, block rows and chunks, misaligned views, empty inputs, NaN rows,
    # tables of more tensors than one launch holds.
    subset="misaligned or zero_size or zero_rows or out_of_range or feeds or found_inf or more_tensors
            or gradient_subsets or backward_is_the_same or bias_activation_in_place
            or (test_hidden_sizes and 16385) or (test_long_rows and 16385) or (test_sizes and 1023)"
    for tool in memcheck racecheck synccheck initcheck; do
        start=$(date +%s)
        # shellcheck disable=SC2086
        (cd tests && PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python3 -m pytest test_norm_cuda.py test_softmax_cuda.py test_cross_entropy_cuda.py \
            test_activation_cuda.py test_dropout_cuda.py test_quant_cuda.py test_optim_cuda.py \
            -q -p no:cacheprovider -x -k "$(echo $subset)") > "$OUT/sanitize_$tool.log" 2>&1
        echo "compute-sanitizer $tool: exit $? ($(grep -c "ERROR SUMMARY: 0 errors" "$OUT/sanitize_$tool.log") clean" \
             "summaries, $(( $(date +%s) - start )) s)"
    done
fi
if [[ $step == bench || $step == quick || $step == all ]]; then
    start=$(date +%s)
    quick_flag=$([[ $step == quick ]] && echo --quick)
    # shellcheck disable=SC2086
    fastnn bench --op norm_cuda,cross_entropy_cuda,softmax_cuda,activations_cuda,optim_cuda --device cuda \
        $quick_flag --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
    echo "bench: exit $? ($(( $(date +%s) - start )) s)"
    python3 - "$OUT/bench.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"copy bandwidth {report['roofline']['copy_GBps']:.0f} GB/s")
print(f"{'case':<52} {'fastnn':>8} {'torch':>8} {'speedup':>8} {'GB/s':>7} {'roofline':>8} {'err':>5}")
for r in report["results"]:
    case = f"{r['op']} {r['pass']} {r['dtype']} {r['shape']}"
    print(f"{case:<52} {r['fastnn_ms']:8.3f} {r['torch_ms'] or 0:8.3f} {r['speedup_vs_torch'] or 0:7.2f}x "
          f"{r['throughput']:7.0f} {100 * r['roofline_frac']:7.0f}% {r['err_ratio'] or 0:5.2f}")
PY
fi
