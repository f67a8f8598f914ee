#!/usr/bin/env bash
# The GPU check, as one prepared script that fits 9 minutes on one H100/H200 (see docs/results.md):
#   bash scripts/gpu_check.sh        # results land in $OUT (or benchmarks/results/gpu-check), written as they come
# It fails at once where torch sees no GPU, gives every stage a timeout of its own, names each failing test,
# and exits non-zero if any stage failed. The stage budgets add up to at most 540 s (tests/test_gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: torch sees no CUDA device (torch $(python3 -c 'import torch; print(torch.__version__)'))" \
         "- a driver too old for this torch build, or no GPU; nothing was run" | tee "$OUT/FAILED.txt" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
failed=()

stage() {   # stage NAME SECONDS COMMAND...: run with its own timeout, log to $OUT/NAME.txt, remember a failure
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (at most ${seconds}s)"
    timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.txt"
    local status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        failed+=("$name (exit $status$([ "$status" -eq 124 ] && echo ', timed out'))")
    fi
}

# 1. the GPU tests; -rf names every failing test in the summary
stage pytest-gpu 150 python3 -m pytest -m gpu -q -rf -p no:cacheprovider -n 0
# 2. the reference protocol: 1,000 images, Croce et al.'s adaptive suite, bf16 (within the precision bar)
stage reference 300 harness run --grid configs/reference-fastat40-gpu.toml --db "$OUT/reference-fastat40.sqlite" --quiet
harness show --db "$OUT/reference-fastat40.sqlite" --format csv > "$OUT/reference-fastat40.csv" 2>/dev/null || true
# 3. WRN-28-10 throughput: the target settings first, the JSON written after each precision
stage throughput 90 python3 benchmarks/throughput.py --arch wrn-28-10 --repeats 1 --precisions bf16+cl,bf16+cl+compile,fp32

cp benchmarks/results/*.json "$OUT/" 2>/dev/null || true
if [ ${#failed[@]} -ne 0 ]; then
    printf 'gpu_check: FAILED: %s\n' "${failed[@]}" | tee "$OUT/FAILED.txt" >&2
    exit 1
fi
echo "gpu_check: every stage passed; results in $OUT"
