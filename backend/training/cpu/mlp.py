"""The gated MLP's ``silu(gate) * up`` in one native pass each way (bf16 on CPU).

Autograd through the two stock ops keeps ``gate``, ``up`` and ``silu(gate)`` for the
backward pass and makes a pass over memory per op; :class:`SiluMulFunction` keeps only
``gate`` and ``up`` and makes one pass each way in :mod:`backend.training.cpu.native`.
"""

from __future__ import annotations

import types

import torch

from backend.training.cpu import native

# MLP classes whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x))
LLAMA_STYLE_MLPS = {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP", "Olmo2MLP", "GraniteMLP"}
SILU_TYPES = {"SiLU", "SiLUActivation"}  # torch's and transformers' (both exactly F.silu)


class SiluMulFunction(torch.autograd.Function):
    """``silu(gate) * up`` for contiguous bf16 CPU tensors, one native pass each way;
    keeps ``gate`` and ``up`` for the backward pass."""

    @staticmethod
    def forward(ctx, gate, up):
        out = torch.empty_like(gate)
        native.kernels().tl_silu_mul(native.ptr(gate), native.ptr(up), gate.numel(), native.ptr(out))
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad = grad.contiguous()
        grad_gate, grad_up = torch.empty_like(gate), torch.empty_like(up)
        native.kernels().tl_silu_mul_backward(native.ptr(grad), native.ptr(gate), native.ptr(up), gate.numel(),
                                              native.ptr(grad_gate), native.ptr(grad_up))
        return grad_gate, grad_up


def silu_mul(gate, up):
    """``silu(gate) * up``: one native pass for same-shaped contiguous bf16 CPU tensors
    when the native kernels are loaded, the two stock ops otherwise."""
    if (gate.device.type == "cpu" and gate.dtype is torch.bfloat16 and up.dtype is torch.bfloat16
            and gate.shape == up.shape and gate.is_contiguous() and up.is_contiguous()
            and native.kernels() is not None):
        return SiluMulFunction.apply(gate, up)
    return torch.nn.functional.silu(gate) * up


def use_fast_silu_mul(model) -> int:
    """Route Llama-style gated MLPs with a SiLU activation through :func:`silu_mul`."""
    def forward(self, x):
        return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))

    count = 0
    for module in model.modules():
        if type(module).__name__ in LLAMA_STYLE_MLPS and type(getattr(module, "act_fn", None)).__name__ in SILU_TYPES \
                and all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj")):
            module.forward = types.MethodType(forward, module)
            count += 1
    return count
