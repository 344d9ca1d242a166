"""A DoRA adapter is refused at load (400, OpenAI error shape) instead of failing batches later.

peft refuses ``adapter_names`` (its mixed-batch path) with DoRA, so a DoRA adapter that was
accepted made every request batched with a request to it fail with a 500, base requests
included. The refusal says what is unsupported and what to do; nothing is loaded and the
base still answers.
"""

from __future__ import annotations

import json

import httpx

from tests.builders import make_lora
from tests.serving.conftest import server  # noqa: F401  (the real endpoint fixture)


def _models(url: str) -> list[str]:
    response = httpx.get(url + "/v1/models", timeout=30)
    assert response.status_code == 200
    return sorted(m["id"] for m in response.json()["data"])


def test_a_dora_adapter_is_refused_at_load_and_the_base_still_serves(server, tiny_llama):  # noqa: F811
    folder = server.settings.paths.adapters / "dora-adapter"
    make_lora(tiny_llama, folder, seed=5, use_dora=True)
    assert json.loads((folder / "adapter_config.json").read_text())["use_dora"] is True
    auth = {"Authorization": f"Bearer {server.settings.api_token}"}
    before = _models(server.url)

    response = httpx.post(server.url + "/v1/load_lora_adapter", headers=auth, timeout=120,
                          json={"lora_name": "dora", "lora_path": str(folder)})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "lora_path"
    assert "DoRA" in error["message"] and "use_dora" in error["message"]
    assert "without DoRA" in error["message"] and "merge" in error["message"]
    assert _models(server.url) == before and "dora" not in before
    body = {"model": server.engine.base_name, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3, "temperature": 0}
    chat = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] is not None
