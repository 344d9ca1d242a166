"""Proof of learning: weight change, eval loss, exact match and self-consistency.

A tiny Llama gets a LoRA adapter trained (plain torch loop, answer tokens only) to
memorize a small labelled set; a fresh adapter (B = 0) is the zero-change control.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from backend.adapter_folder import read_meta
from backend.errors import DataError
from backend.proof.intervals import scored
from backend.proof.scores import (answers_match, best_base, compare_exact_match, few_shot_prompt, field_match,
                                  pick_shots, render_text, self_consistency, suggest_verdict)
from backend.proof.change_checks import GENERAL_PROMPTS
from backend.proof.on_model import (baseline_scores, delta_norm, delta_w_heatmap, encode_row, evaluate_adapter,
                                    lora_factors)

SYSTEM = {"role": "system", "content": "Classify the wine as red or white."}
WINES = [
    ("deep ruby with notes of cherry", "red"),
    ("pale straw with citrus and green apple", "white"),
    ("dark plum colour, tannic finish", "red"),
    ("crisp, light gold, notes of pear", "white"),
    ("garnet rim, smell of blackberry", "red"),
    ("clear lemon yellow, mineral", "white"),
]


def _row(text: str, label: str, system: bool = True) -> dict:
    turns = [{"role": "user", "content": f"The wine is {text}."}, {"role": "assistant", "content": label}]
    return {"messages": ([SYSTEM] if system else []) + turns}


EVAL_ROWS = [_row(t, lab) for t, lab in WINES]
TRAIN_ROWS = [_row(t + " (again)", lab) for t, lab in WINES]


def _peft_model(base: Path, r: int = 8):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


@pytest.fixture(scope="module")
def sharp_llama(tiny_llama, tmp_path_factory) -> Path:
    """The tiny Llama with 10x embeddings (tied to the output head).

    At the default init (std 0.02) logits stay within about ±1.5, so no adapter on the
    linear layers can make the model confident; with larger output embeddings a few
    steps memorize the labels, and greedy and sampled answers become predictable.
    """
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("sharp-llama") / "model"
    shutil.copytree(tiny_llama, folder)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(sharp_llama, tmp_path_factory) -> dict[str, Path]:
    """'fresh': B = 0 as peft initializes it. 'memorized': trained on EVAL_ROWS' answers."""
    import torch

    from backend.bases.resolve import BaseRef
    from backend.bases.load import load_tokenizer

    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    _peft_model(sharp_llama).save_pretrained(root / "fresh")

    tokenizer = load_tokenizer(BaseRef(spec=str(sharp_llama), kind="folder", name="sharp", path=str(sharp_llama)))
    encoded = [encode_row(tokenizer, row["messages"]) for row in EVAL_ROWS]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(encoded):  # right-padded; loss on answer tokens only
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
        mask[i, :len(ids)] = 1
    model = _peft_model(sharp_llama)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(root / "memorized")
    return {"fresh": root / "fresh", "memorized": root / "memorized"}


def _base_model(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


# --- weight change ----------------------------------------------------------------------------------


def test_delta_w_is_zero_for_a_fresh_adapter_and_not_for_a_trained_one(sharp_llama, adapters):
    base = _base_model(sharp_llama)
    fresh = delta_w_heatmap(adapters["fresh"], base)
    assert fresh["modules"][0] == "self_attn.q_proj" and len(fresh["layers"]) == 2
    assert all(v == 0.0 for row in fresh["values"] for v in row)
    trained = delta_w_heatmap(adapters["memorized"], base)
    assert all(v is not None and v > 0 for row in trained["values"] for v in row)
    assert trained["max"] > 0 and trained["modules_adapted"] == 14
    json.dumps(trained)


def test_delta_w_equals_the_dense_computation(sharp_llama, adapters):
    base = _base_model(sharp_llama)
    factors = lora_factors(adapters["memorized"])
    name = "model.layers.1.mlp.down_proj"
    f = factors[name]
    dense = f["scale"] * (f["B"] @ f["A"])
    assert math.isclose(delta_norm(f["A"], f["B"], f["scale"]), float(dense.norm()), rel_tol=1e-4)
    heat = delta_w_heatmap(adapters["memorized"], base)
    expected = float(dense.norm() / base.get_submodule(name).weight.detach().norm())
    assert math.isclose(heat["values"][1][heat["modules"].index("mlp.down_proj")], expected, rel_tol=1e-4)
    assert f["scale"] == 2.0  # alpha 16 / r 8


# --- scoring with known answers ------------------------------------------------------------------------


class Scripted:
    """A generator that answers from a script and records the prompts it was given."""

    def __init__(self, answers):
        self.answers = answers
        self.prompts = []

    def __call__(self, prompts, *, n=1, temperature=0.0, seed=0):
        self.prompts.extend(prompts)
        return [[self.answers(p, i) for i in range(n)] for p in prompts]


def test_exact_match_base_zero_and_few_shot_against_the_adapter():
    truth = {row["messages"][-2]["content"]: row["messages"][-1]["content"] for row in EVAL_ROWS}
    base = Scripted(lambda prompt, i: "Red." if len(prompt) > 2 else "rosé")  # few-shot: 'red', right on 3 of 6
    adapter = Scripted(lambda prompt, i: "  " + truth[prompt[-1]["content"]].upper() + " ")
    result = compare_exact_match(EVAL_ROWS, TRAIN_ROWS, base, adapter, "classification", k=2, seed=3)
    assert result["base_zero_shot"] == {"score": 0.0, "correct": 0, "total": 6, "ci95": [0.0, 0.3903]}
    assert result["base_few_shot"] == {"score": 0.5, "correct": 3, "total": 6, "ci95": [0.1876, 0.8124]}
    assert result["adapter"] == {"score": 1.0, "correct": 6, "total": 6, "ci95": [0.6097, 1.0]}
    assert [r["base_few_shot_ok"] for r in result["rows"]] == [lab == "red" for _, lab in WINES]
    # zero-shot: the system prompt and the row; few-shot: 2 shots (one per label) as earlier turns
    zero, few = base.prompts[0], base.prompts[6]
    assert zero == EVAL_ROWS[0]["messages"][:-1]
    assert few[0] == SYSTEM and [m["role"] for m in few[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert {few[2]["content"], few[4]["content"]} == {"red", "white"}
    assert all(len(p) == 2 for p in adapter.prompts)


def test_every_prompt_goes_behind_the_trained_system_prompt():
    rows = [_row(t, lab, system=False) for t, lab in WINES]
    base, adapter = Scripted(lambda p, i: "red"), Scripted(lambda p, i: "red")
    compare_exact_match(rows, TRAIN_ROWS, base, adapter, "classification", k=2, system_prompt="Say red or white.")
    assert all(p[0] == {"role": "system", "content": "Say red or white."} for p in base.prompts + adapter.prompts)


def test_extraction_reports_each_field():
    refs = ['{"item": "tea", "qty": 2, "city": null}', '{"item": "rice", "qty": 5, "city": "Oslo"}',
            '{"item": "oil", "qty": 1, "city": "Rome"}']
    preds = ['{"item": "tea", "qty": 2, "city": "New York"}', 'Sure: {"item": "rice", "qty": 5, "city": "Oslo"}',
             "no idea"]
    fields = field_match(preds, refs)
    assert {k: (v["correct"], v["total"]) for k, v in fields.items()} == {"city": (1, 3), "item": (2, 3),
                                                                         "qty": (2, 3)}


def test_the_verdict_is_the_paired_test_on_the_same_rows():
    """Six rows only the adapter got (14/20 vs 20/20): the intervals overlap, but on the same
    rows the sign test says p = 0.031, so it beats the base. Five such rows (15/20): p = 0.062,
    not yet. A proof whose rows carry no per-row outcomes keeps the interval rule."""
    from backend.proof.intervals import paired
    from backend.proof.on_model import verdict_of

    def rows(adapter_right, base_right, total=20):
        return [{"adapter_ok": i < adapter_right, "base_few_shot_ok": i < base_right, "base_zero_shot_ok": False}
                for i in range(total)]

    def proof(table):
        figures = {key: scored([r[f"{key}_ok"] for r in table]) for key in ("adapter", "base_few_shot", "base_zero_shot")}
        return {"exact_match": {"k": 6, **figures, "rows": table}}

    six = verdict_of(proof(rows(20, 14)))
    assert six["suggestion"] == "beats_base"
    assert six["text"].endswith("of the 6 rows only one of them got right, the adapter got 6 and the base 6-shot 0 "
                                "(paired sign test p = 0.031).")
    assert suggest_verdict(scored([True] * 20), scored([True] * 14 + [False] * 6))["suggestion"] == "no_better"
    five = verdict_of(proof(rows(20, 15)))
    assert five["suggestion"] == "no_better" and "p = 0.062" in five["text"]
    assert "on the same rows" in five["text"]
    # the rows the base got and the adapter missed count against it: 12 vs 6 is not clear (p = 0.24)
    mixed = [{"adapter_ok": i < 14, "base_few_shot_ok": 12 <= i < 20, "base_zero_shot_ok": False} for i in range(20)]
    assert paired([r["adapter_ok"] for r in mixed], [r["base_few_shot_ok"] for r in mixed])["only_second"] == 6
    assert verdict_of(proof(mixed))["suggestion"] == "no_better" and "p = 0.24" in verdict_of(proof(mixed))["text"]
    old = proof(rows(20, 14))
    for row in old["exact_match"]["rows"]:
        del row["base_few_shot_ok"]  # stored before rows carried it: the interval rule
    assert verdict_of(old)["suggestion"] == "no_better" and "intervals overlap" in verdict_of(old)["text"]
    style = {"style": {"adapter": {"both": scored([True] * 20)}, "prompted": {"both": scored([False] * 20)},
                       "rows": [{"adapter_ok": True, "prompted_ok": False}] * 20}}
    assert verdict_of(style)["suggestion"] == "beats_base" and "the base asked for the style 0" in verdict_of(style)["text"]


def test_verdict_only_says_beats_when_the_intervals_do():
    def fig(correct, total):
        return scored([True] * correct + [False] * (total - correct))

    assert suggest_verdict(fig(29, 30), fig(13, 30))["suggestion"] == "beats_base"
    assert "29/30 (97%, 95% CI 83%–99%)" in suggest_verdict(fig(29, 30), fig(13, 30))["text"]
    assert suggest_verdict(fig(20, 30), fig(13, 30))["suggestion"] == "no_better"  # 67% vs 43%: intervals overlap
    assert suggest_verdict(fig(12, 12), fig(0, 12))["suggestion"] == "too_few_rows"
    assert "Too few held-out rows" in suggest_verdict(fig(12, 12), fig(0, 12))["text"]
    assert suggest_verdict(fig(29, 30), fig(1, 30), changed_nothing=True)["suggestion"] == "changed_nothing"
    assert suggest_verdict(None, None)["suggestion"] == "unchecked"
    assert best_base({"base_zero_shot": fig(4, 30), "base_few_shot": fig(13, 30)})[0] == "base_few_shot"
    assert best_base({"base_zero_shot": fig(14, 30), "base_few_shot": fig(13, 30)})[0] == "base_zero_shot"


def test_answer_matching_rules():
    assert answers_match(" Billing.\n", "billing", "classification")
    assert not answers_match("billing issue", "billing", "classification")
    assert answers_match('{"b": 2, "a": [1, 2]}', '```json\n{"a": [1,2], "b": 2}\n```', "extraction")
    assert answers_match('Here: {"a": 1}', '{"a": 1}', "extraction")
    assert not answers_match('{"a": 1}', '{"a": "1"}', "extraction")
    assert answers_match("weight  2 kg", "weight 2 kg", "extraction")  # neither parses: strings
    assert pick_shots(TRAIN_ROWS, 0) == []
    assert len(pick_shots(TRAIN_ROWS, 10)) == 6


def test_self_consistency_known_shares():
    samples = [["red", "Red", "red.", "white", "red"], ["white"] * 5, ["a", "b", "a", "b", "c"]]
    result = self_consistency(samples, references=["red", "red", "a"])
    assert [r["agreement"] for r in result["per_row"]] == [0.8, 1.0, 0.4]
    assert [r["majority"] for r in result["per_row"]] == ["red", "white", "a"]
    assert [r["majority_correct"] for r in result["per_row"]] == [True, False, True]
    assert math.isclose(result["mean"], (0.8 + 1.0 + 0.4) / 3)


def test_few_shot_prompt_without_system():
    row = _row("pale", "white", system=False)
    prompt = few_shot_prompt(row, [TRAIN_ROWS[0]])
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"]


# --- end to end on the tiny model ---------------------------------------------------------------------


def _adapter_copy(adapters, name, tmp_path) -> Path:
    folder = tmp_path / name
    shutil.copytree(adapters[name], folder)
    return folder


def test_memorizing_adapter_has_lower_eval_loss_and_full_proof(sharp_llama, adapters, settings, tmp_path):
    folder = _adapter_copy(adapters, "memorized", tmp_path)
    result = evaluate_adapter(folder, str(sharp_llama), EVAL_ROWS, TRAIN_ROWS, task="classification",
                              n_samples=3, seed=0, k_shot=2, settings=settings)
    ev = result["eval"]
    assert ev["adapter"]["loss"] < ev["base"]["loss"]
    assert ev["adapter"]["perplexity"] < ev["base"]["perplexity"]
    assert ev["base"]["tokens"] == ev["adapter"]["tokens"] > 0 and ev["adapter"]["rows"] == 6
    em = result["exact_match"]
    assert em["k"] == 2
    for side in ("base_zero_shot", "base_few_shot", "adapter"):
        figure = em[side]
        assert 0.0 <= figure["score"] <= 1.0 and figure["total"] == 6
        assert figure["ci95"][0] <= figure["score"] <= figure["ci95"][1]
    assert em["adapter"]["score"] >= em["base_few_shot"]["score"]
    assert result["verdict"]["suggestion"] == "too_few_rows"  # 6 rows cannot decide
    assert result["changed_nothing"]["flag"] is False and result["divergence"]["total"] == 6
    assert result["forgetting"]["total"] == len(GENERAL_PROMPTS)
    sc = result["self_consistency"]
    assert len(sc["per_row"]) == 6 and all(r["samples"] == 3 for r in sc["per_row"])
    assert all(r["agreement"] in (1 / 3, 2 / 3, 1.0) for r in sc["per_row"])
    assert 1 / 3 <= sc["mean"] <= 1.0
    assert result["delta_w"]["max"] > 0
    assert read_meta(folder)["proof"] == result  # stored in tunelab.json
    text = render_text(result)
    assert "Eval loss" in text and "Exact match" in text and "Consistency" in text and "95% CI" in text


def test_an_adapter_with_zeroed_b_is_caught_changing_nothing(adapters, settings, tmp_path):
    """The "changed nothing" detector: B = 0 (peft's fresh init) -> no weight change and
    every greedy answer equal to the base's; both reasons and the likely causes are said."""
    folder = _adapter_copy(adapters, "fresh", tmp_path)
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(json.dumps(r) for r in EVAL_ROWS[:2]) + "\n")
    result = evaluate_adapter(folder, None, eval_file, task="style", settings=settings)  # base from adapter_config
    assert result["exact_match"] is None and result["self_consistency"] is None
    assert math.isclose(result["eval"]["adapter"]["loss"], result["eval"]["base"]["loss"], rel_tol=1e-5)
    assert result["delta_w"]["max"] == 0.0
    nothing = result["changed_nothing"]
    assert nothing["flag"] and len(nothing["reasons"]) == 2 and any("learning rate" in c for c in nothing["causes"])
    assert result["divergence"]["changed"] == 0 and result["forgetting"]["changed"] == 0
    assert result["verdict"]["suggestion"] == "changed_nothing"
    assert "changed nothing" in render_text(result)
    style = result["style"]
    assert set(style) >= {"base", "prompted", "adapter", "markers"} and style["adapter"]["both"]["total"] == 2


def test_the_base_is_scored_once_and_reused_from_the_cache(sharp_llama, adapters, settings, tmp_path):
    from backend.bases.resolve import BaseRef

    cache = tmp_path / "baseline.json"
    ref = BaseRef(spec=str(sharp_llama), kind="folder", name="sharp", path=str(sharp_llama))
    before = baseline_scores(ref, EVAL_ROWS, TRAIN_ROWS, "classification", k=2, settings=settings, cache_file=cache)
    assert before["base_zero_shot"]["total"] == 6 and "outputs" not in before and cache.is_file()
    assert "per_row" not in before["base_few_shot"] and len(before["base_few_shot"]["ci95"]) == 2
    stored = json.loads(cache.read_text())
    (key, entry), = stored.items()
    entry["base_few_shot"]["correct"] = 5  # a cached figure is what every later proof reports
    cache.write_text(json.dumps({key: entry}))
    again = baseline_scores(ref, EVAL_ROWS, TRAIN_ROWS, "classification", k=2, settings=settings, cache_file=cache)
    assert again["base_few_shot"]["correct"] == 5
    folder = _adapter_copy(adapters, "memorized", tmp_path)
    proof = evaluate_adapter(folder, ref, EVAL_ROWS, TRAIN_ROWS, task="classification", n_samples=0, k_shot=2,
                             settings=settings, baseline_cache=cache, forgetting_check=False)
    assert proof["exact_match"]["base_few_shot"]["correct"] == 5 and "forgetting" not in proof


def test_bad_rows_are_reported_together(adapters, settings, sharp_llama, tmp_path):
    folder = _adapter_copy(adapters, "fresh", tmp_path)
    bad = [{"messages": [{"role": "user", "content": "hi"}]},
           {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}]
    with pytest.raises(DataError) as info:
        evaluate_adapter(folder, str(sharp_llama), bad, settings=settings)
    assert "row 1" in str(info.value) and "row 2" in str(info.value)
    with pytest.raises(DataError, match="no held-out rows"):
        evaluate_adapter(folder, str(sharp_llama), [], settings=settings)
