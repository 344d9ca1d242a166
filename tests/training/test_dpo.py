"""A real preference round (backend/training/dpo.py) on the tiny Llama: it continues from a
parent adapter, judges against that parent (not the base), moves its loss, and writes an
adapter that plain peft loads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from backend.adapter_folder import ADAPTER_FILES, read_meta
from backend.data.preference import write_pairs
from backend.errors import DataError
from backend.hparams import RunSpec
from backend.training.dpo import train_dpo_adapter
from tests.builders import COLORS, folder_ref, make_parent, round_spec


def color_pairs(n: int = 10) -> list[dict]:
    items = list(COLORS.items())
    pairs = []
    for i in range(n):
        obj, color = items[i % len(items)]
        wrong = "white" if color == "red" else "red"
        pairs.append({"prompt": [{"role": "user", "content": f"color of {obj}?"}],
                      "chosen": [{"role": "assistant", "content": color}],
                      "rejected": [{"role": "assistant", "content": wrong}], "rating_ids": [2 * i + 1, 2 * i + 2]})
    return pairs


@pytest.fixture(scope="module")
def round_(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    parent = make_parent(tiny_llama, root / "adapters" / "parent")
    pairs = write_pairs(color_pairs(), root / "data" / "pairs.jsonl")
    progress = []
    meta = train_dpo_adapter(round_spec("parent-dpo", "dpo", tiny_llama), base_ref=folder_ref(tiny_llama),
                             pairs_file=pairs, parent_dir=parent, out_dir=root / "adapters" / "parent-dpo",
                             work_dir=root / "work", on_progress=progress.append)
    return SimpleNamespace(root=root, parent=parent, out=root / "adapters" / "parent-dpo", meta=meta,
                           progress=progress, pairs=pairs)


def test_the_round_writes_an_ordinary_adapter_folder_recording_its_parent(round_):
    assert sorted(p.name for p in round_.out.iterdir()) == sorted(ADAPTER_FILES)
    meta = read_meta(round_.out)
    assert meta["hyperparameters"]["method"] == "dpo" and meta["hyperparameters"]["parent"] == "parent"
    assert meta["parent"] == "parent"
    assert meta["preference"]["pairs"] == 10
    assert meta["preference"]["rating_ids"] == list(range(1, 21))
    assert meta["hyperparameters"]["lora"] == {"r": 4, "alpha": 8}  # the parent's LoRA shape
    config = json.loads((round_.out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"


def test_the_loss_moves_from_log_two(round_):
    losses = [h["loss"] for h in round_.meta["loss_history"] if h["loss"] is not None]
    assert len(losses) >= 3
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start: ln 2
    assert losses[-1] < losses[0] - 0.01
    assert round_.progress and round_.progress[-1]["step"] == round_.meta["metrics"]["steps"]


def test_plain_peft_loads_it_and_it_prefers_the_chosen_answers_more_than_its_parent(round_, tiny_llama):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)

    def margin(folder) -> float:
        """Mean log p(chosen) - log p(rejected) over the pairs."""
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(folder)).eval()
        total = 0.0
        for pair in color_pairs():
            prompt = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, tokenize=False)
            scores = []
            for side in ("chosen", "rejected"):
                ids = tokenizer(prompt + pair[side][0]["content"], return_tensors="pt")["input_ids"]
                n = len(tokenizer(prompt)["input_ids"])
                with torch.no_grad():
                    logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
                scores.append(float(logits[torch.arange(n - 1, ids.shape[1] - 1), ids[0, n:]].sum()))
            total += scores[0] - scores[1]
        return total / len(color_pairs())

    assert margin(round_.out) > margin(round_.parent) + 0.05


def test_too_few_pairs_is_refused_saying_how_many_more(tiny_llama, tmp_path):
    parent = tmp_path / "parent"
    pairs = write_pairs(color_pairs(3), tmp_path / "pairs.jsonl")
    with pytest.raises(DataError, match="3 preference pair.*at least 8") as info:
        train_dpo_adapter(round_spec("x", "dpo", tiny_llama), base_ref=folder_ref(tiny_llama), pairs_file=pairs,
                          parent_dir=parent, out_dir=tmp_path / "x", work_dir=tmp_path / "w")
    assert "5 more" in str(info.value)


def test_a_dpo_spec_needs_its_parent():
    with pytest.raises(ValueError, match="parent"):
        RunSpec(name="x", method="dpo")
    assert RunSpec(name="x").method == "sft"  # older specs read as supervised runs


def test_the_round_takes_the_devices_recipe(round_):
    """As a supervised run: the CPU's recipe here (its precision, its machinery, the spec's batch,
    no checkpointing), kept in tunelab.json."""
    metrics = round_.meta["metrics"]
    recipe = metrics["recipe"]
    assert (recipe["device"], recipe["precision"], recipe["cpu_machinery"]) == ("cpu", metrics["precision"], True)
    assert recipe["per_device_batch"] == round_.meta["hyperparameters"]["train"]["batch_size"]
    assert not recipe["gradient_checkpointing"] and metrics["processes"] == 1


def test_a_gpu_recipe_sets_the_rounds_batch_accumulation_and_checkpointing(tmp_path):
    from trl import DPOConfig

    from backend.hparams import TrainSpec
    from backend.training.preference_round import round_config_args
    from backend.training.recipe import Recipe

    spec = RunSpec(name="r", method="dpo", parent="p", train=TrainSpec(batch_size=8))
    gpu = Recipe(device="cuda", precision="bf16", attention="sdpa", padding_free=True, gradient_checkpointing=True,
                 per_device_batch=2, accumulation=4, cpu_machinery=False, quantize=None, processes=2, strategy="ddp")
    args = DPOConfig(**round_config_args(spec, tmp_path, precision="fp32", device="cpu", recipe=gpu))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.gradient_checkpointing,
            args.ddp_find_unused_parameters, args.padding_free) == (2, 4, True, False, False)
    plain = DPOConfig(**round_config_args(spec, tmp_path, precision="fp32", device="cpu"))
    assert (plain.per_device_train_batch_size, plain.gradient_checkpointing) == (8, False)
