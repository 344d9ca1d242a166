"""QLoRA: the frozen base held in 4-bit NF4 (or 8-bit) on a CUDA GPU, the LoRA trained on top.

bitsandbytes does the quantization (``BitsAndBytesConfig``: NF4 with double
quantization and bf16 compute for ``4bit``, LLM.int8 for ``8bit``) and peft's
``prepare_model_for_kbit_training`` readies the model (input gradients, gradient
checkpointing where the recipe asks for it). peft upcasts every non-quantized weight to
fp32 there; they are all put back in the compute dtype (:func:`ready_for_kbit_training`):
frozen, they lose nothing (the checkpoint was bf16), the embeddings and the LM head take
half the memory (2 GiB on an 8B Llama), and an fp32 norm weight would turn every
activation after it fp32 (bitsandbytes returns its input's dtype), twice the memory the
estimate counts and never the packed flash-attention path. The norms still compute in
fp32 inside (the model's RMSNorm upcasts). The adapter peft
saves is an ordinary LoRA folder: its weights do not depend on how the base was held,
so it serves on the unquantized base. Needs CUDA (refused elsewhere by
:func:`backend.training.recipe.check_quantize`).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from backend.bases.load import load_model
from backend.bases.resolve import BaseRef
from backend.errors import ConfigError

INSTALL_BITSANDBYTES = "pip install bitsandbytes (on a machine with a CUDA GPU)"


def bnb_config(quantize: str, compute_dtype: torch.dtype):
    """transformers' ``BitsAndBytesConfig`` for ``4bit`` (NF4 + double quantization) or ``8bit``."""
    if importlib.util.find_spec("bitsandbytes") is None:  # transformers says it less directly
        raise ConfigError(f"--quantize {quantize} needs the bitsandbytes package, which is not installed.",
                          fix=INSTALL_BITSANDBYTES)
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype)
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"Unknown quantization {quantize!r}.", fix="Use --quantize 4bit or --quantize 8bit.")


def load_quantized(base_ref: BaseRef, quantize: str, *, compute_dtype: torch.dtype, gradient_checkpointing: bool,
                   attention: str | None = None, trust_remote_code: bool = False, device: str = "cuda"):
    """The base, quantized onto the CUDA device (LOCAL_RANK or 0), ready for LoRA training.
    ``device="cpu"`` (bitsandbytes' CPU backend) is for the tests only: a run on a machine
    without CUDA is refused before it gets here."""
    place = int(os.environ.get("LOCAL_RANK", "0")) if device == "cuda" else device
    model = load_model(base_ref, dtype=compute_dtype, trust_remote_code=trust_remote_code,
                       quantization_config=bnb_config(quantize, compute_dtype), device_map={"": place},
                       attn_implementation=attention)
    return ready_for_kbit_training(model, compute_dtype, gradient_checkpointing=gradient_checkpointing)


def ready_for_kbit_training(model, compute_dtype: torch.dtype, *, gradient_checkpointing: bool):
    """peft's ``prepare_model_for_kbit_training`` (frozen weights, input gradients,
    non-reentrant checkpointing where asked), then every float weight it upcast to fp32
    back in ``compute_dtype``; the quantized weights are not touched."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    for param in model.parameters():
        if param.dtype == torch.float32 and type(param).__name__ not in ("Params4bit", "Int8Params"):
            param.data = param.data.to(compute_dtype)
    return model
