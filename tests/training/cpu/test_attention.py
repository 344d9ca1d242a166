"""Grouped causal attention (backend/training/cpu/attention.py) against transformers' eager attention."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.bases.load import load_model  # noqa: E402
from backend.training.cpu.attention import use_causal_attention  # noqa: E402
from tests.builders import folder_ref  # noqa: E402


def _llama(tiny_llama, attention):
    model = load_model(folder_ref(tiny_llama), dtype=torch.float32).train()
    if attention == "ours":
        assert use_causal_attention(model)
    else:
        model.set_attn_implementation(attention)
    return model


@pytest.mark.parametrize("side", ["right", "left", "none"])
def test_causal_attention_matches_eager_on_real_tokens(tiny_llama, rel_error, side):
    ids = torch.randint(3, 300, (3, 12), generator=torch.Generator().manual_seed(5))
    attention = torch.ones_like(ids)
    if side == "right":
        attention[1, 8:] = 0
        attention[2, 5:] = 0
    elif side == "left":
        attention[1, :4] = 0
    results = []
    for kind in ("eager", "ours"):
        model = _llama(tiny_llama, kind)
        out = model(input_ids=ids, attention_mask=attention).logits
        (out * attention[..., None]).square().sum().backward()
        results.append((out.detach(), next(model.model.layers[0].self_attn.q_proj.parameters()).grad))
    real = attention.bool()
    assert torch.allclose(results[1][0][real], results[0][0][real], atol=1e-4)
    assert rel_error(results[1][1], results[0][1]) < 1e-4


def test_causal_attention_generates_like_eager(tiny_llama):
    ids = torch.randint(3, 300, (1, 6), generator=torch.Generator().manual_seed(9))
    outs = []
    for kind in ("eager", "ours"):
        model = _llama(tiny_llama, kind).eval()
        outs.append(model.generate(input_ids=ids, max_new_tokens=6, do_sample=False))
    assert torch.equal(outs[0], outs[1])
