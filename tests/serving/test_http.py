"""The real HTTP server on a free loopback port, driven by the openai SDK and InferenceClient."""

from __future__ import annotations

import json
import stat
import threading
import time

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient, constants

from backend.errors import AdapterMismatch, AdapterNotFound
from backend.serving.auth import api_token
from backend.serving.client import ServingClient
from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from tests.builders import make_engine, make_lora, reference_tokens

TOKEN = "test-token-123"  # of the servers a test starts itself


def _openai(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


MESSAGES = [{"role": "user", "content": "Tell me about the autumn leaves"}]


def test_chat_with_base_and_adapter_matches_plain_peft(server, client, server_loras, tiny_llama):
    url, engine, _ = server
    client.load_adapter("chat-a", str(server_loras[0]))
    oa = _openai(url)
    prompt = engine.encode_chat(MESSAGES)
    answers = {}
    for model, adapter in (("tiny-llama", None), ("chat-a", server_loras[0])):
        out = oa.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)
        answers[model] = out.choices[0].message.content
        expected = engine.tokenizer.decode(reference_tokens(tiny_llama, adapter, prompt, 12),
                                           skip_special_tokens=True)
        assert expected.startswith(answers[model])
        assert out.usage.prompt_tokens == len(prompt)
    assert answers["tiny-llama"] != answers["chat-a"]
    models = {m.id: m for m in oa.models.list().data}
    assert models["chat-a"].model_extra["parent"] == "tiny-llama"
    assert models["chat-a"].model_extra["root"] == str(server_loras[0].resolve())
    client.unload_adapter("chat-a")


def test_streaming_sse_ends_with_done_and_matches_non_streaming(server, client, server_loras):
    url, _, _ = server
    client.load_adapter("stream-a", str(server_loras[1]))
    body = {"model": "stream-a", "messages": MESSAGES, "max_tokens": 15, "temperature": 0, "stream": True}
    lines = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    whole = client.chat("stream-a", MESSAGES, max_tokens=15, temperature=0)
    assert streamed == whole
    assert "".join(client.stream_chat("stream-a", MESSAGES, max_tokens=15, temperature=0)) == whole
    # plain completions stream too
    oa = _openai(url)
    pieces = list(oa.completions.create(model="stream-a", prompt="The leaves", max_tokens=8, temperature=0,
                                        stream=True))
    assert "".join(p.choices[0].text for p in pieces) == client.complete("stream-a", "The leaves",
                                                                         max_tokens=8, temperature=0)
    client.unload_adapter("stream-a")


def test_token_ids_are_the_prompts_and_every_token_picked_as_vllm_returns_them(server, client, server_loras,
                                                                                  tiny_llama):
    """``return_token_ids`` (vLLM's field): chat puts the prompt's ids on the response,
    text completions on the choice; the answer's ids are plain peft's greedy tokens, special
    ones included; a stream sends each chunk's own ids and they add up to the whole."""
    url, engine, _ = server
    client.load_adapter("ids-a", str(server_loras[2]))
    prompt = engine.encode_chat(MESSAGES, "ids-a")
    reference = reference_tokens(tiny_llama, server_loras[2], prompt, 10)
    body = {"model": "ids-a", "messages": MESSAGES, "max_tokens": 10, "temperature": 0, "ignore_eos": True}
    whole = httpx.post(url + "/v1/chat/completions", json={**body, "return_token_ids": True}, timeout=60).json()
    assert whole["prompt_token_ids"] == prompt
    assert whole["choices"][0]["token_ids"] == reference and len(reference) == 10
    assert client.chat_token_ids("ids-a", MESSAGES, max_tokens=10, temperature=0,
                                 ignore_eos=True) == (prompt, reference)
    plain = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()  # not asked: not sent
    assert "prompt_token_ids" not in plain and "token_ids" not in plain["choices"][0]

    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "return_token_ids": True,
                                                                   "stream": True}, timeout=60) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line and line != "data: [DONE]"]
    assert chunks[0]["prompt_token_ids"] == prompt
    assert [i for c in chunks[1:] for i in c["choices"][0]["token_ids"]] == reference

    text = httpx.post(url + "/v1/completions", json={"model": "ids-a", "prompt": "The leaves", "max_tokens": 6,
                                                      "temperature": 0, "return_token_ids": True}, timeout=60).json()
    choice = text["choices"][0]
    assert choice["prompt_token_ids"] == engine.encode_text("The leaves")
    assert choice["token_ids"] == reference_tokens(tiny_llama, server_loras[2], choice["prompt_token_ids"],
                                                   len(choice["token_ids"]))
    client.unload_adapter("ids-a")


def test_inference_client_tgi_routes_with_adapter_id(server, client, server_loras, monkeypatch):
    # the stock client refuses even loopback traffic in offline mode (ServingClient does not)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    url, engine, _ = server
    client.load_adapter("tgi-a", str(server_loras[2]))
    hf = InferenceClient(base_url=url, api_key="unused")
    base_text = hf.text_generation("The leaves turn", max_new_tokens=10)
    adapter_text = hf.text_generation("The leaves turn", max_new_tokens=10, adapter_id="tgi-a")
    assert base_text != adapter_text
    tokens = list(hf.text_generation("The leaves turn", max_new_tokens=10, adapter_id="tgi-a",
                                     stream=True, details=True))
    assert tokens[-1].generated_text == adapter_text
    assert all(t.token.id is not None for t in tokens)
    detailed = hf.text_generation("The leaves turn", max_new_tokens=10, adapter_id="tgi-a", details=True)
    assert detailed.details.generated_tokens >= 1
    assert detailed.details.finish_reason in {"length", "eos_token", "stop_sequence"}
    chat = hf.chat_completion(MESSAGES, model="tgi-a", max_tokens=8, temperature=0)
    assert chat.choices[0].message.content
    info = httpx.get(url + "/info").json()
    assert info["model_id"] == "tiny-llama" and "tgi-a" in info["adapters"]
    assert httpx.get(url + "/health").status_code == 200
    # /generate_stream speaks TGI's SSE shape
    with httpx.stream("POST", url + "/generate_stream", timeout=60,
                      json={"inputs": "The leaves", "parameters": {"max_new_tokens": 5}}) as response:
        events = [json.loads(line[5:]) for line in response.iter_lines() if line.startswith("data:")]
    assert events[-1]["generated_text"] is not None and events[-1]["details"]["generated_tokens"] >= 1
    assert set(events[0]["token"]) == {"id", "text", "logprob", "special"}
    client.unload_adapter("tgi-a")


def test_unknown_adapter_is_404_naming_known_ones(server, client, server_loras):
    url, _, _ = server
    client.load_adapter("known-a", str(server_loras[0]))
    with pytest.raises(openai.NotFoundError) as info:
        _openai(url).chat.completions.create(model="nope", messages=MESSAGES, max_tokens=3)
    assert "known-a" in str(info.value) and "tiny-llama" in str(info.value)
    body = info.value.body
    assert body["code"] == "model_not_found" and body["type"]
    tgi = httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {"adapter_id": "nope"}})
    assert tgi.status_code == 404
    assert tgi.json()["error_type"] == "not_found" and "known-a" in tgi.json()["error"]
    with pytest.raises(AdapterNotFound):
        client.chat("nope", MESSAGES, max_tokens=3)
    client.unload_adapter("known-a")


def test_refuses_wrong_base_and_not_lora_and_keeps_serving(server, client, tiny_llama_other, tmp_path):
    url, _, _ = server
    other = make_lora(tiny_llama_other, tmp_path / "other", seed=5)
    auth = {"Authorization": f"Bearer {server.settings.api_token}"}
    response = httpx.post(url + "/v1/load_lora_adapter", headers=auth,
                          json={"lora_name": "other", "lora_path": str(other)})
    assert response.status_code == 400
    assert "does not fit" in response.json()["error"]["message"]
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "weights.bin").write_bytes(b"\0" * 10)
    with pytest.raises(AdapterMismatch, match="not a PEFT adapter"):
        client.load_adapter("junk", str(junk))
    assert "other" not in client.adapters() and "junk" not in client.adapters()
    assert client.chat("tiny-llama", MESSAGES, max_tokens=3, temperature=0) is not None


def test_oversize_prompt_is_refused(server):
    url, engine, _ = server
    huge = "leaves " * (engine.context_limit * 2)
    with pytest.raises(openai.BadRequestError) as info:
        _openai(url).chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": huge}],
                                             max_tokens=3)
    assert info.value.body["code"] == "context_length_exceeded"
    assert str(engine.context_limit) in info.value.body["message"]


def test_management_needs_the_bearer_token(server, server_loras):
    url, _, _ = server
    body = {"lora_name": "x", "lora_path": str(server_loras[0])}
    assert httpx.post(url + "/v1/load_lora_adapter", json=body).status_code == 401
    wrong = httpx.post(url + "/v1/load_lora_adapter", json=body, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "x"}).status_code == 401


def test_generated_token_is_stored_with_mode_600(settings):
    token = api_token(settings)
    path = settings.paths.api_token_file
    assert path.read_text().strip() == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_token(settings) == token  # generated once


def test_load_unload_and_inplace_while_a_stream_runs(server, client, server_loras, tiny_llama):
    url, engine, _ = server
    client.load_adapter("live", str(server_loras[0]))
    prompt = engine.encode_chat(MESSAGES)
    expected = engine.tokenizer.decode(reference_tokens(tiny_llama, server_loras[0], prompt, 60),
                                       skip_special_tokens=True)
    streamed, errors = [], []

    def consume():
        try:
            body = {"model": "live", "messages": MESSAGES, "max_tokens": 60, "temperature": 0, "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
                for line in response.iter_lines():
                    streamed.append(line)
        except Exception as exc:  # noqa: BLE001 - the test asserts there is none
            errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    while not any(line.startswith("data: {") for line in streamed[1:]) and reader.is_alive():
        threading.Event().wait(0.01)
    client.load_adapter("live", str(server_loras[1]), inplace=True)
    client.load_adapter("extra", str(server_loras[2]))
    client.unload_adapter("extra")
    reader.join(60)
    assert errors == []
    data = [line for line in streamed if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in data[:-1])
    assert expected.startswith(text) and text  # the old weights, uncorrupted, to the end
    after = client.chat("live", MESSAGES, max_tokens=12, temperature=0)
    new_expected = engine.tokenizer.decode(reference_tokens(tiny_llama, server_loras[1], prompt, 12),
                                           skip_special_tokens=True)
    assert new_expected.startswith(after)
    client.unload_adapter("live")


def test_comparison_runs_as_one_batch(server, client, server_loras):
    url, engine, _ = server
    for i in range(4):
        client.load_adapter(f"cmp{i}", str(server_loras[i]))
    before = len(engine.stats.step_rows)
    answers = client.compare(MESSAGES, ["tiny-llama"] + [f"cmp{i}" for i in range(4)], max_tokens=10,
                             temperature=0)
    assert len(answers) == 5 and len(set(answers.values())) > 1
    rows = list(engine.stats.step_rows)[before:]
    assert max(rows) == 5, f"rows per forward pass were {rows}"
    for i in range(4):
        client.unload_adapter(f"cmp{i}")


def test_metrics_count_requests_and_tokens(server, client):
    url, _, _ = server
    client.chat("tiny-llama", MESSAGES, max_tokens=4, temperature=0)
    text = httpx.get(url + "/metrics").text
    assert 'tunelab_requests_total{route="chat",status="200"}' in text
    generated = [line for line in text.splitlines() if line.startswith("tunelab_generated_tokens_total")]
    assert generated and float(generated[0].split()[-1]) >= 1
    assert "tunelab_queue_depth" in text and "tunelab_request_latency_seconds_bucket" in text


def _metric(url: str, name: str) -> float:
    lines = [line for line in httpx.get(url + "/metrics").text.splitlines() if line.startswith(name + " ")]
    assert lines, f"{name} is not exported"
    return float(lines[0].split()[1])


def test_metrics_and_info_show_slot_loads_and_how_the_engine_serves(server, client, server_loras):
    url, engine, _ = server
    client.load_adapter("slot-a", str(server_loras[0]))
    deadline = time.monotonic() + 30
    while _metric(url, "tunelab_spare_slots_preparing") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(url, "tunelab_spare_slots_preparing") == 0  # spare slots of this shape are ready
    before = _metric(url, "tunelab_adapter_slot_loads")
    client.load_adapter("slot-b", str(server_loras[1]))  # same shape: copied into a spare slot
    assert _metric(url, "tunelab_adapter_slot_loads") == before + 1 == engine.stats.slot_loads
    described = httpx.get(url + "/info").json()["engine"]
    assert described == engine.describe()
    assert described["dtype"] == "float32" and described["prepacked_linears"] == 0  # only bf16 is packed
    assert described["threads"] == engine.threads and described["max_batch"] == engine.max_batch
    client.unload_adapter("slot-a")
    client.unload_adapter("slot-b")


def test_overloaded_is_429_with_retry_after(tiny_llama, tmp_path):
    engine = make_engine(tiny_llama, max_queue=1)
    url, stop = start_in_thread(create_app(engine, settings=Settings(home=tmp_path, api_token=TOKEN)))
    results, threads = [], []

    def post():
        results.append(httpx.post(url + "/v1/completions", json={"model": "tiny-llama", "prompt": "hi",
                                                                 "max_tokens": 2}, timeout=60))

    try:
        with engine._model_lock:  # stall the scheduler: one request taken, one waiting, the rest refused
            for sent in range(1, 5):
                threads.append(threading.Thread(target=post))
                threads[-1].start()
                while engine.stats.requests + engine.stats.rejected < sent:
                    threading.Event().wait(0.01)
            while sum(r.status_code == 429 for r in results) < 2:
                threading.Event().wait(0.01)
        for thread in threads:
            thread.join(60)
        refused = [r for r in results if r.status_code == 429]
        assert len(results) == 4 and len(refused) >= 2
        assert all(r.status_code == 200 for r in results if r not in refused)
        assert int(refused[0].headers["retry-after"]) >= 1
        assert refused[0].json()["error"]["code"] == "overloaded"
    finally:
        stop()
        engine.stop()


def test_restart_restores_adapters(tiny_llama, server_loras, tmp_path, caplog):
    settings = Settings(home=tmp_path, api_token=TOKEN, adapter_roots=[server_loras[0].parent])
    doomed = make_lora(tiny_llama, settings.paths.adapters / "doomed", seed=99)
    url, stop = start_in_thread(create_app(settings=settings, base=str(tiny_llama)))
    try:
        with ServingClient(url, TOKEN) as c:
            c.load_adapter("kept", str(server_loras[0]))
            c.load_adapter("doomed", str(doomed))
            before = c.chat("kept", MESSAGES, max_tokens=8, temperature=0)
    finally:
        stop()
    saved = json.loads(settings.paths.server_state.read_text())
    assert set(saved["adapters"]) == {"kept", "doomed"}
    (doomed / "adapter_model.safetensors").unlink()  # this one can no longer load
    url, stop = start_in_thread(create_app(settings=settings, base=str(tiny_llama)))
    try:
        with ServingClient(url, TOKEN) as c:
            assert set(c.adapters()) == {"kept"}
            assert c.chat("kept", MESSAGES, max_tokens=8, temperature=0) == before
    finally:
        stop()
    assert "doomed" in caplog.text


def test_invalid_bodies_get_the_protocols_error_naming_field_given_and_allowed(server):
    """Bodies are validated against the protocol's models: every problem is answered in the
    route's error shape (not FastAPI's 422 detail list), naming the field, what was given
    and what is allowed; fields the endpoint does not use are accepted."""
    url = server.url
    chat = httpx.post(url + "/v1/chat/completions", json={"model": "tiny-llama", "messages": MESSAGES,
                                                           "temperature": 5, "top_p": "high", "n": 2})
    assert chat.status_code == 400
    error = chat.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", "temperature")
    assert "'temperature' is 5; it should be less than or equal to 2" in error["message"]
    assert "'top_p' is \"high\"" in error["message"] and "'n' must be 1, got 2" in error["message"]
    missing = httpx.post(url + "/v1/completions", json={"model": "tiny-llama", "max_tokens": 0}).json()["error"]
    assert "'prompt' is required" in missing["message"] and "'max_tokens' is 0" in missing["message"]
    assert httpx.post(url + "/v1/completions", content=b"{not json").json()["error"]["code"] == "invalid_value"
    messages = httpx.post(url + "/v1/chat/completions", json={"messages": ["hi"]}).json()["error"]
    assert messages["param"] == "messages[0]" and "it should be a JSON object" in messages["message"]
    tgi = httpx.post(url + "/generate", json={"inputs": 5, "parameters": {"max_new_tokens": 0, "top_p": 3}})
    assert tgi.status_code == 422 and tgi.json()["error_type"] == "validation"
    assert "'inputs' is 5" in tgi.json()["error"] and "'parameters.max_new_tokens' is 0" in tgi.json()["error"]
    assert httpx.post(url + "/generate_stream", json=[1, 2]).json()["error_type"] == "validation"
    load = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "x"},
                      headers={"Authorization": f"Bearer {server.settings.api_token}"})
    assert load.status_code == 400 and load.json()["error"]["param"] == "lora_path"
    # what real clients add and the endpoint does not use is ignored
    extra = httpx.post(url + "/v1/completions", json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 2,
                                                      "temperature": 0, "logit_bias": {}, "user": "u",
                                                      "presence_penalty": 0, "stream_options": None})
    assert extra.status_code == 200 and extra.json()["usage"]["completion_tokens"] >= 1
    generated = httpx.post(url + "/generate", json={"inputs": "hi", "parameters": {
        "max_new_tokens": 2, "best_of": None, "watermark": False, "top_k": None, "details": None}})
    assert generated.status_code == 200 and "generated_text" in generated.json()
