"""bench/serve.py's correctness gate, before any serving speed-up counts: an answer is plain
peft's greedy answer when it equals it, or, in bf16 only, when every token it picked lies within
a bf16 tie of the reference's best logit; another adapter's answer never passes."""

from __future__ import annotations

import pytest

from tests.builders import answering_as, make_lora, plain_peft_by_name

PROMPT = [5, 17, 42, 8, 99, 23, 61]


def _greedy(model, adapter: str | None, tokens: int = 16) -> list[int]:
    import torch

    ids = torch.tensor([PROMPT])
    with answering_as(model, adapter), torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                             min_new_tokens=tokens, do_sample=False)
    return out[0, len(PROMPT):].tolist()


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_the_reference_answer_passes_and_another_adapters_does_not(tiny_llama, tmp_path, dtype_name):
    import torch

    from bench.serve import served_like_reference

    dtype = getattr(torch, dtype_name)
    adapters = {f"cmp{i}": make_lora(tiny_llama, tmp_path / f"lora{i}", seed=30 + i) for i in range(2)}
    reference = plain_peft_by_name(tiny_llama, adapters, dtype)
    first, second, base = _greedy(reference, "cmp0"), _greedy(reference, "cmp1"), _greedy(reference, None)
    assert first != second

    assert served_like_reference(reference, "cmp0", PROMPT, first, first, dtype) == {
        "equal": True, "within_bf16_ties": True}
    # read again without its generate() to compare with: every token the reference's best, or
    # within a bf16 tie of it; fp32 asks for equality, so there it does not count
    for adapter, answer in (("cmp0", first), (None, base)):
        again = served_like_reference(reference, adapter, PROMPT, answer, None, dtype)
        assert again["largest_gap"] <= again["allowed_gap"]
        assert again["within_bf16_ties"] is (dtype is torch.bfloat16)
    wrong = served_like_reference(reference, "cmp0", PROMPT, second, first, dtype)
    assert not wrong["within_bf16_ties"] and wrong["largest_gap"] > wrong["allowed_gap"], wrong
    assert wrong["tokens_off_the_reference_best"] > 0
