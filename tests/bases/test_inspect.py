"""The inspector on tiny Llama and GPT-2 folders, with and without weights, and on a
config-only 7B Llama (shapes from the meta device; nothing is loaded)."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from backend.errors import BaseModelError, ConfigError
from backend.hparams import LoraSpec
from backend.bases.inspect import inspect_base, inspect_command_output
from backend.bases.inspect_views import heatmap, render_text

LLAMA_KINDS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def _config_only(src, dst):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    return dst


def _peft_trainable(folder, spec: LoraSpec) -> tuple[int, set[str]]:
    """What peft itself trains for ``spec`` on the real model (the reference)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(**spec.to_peft_kwargs()))
    trainable, _ = model.get_nb_trainable_parameters()
    return trainable, set(model.base_model.targeted_module_names)


def test_tiny_llama_weight_points(tiny_llama, settings):
    from transformers import AutoModelForCausalLM

    report = inspect_base(str(tiny_llama), settings=settings)
    json.dumps(report)  # JSON-able as a whole
    assert report["architecture"] == "LlamaForCausalLM"
    assert (report["num_layers"], report["hidden_size"], report["context_length"]) == (2, 64, 256)
    assert [k["name"] for k in report["module_kinds"]] == LLAMA_KINDS
    kinds = {k["name"]: k for k in report["module_kinds"]}
    # 4 heads of 16, 2 kv heads: k/v project 64 -> 32
    assert (kinds["self_attn.k_proj"]["in_features"], kinds["self_attn.k_proj"]["out_features"]) == (64, 32)
    assert kinds["mlp.down_proj"]["params_per_layer"] == 128 * 64
    assert {k["group"] for k in report["module_kinds"][:4]} == {"attention"}
    assert {k["group"] for k in report["module_kinds"][4:]} == {"mlp"}
    real = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert report["total_params"] == sum(p.numel() for p in real.parameters())
    assert report["all_linear"]["kinds"] == LLAMA_KINDS
    assert report["all_linear"]["excluded"] == ["lm_head"]
    assert report["all_linear"]["modules"] == 2 * 7


@pytest.mark.parametrize("spec", [
    LoraSpec(r=4, alpha=8),
    LoraSpec(r=8, alpha=16, target_modules=["q_proj", "v_proj"], rank_pattern={"^model.layers.1.self_attn.q_proj": 2}),
])
def test_trainable_params_equal_peft(tiny_llama, settings, spec):
    report = inspect_base(str(tiny_llama), spec, settings=settings)
    trainable, targeted = _peft_trainable(tiny_llama, spec)
    assert report["lora"]["trainable_params"] == trainable
    assert report["lora"]["targeted_modules"] == len(targeted)
    assert report["lora"]["adapter_bytes"]["fp32"] >= 4 * trainable
    grid = heatmap(report, "lora_params")
    assert sum(v for row in grid["values"] for v in row) == trainable


def test_adapter_size_matches_saved_file(tiny_llama, settings, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    spec = LoraSpec(r=4, alpha=8)
    report = inspect_base(str(tiny_llama), spec, settings=settings)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(**spec.to_peft_kwargs()))
    model.save_pretrained(tmp_path / "adapter")
    size = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert abs(report["lora"]["adapter_bytes"]["fp32"] - size) / size < 0.1


def test_tiny_gpt2_conv1d_shapes(tiny_gpt2, settings):
    report = inspect_base(str(tiny_gpt2), LoraSpec(r=2, alpha=4, target_modules=["c_attn"]), settings=settings)
    assert report["layer_prefix"] == "transformer.h"
    kinds = {k["name"]: k for k in report["module_kinds"]}
    assert list(kinds) == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    # Conv1D stores (in, out); the inspector reports in -> out like nn.Linear
    assert (kinds["attn.c_attn"]["in_features"], kinds["attn.c_attn"]["out_features"]) == (64, 192)
    assert (kinds["mlp.c_proj"]["in_features"], kinds["mlp.c_proj"]["out_features"]) == (256, 64)
    assert kinds["attn.c_attn"]["type"] == "Conv1D"
    assert kinds["attn.c_attn"]["params_per_layer"] == 64 * 192 + 192  # weight + bias
    assert kinds["mlp.c_fc"]["group"] == "mlp" and kinds["attn.c_proj"]["group"] == "attention"
    assert report["lora"]["trainable_params"] == 2 * 2 * (64 + 192)
    assert report["lora"]["trainable_params"] == _peft_trainable(tiny_gpt2, LoraSpec(r=2, alpha=4, target_modules=["c_attn"]))[0]
    assert "lm_head" in report["all_linear"]["excluded"]
    hm = heatmap(report, "rank")
    assert hm["values"] == [[2, 0, 0, 0], [2, 0, 0, 0]]


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_config_only_folder_inspects_the_same(fixture, request, settings, tmp_path):
    folder = request.getfixturevalue(fixture)
    with_weights = inspect_base(str(folder), settings=settings)
    without = inspect_base(str(_config_only(folder, tmp_path / "cfg")), settings=settings)
    for key in ("num_layers", "total_params", "module_kinds", "cells", "all_linear", "lora", "memory"):
        assert without[key] == with_weights[key], key


def test_config_only_7b_llama_is_fast_and_exact(tmp_path, settings):
    folder = tmp_path / "llama-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
        "torch_dtype": "float16",
    }))
    started = time.perf_counter()
    report = inspect_base(str(folder), LoraSpec(r=16, alpha=32, target_modules=["q_proj", "v_proj"]),
                          settings=settings)
    assert time.perf_counter() - started < 30
    assert report["total_params"] == 6_738_415_616  # Llama-2-7B
    assert report["num_layers"] == 32 and report["context_length"] == 4096
    assert report["lora"]["trainable_params"] == 32 * 2 * 16 * (4096 + 4096)  # 8,388,608
    train, serve = report["memory"]["training"]["bf16"], report["memory"]["serving"]["bf16"]
    assert train["base"] == 2 * 6_738_415_616
    assert train["optimizer"] == 8 * report["lora"]["trainable_params"]
    assert train["total"] > serve["total"] > train["base"]
    assert "32 × hidden 4096" in render_text(report)


def test_unmatched_targets_and_bad_folder_are_clear_errors(tiny_llama, settings, tmp_path):
    with pytest.raises(ConfigError, match="match no adaptable module"):
        inspect_base(str(tiny_llama), LoraSpec(target_modules=["nope_proj"]), settings=settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        inspect_base(str(tmp_path / "empty"), settings=settings)
    with pytest.raises(ConfigError, match="Unknown heatmap value"):
        heatmap(inspect_base(str(tiny_llama), settings=settings), "weird")


def test_a_folder_needs_no_settings_other_specs_do(tiny_llama):
    assert inspect_base(str(tiny_llama))["num_layers"] == 2
    assert inspect_base(str(tiny_llama / "config.json"))["base"]["kind"] == "folder"
    with pytest.raises(ConfigError, match="needs TuneLab's settings"):
        inspect_base("default")


def test_command_output_text_and_json(tiny_llama, settings):
    text = inspect_command_output(str(tiny_llama), rank=4, settings=settings)
    assert "self_attn.q_proj" in text and "r=4 alpha=8" in text
    data = json.loads(inspect_command_output(str(tiny_llama), rank=4, target=["q_proj"], as_json=True,
                                             settings=settings))
    assert data["lora"]["trainable_params"] == 2 * 4 * (64 + 64)
