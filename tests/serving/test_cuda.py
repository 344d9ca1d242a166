"""The embedded engine on CUDA (issue 19), marked ``gpu``: skipped with the reason on a
machine without one; `bench/gpu_device.sh` runs them on a lent H100/H200.

Greedy parity with plain peft on the same device and dtype (in bf16: every token within
bf16's rounding of plain peft's best, :func:`tests.builders.greedy_gaps`), a mixed batch of
the base and several adapters included, on the preallocated KV cache
(backend/serving/kv_cache.py: blocks on the device, written in place, newcomers merged into
them); hot swaps under streaming load fail nothing; a base served by ``Engine.from_base``
lives on the GPU, and so do its adapters and the KV cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backend.serving.requests import SamplingParams
from tests.builders import bf16_tie, greedy_gaps, make_engine, make_lora, picked_tokens, plain_peft, reference_tokens

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_loras(tiny_llama, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("cuda-loras")
    return [make_lora(tiny_llama, root / f"lora{i}", seed=40 + i) for i in range(3)]


def _greedy(n):
    return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_a_mixed_batch_on_cuda_matches_plain_peft_on_cuda(tiny_llama, cuda_loras, dtype_name):
    import torch

    dtype = getattr(torch, dtype_name)
    engine = make_engine(tiny_llama, dtype=dtype, device="cuda", batch_window_s=0.3)
    try:
        assert engine.device.type == "cuda"
        assert engine.describe()["kv_cache"] == "preallocated"  # 'auto' on CUDA
        for i, path in enumerate(cuda_loras):
            engine.load_adapter(f"a{i}", path)
        prompt = engine.encode_chat([{"role": "user", "content": "Tell me about the autumn leaves"}])
        models = [None, "a0", "a1", "a2"]
        handles = {m: engine.submit(prompt, m, _greedy(12)) for m in models}
        picked = {m: picked_tokens(handles[m]) for m in models}  # every token, specials too
        assert max(handles[m].batch_rows_max for m in models) == 4  # they shared passes
        for model, path in zip(models, [None, *cuda_loras]):
            if dtype is torch.float32:
                expected = reference_tokens(tiny_llama, path, prompt, 12, dtype=dtype, device="cuda")
                assert picked[model] == expected, model
            else:  # bf16: a batch and one row take different kernels, and greedy may part on a near-tie
                gaps, scale = greedy_gaps(plain_peft(tiny_llama, path, dtype, "cuda"), prompt, picked[model])
                assert max(gaps) <= bf16_tie(scale), (model, gaps)
        assert engine.stats.kv_blocks >= 1, "the batch did not run on the preallocated cache"

        if dtype is not torch.float32:
            return  # bf16: the first part is the check
        # newcomers join the running answer: into the block's free rows, then into a larger block
        long = engine.submit(prompt, "a0", _greedy(60))
        events = iter(long)
        head = [next(events).token_id for _ in range(5)]
        late = [("a1", 7), (None, 12), ("a2", 5), ("a0", 9), (None, 3)]
        joined = [engine.submit(prompt, m, _greedy(n)) for m, n in late]
        tail = [e.token_id for e in events if e.token_id is not None and not e.special]
        assert head + tail == reference_tokens(tiny_llama, cuda_loras[0], prompt, 60, dtype=dtype, device="cuda")
        for (model, n), handle in zip(late, joined):
            adapter = None if model is None else cuda_loras[int(model[1])]
            got = handle.result()
            assert got.batch_rows_max >= 2, model
            assert got.token_ids == reference_tokens(tiny_llama, adapter, prompt, n, dtype=dtype, device="cuda"), model
        assert engine.stats.kv_joins_in_place + engine.stats.kv_blocks >= 3
    finally:
        engine.stop()


def test_the_preallocated_cache_lives_on_the_gpu_and_is_written_in_place(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    from backend.serving.kv_cache import PreallocatedCache

    # fp32: this checks where the blocks live and that they stay put; bf16 parity is the engine test's
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).to("cuda").eval()
    prompt = list(range(5, 25))
    cache = PreallocatedCache(model.config.num_hidden_layers, rows=1, length=len(prompt) + 40)
    ids, tokens, pointers = torch.tensor([prompt], device="cuda"), [], set()
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        for _ in range(30):
            tokens.append(int(out.logits[0, -1].argmax()))
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(input_ids=torch.tensor([[tokens[-1]]], device="cuda"), attention_mask=mask,
                        past_key_values=cache, use_cache=True)
            pointers.add(cache.layers[0].key_store.data_ptr())
    assert cache.layers[0].key_store.device.type == "cuda"
    assert len(pointers) == 1 and cache.layers[0].allocations == 1
    assert tokens == reference_tokens(tiny_llama, None, prompt, 30, dtype=torch.float32, device="cuda")


def test_hot_swaps_under_streaming_load_on_cuda_fail_nothing(tiny_llama, cuda_loras):
    import torch

    # fp32: the 8 clients' answers are compared token for token with one answered alone, and
    # cuBLAS picks its bf16 kernels by batch size, so bf16 rows could tie differently on the tiny model
    engine = make_engine(tiny_llama, dtype=torch.float32, device="cuda")
    try:
        engine.load_adapter("steady", cuda_loras[0])
        prompt = engine.encode_chat([{"role": "user", "content": "Write about rain"}])
        alone = engine.generate(prompt, "steady", max_tokens=24, temperature=0, ignore_eos=True).token_ids
        failures, answers = [], []

        def client():
            try:
                answers.append(engine.submit(prompt, "steady", _greedy(24)).result().token_ids)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                failures.append(exc)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for i in range(10):  # swaps into slots on the device while the clients generate
            engine.load_adapter("swapped", cuda_loras[1 + i % 2], inplace=True)
        for thread in threads:
            thread.join(120)
        assert failures == [] and len(answers) == 8
        assert all(tokens == alone for tokens in answers)
        lora_a = next(p for n, p in engine.model.named_parameters() if "lora_A" in n)
        assert lora_a.device.type == "cuda"
    finally:
        engine.stop()


def test_a_base_served_from_settings_lives_on_the_gpu(tiny_llama, tmp_path):
    from backend.serving.engine import Engine
    from backend.settings import Settings

    engine = Engine.from_base(str(tiny_llama), Settings(home=tmp_path)).start()
    try:
        assert engine.device.type == "cuda"
        assert engine.describe()["dtype"] == "bfloat16"  # auto: bf16 on a GPU that has it
        assert engine.describe()["kv_cache"] == "preallocated"
        prompt = engine.encode_chat([{"role": "user", "content": "hi"}])
        assert engine.generate(prompt, None, max_tokens=4, temperature=0).token_ids
    finally:
        engine.stop()
