# TuneLab: `make run` then `make test`. Everything the project needs is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow bench setup browser clean gpu-wheels gpu-rehearsal

# Create the virtual environment and install TuneLab with its test tools.
# torch is pinned first: on this CPU machine pip takes the local CPU wheel
# (torch==2.13.0), and the project's "torch>=2.6" range never pulls a CUDA build.
# constraints.txt holds every other package at the version the suite last passed with.
# bitsandbytes goes beside the venv, not in it: the 4-bit QLoRA test puts it on a child's
# path (tests/training/test_quantize.py); in the venv peft would import it in every process.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps --upgrade \
	  --target $(VENV)/opt/bitsandbytes bitsandbytes
	touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the browser test (Playwright drives /usr/bin/chromium;
# no browser download), with fonts so Korean and emoji render in screenshots.
# Skipped, with a message, where apt is not available.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji fonts-noto-cjk >/dev/null) \
	      || echo "make browser: could not install chromium; the browser test will be skipped"; \
	  else echo "make browser: no apt-get or not root; the browser test will be skipped"; fi; \
	fi

# Provision the default base (once) and start what exists.
run: $(STAMP)
	$(BIN)/tunelab bases pull-default
	$(BIN)/tunelab up

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/tunelab bases pull-default
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/tunelab bases pull-default
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/quality.py

# Wheels the lent GPU machine lacks, for the prepared GPU run (bench/gpu_device.sh; docs/performance.md):
# Python 3.12, manylinux x86-64, into .whl/ (git-ignored), carried by the device tool.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
	  -d .whl -r bench/gpu_wheels.txt
	@du -sh .whl

# The device run rehearsed here: the GPU image's library versions and the carried wheels,
# everything that runs without CUDA (bench/gpu_rehearsal.sh; ~12 minutes, needs the registry).
gpu-rehearsal:
	PYTHON=$(PYTHON) bash bench/gpu_rehearsal.sh

clean:
	rm -rf $(VENV) .pytest_cache build dist
