#!/usr/bin/env bash
# The GPU check, as one prepared script (see docs/results.md for recorded numbers):
#   bash scripts/gpu_check.sh            # ~8 minutes on an H100; results land in $OUT (or benchmarks/results)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
timeout 200 python3 -m pytest -m gpu -q -x 2>&1 | tail -15 | tee "$OUT/pytest-gpu.txt"
# the target settings first: the JSON is written after each precision, so a timeout keeps those
timeout 270 python3 benchmarks/throughput.py --arch wrn-28-10 --repeats 1 \
    --precisions bf16+cl,bf16+cl+compile,tf32,fp32 2>&1 | tee "$OUT/throughput.txt"
timeout 90 python3 benchmarks/precision.py --precisions fp32,tf32,bf16 2>&1 | tee "$OUT/precision.txt"
cp benchmarks/results/*.json "$OUT/" 2>/dev/null || true
