#!/usr/bin/env bash
# One command for a lent GPU machine, in three parts, each under its own timeout (a part's failure
# or timeout is recorded and the next part still runs):
#   1. the CUDA tests (pytest -m cuda tests/test_cuda.py)        -> OUT/cuda_tests.json
#   2. benchmarks/gpu_speed.py                                    -> OUT/gpu_speed.jsonl
#   3. benchmarks/gpu_evidence.py run (profile gpu_offline, rates of part 2)
#                                           -> OUT/evidence.json, OUT/evidence_results.tar.gz
# then OUT/summary.json (each part's exit code and seconds, file check); every part's output goes
# to OUT/run.log. Six files, no folders: within what the device tool brings back (8 files, 16 MiB
# each). The parts' limits add up to 560 s, under the tool's 600 s per command (--tiny: 120 s).
#
# Inputs built beforehand on the CPU: benchmarks/gpu_prepare.sh (build/gpu_data, build/wheels).
# --tiny rehearses all of it on this machine's CPU in at most two minutes: tiny sizes, the smoke
# profile, and (when build/wheels exists) with every package the GPU image lacks hidden. The
# environment variable GPU_RUN_LIMITS="T1 T2 T3" replaces the three parts' limits (seconds).
set -euo pipefail

usage() {
    echo "usage: benchmarks/gpu_run.sh OUT [--tiny]" >&2
    echo "  OUT     folder for the results (created)" >&2
    echo "  --tiny  rehearse on the CPU at tiny sizes (about two minutes)" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in -*) usage ;; esac
OUT=$1
TINY=0
if [ $# -eq 2 ]; then
    [ "$2" = --tiny ] || usage
    TINY=1
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/{run.log,cuda_tests.json,gpu_speed.jsonl,evidence.json,evidence_results.tar.gz,summary.json}
cd "$REPO"
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then
    PY=$REPO/.venv/bin/python
else
    PY=python3 # the GPU image's Python, which holds torch
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
START=$SECONDS
LOG=$OUT/run.log
: >"$LOG"
export PYTHONPATH=$REPO PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 MPLBACKEND=Agg

if [ "$TINY" = 1 ]; then
    MODE=tiny LIMITS=(10 25 85) WORK=$TMP/work
    SPEED_ARGS=(--tiny) EVIDENCE_ARGS=(--tiny --work "$WORK")
else
    MODE=gpu LIMITS=(50 90 420) WORK=$REPO/build/gpu_run
    SPEED_ARGS=() EVIDENCE_ARGS=(--work "$WORK")
fi

if [ -n "${GPU_RUN_LIMITS:-}" ]; then # e.g. "60 100 400": seconds of the three parts
    read -r -a LIMITS <<<"$GPU_RUN_LIMITS"
    [ "${#LIMITS[@]}" = 3 ] || { echo "GPU_RUN_LIMITS needs three numbers of seconds" >&2; exit 2; }
fi

# The wheels of what the GPU image lacks; in a rehearsal also hide what it lacks (gpu_evidence.py).
if compgen -G "$REPO/build/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
        --no-cache-dir --target "$TMP/site" "$REPO"/build/wheels/*.whl >>"$LOG" 2>&1
    PYTHONPATH=$TMP/site:$PYTHONPATH
    if [ "$TINY" = 1 ]; then
        mkdir -p "$TMP/emu"
        cat >"$TMP/emu/sitecustomize.py" <<EOF
import sys
sys.path.insert(0, "$REPO/benchmarks")
import gpu_evidence
sys.path.remove("$REPO/benchmarks")
gpu_evidence.emulate_gpu_image("$TMP/site")
EOF
        PYTHONPATH=$TMP/emu:$PYTHONPATH
        echo "rehearsal: packages the GPU image lacks are hidden; build/wheels installed" >>"$LOG"
    fi
else
    echo "no build/wheels (benchmarks/gpu_prepare.sh): the machine's own packages are used" >>"$LOG"
fi

RC=0
# part NAME LIMIT STDOUT_FILE COMMAND...: run COMMAND under LIMIT seconds, stdout to STDOUT_FILE
# (- = the log), stderr to the log; records NAME, exit code (124/137: timed out), seconds, LIMIT.
part() {
    local name=$1 limit=$2 dest=$3 t0=$SECONDS
    shift 3
    [ "$dest" = - ] && dest=$LOG
    echo "=== $name (limit ${limit} s): $*" >>"$LOG"
    RC=0
    timeout --kill-after=10 "$limit" "$@" >>"$dest" 2>>"$LOG" || RC=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$RC" "$((SECONDS - t0))" "$limit" >>"$TMP/parts.tsv"
    echo "=== $name: exit $RC after $((SECONDS - t0)) s" >>"$LOG"
}

part cuda_tests "${LIMITS[0]}" - "$PY" -m pytest -p no:cacheprovider -q -m cuda tests/test_cuda.py \
    --junitxml "$TMP/junit.xml"
"$PY" benchmarks/gpu_evidence.py pytest-summary "$TMP/junit.xml" "$RC" "$OUT/cuda_tests.json" \
    >>"$LOG" 2>&1 || echo "pytest-summary failed" >>"$LOG"

part gpu_speed "${LIMITS[1]}" "$OUT/gpu_speed.jsonl" "$PY" benchmarks/gpu_speed.py \
    "${SPEED_ARGS[@]}" --budget "$((LIMITS[1] * 5 / 6))"

part evidence "${LIMITS[2]}" - "$PY" benchmarks/gpu_evidence.py run --out "$OUT" \
    --budget "$((LIMITS[2] * 27 / 28))" --speed "$OUT/gpu_speed.jsonl" "${EVIDENCE_ARGS[@]}"
# A run stopped by its timeout wrote no archive: keep what it finished (weights and maps left out).
if [ ! -f "$OUT/evidence_results.tar.gz" ] && [ -d "$WORK/results" ]; then
    tar -czf "$OUT/evidence_results.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='*.ckpt' \
        --exclude='*.tiff' results >>"$LOG" 2>&1 || echo "archive failed" >>"$LOG"
fi

"$PY" benchmarks/gpu_evidence.py pack "$OUT" "$TMP/parts.tsv" "$MODE" "$((SECONDS - START))" \
    2>>"$LOG" | tee -a "$LOG" || echo "summary: outputs outside the device tool's limits" | tee -a "$LOG"
echo "gpu_run ($MODE): $((SECONDS - START)) s; results in $OUT"
