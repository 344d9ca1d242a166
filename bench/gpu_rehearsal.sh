#!/usr/bin/env bash
# Rehearses the one prepared GPU run (bench/gpu_device.sh) on this CPU machine, with the GPU
# image's library versions instead of this project's venv: transformers 5.17, accelerate 1.15,
# huggingface_hub 1.33 and the rest of bench/gpu_image.txt, plus the wheels bench/gpu_wheels.txt
# carries, installed exactly as the device run installs them (--no-deps --target, first on
# PYTHONPATH). It then runs what can run without CUDA: the `gpu` tests' collection (each must
# skip for want of a GPU, none may fail to import), bench/gpu.py --dry-run and --smoke, and the
# training and serving tests, which drive the same code as the GPU run on CPU: a GPU recipe's
# training loop, and a 4-bit QLoRA run through bitsandbytes' CPU backend among them.
#
#     make gpu-rehearsal        # about 12 minutes on 2 cores; needs the package registry
#
# What differs from the device machine: Python 3.11, torch 2.13.0+cpu (the local wheel) and
# numpy 2.4 here against Python 3.12, torch 2.11.0+cu130 and numpy 2.5.2 there, and the image's
# unversioned packages (pyarrow, fsspec, pandas, ...) at whatever pip picks today. Its first
# run (2026-12-07) found two faults that would have stopped the device run before its first
# figure: the serving client imported httpx2, which only huggingface_hub 2 brings, and
# fastapi needs opentelemetry-api, which was not carried.
set -euo pipefail
mkdir -p "${GPU_REHEARSAL_DIR:-.gpu-rehearsal}"
DIR=$(cd "${GPU_REHEARSAL_DIR:-.gpu-rehearsal}" && pwd)  # git-ignored in the repository
PYTHON=${PYTHON:-python3}
if [ ! -x "$DIR/venv/bin/python" ]; then
  "$PYTHON" -m venv "$DIR/venv"
fi
PIP="$DIR/venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.13.0
# the image's versioned packages (torch and triton are CUDA builds there; numpy 2.5 needs Python
# 3.12), the unversioned ones TuneLab imports on the GPU path, and openai, which two serving
# tests use as their client
versioned=$(grep -E '^[a-z0-9-]+==' bench/gpu_image.txt | grep -vE '^(torch|triton|numpy)==')
$PIP install $versioned numpy pyarrow fsspec pandas xxhash tqdm jinja2 psutil pyyaml packaging filelock regex \
  requests prometheus-client httpx anyio h11 click typer rich pytest pytest-timeout hypothesis openai
rm -rf "$DIR/whl" "$DIR/site"
$PIP download --no-deps --only-binary=:all: -d "$DIR/whl" -r bench/gpu_wheels.txt
$PIP install --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$DIR/site" "$DIR"/whl/*.whl
export PYTHONPATH=$DIR/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TUNELAB_HOME=$DIR/home
PY=$DIR/venv/bin/python
$PY - <<'PY'
import importlib
for name in ("torch", "transformers", "accelerate", "huggingface_hub", "peft", "trl", "datasets", "fastapi",
             "pyarrow", "fsspec"):
    print(name, importlib.import_module(name).__version__)
PY
GPU_TESTS=$(grep -rl "pytest.mark.gpu" tests --include='test_*.py' | sort)
# every gpu test is collected and skipped for want of CUDA; an import error fails here
$PY -m pytest -q -p no:cacheprovider -m gpu -rs $GPU_TESTS
$PY bench/gpu.py --dry-run > "$DIR/dry-run.json"
$PY bench/gpu.py --smoke --out "$DIR/smoke.json"
# transformers 5.17 restores a multi-process CPU run's optimizer to "cpu:0", which torch refuses
# (on a GPU each rank maps to its cuda device): a CPU-only fault of that version, deselected
$PY -m pytest -q -p no:cacheprovider --timeout 600 tests/training tests/serving tests/test_bench_gpu.py \
  --deselect tests/training/test_processes.py::test_two_processes_pause_resume_and_finish_one_adapter \
  --deselect tests/test_bench_gpu.py::test_every_installed_package_is_locked_to_one_version  # this venv's pins
echo "rehearsal passed: the GPU run's code imports and runs on CPU with the GPU image's libraries"
