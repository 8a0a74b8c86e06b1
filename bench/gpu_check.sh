#!/usr/bin/env bash
# The trainer's GPU check in one call on a lent device machine (bare image: torch, transformers, triton; no
# megatron-core, no network). Prepare the wheel here first, once, in the repo's root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl megatron-core==0.16.1
#
# then run `bash bench/gpu_check.sh` there with `.whl` carried. Arguments go to bench/gpu_train.py
# (`bash bench/gpu_check.sh --tiny` smoke-tests it anywhere). The log lands in $OUT when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
log=${OUT:-/tmp}/gpu_train.log
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$log" || true
PYTHONUNBUFFERED=1 python3 bench/gpu_train.py "$@" 2>&1 | grep -v -e "UserWarning" -e "warnings.warn" | tee -a "$log"
