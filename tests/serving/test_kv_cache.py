"""The preallocated KV cache (backend/serving/kv_cache.py) on the tiny Llama, on CPU.

Greedy tokens equal plain transformers / peft ``generate`` with the cache driven directly
and through the engine (single requests; mixed-adapter batches with the base row,
newcomers merged mid-answer, rows finishing at different times); the storage is written
in place (the same data pointer across decode steps within a block) and grows past its
block with the same tokens; the per-device choice."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from backend.errors import ConfigError
from backend.serving.kv_cache import PreallocatedCache, PreallocatedLayer, block_rows, use_preallocated
from backend.serving.requests import SamplingParams
from tests.builders import make_engine, make_lora, reference_tokens


@pytest.fixture(scope="module")
def loras(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("kv-loras")
    return [make_lora(tiny_llama, root / f"lora{i}", seed=30 + i) for i in range(2)]


@pytest.fixture(scope="module")
def model(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()


@pytest.fixture()
def poisoned_blocks(monkeypatch):
    """New blocks come filled with NaN: a column the attention reads that nobody wrote (or
    zeroed as padding) turns the answer into garbage, instead of passing by luck."""
    allocate = PreallocatedLayer._allocate

    def poisoned(self, rows, length, *, like):
        allocate(self, rows, length, like=like)
        self.key_store.fill_(float("nan"))
        self.value_store.fill_(float("nan"))

    monkeypatch.setattr(PreallocatedLayer, "_allocate", poisoned)


def _greedy(n):
    return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)


def _decode(model, prompt: list[int], n: int, cache, on_step=None) -> list[int]:
    """Greedy tokens of ``model`` fed one at a time through ``cache`` (the engine's loop, without the engine)."""
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    tokens = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        for _ in range(n):
            token = int(out.logits[0, -1].argmax())
            tokens.append(token)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
            out = model(input_ids=torch.tensor([[token]]), attention_mask=mask, past_key_values=cache, use_cache=True)
            if on_step:
                on_step(cache)
    return tokens


def test_decoding_writes_in_place_and_matches_generate(model, tiny_llama):
    prompt = list(range(5, 25))
    cache = PreallocatedCache(model.config.num_hidden_layers, rows=1, length=len(prompt) + 40)
    pointers, lengths = set(), []

    def look(c):
        layer = c.layers[0]
        pointers.add((layer.key_store.data_ptr(), layer.value_store.data_ptr()))
        lengths.append(c.get_seq_length())
        assert layer.keys.data_ptr() == layer.key_store.data_ptr()  # a view of the block, not a copy
        assert layer.keys.shape[-2] == layer.get_seq_length()  # exactly the length the mask has

    tokens = _decode(model, prompt, 30, cache, look)
    assert tokens == reference_tokens(tiny_llama, None, prompt, 30)
    assert len(pointers) == 1, "the block was reallocated within its capacity"
    assert lengths == list(range(len(prompt) + 1, len(prompt) + 31))
    assert all(layer.allocations == 1 for layer in cache.layers)


def test_a_full_block_grows_and_the_tokens_stay_the_same(model, tiny_llama, poisoned_blocks):
    prompt = list(range(7, 19))
    cache = PreallocatedCache(model.config.num_hidden_layers, rows=1, length=len(prompt) + 3, grow=5)
    seen = []  # (block address, block length) after each decode step
    tokens = _decode(model, prompt, 25, cache,
                     lambda c: seen.append((c.layers[0].key_store.data_ptr(), c.layers[0].capacity_length)))
    assert tokens == reference_tokens(tiny_llama, None, prompt, 25)
    layer = cache.layers[0]
    assert layer.allocations >= 4  # 15 columns, then 5 more past what was needed each time it filled up
    lengths = [length for _, length in seen]
    assert lengths == sorted(lengths) and len(set(lengths)) == layer.allocations
    for (ptr, length), (next_ptr, next_length) in zip(seen, seen[1:]):
        assert (ptr == next_ptr) == (length == next_length)  # a new block only when the old one was full
    assert layer.capacity_length >= layer.filled == len(prompt) + 25


def test_block_operations_keep_rows_and_columns_right():
    """keep() moves the kept rows up and skips leading columns; absorb() left-pads newcomers
    into free rows; the views are what a concatenating cache would hold."""
    layer = PreallocatedLayer(rows=4, length=12)
    keys = torch.arange(3 * 2 * 7 * 2, dtype=torch.float32).reshape(3, 2, 7, 2) + 1
    layer.update(keys, -keys)
    layer.keep([0, 2], 2)  # row 1 finished; the first two columns were padding for the others
    assert torch.equal(layer.keys, keys[[0, 2], :, 2:]) and torch.equal(layer.values, -keys[[0, 2], :, 2:])
    assert layer.fits(3, 6, 8) and not layer.fits(5, 6, 8) and not layer.fits(3, 6, 20)
    assert not layer.fits(3, 8, 8)  # wider than the columns before the block's end
    joining = torch.full((1, 2, 6, 2), 7.0)
    layer.absorb(joining, -joining, 6)  # wider than the running rows: they get a zero column on the left
    assert layer.keys.shape == (3, 2, 6, 2) and layer.begin == 1
    assert torch.equal(layer.keys[:2, :, 1:], keys[[0, 2], :, 2:]) and not layer.keys[:2, :, :1].any()
    assert torch.equal(layer.keys[2:], joining) and torch.equal(layer.values[2:], -joining)
    narrow = torch.full((1, 2, 2, 2), 9.0)
    layer.keep([1, 2], 0)
    layer.absorb(narrow, -narrow, 6)
    assert not layer.keys[2, :, :4].any() and torch.equal(layer.keys[2:, :, 4:], narrow)
    assert torch.equal(layer.keys[1], joining[0])
    assert layer.allocations == 1


def test_the_engine_batches_on_the_preallocated_cache_with_exact_tokens(tiny_llama, loras, poisoned_blocks):
    """One request alone, then base + adapters where rows finish at different times and
    newcomers join mid-answer (into the block's free rows and into a new block): every
    answer equals plain peft's greedy answer."""
    engine = make_engine(tiny_llama, kv_cache="preallocated", batch_window_s=0.2)
    try:
        assert engine.describe()["kv_cache"] == "preallocated"
        for i, path in enumerate(loras):
            engine.load_adapter(f"k{i}", path)
        prompts = [engine.encode_chat([{"role": "user", "content": text}])
                   for text in ("Tell me about the autumn leaves", "hi", "Billing question: I was charged twice")]
        alone = engine.generate(prompts[0], "k0", max_tokens=20, temperature=0, ignore_eos=True)
        assert alone.token_ids == reference_tokens(tiny_llama, loras[0], prompts[0], 20)
        assert engine.stats.kv_blocks == 1

        # three rows of different lengths start together (a block of 4 rows) ...
        first = [(prompts[0], None, 150), (prompts[1], "k0", 12), (prompts[2], "k1", 25)]
        handles = [engine.submit(p, m, _greedy(n)) for p, m, n in first]
        events = iter(handles[0])
        head = [next(events).token_id for _ in range(5)]  # all three are answering: one row is free
        # ... newcomers join the long answer: one into the free row, then more than the block holds
        late = [(prompts[1], "k1", 20), (prompts[2], None, 8), (prompts[0], "k0", 10), (prompts[1], None, 6),
                (prompts[2], "k1", 9), (prompts[1], "k0", 4)]
        joined = engine.submit(*late[0][:2], _greedy(late[0][2])).result()
        late_handles = [engine.submit(p, m, _greedy(n)) for p, m, n in late[1:]]
        done = [h.result() for h in handles] + [joined] + [h.result() for h in late_handles]
        done[0].token_ids[:0] = head  # the long answer's first tokens were read above
        for (prompt, model, n), completion in zip(first + late, done):
            adapter = None if model is None else loras[int(model[1])]
            assert completion.token_ids == reference_tokens(tiny_llama, adapter, prompt, n), (model, n)
        assert engine.stats.kv_joins_in_place >= 1, "no newcomer was written into a block's free rows"
        assert max(c.batch_rows_max for c in done[-5:]) == 6, "the last newcomers did not join the long answer"
        assert engine.stats.kv_blocks >= 3, "no merge needed a larger block"

        # a newcomer wider than the running batch: the running row is left-padded in a new block
        blocks = engine.stats.kv_blocks
        short = engine.encode_text("hi")
        running = engine.submit(short, "k1", _greedy(30))
        events = iter(running)
        head = [next(events).token_id for _ in range(2)]
        wide = engine.submit(prompts[2], "k0", _greedy(10))
        tail = [e.token_id for e in events if e.token_id is not None and not e.special]
        assert head + tail == reference_tokens(tiny_llama, loras[1], short, 30)
        joined = wide.result()
        assert joined.token_ids == reference_tokens(tiny_llama, loras[0], prompts[2], 10)
        assert joined.batch_rows_max == 2 and engine.stats.kv_blocks == blocks + 2  # its own, then the merged one
    finally:
        engine.stop()


def test_a_long_answer_grows_its_block_in_the_engine(tiny_llama):
    engine = make_engine(tiny_llama, kv_cache="preallocated")
    try:
        engine.cache_plan = type(engine.cache_plan)(preallocate=True, max_rows=16, grow=8)
        prompt = engine.encode_chat([{"role": "user", "content": "hi"}])
        done = engine.generate(prompt, None, max_tokens=30, temperature=0, ignore_eos=True)
        assert done.token_ids == reference_tokens(tiny_llama, None, prompt, 30)
        assert engine.stats.kv_growths >= 2
    finally:
        engine.stop()


def test_concurrent_clients_get_the_answer_they_get_alone(tiny_llama, loras, poisoned_blocks):
    engine = make_engine(tiny_llama, kv_cache="preallocated", batch_window_s=0.0)
    try:
        for i, path in enumerate(loras):
            engine.load_adapter(f"k{i}", path)
        prompt = engine.encode_chat([{"role": "user", "content": "Write about rain"}])
        jobs = [(m, n) for m, n in zip([None, "k0", "k1"] * 3, [9, 17, 5, 30, 12, 21, 3, 14, 26])]
        alone = [engine.generate(prompt, m, max_tokens=n, temperature=0, ignore_eos=True).token_ids for m, n in jobs]
        got: list = [None] * len(jobs)

        def run(i):
            time.sleep(0.01 * i)
            got[i] = engine.submit(prompt, jobs[i][0], _greedy(jobs[i][1])).result()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [c.token_ids for c in got] == alone
        assert max(c.batch_rows_max for c in got) >= 2
    finally:
        engine.stop()


def test_the_cache_is_chosen_per_device(tiny_llama):
    assert use_preallocated("auto", "cuda") is True
    assert use_preallocated("auto", torch.device("cuda", 0)) is True
    assert use_preallocated("dynamic", "cuda") is False
    assert use_preallocated("preallocated", "cpu") is True
    assert use_preallocated("auto", "cpu") is False  # bench/serve_kv_cache.py: no faster on CPU
    with pytest.raises(ConfigError, match="preallocated"):
        use_preallocated("static", "cpu")
    engine = make_engine(tiny_llama)  # 'auto' on this CPU
    try:
        assert engine.describe()["kv_cache"] == "dynamic"
        prompt = engine.encode_chat([{"role": "user", "content": "hi"}])
        engine.generate(prompt, None, max_tokens=3, temperature=0)
        assert engine.stats.kv_blocks == 0
    finally:
        engine.stop()


def test_block_rows_leave_room_for_newcomers():
    assert [block_rows(n, 16) for n in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]
    assert block_rows(20, 16) == 20
