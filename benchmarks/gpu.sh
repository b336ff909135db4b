#!/usr/bin/env bash
# Measure every GPU target of issue 13 in one device call: install the stack from the wheels
# folder, then run benchmarks/gpu.py --json (under 8 minutes on an H100/H200).
#
# Here, once (the folder must not be committed; keep it under 64 MiB):
#   ../shared/tools/device-wheels --venv .venv --out .whl && echo /.whl/ >> .git/info/exclude
# On the GPU machine, from the repository root (the call carries .whl):
#   bash benchmarks/gpu.sh [gpu.py options]
# The JSON goes to stdout and $OUT/gpu.json, every case's stderr to $OUT/gpu.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "error: no wheels in .whl/; build them with ../shared/tools/device-wheels --out .whl" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
# The checkout itself is the package (nothing is installed from it): on the path for every process.
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
out="${OUT:-.}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
python3 benchmarks/gpu.py --json --log "$out/gpu.log" "$@" | tee "$out/gpu.json"
