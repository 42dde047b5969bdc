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
# a hard stop below the device tool's 600 s limit, so that the summary below is still printed
PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 timeout "${GPU_CHECK_TIMEOUT:-540}" \
  python3 -m benchmarks.gpu_check --out "$DEST" --budget 420 "$@" > "$DEST/gpu_check.log" 2>&1
code=$?
echo "--- gpu_check log, last lines (exit $code; full log: $DEST/gpu_check.log) ---"
grep -E '^\[|Error|error:|ebmkit chain:' "$DEST/gpu_check.log" | tail -20
echo "--- $DEST/gpu_check.md ---"
cat "$DEST/gpu_check.md" 2>/dev/null || tail -40 "$DEST/gpu_check.log"
exit $code
