"""The engine's counters: the server exports them as metrics, tests and benchmarks read
them to see batching and slot loads happen."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class EngineStats:
    """Counters the server exports as metrics and tests read to see batching happen."""

    requests: int = 0
    finished: int = 0
    rejected: int = 0
    tokens: int = 0
    steps: int = 0
    loads: int = 0
    slot_loads: int = 0  # loads that copied into a preallocated slot (the fast path)
    max_rows: int = 0
    # the preallocated KV cache (backend.serving.kv_cache): blocks allocated for a new or a
    # merged batch, blocks replaced by a longer one, newcomers written into a block's free rows
    kv_blocks: int = 0
    kv_growths: int = 0
    kv_joins_in_place: int = 0
    prefills: deque = field(default_factory=lambda: deque(maxlen=1024))
    step_rows: deque = field(default_factory=lambda: deque(maxlen=4096))
    latencies: deque = field(default_factory=lambda: deque(maxlen=1024))
