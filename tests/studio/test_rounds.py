"""Ratings that train, end to end on real parts: compare on the real endpoint, rate through
the service, rank in the arena, refuse a round on too few pairs, then run a real preference
round through the job runner (its own process) whose adapter is hot-loaded, served, and
loads in plain peft."""

from __future__ import annotations

import json

import pytest

from backend.adapter_folder import read_meta, write_meta
from backend.errors import AdapterNotFound, ConfigError, TuneLabError
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


def assert_served_ranked_and_loads_in_peft(service, base, name: str) -> None:
    """A round's adapter is hot-loaded and answers, enters the arena, and loads in plain peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert name in service.models()  # hot-loaded by the job runner
    answer = service.chat(name, [{"role": "user", "content": "color of snow?"}], max_tokens=4)
    assert isinstance(answer, str)
    assert name in [r["name"] for r in rounds.table(service)["rows"]]  # enters the arena
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(service.paths.adapters / name))
    assert list(model.peft_config) == ["default"]


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

    assert_served_ranked_and_loads_in_peft(service, tiny_llama, "parent-dpo")


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


def rate_alone(service, parent: str, prompts: list[str], score: int) -> None:
    """Compare base and parent on each prompt (the real endpoint) and rate the parent's answer
    alone, so no prompt has a pair (the tiny base answers blank lines, which are no vote)."""
    base_name = next(m for m in service.models() if m != parent)
    for prompt in prompts:
        comparison = service.compare(prompt, [base_name, parent], max_tokens=6)
        service.rate(comparison, parent, score=score)


def test_single_votes_train_a_kto_round_chosen_by_auto_served_and_loaded_in_peft(served, tiny_llama):
    service = served
    add_parent(service, tiny_llama)
    assert "parent" in service.sync_endpoint()
    rate_alone(service, "parent", [f"color of thing {i}?" for i in range(3)], 1)
    rate_alone(service, "parent", [f"colour of item {i}?" for i in range(2)], -1)
    ok, said = rounds.train_from_ratings(service)
    assert not ok and "0 preference pairs from your ratings; a round needs at least 8, so 8 more" in said
    assert "5 single votes (3 👍, 2 👎) from your ratings; a KTO round needs at least 16, with at least 4 of " \
           "each, so 11 more, at least 1 more 👍 and 2 more 👎 among them" in said

    rate_alone(service, "parent", [f"color of thing {i}?" for i in range(3, 8)], 1)
    rate_alone(service, "parent", [f"colour of item {i}?" for i in range(2, 8)], -1)
    ok, said = rounds.train_from_ratings(service)
    assert ok, said
    assert "a preference round **parent-kto** from **parent** on 16 single votes (8 👍, 8 👎)" in said
    assert "KTO on 16 single votes (8 👍, 8 👎): no pairs, too few for DPO (it needs 8), but enough single " \
           "votes for KTO." in said
    job = service.store.list_jobs()[-1]
    assert job.request["spec"]["method"] == "kto" and job.request["spec"]["parent"] == "parent"
    assert service.runner.run_pending() == [job.id]
    progress = service.progress(job.id)
    assert progress["status"] == "done", progress

    meta = read_meta(service.paths.adapters / "parent-kto")
    assert meta["hyperparameters"]["method"] == "kto" and meta["parent"] == "parent"
    assert (meta["preference"]["votes"], meta["preference"]["up"], meta["preference"]["down"]) == (16, 8, 8)
    assert meta["preference"]["rating_ids"] == sorted(r.id for r in service.store.ratings())
    losses = [h["loss"] for h in meta["loss_history"] if h["loss"] is not None]
    assert losses[0] == pytest.approx(0.5, abs=2e-3)  # judged against the parent: every log-ratio 0 at the start
    assert rounds.round_line(service.adapter_meta("parent-kto")) == \
        "a KTO round from parent on 16 single votes (8 👍, 8 👎; 16 ratings)"

    assert_served_ranked_and_loads_in_peft(service, tiny_llama, "parent-kto")


def test_export_unpaired_writes_every_vote_as_trl_rows(service, tiny_llama, tmp_path):
    add_parent(service, tiny_llama, system="Answer with one colour.")
    from tests.builders import add_finished_adapter

    add_finished_adapter(service, "plain")  # trained without a system prompt: asked as a plain prompt
    store = service.store
    rounds.add_rating(service, "parent", "q0", "good 0", "up", comparison="c0")
    rounds.add_rating(service, "base", "q0", "bad 0", "down", comparison="c0")
    store.add_rating(comparison="c1", model="parent", prompt="q1", output="best 1", score=0, best=True, blind=True)
    store.add_rating(comparison="c1", model="base", prompt="q1", output="meh 1", score=0, best=False, blind=True)
    rounds.add_rating(service, "parent", "q2", "same", "up", comparison="c2")  # voted both ways: left out
    rounds.add_rating(service, "parent", "q2", "same", "down", comparison="c3")
    rounds.add_rating(service, "plain", "q4", "dup", "up", comparison="c4")  # the same vote twice: one row
    rounds.add_rating(service, "plain", "q4", "dup ", "up", comparison="c5")
    rounds.add_rating(service, "plain", "q6", "flip", "up", comparison="c6")  # changed: the latest counts
    rounds.add_rating(service, "plain", "q6", "flip", "down", comparison="c6")

    written = rounds.export_unpaired(service, tmp_path / "votes.jsonl")
    system = {"role": "system", "content": "Answer with one colour."}

    def turns(prompt, answer):
        return [system, {"role": "user", "content": prompt}], [{"role": "assistant", "content": answer}]

    rows = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert rows == [
        {"prompt": turns("q0", "good 0")[0], "completion": turns("q0", "good 0")[1], "label": True, "rating_ids": [1]},
        {"prompt": turns("q0", "bad 0")[0], "completion": turns("q0", "bad 0")[1], "label": False, "rating_ids": [2]},
        {"prompt": turns("q1", "best 1")[0], "completion": turns("q1", "best 1")[1], "label": True, "rating_ids": [3]},
        {"prompt": "q4", "completion": "dup", "label": True, "rating_ids": [7, 8]},
        {"prompt": "q6", "completion": "flip", "label": False, "rating_ids": [10]},
    ]
    assert (written["votes"], written["up"], written["down"]) == (5, 3, 2)
    assert written["rating_ids"] == [1, 2, 3, 7, 8, 10]
    from backend.data.preference import read_preference_files

    assert read_preference_files([tmp_path / "votes.jsonl"]).ok  # the doctor reads what the export writes


def vote(service, model: str, prompt: str, answer: str, score: str, comparison: str) -> None:
    rounds.add_rating(service, model, prompt, answer, score, comparison=comparison)


def test_auto_takes_dpo_on_enough_pairs(service):
    from tests.builders import add_finished_adapter

    add_finished_adapter(service, "a1")
    for i in range(8):
        vote(service, "a1", f"q{i}", f"good {i}", "up", f"c{i}")
        vote(service, "base", f"q{i}", f"bad {i}", "down", f"c{i}")
    choice = rounds.choose_round(service)
    assert (choice.method, choice.pairs, choice.up, choice.down) == ("dpo", 8, 8, 8)
    assert choice.why == "DPO on 8 pairs: at least 8 pairs, and a pair says more than its two votes alone."
    job = rounds.start_round(service, "a1", "a1-auto", method="auto")
    assert service.store.get_job(job).request["spec"]["method"] == "dpo"


def test_auto_takes_kto_on_single_votes_and_kto_can_be_asked_for(service):
    from tests.builders import add_finished_adapter

    add_finished_adapter(service, "a1")
    for i in range(3):  # 3 pairs: too few for DPO
        vote(service, "a1", f"q{i}", f"good {i}", "up", f"c{i}")
        vote(service, "base", f"q{i}", f"bad {i}", "down", f"c{i}")
    for i in range(10):  # and single votes on other prompts: 13 👍, 3 👎 so far
        vote(service, "a1", f"s{i}", f"fine {i}", "up", f"s{i}")
    with pytest.raises(TuneLabError, match=r"3 preference pairs .* so 5 more\. .*Or a KTO round on single votes: "
                                           r"16 single votes \(13 👍, 3 👎\) .* so 1 more, at least 1 more 👎"):
        rounds.choose_round(service)
    vote(service, "a1", "s10", "awful", "down", "s10")
    choice = rounds.choose_round(service)
    assert (choice.method, choice.pairs, choice.up, choice.down, len(choice.rows)) == ("kto", 3, 13, 4, 17)
    assert choice.why == ("KTO on 17 single votes (13 👍, 4 👎): only 3 pairs, too few for DPO (it needs 8), but "
                          "enough single votes for KTO.")
    assert choice.rows[0] == {"prompt": [{"role": "user", "content": "q0"}],
                              "completion": [{"role": "assistant", "content": "good 0"}], "label": True,
                              "rating_ids": [1]}
    job = rounds.start_round(service, "a1", "a1-kto", method="kto", train={"learning_rate": 1e-4})
    request = service.store.get_job(job).request
    assert (request["spec"]["method"], request["spec"]["parent"]) == ("kto", "a1")
    assert request["train_file"].endswith("votes.jsonl") and len(open(request["train_file"]).read().splitlines()) == 17
    with pytest.raises(TuneLabError, match="3 preference pairs from your ratings; a round needs at least 8"):
        rounds.start_round(service, "a1", "a1-dpo", method="dpo")  # asked for: no fallback
    with pytest.raises(ConfigError, match="batch_size 2 or more"):
        rounds.start_round(service, "a1", "a1-kto1", method="kto", train={"batch_size": 1})
    assert rounds.round_name(service, "a1") == "a1-kto2"  # a1-kto is taken


def test_too_few_votes_of_either_kind_says_how_many_more(service):
    from tests.builders import add_finished_adapter

    add_finished_adapter(service, "a1")
    vote(service, "a1", "q", "good", "up", "c")
    vote(service, "base", "q", "bad", "down", "c")
    ok, said = rounds.train_from_ratings(service)
    assert not ok
    assert said.startswith("1 preference pair from your ratings; a round needs at least 8, so 7 more.")
    assert "2 single votes (1 👍, 1 👎) from your ratings; a KTO round needs at least 16, with at least 4 of each, " \
           "so 14 more, at least 3 more 👍 and 3 more 👎 among them." in said
    with pytest.raises(ConfigError, match="Unknown round method 'ppo'"):
        rounds.choose_round(service, method="ppo")


def test_a_lone_best_is_a_game_and_a_pair_and_does_not_overwrite_a_vote(service, tiny_llama):
    from backend.studio.comparison import Answer, Comparison
    from backend.studio.ratings import BASE

    for name in ("left", "right"):
        add_parent(service, tiny_llama, name)
    shown = [Answer("tiny-base", "A", "red"), Answer("left", "B", "crimson red"), Answer("right", "C", "blue")]
    first = Comparison(id="c-best", prompt="What colour is a cherry?", blind=True, answers=shown)
    service.rate(first, "right", score=-1)  # voted before Best was picked: it stays a 👎
    service.rate(first, "left", best=True, score=1)
    stored = {row.model: (row.score, row.best) for row in service.store.ratings()}
    assert stored == {"right": (-1, False), "left": (1, True), BASE: (0, False)}
    table = rounds.table(service)
    games = {r["name"]: (r["wins"], r["losses"]) for r in table["rows"]}
    assert games["left"] == (2, 0) and games[BASE] == (0, 1) and games["right"] == (0, 1)
    assert {(p["chosen"], p["rejected"]) for p in rounds.pairs(service)} == {("crimson red", "red"),
                                                                             ("crimson red", "blue")}
