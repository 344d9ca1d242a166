# GPU image of TuneLab: the page, the job runner and the serving endpoint, on CUDA.
#
#   docker build -t tunelab .                              # embedded engine, QLoRA (bitsandbytes)
#   docker build -t tunelab:vllm --build-arg WITH_VLLM=1 .  # + vLLM for `--engine vllm`
#   docker run --gpus all -p 7860:7860 -e TUNELAB_AUTH=user:password -v tunelab:/data tunelab
#
# torch comes from PyTorch's index for the CUDA version of the base image (TORCH_CUDA must
# name the same CUDA as CUDA_IMAGE), so the wheel and the runtime libraries agree; the
# driver comes from the host (`--gpus all`). Not built in CI: the development and CI
# machines have no Docker engine (README, What cannot be done here).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ARG WITH_VLLM=0

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TUNELAB_HOME=/data \
    TUNELAB_MODELS_DIR=/opt/tunelab/models

# gcc: the native CPU training kernels compile on first use when the image runs without a GPU
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY ui ./ui
# the sample datasets and the C kernels ship inside the package (pyproject's package-data);
# bitsandbytes: --quantize 4bit|8bit (QLoRA); vLLM only when asked for (large, CUDA-only)
RUN pip install . bitsandbytes \
    && if [ "${WITH_VLLM}" = "1" ]; then pip install ".[vllm]"; fi

# Provision the default base into the image's model cache (offline from then on);
# adapters, uploads and the database live in the /data volume.
RUN tunelab bases pull-default

VOLUME ["/data"]
EXPOSE 7860 8000
# Beyond loopback the page needs TUNELAB_AUTH (docker run -e TUNELAB_AUTH=user:password);
# without it `up` refuses to start and says so.
CMD ["tunelab", "up", "--host", "0.0.0.0"]
