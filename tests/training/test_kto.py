"""A real KTO round (backend/training/kto.py) on the tiny Llama: single 👍/👎 votes, no pairs. It
continues from a parent adapter, judges against that parent (not the base), moves its loss,
weighs unequal votes alike, and writes an adapter that plain peft loads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from backend.adapter_folder import ADAPTER_FILES, read_meta
from backend.data.preference import write_pairs
from backend.errors import DataError
from backend.hparams import RunSpec
from backend.training.kto import loss_weights, train_kto_adapter
from tests.builders import COLORS, folder_ref, make_parent, round_spec


def colour_votes(up: int = 8, down: int = 8) -> list[dict]:
    """👍 on the colour for ``up`` prompts, 👎 on a shrug for ``down`` others (single votes: no
    prompt has both, so no pair among them)."""
    items = list(COLORS.items())
    votes = []
    for i in range(up + down):
        obj, color = items[i % len(items)]
        good = i < up
        answer = color if good else "no idea, sorry"
        votes.append({"prompt": [{"role": "user", "content": f"color of {obj} (#{i})?"}],
                      "completion": [{"role": "assistant", "content": answer}], "label": good, "rating_ids": [i + 1]})
    return votes


@pytest.fixture(scope="module")
def round_(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("kto")
    parent = make_parent(tiny_llama, root / "adapters" / "parent")
    votes = write_pairs(colour_votes(), root / "data" / "votes.jsonl")
    progress = []
    meta = train_kto_adapter(round_spec("parent-kto", "kto", tiny_llama), base_ref=folder_ref(tiny_llama),
                             votes_file=votes, parent_dir=parent, out_dir=root / "adapters" / "parent-kto",
                             work_dir=root / "work", on_progress=progress.append)
    return SimpleNamespace(root=root, parent=parent, out=root / "adapters" / "parent-kto", meta=meta,
                           progress=progress)


def test_the_round_writes_an_ordinary_adapter_folder_recording_its_parent_and_votes(round_):
    assert sorted(p.name for p in round_.out.iterdir()) == sorted(ADAPTER_FILES)
    meta = read_meta(round_.out)
    assert meta["hyperparameters"]["method"] == "kto" and meta["hyperparameters"]["parent"] == "parent"
    assert meta["parent"] == "parent"
    preference = meta["preference"]
    assert (preference["votes"], preference["up"], preference["down"]) == (16, 8, 8)
    assert preference["rating_ids"] == list(range(1, 17))
    assert (preference["desirable_weight"], preference["undesirable_weight"]) == (1.0, 1.0)
    assert meta["hyperparameters"]["lora"] == {"r": 4, "alpha": 8}  # the parent's LoRA shape
    config = json.loads((round_.out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"


def test_the_loss_starts_at_one_half_against_the_parent_and_falls(round_):
    losses = [h["loss"] for h in round_.meta["loss_history"] if h["loss"] is not None]
    assert len(losses) >= 3
    # policy == reference at the start: every log-ratio and the KL estimate are 0, so each
    # vote's loss is 1 - sigmoid(0) = 0.5; against the base (the parent's weights differ) it would not be
    assert losses[0] == pytest.approx(0.5, abs=1e-3)
    assert losses[-1] < losses[0] - 0.01
    assert round_.progress and round_.progress[-1]["step"] == round_.meta["metrics"]["steps"]
    assert round_.meta["metrics"]["reward_chosen"] is not None


def test_plain_peft_loads_it_and_it_favours_the_liked_answers_more_than_its_parent(round_, tiny_llama):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)

    def liked_minus_disliked(folder) -> float:
        """Mean log p(answer) of the 👍 answers minus that of the 👎 ones."""
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(folder)).eval()
        assert list(model.peft_config) == ["default"]
        sums = {True: [], False: []}
        for vote in colour_votes():
            prompt = tokenizer.apply_chat_template(vote["prompt"], add_generation_prompt=True, tokenize=False)
            ids = tokenizer(prompt + vote["completion"][0]["content"], return_tensors="pt")["input_ids"]
            n = len(tokenizer(prompt)["input_ids"])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            sums[vote["label"]].append(float(logits[torch.arange(n - 1, ids.shape[1] - 1), ids[0, n:]].sum()))
        return sum(sums[True]) / len(sums[True]) - sum(sums[False]) / len(sums[False])

    assert liked_minus_disliked(round_.out) > liked_minus_disliked(round_.parent) + 0.05


def test_unequal_votes_are_weighed_alike_unless_the_spec_says():
    spec = round_spec("x", "kto", "base")
    assert loss_weights(spec, 12, 4) == (1.0, 3.0)  # 12 👍 * 1 == 4 👎 * 3
    assert loss_weights(spec, 4, 10) == (2.5, 1.0)
    assert loss_weights(spec, 5, 5) == (1.0, 1.0)
    assert loss_weights(round_spec("x", "kto", "base", undesirable_weight=1.5), 12, 4) == (1.0, 1.5)


def test_too_few_votes_are_refused_saying_how_many_more(tiny_llama, tmp_path):
    votes = write_pairs(colour_votes(6, 2), tmp_path / "votes.jsonl")
    with pytest.raises(DataError, match=r"8 votes \(6 👍, 2 👎\).*at least 16 with at least 4 of each, "
                       r"so 8 more, at least 2 more 👎 among them"):
        train_kto_adapter(round_spec("x", "kto", tiny_llama), base_ref=folder_ref(tiny_llama), votes_file=votes,
                          parent_dir=tmp_path / "parent", out_dir=tmp_path / "x", work_dir=tmp_path / "w")


def test_a_kto_spec_needs_its_parent_and_a_batch_of_two():
    with pytest.raises(ValueError, match="parent"):
        RunSpec(name="x", method="kto")
    with pytest.raises(ValueError, match="batch_size 2 or more"):
        RunSpec(name="x", method="kto", parent="p", train={"batch_size": 1})
