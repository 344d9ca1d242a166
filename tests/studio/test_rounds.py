"""Ratings that train, end to end on real parts: compare on the real endpoint, rate through
the service, rank in the arena, refuse a round on too few pairs, then run a real preference
round through the job runner (its own process) whose adapter is hot-loaded, served, and
loads in plain peft."""

from __future__ import annotations

import json

import pytest

from backend.adapter_folder import read_meta, write_meta
from backend.errors import AdapterNotFound, TuneLabError
from backend.studio import rounds
from tests.builders import make_lora


def add_parent(service, base, name: str = "parent", system: str | None = None):
    folder = make_lora(base, service.paths.adapters / name, seed=3)
    write_meta(folder, {"name": name, "status": "done", "goal": "say the color",
                        "hyperparameters": {"lora": {"r": 4, "alpha": 8}, "train": {"system_prompt": system}}})
    service.store.upsert_adapter(name, base=str(base), status="done", goal="say the color")
    return folder


def rate_rounds(service, parent: str, prompts: list[str]) -> None:
    """Compare base and parent on each prompt (the real endpoint) and prefer the parent."""
    base_name = next(m for m in service.models() if m != parent)
    for prompt in prompts:
        comparison = service.compare(prompt, [base_name, parent], max_tokens=6)
        service.rate(comparison, parent, score=1)
        service.rate(comparison, base_name, score=-1)


def test_the_loop_compare_rate_rank_round_serve(served, tiny_llama):
    service = served
    add_parent(service, tiny_llama)
    assert "parent" in service.sync_endpoint()
    rate_rounds(service, "parent", [f"color of thing {i}?" for i in range(5)])

    board = rounds.table(service)
    assert [r["name"] for r in board["rows"]] == ["parent", "base"]
    assert board["rows"][0]["wins"] == 5 and board["rows"][1]["losses"] == 5
    with pytest.raises(TuneLabError, match=r"5 preference pairs .*at least 8, so 3 more"):
        rounds.start_round(service, "parent", "parent-dpo")

    rate_rounds(service, "parent", [f"color of item {i}?" for i in range(4)])
    job = rounds.start_round(service, "parent", "parent-dpo", train={"learning_rate": 5e-3, "epochs": 2})
    assert service.runner.run_pending() == [job]
    progress = service.progress(job)
    assert progress["status"] == "done", progress

    meta = read_meta(service.paths.adapters / "parent-dpo")
    assert meta["hyperparameters"]["method"] == "dpo" and meta["parent"] == "parent"
    assert meta["preference"]["pairs"] == 9
    stored = {r.id for r in service.store.ratings()}
    assert set(meta["preference"]["rating_ids"]) == stored and len(stored) == 18
    losses = [h["loss"] for h in meta["loss_history"] if h["loss"] is not None]
    assert losses[0] == pytest.approx(0.6931, abs=2e-3) and losses[-1] != pytest.approx(losses[0], abs=1e-4)

    assert "parent-dpo" in service.models()  # hot-loaded by the job runner
    answer = service.chat("parent-dpo", [{"role": "user", "content": "color of snow?"}], max_tokens=4)
    assert isinstance(answer, str)
    assert "parent-dpo" in [r["name"] for r in rounds.table(service)["rows"]]  # enters the arena

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                      str(service.paths.adapters / "parent-dpo"))
    assert list(model.peft_config) == ["default"]


def test_add_rating_and_export_conversational_pairs(service, tiny_llama, tmp_path):
    add_parent(service, tiny_llama, system="Answer with one colour.")
    for i in range(3):
        rounds.add_rating(service, "parent", f"q{i}", f"good {i}", "up", comparison=f"c{i}")
        rounds.add_rating(service, "base", f"q{i}", f"bad {i}", "down", comparison=f"c{i}")
    with pytest.raises(AdapterNotFound):
        rounds.add_rating(service, "nope", "q", "a", "up")
    with pytest.raises(TuneLabError, match="not up or down"):
        rounds.add_rating(service, "parent", "q", "a", "sideways")
    with pytest.raises(TuneLabError, match="output is empty"):
        rounds.add_rating(service, "parent", "q", "  ", "up")
    written = rounds.export_preference(service, tmp_path / "pairs.jsonl")
    assert written["pairs"] == 3 and len(written["rating_ids"]) == 6
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == [{"role": "system", "content": "Answer with one colour."},
                                 {"role": "user", "content": "q0"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "good 0"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "bad 0"}]


def test_a_round_needs_a_finished_parent(service):
    with pytest.raises(AdapterNotFound):
        rounds.start_round(service, "nope", "new")
