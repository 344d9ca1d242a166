# GPU image of TuneLab: the page + the embedded serving endpoint.
# PyPI's default torch wheel for Linux is the CUDA build, so this image uses the GPU
# when run with `docker run --gpus all`. (The Makefile installs the CPU wheel instead
# on machines without one.) Not built in CI: the CI machine has no Docker engine.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TUNELAB_HOME=/data \
    TUNELAB_MODELS_DIR=/opt/tunelab/models

WORKDIR /app
# gcc: the native CPU training kernels (backend/training/cpu/native.py) compile on first use
RUN apt-get update && apt-get install -y --no-install-recommends git gcc libc6-dev && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY backend ./backend
COPY ui ./ui
# the sample datasets and the C kernels ship inside the package (pyproject's package-data)
RUN pip install "torch==2.13.0" && pip install .

# Provision the default base into the image's model cache (offline from then on);
# adapters, uploads and the database live in the /data volume.
RUN tunelab bases pull-default

VOLUME ["/data"]
EXPOSE 7860 8000
CMD ["tunelab", "up", "--host", "0.0.0.0"]
