"""A preallocated KV cache for the running batch: storage allocated ahead, written in place.

transformers' ``DynamicLayer.update`` concatenates the new keys and values to the old
ones at every step: each token allocates a new tensor per layer and copies the whole
cache into it (O(n^2) copying over an answer). On a GPU that also fragments the
allocator's memory and leaves no fixed address for CUDA graphs. Here each layer owns
one block per keys and values, ``[rows, kv heads, length, head dim]``, allocated with
room for the batch's rows and for the answers still to come; a step writes its token's
keys and values into the next free column, and the attention sees views of the filled
columns only (``keys = store[:rows, :, begin:end]``), exactly the length the 2-D
attention mask has, as transformers' mask builder expects (``get_mask_sizes``: the
filled length plus the query's, offset 0, as for a ``DynamicLayer``).

The running batch's operations (:mod:`backend.serving.batch`) keep working:

- Rows that finish leave: the kept rows move up in place (:meth:`PreallocatedLayer.keep`)
  and the columns that became padding for every remaining row are skipped by moving
  ``begin``, with no copy.
- Newcomers join: their prefilled keys and values are written, left-padded, into free
  rows of the block when the block has the rows and the columns
  (:meth:`PreallocatedCache.absorb`); otherwise both go into a new, larger block
  (:func:`merged_cache`). The rows' masks and positions are the batch's, unchanged.
- Past the block's length the layer moves to a block one ``grow`` chunk longer than
  needed (one copy, amortised over the chunk).

Which device uses it: :func:`use_preallocated` (CUDA; not CPU, per the measurement in
docs/performance.md).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from backend.errors import ConfigError

KV_CACHE_CHOICES = ("auto", "preallocated", "dynamic")

# columns added past what a block needs when it is allocated or grows: a decode step
# writes one column, so a block is reallocated at most once per GROW tokens
GROW = 256


class PreallocatedLayer(DynamicLayer):
    """One decoder layer's keys and values in blocks allocated ahead.

    A ``DynamicLayer`` to transformers (full attention, croppable, not compileable): the
    model calls :meth:`update` and reads ``keys``/``values``, which are always views of
    the filled part ``[:rows, :, begin:end]`` of ``key_store``/``value_store``.
    """

    def __init__(self, rows: int = 1, length: int = GROW, grow: int = GROW):
        super().__init__()
        self.capacity_rows = max(1, rows)
        self.capacity_length = max(1, length)
        self.grow = max(1, grow)
        self.key_store: torch.Tensor | None = None
        self.value_store: torch.Tensor | None = None
        self.rows = 0
        self.begin = self.end = 0
        self.allocations = 0  # blocks allocated so far (tests and stats look at it)

    # --- storage --------------------------------------------------------------------------

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.rows = key_states.shape[0]
        self._allocate(max(self.capacity_rows, self.rows), self.capacity_length, like=(key_states, value_states))
        self.is_initialized = True

    def _allocate(self, rows: int, length: int, *, like) -> None:
        keys, values = like
        self.capacity_rows, self.capacity_length = rows, length
        # not zeroed (no pass over the block): only the filled part is ever read, and every
        # padded column in it is written with zeros (absorb, merged_cache) or by the prefill
        # (a masked column must not hold garbage: its weight is 0, but 0 x NaN is NaN)
        self.key_store = torch.empty((rows, keys.shape[1], length, keys.shape[-1]), dtype=keys.dtype,
                                     device=keys.device)
        self.value_store = torch.empty((rows, values.shape[1], length, values.shape[-1]), dtype=values.dtype,
                                       device=values.device)
        self.allocations += 1

    def _views(self) -> None:
        self.keys = self.key_store[: self.rows, :, self.begin: self.end]
        self.values = self.value_store[: self.rows, :, self.begin: self.end]

    @property
    def filled(self) -> int:
        return self.end - self.begin

    def reserve(self, length: int) -> None:
        """Make room for ``length`` filled columns from ``begin``: a new block (the filled
        part copied to its start, ``grow`` more columns than asked) when this one is short."""
        if self.begin + length <= self.capacity_length:
            return
        old_keys, old_values, filled = self.keys, self.values, self.filled
        self._allocate(self.capacity_rows, length + self.grow, like=(self.key_store, self.value_store))
        self.key_store[: self.rows, :, :filled].copy_(old_keys)
        self.value_store[: self.rows, :, :filled].copy_(old_values)
        self.begin, self.end = 0, filled
        self._views()

    # --- what transformers calls ----------------------------------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write the step's keys and values into the next free columns; the filled views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != self.rows:
            raise ValueError(f"the cache holds {self.rows} rows; this step has {key_states.shape[0]}")
        width = key_states.shape[-2]
        self.reserve(self.filled + width)
        self.key_store[: self.rows, :, self.end: self.end + width].copy_(key_states)
        self.value_store[: self.rows, :, self.end: self.end + width].copy_(value_states)
        self.end += width
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled if self.is_initialized else 0

    def get_max_length(self) -> int:
        return -1  # grows past its block: no maximum, as for a DynamicLayer

    def reset(self) -> None:
        super().reset()  # drops keys/values, clears is_initialized
        self.key_store = self.value_store = None
        self.rows = self.begin = self.end = 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if self.is_initialized and tokens_to_remove:
            self.end = max(self.begin, self.end + tokens_to_remove)
            self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("the serving engine's preallocated cache does not repeat rows")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keep([int(i) for i in indices], 0)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("the serving engine's preallocated cache does not reorder rows")

    # --- the running batch's operations ---------------------------------------------------

    def keep(self, rows: list[int], drop_columns: int) -> None:
        """Keep ``rows`` (ascending), moved up to the block's first rows, and skip the first
        ``drop_columns`` filled columns (padding for every kept row)."""
        if rows != list(range(len(rows))):  # rows below a dropped one move up
            index = torch.tensor(rows, dtype=torch.long, device=self.key_store.device)
            # the right side is gathered into a new tensor first: no overlap between source and target
            self.key_store[: len(rows), :, self.begin: self.end] = self.key_store[index, :, self.begin: self.end]
            self.value_store[: len(rows), :, self.begin: self.end] = self.value_store[index, :, self.begin: self.end]
        self.rows = len(rows)
        self.begin = min(self.end, self.begin + drop_columns)
        self._views()

    def fits(self, rows: int, width: int, length: int) -> bool:
        """True when ``rows`` rows over ``width`` columns ending at ``end`` fit this block, with
        room for ``length`` filled columns in all."""
        return (rows <= self.capacity_rows and self.end - width >= 0
                and self.end - width + length <= self.capacity_length)

    def absorb(self, keys: torch.Tensor, values: torch.Tensor, width: int) -> None:
        """Write a newcomer batch's filled ``keys``/``values`` into the rows after this batch's,
        both left-padded (zeros) to ``width`` columns ending at ``end``."""
        new_rows, new_width = keys.shape[0], keys.shape[-2]
        start = self.end - width
        old = slice(0, self.rows)
        new = slice(self.rows, self.rows + new_rows)
        for store, filled in ((self.key_store, keys), (self.value_store, values)):
            if start < self.begin:
                store[old, :, start: self.begin].zero_()
            store[new, :, start: self.end - new_width].zero_()
            store[new, :, self.end - new_width: self.end].copy_(filled)
        self.rows += new_rows
        self.begin = start
        self._views()


class PreallocatedCache(Cache):
    """The running batch's cache: one :class:`PreallocatedLayer` per decoder layer."""

    def __init__(self, num_layers: int, *, rows: int, length: int, grow: int = GROW):
        super().__init__(layers=[PreallocatedLayer(rows, length, grow) for _ in range(num_layers)])

    @property
    def allocations(self) -> int:
        return sum(layer.allocations for layer in self.layers)

    def fits(self, rows: int, width: int, length: int) -> bool:
        return all(layer.is_initialized and layer.fits(rows, width, length) for layer in self.layers)

    def absorb(self, other: Cache, width: int) -> None:
        """The rows of ``other`` (its filled keys and values) join this cache's, in place."""
        for layer, joining in zip(self.layers, other.layers):
            layer.absorb(joining.keys, joining.values, width)

    def keep(self, rows: list[int], drop_columns: int) -> None:
        for layer in self.layers:
            layer.keep(rows, drop_columns)


def layer_count(config) -> int:
    """How many cache layers transformers builds for ``config`` (one per decoder layer)."""
    return len(DynamicCache(config=config).layers)


def block_rows(rows: int, max_rows: int) -> int:
    """Rows of a new block: the next power of two (room for newcomers), at most ``max_rows``."""
    return max(rows, min(max_rows, 1 << max(0, rows - 1).bit_length()))


def block_length(width: int, remaining: int, grow: int = GROW) -> int:
    """Columns of a new block for a batch ``width`` columns wide whose longest answer may
    take ``remaining`` more tokens: all of them up to ``grow``; beyond, it grows as it goes."""
    return width + max(1, min(remaining, grow))


def merged_cache(old: Cache, new: Cache, old_width: int, new_width: int, *, rows: int, length: int,
                 grow: int = GROW) -> PreallocatedCache:
    """A new block holding ``old``'s rows then ``new``'s, both left-padded to one width."""
    width = max(old_width, new_width)
    merged = PreallocatedCache(len(old.layers), rows=rows, length=length, grow=grow)
    for layer, lo, ln in zip(merged.layers, old.layers, new.layers):
        a, b = lo.keys.shape[0], ln.keys.shape[0]
        layer.device = lo.keys.device
        layer._allocate(max(rows, a + b), max(length, width), like=(lo.keys, lo.values))
        layer.is_initialized = True
        for store, first, second in ((layer.key_store, lo.keys, ln.keys), (layer.value_store, lo.values, ln.values)):
            store[:a, :, : width - old_width].zero_()
            store[:a, :, width - old_width: width].copy_(first)
            store[a: a + b, :, : width - new_width].zero_()
            store[a: a + b, :, width - new_width: width].copy_(second)
        layer.rows, layer.begin, layer.end = a + b, 0, width
        layer._views()
    return merged


def use_preallocated(choice: str, device: torch.device | str) -> bool:
    """Whether the engine on ``device`` runs its batches on :class:`PreallocatedCache`.

    'auto': on CUDA (no allocation per token, a fixed address per block, no fragmentation
    of the allocator's memory); not on CPU, where ``bench/serve_kv_cache.py`` measured it
    no faster than transformers' concatenating cache (0.82-0.97x on a 2-core AMD EPYC,
    AVX2: a CPU decode step is dominated by reading the weights, and the attention reads the
    strided views a little slower than contiguous keys; docs/performance.md).
    'preallocated' / 'dynamic' force one.
    """
    if choice not in KV_CACHE_CHOICES:
        raise ConfigError(f"Unknown serving KV cache {choice!r}.",
                          fix="Set TUNELAB_SERVE_KV_CACHE to auto, preallocated or dynamic.")
    if choice != "auto":
        return choice == "preallocated"
    return torch.device(device).type == "cuda"
