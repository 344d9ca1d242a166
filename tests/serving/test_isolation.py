"""One request's failure is its own: a forward pass that raises because of one row's adapter
fails that request only; its batch-mates (the base and another adapter) finish with the
same greedy tokens as when served alone, and the engine keeps serving."""

from __future__ import annotations

import pytest

from backend.errors import TuneLabError
from backend.serving.requests import SamplingParams
from tests.builders import make_engine, make_lora


@pytest.fixture(scope="module")
def loras(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation-loras")
    return [make_lora(tiny_llama, root / f"lora{i}", seed=20 + i) for i in range(2)]


def _greedy(n):
    return SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)


@pytest.mark.parametrize("healthy_passes", [0, 3], ids=["fails-in-prefill", "fails-mid-generation"])
def test_a_broken_adapter_fails_only_its_own_request(tiny_llama, loras, healthy_passes):
    engine = make_engine(tiny_llama, batch_window_s=0.3)
    try:
        engine.load_adapter("broken", loras[0])
        engine.load_adapter("good", loras[1])
        prompt = engine.encode_chat([{"role": "user", "content": "Tell me about the autumn leaves"}])
        alone = {m: engine.generate(prompt, m, max_tokens=10, temperature=0, ignore_eos=True).token_ids
                 for m in (None, "good")}
        assert alone[None] != alone["good"]

        broken = engine.adapters()["broken"].internal
        passes = {"with_broken": 0, "most_rows": 0}

        def explode(module, args):  # any forward pass that has a row of "broken", after a few healthy ones
            plan = engine._routing._plan
            if plan is not None and broken in plan[0]:
                passes["with_broken"] += 1
                passes["most_rows"] = max(passes["most_rows"], len(plan[0]))
                if passes["with_broken"] > healthy_passes:
                    raise RuntimeError("adapter 'broken' blew up in the forward pass")

        layer = engine.model.get_base_model().model.layers[0]
        hook = layer.register_forward_pre_hook(explode)
        try:
            handles = {m: engine.submit(prompt, m, _greedy(10)) for m in (None, "good", "broken")}
            with pytest.raises(TuneLabError, match="blew up"):
                handles["broken"].result()
            results = {m: handles[m].result() for m in (None, "good")}
        finally:
            hook.remove()
        for model, completion in results.items():
            assert completion.token_ids == alone[model], model
            assert completion.finish_reason == "length"
        assert passes["with_broken"] > healthy_passes
        assert passes["most_rows"] == 3  # the broken request shared its passes with both others
        if healthy_passes:  # and they ran together until it broke
            assert results[None].batch_rows_max == results["good"].batch_rows_max == 3
        # the engine still serves, the once-broken adapter included
        assert engine.generate(prompt, "broken", max_tokens=3, temperature=0).token_ids
    finally:
        engine.stop()


def test_over_http_a_broken_adapter_fails_its_own_request_only(tiny_llama, loras, tmp_path):
    """The same through the real endpoint: three clients at once (base, a good adapter, one
    whose forward pass raises, loaded through load_lora_adapter); the broken one gets its
    protocol's error, the others 200 with the tokens they get alone, and /health answers."""
    import threading

    import httpx

    from backend.serving.client import ServingClient
    from backend.serving.http.app import create_app, start_in_thread
    from backend.settings import Settings

    engine = make_engine(tiny_llama, batch_window_s=1.0)
    settings = Settings(home=tmp_path, api_token="t0ken", adapter_roots=[loras[0].parent])
    url, stop = start_in_thread(create_app(engine, settings=settings, restore=False))
    try:
        with ServingClient(url, "t0ken") as client:
            client.load_adapter("broken", str(loras[0]))
            client.load_adapter("good", str(loras[1]))

        def ask(model):
            body = {"model": model, "messages": [{"role": "user", "content": "Tell me about the autumn leaves"}],
                    "max_tokens": 32, "temperature": 0, "ignore_eos": True}
            return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)

        alone = {m: ask(m).json()["choices"][0]["message"]["content"] for m in (engine.base_name, "good")}
        broken = engine.adapters()["broken"].internal
        seen = {"rows": 0}

        def explode(module, args):
            plan = engine._routing._plan
            if plan is not None and broken in plan[0]:
                seen["rows"] = max(seen["rows"], len(plan[0]))
                raise RuntimeError("adapter 'broken' blew up in the forward pass")

        hook = engine.model.get_base_model().model.layers[0].register_forward_pre_hook(explode)
        answers: dict = {}
        try:
            threads = [threading.Thread(target=lambda m=m: answers.__setitem__(m, ask(m)))
                       for m in (engine.base_name, "good", "broken")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            hook.remove()
        assert seen["rows"] == 3  # the broken request shared its pass with both others
        failed = answers["broken"]
        assert 500 <= failed.status_code < 600 and "blew up" in failed.json()["error"]["message"]
        for model in (engine.base_name, "good"):
            assert answers[model].status_code == 200, answers[model].text
            assert answers[model].json()["choices"][0]["message"]["content"] == alone[model], model
        assert httpx.get(url + "/health", timeout=30).status_code == 200
        assert ask("broken").status_code == 200  # the hook is gone: the adapter itself serves again
    finally:
        stop()
        engine.stop()
