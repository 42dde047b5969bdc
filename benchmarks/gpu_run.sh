#!/usr/bin/env bash
# The one command for a lent GPU machine (run from the repository root, with
# .whl/ carried):  bash benchmarks/gpu_run.sh
# Sets up imports (benchmarks/gpu_setup.sh), runs the GPU check into
# $OUT/gpu (or ./benchmark-results/gpu without $OUT) and prints its summary.
# Extra arguments go to gpu_check (e.g. --budget 360 --smoke-seconds 90).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export SITE="${SITE:-/tmp/site}"
DEST="${OUT:-$ROOT/benchmark-results}/gpu"
mkdir -p "$DEST"
bash benchmarks/gpu_setup.sh 2>&1 | tail -5 | tee "$DEST/setup.log" || exit 1
nvidia-smi > "$DEST/nvidia-smi.txt" 2>&1 || true
PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
  python3 -m benchmarks.gpu_check --out "$DEST" --budget 420 "$@" > "$DEST/gpu_check.log" 2>&1
code=$?
grep -v '^\[' "$DEST/gpu_check.log" | tail -80
echo "--- last log lines (exit $code) ---"
grep '^\[' "$DEST/gpu_check.log" | tail -25
exit $code
