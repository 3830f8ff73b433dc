#!/usr/bin/env bash
# One call on a lent GPU for the CUDA attention kernels: build for the GPU's
# own architecture, keep the resource report, test, sanitize, bench. Logs and
# the bench JSON go under $OUT; the last lines printed are the summaries.
#   bench/lab/attention_cuda_gpu.sh [test|sanitize|bench|all]   (default all)
set -uo pipefail
OUT=${OUT:-/tmp/attention_cuda_out}
mkdir -p "$OUT"
step=${1:-all}
arch=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}a' if m == 9 else f'{m}{n}')")

python3 -m pip install --no-build-isolation --no-deps -v . -Cbuild-dir=build/gpu \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="${arch}-real" \
    -Ccmake.define.CMAKE_CUDA_FLAGS="-Xptxas=-v" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
grep -E "warning|error" "$OUT/build.log" | grep -v "^ptxas info" > "$OUT/build_warnings.txt"
grep -E "Used [0-9]+ registers|spill" "$OUT/build.log" > "$OUT/ptxas.txt"
echo "build: $(wc -l < "$OUT/build_warnings.txt") warning/error lines (sm_${arch}); ptxas report in ptxas.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > "$OUT/gpu.txt"

if [[ $step == test || $step == all ]]; then
    (cd tests && python3 -m pytest test_attention_cuda.py -q -p no:cacheprovider -rf) > "$OUT/test.log" 2>&1
    echo "tests: $(tail -1 "$OUT/test.log")"
fi
if [[ $step == sanitize || $step == all ]]; then
    subset="layouts or varlen or key_padding or rows_without or grouped or zero_length or (test_backward and 59 and lengths1)"
    for tool in memcheck racecheck synccheck initcheck; do
        (cd tests && PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python3 -m pytest test_attention_cuda.py -q -p no:cacheprovider -x -k "$subset") > "$OUT/sanitize_$tool.log" 2>&1
        echo "compute-sanitizer $tool: exit $? ($(grep -c "ERROR SUMMARY: 0 errors" "$OUT/sanitize_$tool.log") clean summaries)"
    done
fi
if [[ $step == bench || $step == all ]]; then
    fastnn bench --op attention_cuda --device cuda --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
    python3 - "$OUT/bench.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["results"]
print(f"{'case':<44} {'fastnn':>8} {'flash':>8} {'cudnn':>8}  TFLOP/s (fastnn)  err")
for r in rows:
    tflops = r["throughput"] / 1e3
    print(f"{r['pass'] + ' ' + r['shape']:<44} {r['fastnn_ms']:8.3f} {r.get('torch_flash_ms') or 0:8.3f} "
          f"{r.get('torch_cudnn_ms') or 0:8.3f}  {tflops:8.1f}  {r['err_ratio'] or 0:5.2f}")
PY
fi
