#!/usr/bin/env bash
# Builds here, without a GPU, every input of benchmarks/gpu_run.sh that can be built on the CPU, so
# that it travels with the working tree to the GPU machine (which has no internet, no Debian data
# packages and no dvclive, mlxtend or pytorch-msssim):
#
#   build/gpu_data/photo_pool        the teachers' photographs (stage photo_pool of gpu_offline)
#   build/gpu_data/textures_mvtec    the texture set of gpu_offline's categories (stage mvtec_data)
#   build/gpu_data/colobot_textures  the colour source photographs that set is cut from (the run
#                                    checks the set against them, and foreign-material defects use them)
#   build/wheels                     pure-Python wheels of what the GPU image lacks, at the
#                                    versions of .venv
#
# Both folders are ignored by git (/build/); pass them to the device tool as carry. Together with
# the tracked files they must stay under the tool's 64 MiB: the script prints the total.
set -euo pipefail

usage() {
    echo "usage: benchmarks/gpu_prepare.sh [--no-wheels] [--profile profiles/gpu_offline.yaml]" >&2
    echo "  builds build/gpu_data and build/wheels for benchmarks/gpu_run.sh (see the header)" >&2
    exit 2
}

WHEELS=1
PROFILE=profiles/gpu_offline.yaml
while [ $# -gt 0 ]; do
    case "$1" in
    --no-wheels) WHEELS=0 ;;
    --profile) [ $# -ge 2 ] || usage; PROFILE=$2; shift ;;
    *) usage ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || { echo "no Python at $PY: run 'make venv' first (or set PYTHON)" >&2; exit 1; }
DATA=$REPO/build/gpu_data

# The Debian packages the offline data come from (installed when root with apt, else a note).
make -s system-data

# The stages write data/<name> under the repository root UST_ROOT; a root of their own whose data/
# is build/gpu_data puts the results where they travel without touching the repository's data/.
PREP=$REPO/build/gpu_prep
rm -rf "$PREP"
mkdir -p "$PREP" "$DATA"
ln -s "$DATA" "$PREP/data"
export UST_ROOT=$PREP UST_PARAMS=$REPO/$PROFILE
for stage in photo_pool mvtec_data; do # the pipeline's own commands, read from dvc.yaml
    cmd=$("$PY" -c "import sys, yaml; print(yaml.safe_load(open('dvc.yaml'))['stages'][sys.argv[1]]['cmd'])" "$stage")
    [[ "$cmd" == "python "* ]] || { echo "unexpected command of stage $stage: $cmd" >&2; exit 1; }
    eval "\"\$PY\" ${cmd#python }"
done
"$PY" - "$DATA/colobot_textures" <<'EOF'
import shutil
import sys
from pathlib import Path

from ust.data.textures import COLOUR_CATEGORIES, texture_path

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for category in COLOUR_CATEGORIES:
    shutil.copy2(texture_path(category), out / texture_path(category).name)
print(f"colour textures in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
EOF
unset UST_ROOT UST_PARAMS
rm -rf "$PREP"

if [ "$WHEELS" = 1 ]; then
    # What the evidence run imports that the GPU image lacks (benchmarks/gpu_evidence.py's
    # rehearsal hides everything else the image lacks, so a missing name fails gpu_run.sh --tiny).
    NAMES="mlxtend pytorch-msssim dvclive dvc dvc-render dvc-studio-client funcy flatten-dict
        ruamel.yaml voluptuous"
    rm -rf build/wheels
    mkdir -p build/wheels
    for name in $NAMES; do
        version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            -d build/wheels "$name==$version"
    done
    # Pure-Python wheels install under any CPython 3; a binary one would be this machine's.
    if ls build/wheels/*.whl | grep -v -- '-none-any\.whl$'; then
        echo "the wheels above are not pure Python: they would not install on the GPU image" >&2
        exit 1
    fi
fi

TRACKED=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
CARRIED=$(du -scb build/gpu_data build/wheels 2>/dev/null | tail -1 | cut -f1)
echo "tracked files $((TRACKED / 1024)) KiB + build/gpu_data and build/wheels $((CARRIED / 1024)) KiB" \
    "= $(((TRACKED + CARRIED) / 1048576)) MiB of the 64 MiB a device call carries"
