"""RMSNorm with a hand-written backward for frozen norm weights.

Autograd through the reference formula takes about ten passes over the activations;
:class:`RMSNormFunction` takes one each way in bf16 (native kernels) and a few torch ops
otherwise, and keeps only the input and one fp32 scale per row.
"""

from __future__ import annotations

import types

import torch

from backend.training.cpu import native

# RMSNorm classes whose forward is exactly weight * (x * rsqrt(mean(x^2) + eps)).to(dtype)
LLAMA_STYLE_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm",
                     "Olmo2RMSNorm", "GraniteRMSNorm", "Phi3RMSNorm"}


class RMSNormFunction(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)`` with a frozen weight."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        lib = native.kernels() if (x.device.type == "cpu" and x.dtype is torch.bfloat16
                                   and weight.dtype is torch.bfloat16 and x.is_contiguous()) else None
        ctx.lib = lib
        if lib is not None:  # one pass each way
            rows, n = x.numel() // x.shape[-1], x.shape[-1]
            out, rstd = torch.empty_like(x), torch.empty(x.shape[:-1] + (1,), dtype=torch.float32)
            lib.tl_rms_norm(native.ptr(x), native.ptr(weight.contiguous()), rows, n, eps, native.ptr(out),
                            native.ptr(rstd))
            ctx.save_for_backward(x, weight, rstd)
            return out
        norm = torch.linalg.vector_norm(x, 2, dim=-1, keepdim=True, dtype=torch.float32)
        rstd = torch.rsqrt(norm.square_().div_(x.shape[-1]).add_(eps))
        ctx.save_for_backward(x, weight, rstd)
        return weight * (x * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        if ctx.lib is not None:
            grad = grad.contiguous().to(x.dtype)
            grad_x = torch.empty_like(x)
            ctx.lib.tl_rms_norm_backward(native.ptr(grad), native.ptr(x), native.ptr(weight.contiguous()),
                                         native.ptr(rstd), x.numel() // x.shape[-1], x.shape[-1], native.ptr(grad_x))
            return grad_x, None, None
        # d/dx of x * rstd(x), applied to g = grad * weight:
        #   rstd * g - x * rstd^3 * sum(g * x) / n
        g = grad * weight
        dot = (g * x).sum(-1, keepdim=True, dtype=torch.float32)
        coef = rstd.pow(3).mul_(dot).div_(-x.shape[-1])
        return torch.addcmul(g * rstd, x, coef).to(x.dtype), None, None


def use_fast_rms_norm(model) -> int:
    """Route Llama-style RMSNorms with frozen weights through :class:`RMSNormFunction`."""
    def forward(self, hidden_states):
        if self.weight.requires_grad or hidden_states.dtype != self.weight.dtype:
            return type(self).forward(self, hidden_states)
        return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)

    count = 0
    for module in model.modules():
        if type(module).__name__ in LLAMA_STYLE_NORMS and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(forward, module)
            count += 1
    return count
