"""Bad requests to the real endpoint: every malformed body is a 4xx in the protocol's
error shape naming the field, what was given and what is allowed; a body over
``max_body_mb`` is a 413; a long prompt is tokenized off the event loop."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from tests.builders import make_engine

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 2}
TGI = {"inputs": "hi", "parameters": {"max_new_tokens": 2}}


def _chat(**fields) -> str:
    return json.dumps({**CHAT, **fields})


def _tgi(**parameters) -> str:
    return json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 2, **parameters}})


# (route, raw JSON body, the field the message must name)
BAD = [
    ("/v1/chat/completions", _chat(messages=["hi"]), "messages[0]"),
    ("/v1/chat/completions", _chat(stream=True, stream_options="x"), "stream_options"),
    ("/generate", json.dumps({"inputs": "hi", "parameters": "x"}), "parameters"),
    ("/v1/chat/completions", _chat(seed="abc", temperature=1), "seed"),
    ("/v1/chat/completions", _chat(seed=1.5, temperature=1), "seed"),
    ("/generate", _tgi(seed="abc", do_sample=True), "parameters.seed"),
    ("/generate", _tgi(seed=1.5, do_sample=True), "parameters.seed"),
    ("/v1/chat/completions", _chat(seed=2**64, temperature=1), "seed"),
    ("/generate", _tgi(seed=-1, do_sample=True), "parameters.seed"),
    ("/v1/chat/completions", _chat().replace('"max_tokens": 2', '"max_tokens": Infinity'), "max_tokens"),
    ("/v1/chat/completions", _chat().replace('"max_tokens": 2', '"max_tokens": 1e999'), "max_tokens"),
    ("/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 2})[:-1] + ', "n": Infinity}', "n"),
    ("/v1/chat/completions", _chat()[:-1] + ', "n": 1e999}', "n"),
    ("/generate", _tgi().replace('"max_new_tokens": 2', '"max_new_tokens": Infinity'), "parameters.max_new_tokens"),
    ("/generate", _tgi().replace('"max_new_tokens": 2', '"max_new_tokens": 1e999'), "parameters.max_new_tokens"),
    ("/v1/chat/completions", _chat()[:-1] + ', "temperature": NaN}', "temperature"),
    ("/v1/chat/completions", _chat()[:-1] + ', "top_p": NaN}', "top_p"),
    ("/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 2})[:-1] + ', "temperature": NaN}', "temperature"),
    ("/generate", _tgi()[:-2] + ', "temperature": NaN}}', "parameters.temperature"),
    ("/generate", _tgi()[:-2] + ', "top_p": NaN}}', "parameters.top_p"),
    ("/v1/chat/completions", _chat(messages=[{"role": 5, "content": "hi"}]), "messages[0].role"),
    ("/v1/chat/completions", _chat(messages=[{"role": "tool", "content": "hi"}]), "messages[0].role"),
    ("/v1/chat/completions", _chat(messages=[{"role": "", "content": "hi"}]), "messages[0].role"),
    ("/v1/chat/completions", _chat(model=["a"]), "model"),
    ("/v1/completions", json.dumps({"prompt": "hi", "model": ["a"]}), "model"),
    ("/v1/chat/completions", _chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content"),
    ("/v1/chat/completions", _chat(max_tokens="5"), "max_tokens"),
    ("/v1/chat/completions", _chat(stream="yes"), "stream"),
    ("/v1/chat/completions", _chat(temperature=True), "temperature"),
    ("/generate", _tgi(adapter_id=["a"]), "parameters.adapter_id"),
    ("/generate", _tgi(do_sample="yes"), "parameters.do_sample"),
    ("/generate_stream", _tgi(max_new_tokens=2.5), "parameters.max_new_tokens"),
    ("/", _tgi(temperature=-1), "parameters.temperature"),
]


@pytest.mark.parametrize("route, raw, field", BAD, ids=[f"{r}:{f}:{i}" for i, (r, _, f) in enumerate(BAD)])
def test_bad_bodies_are_4xx_in_the_protocols_shape_naming_the_field(server, route, raw, field):
    url = server.url
    response = httpx.post(url + route, content=raw.encode(), headers={"content-type": "application/json"},
                          timeout=30)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if route.startswith("/v1/"):
        assert response.status_code == 400
        error = body["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == field
        message = error["message"]
    else:
        assert response.status_code == 422
        assert body["error_type"] == "validation" and isinstance(body["error"], str)
        message = body["error"]
    assert f"'{field}'" in message, message
    assert "it should" in message or "must" in message, message  # what is allowed
    assert "concatenate" not in message and "unhashable" not in message
    # the server keeps serving
    assert httpx.get(url + "/health", timeout=30).status_code == 200
    ok = httpx.post(url + "/v1/chat/completions", json={**CHAT, "temperature": 0}, timeout=60)
    assert ok.status_code == 200, ok.text
    assert httpx.post(url + "/generate", json=TGI, timeout=60).status_code == 200


def test_the_developer_role_is_served_as_system(server):
    """OpenAI's newer clients send "developer" where older ones send "system": both are
    accepted and answered alike (the other roles a chat template cannot render are refused above)."""
    answers = {}
    for role in ("system", "developer"):
        body = {**CHAT, "max_tokens": 6, "temperature": 0,
                "messages": [{"role": role, "content": "Answer in one word."}, *MESSAGES]}
        response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        answers[role] = response.json()["choices"][0]["message"]["content"]
    assert answers["developer"] == answers["system"]


# --- any JSON body: never a 500 -------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_sampling = {"model": _json, "max_tokens": _json, "temperature": _json, "top_p": _json, "seed": _json,
             "stop": _json, "n": _json, "stream": _json, "stream_options": _json, "ignore_eos": _json}
_message = st.fixed_dictionaries({}, optional={"role": _json | st.sampled_from(["user", "system"]),
                                               "content": _json | st.text(max_size=8)})
_chat_bodies = st.fixed_dictionaries({}, optional={**_sampling, "messages": _json | st.lists(_message, max_size=3)})
_tgi_parameters = st.fixed_dictionaries({}, optional={
    "adapter_id": _json, "do_sample": _json, "temperature": _json, "top_p": _json, "max_new_tokens": _json,
    "seed": _json, "stop": _json, "return_full_text": _json, "details": _json})
_tgi_bodies = st.fixed_dictionaries({}, optional={"inputs": _json | st.text(max_size=8),
                                                  "parameters": _json | _tgi_parameters, "stream": _json})


def _small(body: dict) -> dict:
    """Keep what the property test asks for short: a few tokens, never a stream to follow."""
    if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
        body["max_tokens"] = max(-1, min(body["max_tokens"], 2))
    body.setdefault("max_tokens", 2)
    return body


@hypothesis_settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(chat=_chat_bodies, tgi=_tgi_bodies)
def test_any_json_body_is_answered_2xx_or_4xx_never_500(server, chat, tgi):
    url = server.url
    chat = _small(chat)
    parameters = tgi.get("parameters")
    if isinstance(parameters, dict):
        value = parameters.get("max_new_tokens")
        if isinstance(value, int) and not isinstance(value, bool):
            parameters["max_new_tokens"] = max(-1, min(value, 2))
        parameters.setdefault("max_new_tokens", 2)
    for route, body in (("/v1/chat/completions", chat), ("/generate", tgi), ("/", tgi)):
        raw = json.dumps(body)  # NaN and Infinity as JSON's extension literals
        response = httpx.post(url + route, content=raw.encode(), headers={"content-type": "application/json"},
                              timeout=60)
        assert response.status_code < 500, (route, raw, response.status_code, response.text)
        if response.status_code >= 400:
            payload = response.json()
            assert isinstance(payload["error"], dict if route.startswith("/v1/") else str), payload


# --- body size and tokenization off the event loop ----------------------------------------------------


@pytest.fixture(scope="module")
def small_limit_server(tiny_llama, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("limit-home"), api_token="t", max_body_mb=12)
    engine = make_engine(tiny_llama)
    url, stop = start_in_thread(create_app(engine, settings=settings, restore=False))
    yield url
    stop()
    engine.stop()


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions", "/generate", "/generate_stream", "/",
                                   "/v1/load_lora_adapter"])
def test_a_body_over_max_body_mb_is_413_without_being_read_whole(small_limit_server, route):
    """The server answers 413 from the Content-Length alone: the client is still sending
    (most of the body never leaves it) when the answer arrives."""
    parsed = urlparse(small_limit_server)
    size = 200 * 1024 * 1024  # 200 MB announced, far over the 12 MB limit
    head = (f"POST {route} HTTP/1.1\r\nHost: {parsed.hostname}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
        sock.sendall(head + b'{"inputs": "' + b"a" * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 413 " in status_line, answer[:500]
    payload = json.loads(rest.partition(b"\r\n\r\n")[2])
    if route.startswith("/v1/"):
        assert payload["error"]["code"] == "body_too_large" and "max_body_mb" in payload["error"]["message"].lower()
    else:
        assert payload["error_type"] == "validation" and "TUNELAB_MAX_BODY_MB" in payload["error"]
    assert httpx.get(small_limit_server + "/health", timeout=30).status_code == 200


def test_a_chunked_body_over_the_limit_is_413_too(small_limit_server):
    def chunks():
        for _ in range(13 * 4):
            yield b" " * (256 * 1024)

    response = httpx.post(small_limit_server + "/v1/completions", content=chunks(), timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions", "/generate"])
def test_health_answers_while_a_large_prompt_is_tokenized(small_limit_server, route):
    """A long prompt (2 MB, under the limit; 10 MB behaves the same, only slower) is
    tokenized in a worker thread: /health keeps answering promptly for other clients
    meanwhile (on the event loop it would wait the whole tokenization), and the prompt is
    refused as too long for the context."""
    url = small_limit_server
    words = ("autumn leaves fall slowly over the quiet river " * 220_000)[: 2 * 1024 * 1024]
    result: dict = {}

    def big():
        started = time.perf_counter()
        body = {"/v1/completions": {"prompt": words, "max_tokens": 1},
                "/v1/chat/completions": {"messages": [{"role": "user", "content": words}], "max_tokens": 1},
                "/generate": {"inputs": words, "parameters": {"max_new_tokens": 1}}}[route]
        response = httpx.post(url + route, json=body, timeout=300)
        result["status"], result["seconds"] = response.status_code, time.perf_counter() - started
        result["body"] = response.json()

    thread = threading.Thread(target=big)
    thread.start()
    latencies = []
    while thread.is_alive():
        started = time.perf_counter()
        assert httpx.get(url + "/health", timeout=30).status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    thread.join()
    if route.startswith("/v1/"):
        assert result["status"] == 400 and result["body"]["error"]["code"] == "context_length_exceeded"
    else:
        assert result["status"] == 422 and "context" in result["body"]["error"]
    assert len(latencies) >= 3, f"the big request took only {result['seconds']:.2f} s"
    assert max(latencies) < max(1.0, result["seconds"] / 2), (max(latencies), result["seconds"])
