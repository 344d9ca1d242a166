"""Attention over padding-free rows without a T × T mask, for GPUs without flash_attn.

TRL's padding-free batches put a step's examples end to end in one row, with
``position_ids`` restarting at each example and the boundaries as ``cu_seq_lens_q``.
Under transformers' ``sdpa`` that row gets a (T × T) block-diagonal boolean mask, and a
mask keeps SDPA off its FlashAttention kernel: the whole T × T square is computed (four
examples of 1024 tokens: four times the attention FLOPs of the examples alone) and
the mask is held per layer. :data:`NAME` (``packed_sdpa``) is an attention of its own,
registered with transformers (:func:`register`) and chosen by the recipe on CUDA when
``flash_attn`` is not installed: a packed row is attended example by example, causal
within each and nothing across, with

- PyTorch's varlen FlashAttention (``torch.nn.attention.varlen.varlen_attn``: one kernel
  for the whole row, boundaries read on the device) on CUDA where this torch has it, or
- one SDPA call per example (transformers' own ``sdpa_attention_forward``, no mask, so
  ``is_causal`` and the flash kernel), anywhere else: on a CPU this path is what the tests
  check against padded batches (the same losses and gradients).

Anything that is not a packed row (a padded batch with its mask, one example, decoding with
a cache) goes to ``sdpa_attention_forward`` unchanged, and its mask is transformers'
``sdpa_mask``: only a packed row loses the mask.
"""

from __future__ import annotations

import functools
import inspect
import logging

import torch

NAME = "packed_sdpa"
log = logging.getLogger(__name__)


def register() -> str:
    """Register :data:`NAME` with transformers' attention and mask interfaces (idempotent;
    called by a run that loads its base with it, never at import) and return the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, packed_mask)
    return NAME


def packed_mask(*, attention_mask=None, q_length: int, kv_length: int, q_offset=0, **kwargs):
    """No mask for a row without padding and without a cache (a packed row or one example:
    the attention makes it causal per example); transformers' ``sdpa_mask`` otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length and isinstance(q_offset, int) and q_offset == 0:
        return None
    return sdpa_mask(attention_mask=attention_mask, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     **kwargs)


def boundaries(cu_seq_lens: torch.Tensor) -> list[int]:
    """The host copy of a row's example boundaries, read once per step: every layer gets the
    same tensor, so the device-to-host copy is kept on it."""
    host = getattr(cu_seq_lens, "_tunelab_host", None)
    if host is None:
        host = [int(x) for x in cu_seq_lens.tolist()]
        cu_seq_lens._tunelab_host = host
    return host


@functools.cache
def _varlen():
    """PyTorch's varlen attention where this torch has it with ``window_size`` (the causal form;
    torch 2.10 had ``is_causal`` instead) and ``scale``; None otherwise. Its ``enable_gqa`` is
    newer still: without it the shared key/value heads are repeated first. Looked up once per
    process (every layer of every step asks)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    parameters = set(inspect.signature(varlen_attn).parameters)
    if not {"window_size", "scale"} <= parameters:
        return None
    if "enable_gqa" in parameters:
        return varlen_attn

    def repeating(query, key, value, *args, enable_gqa=False, **kwargs):
        if enable_gqa:
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        return varlen_attn(query, key, value, *args, **kwargs)

    return repeating


def varlen_row(varlen, query, key, value, cu_seq_lens, longest: int, scaling) -> torch.Tensor:
    """One packed row through ``varlen`` (:func:`_varlen`'s form): transformers' (1, heads, T,
    head_dim) to varlen's (T, heads, head_dim), causal within each example, and back to the
    (1, T, heads, head_dim) transformers' attention functions return."""
    out = varlen(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu_seq_lens,
                 cu_seq_lens, longest, longest, scale=scaling, window_size=(-1, 0),
                 enable_gqa=key.shape[1] != query.shape[1])
    return out.unsqueeze(0)


def _per_example(module, query, key, value, bounds: list[int], dropout: float, scaling, kwargs) -> torch.Tensor:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    outputs = [sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                      None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)[0]
               for start, end in zip(bounds, bounds[1:]) if end > start]
    return torch.cat(outputs, dim=1)  # (1, T, heads, head_dim), as sdpa_attention_forward returns


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """transformers' attention signature: ``query`` (batch, heads, T, head_dim), ``key`` and
    ``value`` (batch, kv_heads, T, head_dim); returns ((batch, T, heads, head_dim), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (attention_mask is None and cu_seq_lens_q is not None and query.shape[0] == 1
              and query.shape[2] == key.shape[2] and cu_seq_lens_q.numel() > 2
              and getattr(module, "is_causal", True))
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kwargs.pop("is_causal", None)
    half = query.dtype in (torch.float16, torch.bfloat16)  # the flash kernel's dtypes
    varlen = _varlen() if query.is_cuda and half and dropout == 0.0 else None
    if varlen is not None and not getattr(module, "_tunelab_varlen_failed", False):
        cu = cu_seq_lens_q.to(device=query.device, dtype=torch.int32)
        if max_length_q is None:
            bounds = boundaries(cu_seq_lens_q)
            max_length_q = max(b - a for a, b in zip(bounds, bounds[1:]))
        longest = int(max_length_q)
        try:
            return varlen_row(varlen, query, key, value, cu, longest, scaling), None
        except (RuntimeError, TypeError, ValueError) as exc:  # a kernel this GPU or torch lacks: per example
            log.warning("varlen attention failed (%s); attending example by example instead", exc)
            module._tunelab_varlen_failed = True
    return _per_example(module, query, key, value, boundaries(cu_seq_lens_q), dropout, scaling, kwargs), None
