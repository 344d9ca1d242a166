"""The GPU image's Dockerfile, read (no Docker engine here to build it): its torch is the
version the Makefile pins, from PyTorch's index for the same CUDA as its base image; it
installs bitsandbytes (QLoRA), and its optional vLLM is the pyproject extra that exists."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")


def _arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M)
    assert match, f"the Dockerfile has no ARG {name}"
    return match.group(1)


def test_torch_is_the_pinned_version_built_for_the_images_cuda():
    makefile_pin = re.search(r"torch==([\d.]+)", (REPO_ROOT / "Makefile").read_text()).group(1)
    assert _arg("TORCH_VERSION") == makefile_pin
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", _arg("CUDA_IMAGE"))
    assert cuda and _arg("TORCH_CUDA") == f"cu{cuda.group(1)}{cuda.group(2)}"
    assert 'download.pytorch.org/whl/${TORCH_CUDA}' in DOCKERFILE


def test_qlora_and_the_optional_vllm_extra_are_installable():
    assert re.search(r"pip install \. bitsandbytes", DOCKERFILE)
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "vllm" in extras and _arg("WITH_VLLM") == "0"
    assert 'pip install ".[vllm]"' in DOCKERFILE
