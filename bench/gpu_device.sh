#!/usr/bin/env bash
# The one prepared GPU run (issue 19), for a session whose task is lent a GPU machine
# (device tool: check `status` first). Here, once: `make gpu-wheels`. Then, through the
# device tool, with carry [".whl"] and timeout_s 600:
#
#     bash bench/gpu_device.sh
#
# It installs the carried wheels, prints the versions, runs every test marked `gpu`
# (tests/serving/test_cuda.py, tests/training/test_gpu_training.py, ...) and then
# bench/gpu.py (planned for under 6 minutes on one H100; not yet run). What comes back
# under $OUT: gpu-tests.log, gpu.json (copy it to bench/results/gpu.json with the card
# named), gpu-bench.log. `make gpu-rehearsal` runs all of this that needs no CUDA here first,
# with the image's library versions (bench/gpu_rehearsal.sh).
set -uo pipefail
OUT=${OUT:-/tmp/tunelab-gpu-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TUNELAB_HOME=/tmp/tunelab-gpu-home
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu-tests.log"
python3 - <<'PY' | tee -a "$OUT/gpu-tests.log"
import importlib
for name in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "huggingface_hub",
             "pyarrow", "fsspec", "fastapi"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001 - the log says what is missing
        print(name, "MISSING:", exc)
PY
GPU_TESTS=$(grep -rl "pytest.mark.gpu" tests --include='test_*.py' | sort)
echo "gpu tests: $GPU_TESTS" | tee -a "$OUT/gpu-tests.log"
# the device call's limit is 600 s: tests and bench together stay under it, and bench/gpu.py
# writes gpu.json after every part, so a run cut short still brings back what it measured
timeout 170 python3 -m pytest -q -p no:cacheprovider -m gpu -rs $GPU_TESTS 2>&1 | tee -a "$OUT/gpu-tests.log"
timeout 400 python3 bench/gpu.py --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu-bench.log"
