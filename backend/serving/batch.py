"""The running batch: its rows, attention mask and KV cache.

Requests that arrive together are prefilled as one left-padded batch
(:func:`prefill_inputs`); newcomers prefilled between two decode steps are merged into
the running batch by left-padding the shorter cache (:func:`merge`); finished rows leave
it (:meth:`Batch.select`), and the columns that became padding for every row go with them.

The cache is transformers' ``DynamicCache`` or, where the engine's :class:`CachePlan`
says so, a :class:`~backend.serving.kv_cache.PreallocatedCache` (storage allocated
ahead and written in place); both go through the same three operations here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from backend.errors import TuneLabError
from backend.serving.kv_cache import (GROW, PreallocatedCache, PreallocatedLayer, block_length, block_rows, layer_count,
                                      merged_cache)
from backend.serving.requests import Request


@dataclass(frozen=True)
class CachePlan:
    """How a batch holds its keys and values: preallocated blocks (room for ``max_rows``
    rows at most, growing by ``grow`` columns) or transformers' concatenating cache."""

    preallocate: bool = False
    max_rows: int = 16
    grow: int = GROW


@dataclass
class Batch:
    requests: list[Request]
    mask: Any
    cache: Any
    next_ids: Any  # each row's chosen token, not yet fed back
    logprobs: Any = None

    @property
    def size(self) -> int:
        return len(self.requests)

    def grow_mask(self) -> None:
        """One more attended position per row: the token the next step feeds back."""
        self.mask = torch.cat([self.mask, torch.ones(self.size, 1, dtype=self.mask.dtype, device=self.mask.device)],
                              dim=1)

    def select(self, rows: list[int]) -> None:
        """Keep ``rows``; drop columns that are padding for every remaining row."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device if rows else None)
        self.requests = [self.requests[i] for i in rows]
        if not rows:
            return
        self.mask = self.mask[index]
        self.next_ids = self.next_ids[index]
        self.logprobs = self.logprobs[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        self.mask = self.mask[:, start:]
        if isinstance(self.cache, PreallocatedCache):
            self.cache.keep(rows, start)
            return
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]


def prefill_inputs(requests: list[Request], pad_id: int, *, resume: bool = False, device=None):
    """The prompts left-padded to one width: (input ids, attention mask) on ``device`` (the
    model's). With ``resume`` each row is its prompt followed by the tokens it already generated."""
    rows = [r.prompt_ids + r.generated if resume else r.prompt_ids for r in requests]
    width = max(len(ids) for ids in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in rows], device=device)
    mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows], device=device)
    return input_ids, mask


def position_ids(mask, width: int):
    """Positions of the last ``width`` columns, counted over each row's real tokens only."""
    positions = mask.long().cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)
    return positions[:, -width:]


def remaining_tokens(requests: Sequence[Request]) -> int:
    """The most tokens any of ``requests`` may still add to the cache."""
    return max((r.params.max_tokens - len(r.generated) for r in requests), default=1)


def new_cache(config, plan: CachePlan | None = None, requests: Sequence[Request] = (), width: int = 0,
              *, joining: bool = False):
    """The cache a prefill of ``requests`` (``width`` columns) fills. Under a preallocating
    ``plan`` a batch that starts gets a block with room for its rows (and a few newcomers)
    and for its answers; rows that will join a running batch are copied into that batch's
    block right away, so they prefill into a plain cache."""
    if plan is None or not plan.preallocate or joining:
        return DynamicCache(config=config)
    return PreallocatedCache(layer_count(config), rows=block_rows(len(requests), plan.max_rows),
                             length=block_length(width, remaining_tokens(requests), plan.grow), grow=plan.grow)


def can_merge(config) -> bool:
    """True when every cache layer is a full-attention DynamicLayer (rows can be merged)."""
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # a config DynamicCache cannot describe: newcomers wait for the batch to end
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


def merge(old: Batch, new: Batch, plan: CachePlan | None = None) -> Batch:
    """One batch from two: left-pad the shorter's cache and mask, stack the rows.

    Under a preallocating ``plan`` the newcomers are written into free rows of the
    running batch's block when it has the rows and the columns, else both batches go
    into a new block; otherwise the caches are concatenated."""
    layers_old, layers_new = old.cache.layers, new.cache.layers
    if not all(type(layer) in (DynamicLayer, PreallocatedLayer) for layer in (*layers_old, *layers_new)):
        raise TuneLabError("This base's cache type cannot join running batches.")
    width = max(old.mask.shape[1], new.mask.shape[1])

    def left_pad(t, dim_len):
        extra = width - dim_len
        if extra == 0:
            return t
        shape = list(t.shape)
        shape[-2 if t.dim() == 4 else 1] = extra
        zeros = torch.zeros(shape, dtype=t.dtype, device=t.device)
        return torch.cat([zeros, t], dim=-2 if t.dim() == 4 else 1)

    if plan is not None and plan.preallocate:
        requests = old.requests + new.requests
        length = width + block_length(0, remaining_tokens(requests), plan.grow)
        if isinstance(old.cache, PreallocatedCache) and old.cache.fits(len(requests), width, length):
            old.cache.absorb(new.cache, width)
            cache = old.cache
        else:
            cache = merged_cache(old.cache, new.cache, old.mask.shape[1], new.mask.shape[1],
                                 rows=block_rows(len(requests), plan.max_rows), length=length, grow=plan.grow)
        return Batch(requests=requests,
                     mask=torch.cat([left_pad(old.mask, old.mask.shape[1]), left_pad(new.mask, new.mask.shape[1])]),
                     cache=cache, next_ids=torch.cat([old.next_ids, new.next_ids]),
                     logprobs=torch.cat([old.logprobs, new.logprobs]))

    data = []
    for lo, ln in zip(layers_old, layers_new):
        keys = torch.cat([left_pad(lo.keys, old.mask.shape[1]), left_pad(ln.keys, new.mask.shape[1])])
        values = torch.cat([left_pad(lo.values, old.mask.shape[1]), left_pad(ln.values, new.mask.shape[1])])
        data.append((keys, values))
    return Batch(
        requests=old.requests + new.requests,
        mask=torch.cat([left_pad(old.mask, old.mask.shape[1]), left_pad(new.mask, new.mask.shape[1])]),
        cache=DynamicCache(ddp_cache_data=data),
        next_ids=torch.cat([old.next_ids, new.next_ids]),
        logprobs=torch.cat([old.logprobs, new.logprobs]),
    )
