"""What this machine computes on: the device, the training precision, the serving dtype.

One place decides these for training and serving alike, so that the endpoint holds its
base in the dtype a run on the same machine trains in, and serving never has to ask
the training code. Why each choice: docs/performance.md.
"""

from __future__ import annotations

import torch

from backend.errors import ConfigError

SERVING_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def device_kind() -> str:
    """'cuda' where a CUDA GPU is visible, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 / AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str, *, bf16: bool | None = None) -> str:
    """'auto' -> bf16 on a GPU that has it (fp16 on older GPUs) or a CPU with bf16 units,
    else fp32; an explicit choice is kept, except fp16 on a CPU, which is refused.
    ``bf16``: whether the device has bf16 (None: ask this machine's hardware), so a
    described device can be decided without being present (backend/training/recipe.py)."""
    if precision != "auto":
        if precision == "fp16" and device == "cpu":
            raise ConfigError("precision 'fp16' needs a CUDA GPU; this machine has none.",
                              fix="Use 'auto', 'bf16' or 'fp32'.")
        return precision
    if device == "cuda":
        has_bf16 = torch.cuda.is_bf16_supported() if bf16 is None else bf16
        return "bf16" if has_bf16 else "fp16"
    has_bf16 = cpu_has_bf16() if bf16 is None else bf16
    return "bf16" if has_bf16 else "fp32"


def serving_dtype(name: str) -> torch.dtype:
    """The dtype the endpoint holds its base in: 'auto' is bf16 wherever training would
    pick bf16 (:func:`resolve_precision`), else fp32; 'bf16'/'fp32' force one."""
    if name in SERVING_DTYPES:
        return SERVING_DTYPES[name]
    if name != "auto":
        raise ConfigError(f"Unknown serving dtype {name!r}.", fix="Set TUNELAB_SERVE_DTYPE to auto, bf16 or fp32.")
    return torch.bfloat16 if resolve_precision("auto", device_kind()) == "bf16" else torch.float32
