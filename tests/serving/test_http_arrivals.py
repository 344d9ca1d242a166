"""Requests that reach the real HTTP endpoint at random moments, over both protocols,
streamed and not, get exactly the answer they get alone.

A request joining a running batch once made every row already in it send its last
token again ("TheThe fruit ..."); the engine tests show it is gone for the engine, this
shows it for what a client of the endpoint receives.
"""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import pytest

from backend.serving.client import ServingClient

MODELS = ["tiny-llama", "arr0", "arr1", "arr2"]
TEXTS = ["Tell me about the autumn leaves", "hi", "Billing question: I was charged twice",
         "Classify the wine as red or white", "Bug report: the app crashes"]
STREAMED = ["chat_stream", "tgi_stream"]  # SSE: OpenAI chunks, TGI token events
WHOLE = ["chat", "completion", "tgi"]


@pytest.fixture(scope="module")
def adapters_loaded(server, server_loras):
    with ServingClient(server.url, server.settings.api_token) as client:
        for i, name in enumerate(MODELS[1:]):
            client.load_adapter(name, str(server_loras[i]))
        yield
        for name in MODELS[1:]:
            client.unload_adapter(name)


def _data_lines(response: httpx.Response) -> list[str]:
    return [line[len("data:"):].strip() for line in response.iter_lines() if line.startswith("data:")]


def _ask(url: str, kind: str, model: str, text: str, n: int) -> dict:
    """Send one request of ``kind``; what its client receives, as comparable data."""
    messages = [{"role": "user", "content": text}]
    greedy = {"temperature": 0, "max_tokens": n, "ignore_eos": True}  # answers run their length and overlap
    tgi = {"inputs": text, "parameters": {"max_new_tokens": n, "details": True,
                                          **({"adapter_id": model} if model != "tiny-llama" else {})}}
    if kind == "chat":
        out = httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": messages, **greedy},
                         timeout=120).json()
        return {"text": out["choices"][0]["message"]["content"], "tokens": out["usage"]["completion_tokens"]}
    if kind == "completion":
        out = httpx.post(url + "/v1/completions", json={"model": model, "prompt": text, **greedy}, timeout=120).json()
        return {"text": out["choices"][0]["text"], "tokens": out["usage"]["completion_tokens"]}
    if kind == "chat_stream":
        body = {"model": model, "messages": messages, "stream": True, **greedy}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
            data = _data_lines(response)
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        return {"text": "".join(c["choices"][0]["delta"].get("content", "") for c in chunks),
                "chunks": len(chunks)}
    if kind == "tgi":
        out = httpx.post(url + "/generate", json=tgi, timeout=120).json()
        return {"text": out["generated_text"], "ids": [t["id"] for t in out["details"]["tokens"]]}
    with httpx.stream("POST", url + "/generate_stream", json=tgi, timeout=120) as response:
        events = [json.loads(d) for d in _data_lines(response)]
    return {"text": events[-1]["generated_text"], "ids": [e["token"]["id"] for e in events],
            "pieces": "".join(e["token"]["text"] for e in events if not e["token"]["special"])}


@pytest.mark.parametrize("trial", range(6))
def test_http_requests_arriving_at_random_times_get_the_answer_they_get_alone(server, adapters_loaded, trial):
    """3-6 greedy requests over the base and three adapters, each by one of the OpenAI or
    TGI routes, streamed (SSE) or not, arrive at random moments: each client receives
    exactly what the same request receives when it is served alone."""
    rng = random.Random(2000 + trial)
    kinds = STREAMED + [rng.choice(WHOLE)] + [rng.choice(STREAMED + WHOLE) for _ in range(rng.randint(0, 3))]
    rng.shuffle(kinds)
    # the first arrives at once with the longest answer, so the others find it running
    requests = [(kind, rng.choice(MODELS), rng.choice(TEXTS), 40 if i == 0 else rng.randint(16, 40),
                 0.0 if i == 0 else rng.uniform(0.0, 0.08)) for i, kind in enumerate(kinds)]
    alone = [_ask(server.url, kind, model, text, n) for kind, model, text, n, _ in requests]

    together: list = [None] * len(requests)
    failures: list = []

    def run(index: int) -> None:
        kind, model, text, n, delay = requests[index]
        time.sleep(delay)
        try:
            together[index] = _ask(server.url, kind, model, text, n)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append((index, repr(exc)))

    steps_before = server.engine.stats.steps
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    for index, (expected, got) in enumerate(zip(alone, together)):
        assert got == expected, (index, requests[index][:3])
    stats = server.engine.stats
    rows = list(stats.step_rows)[-(stats.steps - steps_before):]
    assert max(rows) >= 2, "no request shared a batch: the test proves nothing"
