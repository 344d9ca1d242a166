"""The adapter folder contract: the typed views of adapter_config.json and tunelab.json,
the errors for folders that are not LoRA adapters, and tunelab.json written whole."""

from __future__ import annotations

import json

import pytest

from backend.adapter_folder import (
    CONFIG_FILE,
    META_FILE,
    WEIGHTS_FILE,
    AdapterMeta,
    BaseInfo,
    LoraConfigView,
    is_complete,
    read_meta,
    scan,
    update_meta,
    write_meta,
)
from backend.errors import AdapterMismatch


def make_folder(path, config: dict | None = None, meta: dict | None = None, weights: bool = True):
    path.mkdir(parents=True)
    (path / CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 4, **(config or {})}))
    if weights:
        (path / WEIGHTS_FILE).write_bytes(b"\0")
    if meta is not None:
        (path / META_FILE).write_text(json.dumps(meta))
    return path


def test_lora_config_view_reads_peft_fields_and_keeps_the_rest(tmp_path):
    folder = make_folder(tmp_path / "a", {"lora_alpha": 16, "target_modules": ["q_proj"], "rank_pattern": None,
                                          "alpha_pattern": {"^model.layers.0.q_proj": 4},
                                          "base_model_name_or_path": "/bases/tiny", "task_type": "CAUSAL_LM"})
    view = LoraConfigView.of(folder)
    assert (view.r, view.lora_alpha, view.target_modules) == (4, 16, ["q_proj"])
    assert view.rank_pattern == {} and view.alpha_pattern == {"^model.layers.0.q_proj": 4}
    assert view.base_model_name_or_path == "/bases/tiny"
    assert view.model_extra == {"task_type": "CAUSAL_LM"}
    assert (view.use_dora, view.use_rslora, view.modules_to_save) == (False, False, None)


def test_folders_that_are_not_lora_adapters_say_why(tmp_path):
    with pytest.raises(AdapterMismatch, match="not a folder"):
        LoraConfigView.of(tmp_path / "missing")
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("x")
    with pytest.raises(AdapterMismatch, match=r"no adapter_config.json\.") as refused:
        LoraConfigView.of(tmp_path / "stray")
    assert "notes.txt" not in str(refused.value)  # what is missing, never what is there
    with pytest.raises(AdapterMismatch, match="a IA3 adapter, not LoRA"):
        LoraConfigView.of(make_folder(tmp_path / "ia3", {"peft_type": "IA3"}))
    with pytest.raises(AdapterMismatch, match="has no adapter_model.safetensors"):
        LoraConfigView.of(make_folder(tmp_path / "bare", weights=False))
    broken = make_folder(tmp_path / "broken")
    (broken / CONFIG_FILE).write_text("{")
    with pytest.raises(AdapterMismatch, match="not valid JSON"):
        LoraConfigView.of(broken)


def test_adapter_meta_reads_tunelab_json_with_defaults(tmp_path):
    trained = make_folder(tmp_path / "trained", meta={
        "name": "wine", "goal": "say the colour", "base": {"spec": "default", "path": "/models/smol", "kind": "default"},
        "hyperparameters": {"train": {"system_prompt": "Be brief.", "epochs": 2},
                            "equalizer": {"layers": 1, "modules": ["q_proj"], "rank": [[4]], "alpha": [[8]]}},
        "metrics": None, "status": "done", "extra_field": 1})
    meta = AdapterMeta.of(trained)
    assert meta.base == BaseInfo(spec="default", path="/models/smol", kind="default")
    assert meta.base.where == "/models/smol"
    assert meta.train == {"system_prompt": "Be brief.", "epochs": 2} and meta.system_prompt == "Be brief."
    assert meta.equalizer_grid["rank"] == [[4]]
    assert meta.metrics == {} and meta.status == "done" and meta.verdict is None
    assert meta.model_extra == {"extra_field": 1}

    blended = make_folder(tmp_path / "blended", meta={"base": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                                       "equalizer": {"layers": 2}})
    meta = AdapterMeta.of(blended)
    assert meta.base.where == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta.base.path == ""
    assert meta.train == {} and meta.system_prompt is None and meta.equalizer_grid == {"layers": 2}

    assert AdapterMeta.of(make_folder(tmp_path / "plain")) == AdapterMeta()


def test_tunelab_json_is_written_whole_and_updated_in_place(tmp_path):
    folder = make_folder(tmp_path / "a")
    write_meta(folder, {"name": "a", "status": "running"})
    update_meta(folder, status="done", verdict="success")
    assert read_meta(folder) == {"name": "a", "status": "done", "verdict": "success"}
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE, META_FILE]


def test_scan_lists_complete_adapters_only(tmp_path):
    root = tmp_path / "adapters"
    make_folder(root / "b", meta={})
    make_folder(root / "a", meta={})
    make_folder(root / "half")  # no tunelab.json yet
    make_folder(root / ".a-staging", meta={})
    assert [p.name for p in scan(root)] == ["a", "b"]
    assert is_complete(root / "a") and not is_complete(root / "half")
    assert scan(tmp_path / "none") == []


def test_base_key_compares_a_recorded_base_loosely():
    from backend.adapter_folder import base_key

    assert base_key("/models/SmolLM2-135M-Instruct/") == base_key("HuggingFaceTB/SmolLM2-135M-Instruct") \
        == "smollm2135minstruct"
    assert base_key("org/Other-Model") != base_key("SmolLM2-135M-Instruct")


def test_rank_alpha_and_scaling_of_a_module_follow_pefts_patterns():
    """The one reading of peft's per-module rank/alpha patterns and its scaling rule, which
    the engine's slots, blends and the proof all use."""
    import math

    from backend.adapter_folder import LoraConfigView

    view = LoraConfigView.model_validate({"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4},
                                          "alpha_pattern": {"layers.1.q_proj": 2}})
    assert view.rank_of("model.layers.0.self_attn.q_proj") == 4 and view.rank_of("model.layers.0.mlp.up_proj") == 8
    assert view.alpha_of("model.layers.1.q_proj") == 2 and view.alpha_of("model.layers.0.self_attn.q_proj") == 16
    assert view.scaling_of("model.layers.0.mlp.up_proj", 8) == 2.0
    rs = view.model_copy(update={"use_rslora": True})
    assert rs.scaling_of("model.layers.0.mlp.up_proj", 4) == 16 / math.sqrt(4)
