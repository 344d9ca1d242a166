"""Strength and blends are exact and load as ordinary PEFT adapters."""

from __future__ import annotations

import json

import pytest

from backend.errors import AdapterMismatch, ConfigError
from tests.builders import make_lora


def _delta_weights(base, adapter_path) -> dict:
    """module name -> ΔW of an adapter folder, as peft computes it."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_path)
    return {name: module.get_delta_weight("default").detach().clone()
            for name, module in model.named_modules() if isinstance(module, LoraLayer) and "default" in module.lora_A}


def _logits(base, adapter_path, ids):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter_path is not None:
        model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_strength_scales_delta_exactly(tiny_llama, tmp_path):
    import torch

    src = make_lora(tiny_llama, tmp_path / "x", seed=1)
    out = tmp_path / "x-0.5"
    from backend.studio.blend import scale_adapter

    scale_adapter(src, out, 0.5)
    original, scaled = _delta_weights(tiny_llama, src), _delta_weights(tiny_llama, out)
    assert original.keys() == scaled.keys() and original
    for name in original:
        torch.testing.assert_close(scaled[name], 0.5 * original[name], rtol=1e-5, atol=1e-7)
    meta = json.loads((out / "tunelab.json").read_text())
    assert meta["kind"] == "strength" and meta["weights"] == [0.5]
    # strength 0 is the base model, exactly
    zero = tmp_path / "x-0"
    scale_adapter(src, zero, 0.0)
    ids = [5, 17, 42, 8, 99]
    torch.testing.assert_close(_logits(tiny_llama, zero, ids), _logits(tiny_llama, None, ids))
    with pytest.raises(ConfigError, match="between 0 and 2"):
        scale_adapter(src, tmp_path / "bad", 2.5)


def test_blend_equals_weighted_sum_and_peft_cat(tiny_llama, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM

    from backend.studio.blend import blend_adapters

    # different ranks, alphas, rsLoRA and target sets: the blend must still be exact
    x = make_lora(tiny_llama, tmp_path / "x", seed=2, r=4, alpha=8)
    y = tmp_path / "y"
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    from peft import get_peft_model

    peft_y = get_peft_model(model, LoraConfig(r=6, lora_alpha=4, use_rslora=True, init_lora_weights=False,
                                              target_modules=["q_proj", "v_proj", "down_proj"],
                                              rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 16}))
    for name, param in peft_y.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    peft_y.save_pretrained(y)

    out = blend_adapters(x, y, tmp_path / "blend", 0.7, -0.4)
    dx, dy, db = (_delta_weights(tiny_llama, p) for p in (x, y, out))
    assert set(db) == set(dx) | set(dy)
    for name in db:
        expected = 0.7 * dx.get(name, 0) + -0.4 * dy.get(name, 0)
        torch.testing.assert_close(db[name], expected, rtol=1e-5, atol=1e-6)

    # and it agrees with peft's own add_weighted_adapter(combination_type="cat")
    x2 = make_lora(tiny_llama, tmp_path / "x2", seed=4)
    y2 = make_lora(tiny_llama, tmp_path / "y2", seed=5, r=2, alpha=2)
    mine = blend_adapters(x2, y2, tmp_path / "blend2", 0.3, 1.2)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), x2, adapter_name="x")
    merged.load_adapter(str(y2), adapter_name="y")
    merged.add_weighted_adapter(["x", "y"], [0.3, 1.2], "cat", combination_type="cat")
    merged.set_adapter("cat")
    merged.eval()
    ids = [5, 17, 42, 8, 99, 3]
    with torch.no_grad():
        theirs = merged(input_ids=torch.tensor([ids])).logits
    torch.testing.assert_close(_logits(tiny_llama, mine, ids), theirs, rtol=1e-4, atol=1e-5)
    meta = json.loads((mine / "tunelab.json").read_text())
    assert meta["kind"] == "blend" and meta["weights"] == [0.3, 1.2] and len(meta["sources"]) == 2


def test_blend_refuses_adapters_of_other_bases(tiny_llama, tiny_llama_other, tmp_path):
    from backend.studio.blend import blend_adapters

    x = make_lora(tiny_llama, tmp_path / "x", seed=1)
    other = make_lora(tiny_llama_other, tmp_path / "other", seed=1)
    with pytest.raises(AdapterMismatch, match="shape"):
        blend_adapters(x, other, tmp_path / "nope", 0.5, 0.5)
    config = other / "adapter_config.json"
    config.write_text(config.read_text().replace(str(tiny_llama_other), "org/another-model"))
    with pytest.raises(AdapterMismatch, match="another-model"):
        blend_adapters(x, other, tmp_path / "nope", 0.5, 0.5)
    assert not (tmp_path / "nope").exists()


def test_blend_loads_into_the_serving_engine(tiny_llama, tmp_path):
    from backend.studio.blend import blend_adapters
    from tests.builders import make_engine

    x = make_lora(tiny_llama, tmp_path / "x", seed=1)
    y = make_lora(tiny_llama, tmp_path / "y", seed=2)
    out = blend_adapters(x, y, tmp_path / "xy", 0.5, 0.5)
    engine = make_engine(tiny_llama)
    try:
        engine.load_adapter("xy", out)
        ids = engine.encode_chat([{"role": "user", "content": "hello"}])
        assert engine.generate(ids, "xy", max_tokens=4, temperature=0).completion_tokens >= 1
    finally:
        engine.stop()
