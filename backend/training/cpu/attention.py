"""Causal attention for right-padded training batches, registered with transformers.

Grouped query heads are scored against their shared key/value heads (no ``repeat_kv``
copies), with the scale and the causal mask fused into the score matmul (``baddbmm``).
It applies where plain causal attention is exact; everything else (left padding, a
cache, sliding windows, soft-capping, attention dropout) goes to transformers' eager
attention, so results never change.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

ATTENTION_NAME = "tunelab_cpu_causal"


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
