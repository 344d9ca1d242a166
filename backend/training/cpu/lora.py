"""A whole peft ``lora.Linear`` (frozen base + one plain LoRA adapter + its dropout) as one
autograd function, in fewer memory passes than peft's forward.

peft's forward makes a masked copy of the input per projection and keeps it for the
backward pass; :class:`LoraLinearFunction` keeps the input itself (shared by q/k/v and
by gate/up) and one dropout draw (:class:`DropoutDraw`). Two paths:

* native LoRA products (an AVX-512 build of :mod:`backend.training.cpu.native`, bf16
  input, fp32 LoRA weights): the down-projection hashes the dropout mask once and
  keeps it as bits for the backward, the up-projection is added into the base output
  with fp32 sums and one rounding, and the weight gradients are fp32 sums;
* torch's products, with dropout as the native hashed mask recomputed from a seed, or
  (no native library) as the positions :func:`~backend.training.cpu.dropout.drop_positions`
  draws.

Either way ``scaling / (1 - p)`` is applied at the r-wide end, LoRA's product is added
into the base output in place, and the backward pass adds LoRA's input gradient into
the base's, keeping the base gradient at the dropped positions. oneDNN's kernels for a
product whose output is r columns wide are slower than for the transposed product (r
rows of a wide output), so the r-wide products are computed transposed.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as PeftLoraLinear

from backend.training.cpu import native
from backend.training.cpu.dropout import FastDropout, draw_seed, drop_positions

# dropout modules whose only state is ``p`` (the LoRA function applies ``p`` itself)
PLAIN_DROPOUTS = (torch.nn.Dropout, torch.nn.Identity, FastDropout)


def plain_lora_adapter(layer, x, args, kwargs) -> str | None:
    """The one adapter ``layer`` would apply to ``x`` as plain LoRA, or None when peft's
    own forward must run (mixed batches, merged or disabled adapters, DoRA and other
    variants, LoRA bias, several active adapters, dtypes peft would cast)."""
    if args or kwargs or layer.disable_adapters or layer.merged:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    if name in layer.lora_variant or layer.lora_B[name].bias is not None:
        return None
    base = layer.base_layer
    if type(base) is not torch.nn.Linear or getattr(layer, "fan_in_fan_out", False) or base.weight.requires_grad:
        return None
    if type(layer.lora_dropout[name]) not in PLAIN_DROPOUTS:
        return None
    if not torch.is_autocast_enabled(x.device.type) and x.dtype != layer.lora_A[name].weight.dtype:
        return None
    return name


# --- dropout ----------------------------------------------------------------------------------------


class DropoutDraw:
    """One dropout draw over a LoRA input, applied in the forward and again in the backward
    pass: either hashed from a seed by the native kernels (nothing kept between the passes
    but the seed) or the sorted flat ``positions`` of :func:`drop_positions`."""

    def __init__(self, p: float, lib=None, seed: int = 0, positions=None):
        self.p, self.lib, self.seed, self.positions = p, lib, seed, positions
        self.threshold = native.dropout_threshold(p) if lib is not None else 0

    def with_positions(self, positions):
        self.positions = positions
        return self

    def apply(self, x2):
        """``x2`` with the dropped elements zeroed (a copy; ``x2`` itself when p is 0)."""
        if self.p <= 0:
            return x2
        if self.lib is not None:
            out = x2.new_empty(x2.shape)
            self.lib.tl_dropout_copy(native.ptr(x2), x2.numel(), self.seed, self.threshold, native.ptr(out))
            return out
        kept = x2.clone()
        kept.view(-1).index_fill_(0, self.positions, 0)
        return kept

    def add_kept_product(self, base, narrow, a):
        """``base + kept * (narrow @ a)``, in place in ``base``."""
        if self.p <= 0:
            return base.addmm_(narrow, a)
        if self.lib is not None:
            lora = narrow @ a
            self.lib.tl_add_kept(native.ptr(base), native.ptr(lora), base.numel(), self.seed, self.threshold)
            return base
        flat = base.view(-1)
        base_part = flat[self.positions]  # keep the base part where the input was dropped
        base.addmm_(narrow, a)
        flat.index_copy_(0, self.positions, base_part)
        return base


def native_for(x2):
    """The native library where its kernels can take the 2-D LoRA input ``x2`` (a
    contiguous bf16 CPU tensor of fewer than 2^32 elements), else None."""
    if x2.device.type != "cpu" or x2.dtype is not torch.bfloat16 or not x2.is_contiguous() or x2.numel() >= 2**32:
        return None
    return native.kernels()


def dropout_plan(x2, p: float) -> DropoutDraw:
    """Dropout for the contiguous 2-D LoRA input ``x2``: native hashed masks for bf16 CPU
    inputs when the library is there, else :func:`drop_positions`."""
    if p <= 0:
        return DropoutDraw(0.0)
    lib = native_for(x2)
    if lib is not None:
        return DropoutDraw(p, lib, seed=draw_seed())
    return DropoutDraw(p, positions=drop_positions(x2.numel(), p, x2.device))


# --- the products -----------------------------------------------------------------------------------


def _skinny_product(narrow_t, wide_t):
    """``(narrow_t @ wide_t.T).T``: ``wide @ narrow_t.T`` for a wide (rows x features) and
    an r x features matrix, computed as r rows of a wide output (oneDNN's faster shape)."""
    return (narrow_t @ wide_t.t()).t()


def _native_lora(x2, lora_a, lora_b):
    """The native library where its LoRA products apply (:func:`native_for` ``x2``, fp32
    LoRA weights, an AVX-512 build), else None."""
    if lora_a.dtype is not torch.float32 or lora_b.dtype is not torch.float32:
        return None
    lib = native_for(x2)
    return lib if lib is not None and lib.tl_lora_vectorized() else None


def _native_lora_forward(ctx, lib, x2, shape, weight, bias, lora_a, lora_b, coef, dropout):
    """:class:`LoraLinearFunction`'s forward on the native LoRA products: the down-projection
    hashes ``dropout``'s mask once and keeps it as bits (M x K / 8 bytes) for the backward;
    the fp32 r-wide product is added to the frozen layer's bf16 output in one rounding."""
    ptr = native.ptr
    rows, features = x2.shape
    rank = lora_a.shape[0]
    a, b_t = lora_a.contiguous(), lora_b.t().contiguous()  # [r, in] and [r, out], fp32
    threshold = dropout.threshold  # 0: nothing dropped
    bits = x2.new_empty((rows, (features + 15) // 16), dtype=torch.int16) if threshold else None
    narrow = x2.new_empty((rows, rank), dtype=torch.float32)
    lib.tl_lora_rows(ptr(x2), rows, features, ptr(a), rank, dropout.seed, threshold, coef, ptr(narrow), ptr(bits))
    out = F.linear(x2, weight, bias)
    lib.tl_lora_add(ptr(out), rows, out.shape[1], ptr(narrow), ptr(b_t), rank, None)
    ctx.save_for_backward(x2, weight, a, b_t, narrow, bits)
    ctx.native, ctx.coef, ctx.shape = lib, coef, shape
    return out.view(*shape[:-1], out.shape[1])


def _native_lora_backward(ctx, grad):
    ptr = native.ptr
    x2, weight, a, b_t, narrow, bits = ctx.saved_tensors
    lib = ctx.native
    rows, features = x2.shape
    rank, width = b_t.shape
    g = grad.reshape(rows, width).to(torch.bfloat16).contiguous()
    grad_narrow = narrow.new_empty((rows, rank))
    lib.tl_lora_rows(ptr(g), rows, width, ptr(b_t), rank, 0, 0, ctx.coef, ptr(grad_narrow), None)
    grad_b_t = narrow.new_empty((rank, width))
    lib.tl_lora_cols(ptr(narrow), ptr(g), rows, width, rank, None, ptr(grad_b_t))
    grad_a = narrow.new_empty((rank, features))
    lib.tl_lora_cols(ptr(grad_narrow), ptr(x2), rows, features, rank, ptr(bits), ptr(grad_a))
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = g @ weight  # LoRA's part is added where the input was kept
        lib.tl_lora_add(ptr(grad_x), rows, features, ptr(grad_narrow), ptr(a), rank, ptr(bits))
        grad_x = grad_x.view(ctx.shape)
    return grad_x, None, None, grad_a, grad_b_t.t(), None, None


class LoraLinearFunction(torch.autograd.Function):
    """``x @ weight.T + bias + (dropout_p(x) @ lora_a.T @ lora_b.T) * scale`` for a
    frozen ``weight``; gradients for ``x``, ``lora_a`` and ``lora_b`` (fp32, like the
    LoRA weights). ``x``, ``weight`` and ``bias`` share the compute dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale, p):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        dropout = dropout_plan(x2, p)
        coef = scale / (1 - p) if p > 0 else scale
        lib = _native_lora(x2, lora_a, lora_b)
        if lib is not None:  # then dropout is the native hashed mask (same input conditions)
            return _native_lora_forward(ctx, lib, x2, shape, weight, bias, lora_a, lora_b, coef, dropout)
        ctx.native = None
        a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
        out = F.linear(x2, weight, bias)
        narrow = _skinny_product(a, dropout.apply(x2)).mul_(coef)  # r wide: the scales cost nothing here
        out.addmm_(narrow, b.t())  # in place: a matmul keeps its inputs, not its output
        # the input itself is saved, not its masked copy: q/k/v (and gate/up) share one input,
        # so autograd holds it once instead of one masked copy per projection
        ctx.save_for_backward(x2, weight, a, b, narrow, dropout.positions)
        dropout.positions = None  # autograd holds them (saved tensors), not the context
        ctx.dropout, ctx.coef, ctx.shape, ctx.grad_dtypes = dropout, coef, shape, (lora_a.dtype, lora_b.dtype)
        return out.view(*shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        if ctx.native is not None:
            return _native_lora_backward(ctx, grad)
        x2, weight, a, b, narrow, positions = ctx.saved_tensors
        dropout = ctx.dropout.with_positions(positions)
        g = grad.reshape(-1, grad.shape[-1]).to(x2.dtype)
        grad_narrow = _skinny_product(b.t(), g).mul_(ctx.coef)
        grad_b = _skinny_product(narrow.t(), g.t()).to(ctx.grad_dtypes[1])
        grad_a = (grad_narrow.t() @ dropout.apply(x2)).to(ctx.grad_dtypes[0])
        grad_x = None
        if ctx.needs_input_grad[0]:
            # LoRA's part of the input gradient is zero where the input was dropped
            grad_x = dropout.add_kept_product(g @ weight, grad_narrow, a).view(ctx.shape)
        return grad_x, None, None, grad_a, grad_b, None, None


def lora_linear_forward(self, x, *args, **kwargs):
    """peft ``lora.Linear.forward`` for one plain LoRA adapter on a frozen base, as
    :class:`LoraLinearFunction` (dtype: autocast's when it is on, else the input's)."""
    name = plain_lora_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    base = self.base_layer
    p = float(getattr(self.lora_dropout[name], "p", 0.0)) if self.training else 0.0
    with torch.autocast(device, enabled=False):
        weight = base.weight if base.weight.dtype == dtype else base.weight.to(dtype)
        bias = None if base.bias is None else base.bias.to(dtype)
        return LoraLinearFunction.apply(x.to(dtype), weight, bias, self.lora_A[name].weight,
                                        self.lora_B[name].weight, self.scaling[name], p)


def use_fast_lora_linear(model) -> int:
    """Route every peft ``lora.Linear`` through :func:`lora_linear_forward` (per
    instance; peft's own forward still runs wherever the fast path does not apply)."""
    count = 0
    for module in model.modules():
        if type(module) is PeftLoraLinear:
            module.forward = types.MethodType(lora_linear_forward, module)
            count += 1
    return count
