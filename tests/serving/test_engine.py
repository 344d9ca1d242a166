"""The serving engine on the tiny Llama: parity with plain peft, mixed batches, hot swap, refusals."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from backend.errors import AdapterMismatch, AdapterNotFound, Overloaded, PromptTooLong
from backend.serving.registry import IDLE_ADAPTER
from backend.serving.requests import SamplingParams
from tests.builders import bf16_tie, greedy_gaps, make_engine, make_lora, picked_tokens, plain_peft, reference_tokens


@pytest.fixture(scope="module")
def loras(tiny_llama, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("loras")
    return [make_lora(tiny_llama, root / f"lora{i}", seed=i) for i in range(3)]


@pytest.fixture()
def engine(tiny_llama):
    engine = make_engine(tiny_llama)
    yield engine
    engine.stop()


def _prompt(engine, text="Tell me about the autumn leaves"):
    return engine.encode_chat([{"role": "user", "content": text}])


def _held(engine) -> set[str]:
    """peft adapters that still hold weights some name or request may use (not idle, not a free slot)."""
    with engine.registry.lock:
        free = {slot.name for slots in engine.registry.slots.free.values() for slot in slots}
    return set(engine.model.peft_config) - {IDLE_ADAPTER} - free


def _wait_until(condition, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _greedy(n, **params):
    return SamplingParams(max_tokens=n, temperature=0, **params)


def test_mixed_batch_matches_plain_peft_greedy(engine, loras, tiny_llama):
    for i, path in enumerate(loras):
        engine.load_adapter(f"l{i}", path)
    prompts = [_prompt(engine), _prompt(engine, "Billing question: I was charged twice")]
    models = [None, "l0", "l1", "l2"]
    handles = [(p, m, engine.submit(p, m, _greedy(12))) for p in prompts for m in models]
    results = [(p, m, h.result()) for p, m, h in handles]
    outputs = {}
    for prompt, model, completion in results:
        adapter = None if model is None else loras[int(model[1])]
        expected = reference_tokens(tiny_llama, adapter, prompt, 12)
        assert completion.token_ids == expected[: len(completion.token_ids)], (model, completion.text)
        assert completion.batch_rows_max == 8  # all eight rows ran in one batch
        outputs[(tuple(prompt), model)] = completion.token_ids
    # the adapters really change the answer
    assert len({tuple(v) for k, v in outputs.items() if k[0] == tuple(prompts[0])}) > 1


def _bf16_engine(tiny_llama, loras):
    """A bf16 engine with the three adapters as l0..l2, the prompt, and the models to ask."""
    import torch

    engine = make_engine(tiny_llama, dtype=torch.bfloat16)
    for i, path in enumerate(loras):
        engine.load_adapter(f"l{i}", path)
    return engine, _prompt(engine), [None, "l0", "l1", "l2"]


def test_bf16_base_matches_plain_peft_in_bf16(loras, tiny_llama):
    """The endpoint's default dtype on bf16 hardware: the same greedy tokens as plain
    peft loaded in bf16, for the base and each adapter, alone and in one mixed batch."""
    import torch

    engine, prompt, models = _bf16_engine(tiny_llama, loras)
    try:
        expected = {m: reference_tokens(tiny_llama, None if m is None else loras[int(m[1])], prompt, 10,
                                        dtype=torch.bfloat16) for m in models}
        alone = {m: engine.submit(prompt, m, _greedy(10)).result().token_ids for m in models}
        handles = {m: engine.submit(prompt, m, _greedy(10)) for m in models}
        together = {m: h.result() for m, h in handles.items()}
    finally:
        engine.stop()
    for m in models:
        assert alone[m] == expected[m][: len(alone[m])], m
        assert together[m].token_ids == expected[m][: len(together[m].token_ids)], m
    assert max(c.batch_rows_max for c in together.values()) == len(models)
    assert len({tuple(v) for v in alone.values()}) > 1


def test_longer_bf16_answers_are_greedy_up_to_bf16_ties_and_another_adapters_are_not(loras, tiny_llama):
    """The criterion the CUDA parity test uses in bf16 (tests/serving/test_cuda.py), checked
    where it can fail here: 24 tokens of a mixed bf16 batch, where a row may part from plain
    peft's greedy answer on a near-tie, are each within :func:`bf16_tie` of the reference's
    best logit; the same tokens read under another adapter are not."""
    import torch

    engine, prompt, models = _bf16_engine(tiny_llama, loras)
    try:
        handles = {m: engine.submit(prompt, m, _greedy(24)) for m in models}
        answers = {m: picked_tokens(h) for m, h in handles.items()}
    finally:
        engine.stop()
    adapters = [None, *loras]
    for i, m in enumerate(models):
        assert len(answers[m]) == 24
        gaps, scale = greedy_gaps(plain_peft(tiny_llama, adapters[i], torch.bfloat16), prompt, answers[m])
        assert max(gaps) <= bf16_tie(scale), (m, gaps)
        other, _ = greedy_gaps(plain_peft(tiny_llama, adapters[(i + 1) % 4], torch.bfloat16), prompt, answers[m])
        assert max(other) > bf16_tie(scale), (m, other)


def test_prepacked_linears_give_the_same_numbers(tiny_llama):
    """oneDNN-prepacked bf16 Linears: bit-for-bit the plain model's logits, every Linear packed,
    a call with autograd recording takes the plain weight (so gradients still flow)."""
    import torch
    from transformers import AutoModelForCausalLM

    from backend.hardware.prepack import available, is_packed, prepack_linears

    if not available():
        pytest.skip("this CPU/torch build has no oneDNN bf16 packed linear (no bf16 units): nothing to pack")
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).eval()
    packed = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16).eval()
    linears = [m for m in packed.modules() if type(m) is torch.nn.Linear]
    assert prepack_linears(packed) == len(linears) > 0
    assert all(is_packed(m) for m in linears)
    ids = torch.randint(0, plain.config.vocab_size, (3, 11))
    with torch.inference_mode():
        assert torch.equal(plain(ids).logits, packed(ids).logits)
    head = packed.get_output_embeddings()
    x = torch.randn(2, head.in_features, dtype=torch.bfloat16, requires_grad=True)
    head(x).float().sum().backward()
    assert x.grad is not None and head.weight.grad is not None
    assert prepack_linears(AutoModelForCausalLM.from_pretrained(tiny_llama)) == 0  # fp32: nothing packed


def test_a_packed_linear_gives_f_linears_bits_at_every_row_count():
    """At a real model's widths oneDNN picks its kernel by the row count: with AMX, F.linear
    moves to AMX tiles above 32 rows while the weight packed for one row does not, and the
    two round differently. A packed module must still give F.linear's bits at every count:
    the packed weight for the decode rows it was checked at, F.linear beyond."""
    import torch

    from backend.hardware.prepack import available, is_packed, prepack_linears

    if not available():
        pytest.skip("this CPU/torch build has no oneDNN bf16 packed linear (no bf16 units): nothing to pack")
    generator = torch.Generator().manual_seed(1)
    layers = torch.nn.Sequential(torch.nn.Linear(576, 1536, bias=False), torch.nn.Linear(1536, 576, bias=True))
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.05)
    layers = layers.to(torch.bfloat16)
    plain = [(layer.weight.clone(), None if layer.bias is None else layer.bias.clone()) for layer in layers]
    assert prepack_linears(layers, max_rows=16) == 2 and all(is_packed(layer) for layer in layers)
    with torch.inference_mode():
        for rows in range(1, 65):
            for layer, (weight, bias) in zip(layers, plain):
                x = torch.randn(rows, weight.shape[1], generator=generator).to(torch.bfloat16)
                assert torch.equal(layer(x), torch.nn.functional.linear(x, weight, bias)), (rows, tuple(weight.shape))


def test_whether_packing_is_available_does_not_depend_on_the_first_callers_dispatch_mode():
    """The answer is cached for the process: asked first from inside the memory tests' counter,
    a dispatch mode that reads every output's storage (a packed weight is opaque to it), it must
    still be this CPU's answer, not "no" for the rest of the process."""
    from backend.hardware.prepack import available
    from tests.builders import LiveBytes

    with LiveBytes():
        inside = available.__wrapped__()
    assert inside == available.__wrapped__() == available()


def test_engine_packs_bf16_bases(loras, tiny_llama):
    """A bf16 engine serves from packed Linears (adapters still change the answer); an fp32 one
    packs nothing. Packing needs oneDNN's bf16 reorder, which CPUs without bf16 units lack."""
    import torch

    from backend.hardware.prepack import available

    if not available():
        pytest.skip("this CPU/torch build has no oneDNN bf16 packed linear (no bf16 units): nothing to pack")
    engine = make_engine(tiny_llama, dtype=torch.bfloat16, threads=2)
    try:
        assert engine.describe()["prepacked_linears"] > 0
        engine.load_adapter("l0", loras[0])
        prompt = _prompt(engine)
        assert engine.submit(prompt, "l0", _greedy(6)).result().token_ids != \
            engine.submit(prompt, None, _greedy(6)).result().token_ids
    finally:
        engine.stop()
    fp32 = make_engine(tiny_llama, prepack=True)
    try:
        assert fp32.describe()["prepacked_linears"] == 0
    finally:
        fp32.stop()


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_engine_scheduler_owns_the_intraop_threads(tiny_llama, dtype_name):
    """The scheduler thread alone keeps its torch thread count: threads that start torch work
    after it get one (see backend.hardware.threads). Holds on every CPU, whatever the dtype."""
    import torch

    engine = make_engine(tiny_llama, dtype=getattr(torch, dtype_name), threads=2)
    try:
        assert engine.submit(_prompt(engine), None, _greedy(3)).result().completion_tokens >= 1
        assert engine.run_between_steps(torch.get_num_threads) == 2  # runs in the scheduler thread
        seen = []
        other = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        other.start()
        other.join()
        assert seen == [1]
    finally:
        engine.stop()


def test_serving_dtype_choices():
    import torch

    from backend.hardware.device import serving_dtype
    from backend.errors import ConfigError

    assert serving_dtype("fp32") is torch.float32 and serving_dtype("bf16") is torch.bfloat16
    assert serving_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ConfigError, match="fp16"):
        serving_dtype("fp16")


def test_late_request_joins_running_batch_with_exact_tokens(engine, loras, tiny_llama):
    """A request that arrives mid-generation is merged into the running batch (left padding)."""
    engine.load_adapter("l0", loras[0])
    long_prompt = _prompt(engine, "Extract the product specs as JSON: weight 2 kg, colour blue, price 30")
    short_prompt = _prompt(engine, "hi")
    first = engine.submit(long_prompt, "l0", _greedy(40))
    events = iter(first)
    for _ in range(5):  # the first request is decoding
        next(events)
    second = engine.submit(short_prompt, None, _greedy(20))
    tail = list(events)
    late = second.result()
    assert late.batch_rows_max == 2, "the late request should have joined the running batch"
    assert late.token_ids == reference_tokens(tiny_llama, None, short_prompt, 20)[: len(late.token_ids)]
    ids = [e.token_id for e in tail if e.token_id is not None and not e.special]
    assert len(ids) + 5 <= 40
    assert tail[-1].finish_reason in {"stop", "length"}


@pytest.mark.parametrize("trial", range(6))
def test_requests_arriving_at_random_times_get_the_answer_they_get_alone(engine, loras, trial):
    """2-8 greedy requests over the base and several adapters, arriving at random moments
    (joining a running batch or starting one), streamed or not: each one's tokens and text
    equal the same request served alone. (A request joining a running batch once made every
    row already in it send its last token again: "TheThe fruit ...".)"""
    import random

    rng = random.Random(1000 + trial)
    for i, path in enumerate(loras):
        engine.load_adapter(f"l{i}", path)
    texts = ["Tell me about the autumn leaves", "hi", "Billing question: I was charged twice",
             "Classify the wine as red or white", "Bug report: the app crashes"]
    # answers run to their length (no end-of-sequence stop), so the arrivals overlap them
    requests = [(_prompt(engine, rng.choice(texts)), rng.choice([None, "l0", "l1", "l2"]),
                 rng.randint(12, 40), rng.random() < 0.5, 0.0 if i == 0 else rng.uniform(0.0, 0.06))
                for i in range(rng.randint(2, 8))]
    alone = [engine.submit(p, m, _greedy(n, ignore_eos=True)).result() for p, m, n, _, _ in requests]

    results: list = [None] * len(requests)

    def run(index: int) -> None:
        prompt, model, n, streamed, delay = requests[index]
        time.sleep(delay)
        handle = engine.submit(prompt, model, _greedy(n, ignore_eos=True))
        if streamed:
            events = list(handle)
            ids = [e.token_id for e in events if e.token_id is not None and not e.special]
            results[index] = (ids, "".join(e.text for e in events), events[-1].generated_text,
                              handle.batch_rows_max)
        else:
            done = handle.result()
            results[index] = (done.token_ids, done.text, done.text, done.batch_rows_max)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index, (expected, got) in enumerate(zip(alone, results)):
        ids, streamed_text, final_text, _ = got
        assert ids == expected.token_ids, (index, requests[index][1], final_text, expected.text)
        assert streamed_text == final_text == expected.text, index
    assert max(r[3] for r in results) >= 2, "no request shared a batch: the test proves nothing"


def test_a_request_joining_mid_answer_leaves_the_running_answer_unchanged(engine, loras):
    """The row already decoding sends each of its tokens once, whatever joins its batch."""
    engine.load_adapter("l0", loras[0])
    prompt = _prompt(engine, "Tell me about the autumn leaves")
    expected = engine.submit(prompt, "l0", _greedy(30)).result()
    first = engine.submit(prompt, "l0", _greedy(30))
    events = iter(first)
    head = [next(events) for _ in range(3)]
    joiners = [engine.submit(_prompt(engine, "hi"), m, _greedy(5)) for m in (None, "l0")]
    tail = list(events)
    for joiner in joiners:
        assert joiner.result().batch_rows_max >= 2
    ids = [e.token_id for e in head + tail if e.token_id is not None and not e.special]
    assert ids == expected.token_ids
    assert "".join(e.text for e in head + tail) == expected.text


def test_streaming_events_concatenate_to_the_answer(engine, loras):
    engine.load_adapter("l1", loras[1])
    handle = engine.submit(_prompt(engine), "l1", _greedy(15))
    events = list(handle)
    assert len(events) >= 2
    assert events[-1].finish_reason in {"stop", "length"}
    assert "".join(e.text for e in events) == events[-1].generated_text


def test_stop_strings_and_max_tokens(engine):
    prompt = _prompt(engine)
    free = engine.submit(prompt, None, _greedy(30)).result()
    assert free.completion_tokens <= 30
    if len(free.text) >= 4:
        stop = free.text[2:4]
        cut = engine.submit(prompt, None, SamplingParams(max_tokens=30, temperature=0, stop=[stop])).result()
        assert cut.finish_reason == "stop"
        assert cut.text == free.text[: free.text.find(stop)]
    short = engine.submit(prompt, None, _greedy(3)).result()
    assert short.completion_tokens <= 3


def test_seeded_sampling_is_reproducible(engine):
    prompt = _prompt(engine)
    a = engine.submit(prompt, None, SamplingParams(max_tokens=12, temperature=1.0, seed=7)).result()
    b = engine.submit(prompt, None, SamplingParams(max_tokens=12, temperature=1.0, seed=7)).result()
    assert a.token_ids == b.token_ids


def test_inplace_swap_keeps_in_flight_request_on_old_weights(engine, loras, tiny_llama):
    engine.load_adapter("swap", loras[0])
    prompt = _prompt(engine)
    handle = engine.submit(prompt, "swap", _greedy(30))
    events = iter(handle)
    next(events)
    old_internal = engine.adapters()["swap"].internal
    engine.load_adapter("swap", loras[1], inplace=True)
    assert engine.adapters()["swap"].internal != old_internal
    assert old_internal in _held(engine)  # the running request still uses it
    rest = list(events)
    assert rest[-1].finish_reason in {"stop", "length"}
    # the request that started before the swap got exactly the old adapter's tokens
    done = [t for t in [handle._request.generated][0]]
    assert done == reference_tokens(tiny_llama, loras[0], prompt, 30)[: len(done)]
    # new requests get the new weights, and the old ones are freed once unused
    fresh = engine.submit(prompt, "swap", _greedy(30)).result()
    assert fresh.token_ids == reference_tokens(tiny_llama, loras[1], prompt, 30)[: len(fresh.token_ids)]
    assert _wait_until(lambda: old_internal not in _held(engine))  # released once unused
    assert engine.adapters()["swap"].path == str(loras[1].resolve())


def test_unload_while_in_flight_and_unknown_names(engine, loras):
    engine.load_adapter("gone", loras[2])
    handle = engine.submit(_prompt(engine), "gone", _greedy(20))
    engine.unload_adapter("gone")
    assert handle.result().finish_reason in {"stop", "length"}
    with pytest.raises(AdapterNotFound) as info:
        engine.submit(_prompt(engine), "gone", _greedy(5))
    assert "tiny-llama" in str(info.value)
    with pytest.raises(AdapterNotFound):
        engine.unload_adapter("gone")
    # the weights are released (deleted, or back to the slot pool) right after the last request
    assert _wait_until(lambda: _held(engine) == set())


def test_refuses_adapters_that_do_not_fit(engine, tiny_llama, tiny_llama_other, tmp_path):
    other = make_lora(tiny_llama_other, tmp_path / "other", seed=3)
    with pytest.raises(AdapterMismatch) as info:
        engine.load_adapter("other", other)
    assert "inputs" in str(info.value) or "outputs" in str(info.value)
    not_lora = tmp_path / "notlora"
    not_lora.mkdir()
    (not_lora / "readme.txt").write_text("hello")
    with pytest.raises(AdapterMismatch, match="not a PEFT adapter"):
        engine.load_adapter("notlora", not_lora)
    renamed = make_lora(tiny_llama, tmp_path / "renamed", seed=4)
    config = (renamed / "adapter_config.json")
    config.write_text(config.read_text().replace(str(tiny_llama), "meta-llama/Llama-3.1-70B"))
    with pytest.raises(AdapterMismatch, match="Llama-3.1-70B"):
        engine.load_adapter("renamed", renamed)
    # still serving, and nothing half-loaded stayed behind
    assert engine.generate(_prompt(engine), None, max_tokens=3, temperature=0).completion_tokens >= 1
    engine.wait_for_spares()
    assert _held(engine) == set()


def test_prompt_too_long_and_overloaded(tiny_llama):
    engine = make_engine(tiny_llama, max_queue=2)
    try:
        with pytest.raises(PromptTooLong, match="context"):
            engine.submit(list(range(5, 5 + engine.context_limit)), None, _greedy(2))
        with engine._model_lock:  # stall the scheduler so requests pile up
            handles = []
            with pytest.raises(Overloaded) as info:
                for _ in range(10):
                    handles.append(engine.submit(_prompt(engine), None, _greedy(2)))
                    time.sleep(0.05)
            assert info.value.retry_after > 0
        assert all(h.result().completion_tokens >= 1 for h in handles)
    finally:
        engine.stop()


def test_loads_while_generating_never_fail_requests(engine, loras):
    """Loads, in-place swaps and unloads racing with a stream of requests: none fails."""
    engine.load_adapter("a", loras[0])
    failures, done = [], threading.Event()

    def traffic():
        while not done.is_set():
            for model in (None, "a"):
                try:
                    result = engine.submit(_prompt(engine), model, _greedy(6)).result()
                    if result.finish_reason not in {"stop", "length"}:
                        failures.append(result.finish_reason)
                except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                    failures.append(repr(exc))

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(6):
        engine.load_adapter("a", loras[i % 3], inplace=True)
        engine.load_adapter("b", loras[(i + 1) % 3])
        engine.unload_adapter("b")
    done.set()
    for w in workers:
        w.join()
    assert failures == []
    assert engine.stats.finished > 0


def test_slot_loaded_adapter_matches_plain_peft_and_keeps_nothing_of_the_last(engine, loras, tiny_llama, tmp_path):
    """A swap into a reused slot gives exactly plain peft's tokens: no weight of the slot's
    previous adapter survives, and a different alpha (scaling) is honoured."""
    import torch

    prompt = _prompt(engine)
    engine.load_adapter("first", loras[0])  # peft's path: the shape is new
    assert not engine.adapters()["first"].slot
    engine.wait_for_spares()
    second = engine.load_adapter("second", loras[1])
    assert second.slot  # a spare slot prepared in the background
    assert engine.generate(prompt, "second", max_tokens=12, temperature=0).token_ids == \
        reference_tokens(tiny_llama, loras[1], prompt, 12)[:12]
    slot_name = second.internal
    engine.unload_adapter("second")
    assert _wait_until(lambda: slot_name not in _held(engine))
    # same shape, other weights and another alpha: it must land in a free slot, maybe the one just freed
    louder = make_lora(tiny_llama, tmp_path / "louder", seed=11, alpha=16)
    loads_before = engine.stats.slot_loads
    for name in ("third", "fourth"):  # two loads take both free slots, so the freed one is reused
        engine.load_adapter(name, louder)
    assert engine.stats.slot_loads == loads_before + 2
    reused = [n for n in ("third", "fourth") if engine.adapters()[n].internal == slot_name]
    assert reused, "the freed slot should have been reused"
    expected = reference_tokens(tiny_llama, louder, prompt, 12)
    for name in ("third", "fourth"):
        assert engine.generate(prompt, name, max_tokens=12, temperature=0).token_ids == expected[:12]
    # and the slot's tensors are exactly the new file's
    from safetensors.torch import load_file

    saved = load_file(str(louder / "adapter_model.safetensors"))
    slot = engine.registry.slots.slots[slot_name]
    assert all(torch.equal(slot.tensors[key], saved[key]) for key in saved)
    assert engine.generate(prompt, "first", max_tokens=12, temperature=0).token_ids == \
        reference_tokens(tiny_llama, loras[0], prompt, 12)[:12]


def test_other_shapes_take_peft_path_and_get_their_own_slots(engine, loras, tiny_llama, tmp_path):
    """An adapter of another rank does not fit the r-4 slots: peft loads it, exactly."""
    engine.load_adapter("r4", loras[0])
    engine.wait_for_spares()
    wide = make_lora(tiny_llama, tmp_path / "wide", seed=5, r=8, alpha=8)
    info = engine.load_adapter("r8", wide)
    assert not info.slot
    prompt = _prompt(engine)
    assert engine.generate(prompt, "r8", max_tokens=10, temperature=0).token_ids == \
        reference_tokens(tiny_llama, wide, prompt, 10)[:10]
    engine.wait_for_spares()
    assert engine.load_adapter("r8b", wide).slot  # its own spares were prepared


def test_rslora_in_a_slot_and_lora_bias_on_pefts_path_share_a_batch(engine, loras, tiny_llama, tmp_path):
    """rsLoRA and per-module alpha survive the slot copy and the mixed batch; a LoRA with bias (not plain LoRA) is served by
    peft's mixed-batch path; both in one batch with a plain adapter and the base, all exact."""
    engine.load_adapter("plain", loras[0])
    engine.wait_for_spares()
    rs = make_lora(tiny_llama, tmp_path / "rs", seed=21, use_rslora=True, alpha_pattern={"q_proj": 32})
    biased = make_lora(tiny_llama, tmp_path / "biased", seed=22, lora_bias=True)
    assert engine.load_adapter("rs", rs).slot
    biased_info = engine.load_adapter("biased", biased)
    assert not biased_info.slot and biased_info.internal in engine.registry.peft_routed
    prompt = _prompt(engine)
    paths = {None: None, "plain": loras[0], "rs": rs, "biased": biased}
    expected = {m: reference_tokens(tiny_llama, p, prompt, 10) for m, p in paths.items()}
    # plain adapters only: the stacked path; with the biased one: peft's path for the whole batch
    for models in ([None, "plain", "rs"], [None, "plain", "rs", "biased"]):
        handles = {m: engine.submit(prompt, m, _greedy(10)) for m in models}
        for model, handle in handles.items():
            done = handle.result()
            assert done.token_ids == expected[model][: len(done.token_ids)], (models, model)
        assert max(h.batch_rows_max for h in handles.values()) >= 2


def test_adapter_on_the_lm_head_is_applied(engine, tiny_llama, tmp_path):
    """The engine projects the last hidden state itself only while the head is a plain
    Linear; an adapter that wraps the head goes through the full model (peft's path)."""
    path = make_lora(tiny_llama, tmp_path / "head", seed=5, targets=["q_proj", "lm_head"], scale=2.0)
    engine.load_adapter("head", path)
    prompt = _prompt(engine)
    got = engine.submit(prompt, "head", _greedy(8)).result().token_ids
    assert got == reference_tokens(tiny_llama, path, prompt, 8)[: len(got)]
    base = engine.submit(prompt, None, _greedy(8)).result().token_ids
    assert base == reference_tokens(tiny_llama, None, prompt, 8)[: len(base)]
    assert got != base
