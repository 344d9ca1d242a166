"""CPU speed-ups of a LoRA training step that change no result beyond rounding.

On a CPU a LoRA step is matmuls plus a long tail of elementwise passes over the
activations (dtype casts, dropout masks, scales, adds) and of fresh memory that the
kernel must fault in and zero; on a few cores that tail costs as much as the matmuls.
:func:`tune_for_device` takes that tail away, piece by piece:

* every trained parameter is fp32 (peft's ``autocast_adapter_dtype`` does this; made sure);
* LoRA dropout draws fewer random numbers (:mod:`backend.training.cpu.dropout`);
* under bf16 autocast, peft's cast of each LoRA input to the fp32 adapter dtype is
  turned off: autocast casts it straight back to bf16 for the matmul, so the round
  trip (two copies of every activation, per adapted projection) changes nothing;
* the kernels: each LoRA projection as one autograd function (:mod:`~backend.training.cpu.lora`),
  RMSNorm with a hand-written backward (:mod:`~backend.training.cpu.norm`), the gated MLP's
  SiLU-mul in one pass (:mod:`~backend.training.cpu.mlp`), grouped causal attention
  (:mod:`~backend.training.cpu.attention`), and an allocator that keeps freed memory
  (:mod:`~backend.training.cpu.memory`); the trainer adds the blocked LM-head loss
  (:mod:`~backend.training.cpu.head_loss`);
* the native C versions of the memory-bound passes (:mod:`~backend.training.cpu.native`),
  where the settings allow them and the machine can build them.

Each kernel checks that it applies (plain LoRA on a frozen ``nn.Linear``, a Llama-style
RMSNorm, a causal decoder) and otherwise leaves the stock module alone. Nothing here
changes parameters, so saved adapters are exactly what peft would save.
"""

from __future__ import annotations

import torch

from backend.training.cpu import native
from backend.training.cpu.attention import use_causal_attention
from backend.training.cpu.dropout import use_fast_lora_dropout
from backend.training.cpu.lora import use_fast_lora_linear
from backend.training.cpu.memory import keep_freed_memory
from backend.training.cpu.mlp import use_fast_silu_mul
from backend.training.cpu.native import NativeBuild
from backend.training.cpu.norm import use_fast_rms_norm


def use_eager_attention(model) -> None:
    """Eager attention instead of bf16 SDPA on CPU, whose flash kernel is slower than
    eager attention at the lengths of a LoRA run. Set on the base before peft wraps it;
    :func:`tune_for_device` later selects the grouped causal attention where it applies."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        return
    try:
        setter("eager")
    except (ValueError, ImportError, AttributeError):
        pass


def tune_for_device(model, *, device: str, precision: str, native_build: NativeBuild | None = None) -> dict:
    """Install the CPU speed-ups above on a peft ``model``; returns what was installed.

    ``native_build`` (from the settings) loads or turns off the native kernels for this
    process; None leaves them as the process has them (off until a run asks for them).
    On another device only the trained parameters are made fp32.
    """
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if device != "cpu":
        return {}
    if native_build is not None:
        native.use(native_build)
    installed = {"native_kernels": native.kernels() is not None, "lora_dropout": use_fast_lora_dropout(model)}
    if precision == "bf16":
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    installed.update(freed_memory_kept=keep_freed_memory(), lora_linear=use_fast_lora_linear(model),
                     rms_norm=use_fast_rms_norm(model), silu_mul=use_fast_silu_mul(model),
                     attention=use_causal_attention(model))
    return installed
