"""CPU training kernels: the same LoRA maths as peft + transformers, in fewer memory passes.

On a CPU a LoRA step is matmuls plus a long tail of elementwise passes over the
activations (dtype casts, dropout masks, scales, adds) and of fresh memory that the
kernel must fault in and zero. On two cores that tail cost more than the matmuls of a
SmolLM2-135M step. Every function here computes what the stock module computes (up to
bf16 rounding, which tests bound), with fewer passes:

* :class:`LoraLinearFunction` is a whole peft ``lora.Linear`` (frozen base + one plain
  LoRA adapter + its dropout) as one autograd function that keeps its input (shared by
  q/k/v and by gate/up) rather than a masked copy. With an AVX-512 build of the native
  kernels (:mod:`backend.training.cpu.native`) LoRA's rank-r products are native too: the
  down-projection hashes the dropout mask once and keeps it as bits for the backward,
  the up-projection is added into the base output with fp32 sums, and the weight
  gradients are fp32 sums. Otherwise the products are torch's and dropout is the native
  hashed mask recomputed from a seed, or draws only the positions it drops
  (:func:`drop_positions`). Either way ``scaling / (1 - p)`` is applied at the r-wide
  end, LoRA's product is added into the base output in place, and the backward pass
  adds LoRA's input gradient into the base's, keeping the base gradient at the dropped
  positions;
* :func:`silu_mul` is the gated MLP's ``silu(gate) * up`` in one native pass each way;
* :class:`RMSNormFunction` is RMSNorm with a hand-written backward for frozen norm
  weights (autograd through the reference formula takes about ten passes), one native
  pass each way for bf16;
* :func:`causal_attention` is causal attention for right-padded batches: grouped
  query heads against their shared key/value heads (no ``repeat_kv`` copies), scale
  and causal mask fused into the score matmul (``baddbmm``);
* :func:`head_loss_sum` is LM head + cross-entropy a block of rows at a time against a
  oneDNN-packed head, with the gradient made in the forward pass (in one native pass
  over the block's logits for bf16): no (answer tokens x vocabulary) fp32 array ever
  exists (the stock path makes about six, each a fresh allocation of tens of MB);
* :func:`keep_freed_memory` and :func:`hugepage_malloc_env` make the allocator reuse
  memory and fault it in 2 MiB at a time.

:func:`speed_up_cpu_training` installs the module-level ones on a peft model; each
checks that it applies (plain LoRA on a frozen ``nn.Linear``, a Llama-style RMSNorm, a
causal decoder) and otherwise leaves the stock module alone. Nothing here changes
parameters, so saved adapters are exactly what peft would save.
"""

from __future__ import annotations

import functools
import math
import types

ATTENTION_NAME = "tunelab_cpu_causal"

# RMSNorm classes whose forward is exactly weight * (x * rsqrt(mean(x^2) + eps)).to(dtype)
LLAMA_STYLE_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm",
                     "Olmo2RMSNorm", "GraniteRMSNorm", "Phi3RMSNorm"}

# glibc tunable: malloc asks for transparent huge pages (madvise) on the memory it gets
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"


# --- dropout ---------------------------------------------------------------------------------------


def drop_positions(n: int, p: float, device=None):
    """Sorted flat indices of the elements that i.i.d. Bernoulli(``p``) dropout drops
    among ``n``: the gaps between drops are geometric, ``floor(ln U / ln(1 - p))``, so
    only about ``p * n`` uniforms are drawn (from torch's default generator, so seeding
    and checkpointed RNG state work as for ``nn.Dropout``). ``U`` is ``(k + 1) / 2^31``
    for a 31-bit random ``k``; the largest gap that can be drawn is then 418 at
    ``p = 0.05``, a truncation of the geometric tail of ``0.95^419 < 1e-9``."""
    import torch

    if p <= 0 or n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if p >= 1:
        return torch.arange(n, device=device)
    log_keep = math.log1p(-p)
    parts, start = [], 0
    while start < n:
        left = n - start
        count = int(left * p + 8 * math.sqrt(left * p * (1 - p)) + 64)
        words = torch.empty(count, dtype=torch.int32, device=device).random_(0, 2**31)
        gaps = words.to(torch.float64).add_(1).mul_(2.0**-31).log_().div_(log_keep).floor_()
        positions = gaps.add_(1).cumsum_(0).add_(start - 1).to(torch.int64)
        inside = int(torch.searchsorted(positions, n))
        parts.append(positions[:inside])
        if inside < count:
            break
        start = int(positions[-1]) + 1
    return parts[0] if len(parts) == 1 else torch.cat(parts)


# --- LoRA linear ----------------------------------------------------------------------------------


def _plain_lora_adapter(layer, x, args, kwargs) -> str | None:
    """The one adapter ``layer`` would apply to ``x`` as plain LoRA, or None when peft's
    own forward must run (mixed batches, merged or disabled adapters, DoRA and other
    variants, LoRA bias, several active adapters, dtypes peft would cast)."""
    import torch

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
    if type(layer.lora_dropout[name]) not in _dropout_types():
        return None
    if not torch.is_autocast_enabled(x.device.type) and x.dtype != layer.lora_A[name].weight.dtype:
        return None
    return name


@functools.cache
def _dropout_types() -> tuple:
    """Dropout modules whose only state is ``p`` (the LoRA function applies ``p`` itself)."""
    import torch

    from backend.training.run import fast_dropout_class

    return (torch.nn.Dropout, torch.nn.Identity, fast_dropout_class())


class _Dropout:
    """One dropout draw over a LoRA input, applied in the forward and again in the backward
    pass: either hashed from a seed by the native kernels (nothing kept between the passes
    but the seed) or the sorted flat ``positions`` of :func:`drop_positions`."""

    def __init__(self, p: float, lib=None, seed: int = 0, positions=None):
        self.p, self.lib, self.seed, self.positions = p, lib, seed, positions
        self.threshold = _native().dropout_threshold(p) if lib is not None else 0

    def with_positions(self, positions):
        self.positions = positions
        return self

    def apply(self, x2):
        """``x2`` with the dropped elements zeroed (a copy; ``x2`` itself when p is 0)."""
        if self.p <= 0:
            return x2
        if self.lib is not None:
            out = x2.new_empty(x2.shape)
            self.lib.tl_dropout_copy(_ptr(x2), x2.numel(), self.seed, self.threshold, _ptr(out))
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
            self.lib.tl_add_kept(_ptr(base), _ptr(lora), base.numel(), self.seed, self.threshold)
            return base
        flat = base.view(-1)
        base_part = flat[self.positions]  # keep the base part where the input was dropped
        base.addmm_(narrow, a)
        flat.index_copy_(0, self.positions, base_part)
        return base


def _native():
    from backend.training.cpu import native

    return native


def _ptr(tensor):
    """The tensor's data address for a C call (None: a NULL pointer)."""
    import ctypes

    return None if tensor is None else ctypes.c_void_p(tensor.data_ptr())


def native_kernels():
    """The loaded native library (:mod:`backend.training.cpu.native`) or None; a seam for tests."""
    return _native().kernels()


def _native_for(x2):
    """The native library where its kernels can take the 2-D LoRA input ``x2`` (a
    contiguous bf16 CPU tensor of fewer than 2^32 elements), else None."""
    import torch

    if x2.device.type != "cpu" or x2.dtype is not torch.bfloat16 or not x2.is_contiguous() or x2.numel() >= 2**32:
        return None
    return native_kernels()


def _dropout_plan(x2, p: float) -> _Dropout:
    """Dropout for the contiguous 2-D LoRA input ``x2``: native hashed masks for bf16 CPU
    inputs when the library is there, else :func:`drop_positions`."""
    if p <= 0:
        return _Dropout(0.0)
    lib = _native_for(x2)
    if lib is not None:
        return _Dropout(p, lib, seed=_native().draw_seed())
    return _Dropout(p, positions=drop_positions(x2.numel(), p, x2.device))


def _skinny_product(narrow_t, wide_t):
    """``(narrow_t @ wide_t.T).T``: ``wide @ narrow_t.T`` for a wide (rows x features) and an
    r x features matrix. oneDNN's kernels for an output r columns wide are 1.2-2x slower
    than for the transposed product, which is r rows of a wide output."""
    return (narrow_t @ wide_t.t()).t()


def _native_lora(x2, lora_a, lora_b):
    """The native library where its LoRA products apply (:func:`_native_for` ``x2``, fp32
    LoRA weights, an AVX-512 build), else None."""
    import torch

    if lora_a.dtype is not torch.float32 or lora_b.dtype is not torch.float32:
        return None
    lib = _native_for(x2)
    return lib if lib is not None and lib.tl_lora_vectorized() else None


def _native_lora_forward(ctx, lib, x2, shape, weight, bias, lora_a, lora_b, coef, dropout):
    """:class:`LoraLinearFunction`'s forward on the native LoRA products: the down-projection
    hashes ``dropout``'s mask once and keeps it as bits (M x K / 8 bytes) for the backward;
    the fp32 r-wide product is added to the frozen layer's bf16 output in one rounding."""
    import torch
    import torch.nn.functional as F

    rows, features = x2.shape
    rank = lora_a.shape[0]
    a, b_t = lora_a.contiguous(), lora_b.t().contiguous()  # [r, in] and [r, out], fp32
    threshold = dropout.threshold  # 0: nothing dropped
    bits = x2.new_empty((rows, (features + 15) // 16), dtype=torch.int16) if threshold else None
    narrow = x2.new_empty((rows, rank), dtype=torch.float32)
    lib.tl_lora_rows(_ptr(x2), rows, features, _ptr(a), rank, dropout.seed, threshold, coef, _ptr(narrow),
                     _ptr(bits))
    out = F.linear(x2, weight, bias)
    lib.tl_lora_add(_ptr(out), rows, out.shape[1], _ptr(narrow), _ptr(b_t), rank, None)
    ctx.save_for_backward(x2, weight, a, b_t, narrow, bits)
    ctx.native, ctx.coef, ctx.shape = lib, coef, shape
    return out.view(*shape[:-1], out.shape[1])


def _native_lora_backward(ctx, grad):
    import torch

    x2, weight, a, b_t, narrow, bits = ctx.saved_tensors
    lib = ctx.native
    rows, features = x2.shape
    rank, width = b_t.shape
    g = grad.reshape(rows, width).to(torch.bfloat16).contiguous()
    grad_narrow = narrow.new_empty((rows, rank))
    lib.tl_lora_rows(_ptr(g), rows, width, _ptr(b_t), rank, 0, 0, ctx.coef, _ptr(grad_narrow), None)
    grad_b_t = narrow.new_empty((rank, width))
    lib.tl_lora_cols(_ptr(narrow), _ptr(g), rows, width, rank, None, _ptr(grad_b_t))
    grad_a = narrow.new_empty((rank, features))
    lib.tl_lora_cols(_ptr(grad_narrow), _ptr(x2), rows, features, rank, _ptr(bits), _ptr(grad_a))
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = g @ weight  # LoRA's part is added where the input was kept
        lib.tl_lora_add(_ptr(grad_x), rows, features, _ptr(grad_narrow), _ptr(a), rank, _ptr(bits))
        grad_x = grad_x.view(ctx.shape)
    return grad_x, None, None, grad_a, grad_b_t.t(), None, None


@functools.cache
def _lora_linear_function():
    import torch
    import torch.nn.functional as F

    class LoraLinearFunction(torch.autograd.Function):
        """``x @ weight.T + bias + (dropout_p(x) @ lora_a.T @ lora_b.T) * scale`` for a
        frozen ``weight``; gradients for ``x``, ``lora_a`` and ``lora_b`` (fp32, like the
        LoRA weights). ``x``, ``weight`` and ``bias`` share the compute dtype."""

        @staticmethod
        def forward(ctx, x, weight, bias, lora_a, lora_b, scale, p):
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            dropout = _dropout_plan(x2, p)
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

    return LoraLinearFunction


def lora_linear_forward(self, x, *args, **kwargs):
    """peft ``lora.Linear.forward`` for one plain LoRA adapter on a frozen base, as
    :class:`LoraLinearFunction` (dtype: autocast's when it is on, else the input's)."""
    import torch

    name = _plain_lora_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    base = self.base_layer
    p = float(getattr(self.lora_dropout[name], "p", 0.0)) if self.training else 0.0
    with torch.autocast(device, enabled=False):
        weight = base.weight if base.weight.dtype == dtype else base.weight.to(dtype)
        bias = None if base.bias is None else base.bias.to(dtype)
        return _lora_linear_function().apply(x.to(dtype), weight, bias, self.lora_A[name].weight,
                                           self.lora_B[name].weight, self.scaling[name], p)


def use_fast_lora_linear(model) -> int:
    """Route every peft ``lora.Linear`` through :func:`lora_linear_forward` (per
    instance; peft's own forward still runs wherever the fast path does not apply)."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear:
            module.forward = types.MethodType(lora_linear_forward, module)
            count += 1
    return count


# --- gated MLP activation -------------------------------------------------------------------------

# MLP classes whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x))
SILU_TYPES = {"SiLU", "SiLUActivation"}  # torch's and transformers' (both exactly F.silu)
LLAMA_STYLE_MLPS = {"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP", "Olmo2MLP", "GraniteMLP"}


@functools.cache
def _silu_mul_function():
    import torch

    class SiluMulFunction(torch.autograd.Function):
        """``silu(gate) * up`` for contiguous bf16 CPU tensors, one native pass each way;
        keeps ``gate`` and ``up`` for the backward pass (autograd through the two stock
        ops keeps them and ``silu(gate)`` too)."""

        @staticmethod
        def forward(ctx, gate, up):
            out = torch.empty_like(gate)
            native_kernels().tl_silu_mul(_ptr(gate), _ptr(up), gate.numel(), _ptr(out))
            ctx.save_for_backward(gate, up)
            return out

        @staticmethod
        def backward(ctx, grad):
            gate, up = ctx.saved_tensors
            grad = grad.contiguous()
            grad_gate, grad_up = torch.empty_like(gate), torch.empty_like(up)
            native_kernels().tl_silu_mul_backward(_ptr(grad), _ptr(gate), _ptr(up), gate.numel(),
                                                  _ptr(grad_gate), _ptr(grad_up))
            return grad_gate, grad_up

    return SiluMulFunction


def silu_mul(gate, up):
    """``silu(gate) * up``: one native pass for same-shaped contiguous bf16 CPU tensors
    when the native kernels are loaded, the two stock ops otherwise."""
    import torch

    if (gate.device.type == "cpu" and gate.dtype is torch.bfloat16 and up.dtype is torch.bfloat16
            and gate.shape == up.shape and gate.is_contiguous() and up.is_contiguous()
            and native_kernels() is not None):
        return _silu_mul_function().apply(gate, up)
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


# --- RMSNorm ----------------------------------------------------------------------------------


@functools.cache
def _rms_norm_function():
    import torch

    class RMSNormFunction(torch.autograd.Function):
        """``weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)`` with a frozen weight."""

        @staticmethod
        def forward(ctx, x, weight, eps):
            lib = native_kernels() if (x.device.type == "cpu" and x.dtype is torch.bfloat16
                                       and weight.dtype is torch.bfloat16 and x.is_contiguous()) else None
            ctx.lib = lib
            if lib is not None:  # one pass each way
                rows, n = x.numel() // x.shape[-1], x.shape[-1]
                out, rstd = torch.empty_like(x), torch.empty(x.shape[:-1] + (1,), dtype=torch.float32)
                lib.tl_rms_norm(_ptr(x), _ptr(weight.contiguous()), rows, n, eps, _ptr(out), _ptr(rstd))
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
                ctx.lib.tl_rms_norm_backward(_ptr(grad), _ptr(x), _ptr(weight.contiguous()), _ptr(rstd),
                                             x.numel() // x.shape[-1], x.shape[-1], _ptr(grad_x))
                return grad_x, None, None
            # d/dx of x * rstd(x), applied to g = grad * weight:
            #   rstd * g - x * rstd^3 * sum(g * x) / n
            g = grad * weight
            dot = (g * x).sum(-1, keepdim=True, dtype=torch.float32)
            coef = rstd.pow(3).mul_(dot).div_(-x.shape[-1])
            return torch.addcmul(g * rstd, x, coef).to(x.dtype), None, None

    return RMSNormFunction


def use_fast_rms_norm(model) -> int:
    """Route Llama-style RMSNorms with frozen weights through :class:`RMSNormFunction`."""
    function = _rms_norm_function()

    def forward(self, hidden_states):
        if self.weight.requires_grad or hidden_states.dtype != self.weight.dtype:
            return type(self).forward(self, hidden_states)
        return function.apply(hidden_states, self.weight, self.variance_epsilon)

    count = 0
    for module in model.modules():
        if type(module).__name__ in LLAMA_STYLE_NORMS and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(forward, module)
            count += 1
    return count


# --- attention ------------------------------------------------------------------------------------


def _right_padded(attention_mask) -> bool:
    """Every row is ones then zeros (or there is no mask)."""
    if attention_mask is None:
        return True
    mask = attention_mask.bool()
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def causal_mask_or_none(**kwargs):
    """transformers mask function for :data:`ATTENTION_NAME`: None when plain causal
    attention is exact (no cache offset, no extra mask rules, right padding only: a
    real token never sees a pad to its left), else the eager additive mask."""
    from transformers.masking_utils import causal_mask_function, eager_mask

    plain = (kwargs.get("mask_function") is causal_mask_function and kwargs.get("allow_is_causal_skip", True)
             and not kwargs.get("q_offset") and not kwargs.get("kv_offset")
             and kwargs.get("q_length") == kwargs.get("kv_length") and kwargs.get("local_size") is None)
    if plain and _right_padded(kwargs.get("attention_mask")):
        return None
    return eager_mask(**kwargs)


def causal_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Attention for :data:`ATTENTION_NAME`. With no mask (the causal case above) and
    no dropout, sliding window or soft-capping, computes causal attention per key/value
    head group; anything else goes to transformers' eager attention."""
    import torch
    from transformers.models.llama.modeling_llama import eager_attention_forward

    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    simple = (attention_mask is None and getattr(module, "is_causal", True) and key.shape[2] == length
              and not (module.training and dropout) and kwargs.get("sliding_window") is None
              and kwargs.get("softcap") is None and kwargs.get("s_aux") is None and heads % kv_heads == 0)
    if not simple:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                       dropout=dropout, **kwargs)
    groups = heads // kv_heads
    causal = torch.full((length, length), float("-inf"), dtype=query.dtype, device=query.device).triu_(1)
    bias = causal.repeat(groups, 1)  # row g * length + i is query position i of group member g
    q = query.reshape(batch * kv_heads, groups * length, dim)
    scores = torch.baddbmm(bias, q, key.reshape(batch * kv_heads, length, dim).transpose(1, 2), alpha=scaling)
    probs = torch.softmax(scores, dim=-1)
    out = torch.bmm(probs, value.reshape(batch * kv_heads, length, dim))
    return out.view(batch, heads, length, dim).transpose(1, 2), None


def use_causal_attention(model) -> bool:
    """Register and select :func:`causal_attention` (with its mask function) on
    ``model``. False when the model does not take a registered attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, causal_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, causal_mask_or_none)
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        return False
    try:
        setter(ATTENTION_NAME)
    except (ValueError, ImportError, AttributeError, KeyError):
        return False
    return True


# --- LM head + cross-entropy ---------------------------------------------------------------------


@functools.cache
def _head_loss_function():
    import torch

    from backend.hardware.prepack import packed_linear

    class HeadLossFunction(torch.autograd.Function):
        """Summed cross-entropy of ``hidden @ weight.T`` against ``targets`` for a frozen
        head ``weight``, a block of rows at a time, with the gradient for ``hidden``
        made during the forward pass (``(softmax - onehot) @ weight``, per block): only a
        block's logits exist at any time, in cache-sized, reused allocations."""

        @staticmethod
        def forward(ctx, hidden, weight, targets, block_rows):
            need_grad = ctx.needs_input_grad[0]
            grad_hidden = torch.empty_like(hidden) if need_grad else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            packed = _packed_head(weight, block_rows)
            lib = native_kernels() if hidden.device.type == "cpu" and hidden.dtype is torch.bfloat16 else None
            if lib is not None:
                block_targets = targets.to(torch.int64).contiguous()
            for start in range(0, hidden.shape[0], block_rows):
                rows = slice(start, start + block_rows)
                # the activation dtype, as the stock head
                logits = hidden[rows] @ weight.t() if packed is None else packed_linear(hidden[rows], packed[0])
                if lib is not None:  # loss per row, and softmax - onehot over the logits, in one pass
                    losses = torch.empty(logits.shape[0], dtype=torch.float32)
                    lib.tl_softmax_xent(_ptr(logits), _ptr(block_targets[rows]),
                                        logits.shape[0], logits.shape[1], _ptr(losses))
                    total += losses.sum()
                    if need_grad:
                        grad_hidden[rows] = logits @ weight if packed is None else packed_linear(logits, packed[1])
                    continue
                log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
                picked = targets[rows].unsqueeze(1)
                total -= log_probs.gather(1, picked).sum()
                if need_grad:
                    probs = log_probs.exp_()
                    probs.scatter_add_(1, picked, torch.full(picked.shape, -1.0, device=probs.device))
                    if packed is None:
                        torch.mm(probs.to(hidden.dtype), weight, out=grad_hidden[rows])
                    else:
                        grad_hidden[rows] = packed_linear(probs.to(hidden.dtype), packed[1])
            ctx.save_for_backward(grad_hidden)
            return total

        @staticmethod
        def backward(ctx, grad):
            (grad_hidden,) = ctx.saved_tensors
            return grad_hidden * grad.to(grad_hidden.dtype), None, None, None

    return HeadLossFunction


def head_loss_sum(hidden, weight, targets, block_rows: int = 128):
    """``cross_entropy(hidden @ weight.T, targets, reduction="sum")`` in fp32 for a
    bias-free head (the LM head or tied embeddings of a LoRA run); the stock
    expression when the head itself is trained."""
    if weight.requires_grad:
        import torch

        return torch.nn.functional.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum")
    return _head_loss_function().apply(hidden.contiguous(), weight, targets, block_rows)


_PACKED_HEAD = "_tunelab_packed_head"


def _packed_head(weight, block_rows: int):
    """oneDNN-packed copies of a frozen bf16 CPU head ``weight`` (vocabulary x hidden)
    and of its transpose, for the head's two products, made once and kept on the
    weight (remade if the weight is changed in place); None where packing does not
    apply. Unpacked, oneDNN reorders the whole head (57 MB for SmolLM2) into its
    blocked layout on every call: a 128-row block of the head ran at ~250 GFLOP/s
    plain and ~340 packed (2 EPYC cores)."""
    import torch

    from backend.hardware.prepack import available, pack_weight

    if weight.dtype is not torch.bfloat16 or weight.device.type != "cpu" or weight.requires_grad or not available():
        return None
    cached = getattr(weight, _PACKED_HEAD, None)
    if cached is not None and cached[0] == weight._version:
        return cached[1]
    with torch.no_grad():
        plain = weight.detach()
        packed = (pack_weight(plain, block_rows), pack_weight(plain.t().contiguous(), block_rows))
    setattr(weight, _PACKED_HEAD, (weight._version, packed))
    return packed


# --- memory ---------------------------------------------------------------------------------------


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of returning it.

    torch's CPU tensors come from ``malloc``; glibc serves large ones (>= 128 KiB to
    32 MiB, adaptively) with fresh ``mmap`` pages and trims the heap on ``free``, so
    every new activation of a training step is first-touch page faults plus the
    kernel zeroing it: a 2 MB bf16 -> fp32 cast took 150 us into a new tensor and 24 us
    into an existing one. With mmap off and no trimming, freed blocks are reused.
    Call it in a process that trains (the job runner's worker, the benchmark); memory
    held stays what the peak step needed. False where this is not glibc.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        return (bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
                and bool(libc.mallopt(m_top_pad, 64 << 20)))
    except (OSError, AttributeError):
        return False


def hugepage_malloc_env(env: dict) -> dict:
    """``env`` for a process that trains on CPU: glibc's malloc asks for transparent
    huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc >= 2.35; older ones
    ignore it), so fresh activations fault in 2 MiB at a time instead of 4 KiB. Read
    once at process start, so it is set for the job runner's worker (and the benchmark
    re-runs itself with it). An existing tunable setting is kept and extended."""
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": f"{current}:{HUGEPAGE_TUNABLE}" if current else HUGEPAGE_TUNABLE}


def speed_up_cpu_training(model) -> dict:
    """Install the module-level kernels on a peft model; returns what was installed."""
    return {"freed_memory_kept": keep_freed_memory(), "lora_linear": use_fast_lora_linear(model),
            "rms_norm": use_fast_rms_norm(model), "silu_mul": use_fast_silu_mul(model),
            "attention": use_causal_attention(model)}
