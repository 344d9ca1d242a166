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
