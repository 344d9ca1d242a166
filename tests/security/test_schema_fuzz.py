"""Schemathesis fuzzes the real endpoint from its own OpenAPI document (issue 16): for every
route, bodies that follow the schema and bodies that break it (wrong types, missing
fields, NaN, huge numbers, odd strings) are sent over HTTP to a server on a loopback port;
none may get a 5xx, and /health answers after each operation's run. The management
routes are called with the token, so the fuzz reaches their validation, not only the 401."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from tests.builders import make_engine

TOKEN = "fuzz-token"
# answers stay short whatever max_tokens the fuzzer picks: the tiny model's context is the ceiling
FUZZ = hypothesis_settings(max_examples=25, deadline=None, derandomize=True,
                           suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzzed_server(tiny_llama, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("fuzz-home"), api_token=TOKEN, max_body_mb=1)
    engine = make_engine(tiny_llama)
    url, stop = start_in_thread(create_app(engine, settings=settings, restore=False))
    yield url
    stop()
    engine.stop()


def _operations(url: str):
    """Every POST operation of the live server's own document (schemathesis's pytest
    plugin does not run under this pytest, so the operations are walked here)."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    return {op.path: op for op in (result.ok() for result in schema.get_all_operations()) if op.method == "post"}


def test_the_schema_names_every_request_body(fuzzed_server):
    document = httpx.get(fuzzed_server + "/openapi.json", timeout=30).json()
    posts = {path: ops["post"] for path, ops in document["paths"].items() if "post" in ops}
    assert set(posts) >= {"/v1/chat/completions", "/v1/completions", "/generate", "/generate_stream", "/",
                          "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}
    assert all("requestBody" in op for op in posts.values())
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert "messages" in chat["required"] and chat["properties"]["messages"]["minItems"] == 1


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/generate", "/generate_stream", "/",
                                  "/v1/load_lora_adapter", "/v1/unload_lora_adapter"])
def test_no_request_the_schema_allows_or_breaks_gets_a_5xx(fuzzed_server, path, mode):
    operation = _operations(fuzzed_server)[path]
    seen = {"calls": 0, "4xx": 0}

    @FUZZ
    @given(operation.as_strategy(generation_mode=mode))
    def fuzz(case):
        response = case.call_and_validate(base_url=fuzzed_server, headers={"Authorization": f"Bearer {TOKEN}"},
                                          checks=[not_a_server_error], timeout=120)
        seen["calls"] += 1
        seen["4xx"] += 400 <= response.status_code < 500

    fuzz()
    assert seen["calls"] >= 5
    if mode is GenerationMode.NEGATIVE:
        assert seen["4xx"] >= 1  # broken bodies were refused, not served
    assert httpx.get(fuzzed_server + "/health", timeout=30).status_code == 200
