"""The agent's tools for the arena and the preference round, driven the way a tool-calling
model drives them: the real langchain agent against a scripted OpenAI-compatible server on a
loopback port, the real service, store and job runner. Each test checks what the tools left
behind (ratings stored, the file written, the job queued), not only that they ran."""

from __future__ import annotations

import json

from backend.studio import rounds
from backend.studio.assistant.agent import langchain_tools
from backend.studio.assistant.respond import respond
from backend.studio.tools import AssistantTools
from tests.builders import ScriptedChatModel, add_finished_adapter

WINE_GOAL = "classify wine as red or white"  # the goal of the trained fixture's adapter
ARENA_TOOLS = ["ranking", "next_comparison", "rate_answer", "export_ratings", "train_from_ratings"]


def tool_names(reply) -> list[str]:
    return [name for name, _ in reply.results]


def vote_pairs(service, adapter: str, n: int) -> None:
    """``n`` comparisons in which ``adapter``'s answer was voted up and the base's down."""
    for i in range(n):
        rounds.add_rating(service, adapter, f"q{i}", f"good {i}", "up", comparison=f"c{i}")
        rounds.add_rating(service, "base", f"q{i}", f"bad {i}", "down", comparison=f"c{i}")


def drive(service, state, turns: list[dict], message: str):
    """One message to the agent whose model plays ``turns``; (reply, the scripted model)."""
    llm = ScriptedChatModel(turns)
    service.settings.assistant_url, service.settings.assistant_model = llm.url, "scripted"
    try:
        return respond(service, state, message), llm
    finally:
        llm.close()


def tool_messages(llm) -> list[str]:
    """What each tool returned to the model, in order (the last request holds them all)."""
    return [m["content"] for m in llm.requests[-1]["messages"] if m["role"] == "tool"]


def test_the_agent_is_given_the_arena_tools_with_their_docstrings(service, state):
    wrapped = {t.name: t for t in langchain_tools(AssistantTools(service, state))}
    assert set(ARENA_TOOLS) <= set(wrapped)
    assert set(wrapped["rate_answer"].args) == {"model", "prompt", "output", "score"}
    assert set(wrapped["train_from_ratings"].args) == {"adapter", "name", "method"}
    assert "95% interval" in wrapped["ranking"].description and "순위" in wrapped["ranking"].description
    assert "how many more votes" in wrapped["train_from_ratings"].description


def test_the_agent_ranks_rates_exports_and_trains_a_round_from_the_ratings(service, state, tmp_path):
    add_finished_adapter(service, "news-r8")
    add_finished_adapter(service, "news-r16")
    vote_pairs(service, "news-r16", 7)  # one pair short of a round
    dest = service.paths.home / "exports" / "pairs.jsonl"
    reply, llm = drive(service, state, [
        {"tool": ("ranking", {})},
        {"tool": ("train_from_ratings", {})},  # 7 pairs: refused, says how many more
        {"tool": ("rate_answer", {"model": "news-r16", "prompt": "q7", "output": "good 7", "score": "up"})},
        {"tool": ("rate_answer", {"model": "Base", "prompt": "q7", "output": "bad 7", "score": "down"})},
        {"tool": ("export_ratings", {"dest": str(dest)})},
        {"tool": ("train_from_ratings", {})},
        {"content": "Ranked, rated, exported and queued the round."},
    ], "rank my models, then train from my ratings")

    assert tool_names(reply) == ["ranking", "train_from_ratings", "rate_answer", "rate_answer", "export_ratings",
                                 "train_from_ratings"]
    said = tool_messages(llm)
    assert "1. news-r16:" in said[0] and "95% CI" in said[0] and "news-r16 leads after 14 votes" in said[0]
    assert said[1].startswith("FAILED: 7 preference pairs") and "so 1 more" in said[1]
    # the two ratings are stored as the page stores them, and make the eighth pair
    stored = [(r.model, r.prompt, r.output, r.score) for r in service.store.ratings() if r.prompt == "q7"]
    assert stored == [("news-r16", "q7", "good 7", 1), ("base", "q7", "bad 7", -1)]
    assert "8 preference pairs" in said[3]
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert len(rows) == 8 and {r["chosen"] for r in rows} == {f"good {i}" for i in range(8)}
    assert all(set(r) >= {"prompt", "chosen", "rejected"} and r["rejected"].startswith("bad") for r in rows)
    assert "Wrote 8 preference pairs (from 16 ratings)" in said[4]
    # the round is queued from the best-rated adapter, and is one of this session's runs
    rounds_queued = [j for j in service.store.list_jobs() if j.adapter.endswith("-dpo")]
    assert len(rounds_queued) == 1
    job = rounds_queued[0]
    assert job.adapter == "news-r16-dpo" and job.status == "queued"
    assert job.request["spec"]["method"] == "dpo" and job.request["spec"]["parent"] == "news-r16"
    assert state.job_ids == [job.id] and state.adapter_names == ["news-r16-dpo"]
    assert f"Queued job {job.id}: a preference round **news-r16-dpo** from **news-r16** on 8 pairs" in said[5]
    assert reply.text.endswith("train_from_ratings ✗ failed; rate_answer ✓; rate_answer ✓; export_ratings ✓; "
                               "train_from_ratings ✓")


def test_the_round_tool_refuses_what_it_cannot_do_and_queues_nothing(service, state):
    add_finished_adapter(service, "news-r8")
    vote_pairs(service, "news-r8", 8)
    tools = AssistantTools(service, state)
    missing = tools.arena.train_from_ratings(adapter="news-r99")  # never a round from another adapter
    assert not missing.ok and "No adapter named 'news-r99'" in missing.text and "news-r8" in missing.text
    taken = tools.arena.train_from_ratings(adapter="news-r8", name="news-r8")
    assert not taken.ok
    bad = tools.arena.rate_answer("news-r8", "q", "an answer", "great")
    assert not bad.ok and "'great' is not up or down" in bad.text
    outside = tools.arena.export_ratings(dest="/etc/pairs.jsonl")
    assert not outside.ok and "outside the folders the page may write" in outside.text
    assert not [j for j in service.store.list_jobs() if j.adapter != "news-r8"] and state.job_ids == []
    assert len(service.store.ratings()) == 16


def test_the_agent_shows_the_most_telling_pair_blind_and_the_vote_moves_the_ranking(trained, state):
    """The real endpoint (the tiny Llama and the trained 'wine' adapter): next_comparison runs a
    blind comparison on a probe prompt, the agent rates answer A 👍 and B 👎, the arena counts the game."""
    service = trained
    before = len(service.store.ratings())
    AssistantTools(service, state).set_goal(WINE_GOAL)
    reply, llm = drive(service, state, [
        {"tool": ("next_comparison", {})},
        {"tool": ("rate", {"answer": "A", "score": 1})},
        {"tool": ("rate", {"answer": "B", "score": -1})},
        {"tool": ("ranking", {})},
        {"content": "A won."},
    ], "show me the comparison that matters; A is better than B")

    assert tool_names(reply) == ["compare", "next_comparison", "rate", "rate", "ranking"] and reply.ok
    said = tool_messages(llm)
    comparison = state.comparison
    assert comparison.blind and comparison.prompt in state.plan.probe_prompts
    assert f"on {comparison.prompt!r}" in said[0] and "**Answer A**" in said[0] and "**Answer B**" in said[0]
    arena_name = {m: "base" if m == service.models()[0] else m for m in (a.model for a in comparison.answers)}
    winner, loser = (arena_name[a.model] for a in comparison.answers)  # shown as A and as B
    stored = service.store.ratings()[before:]
    assert [(r.model, r.score, r.blind, r.comparison) for r in stored] == [(winner, 1, True, comparison.id),
                                                                        (loser, -1, True, comparison.id)]
    table = rounds.table(service)
    assert [(r["name"], r["wins"], r["losses"]) for r in table["rows"]] == [(winner, 1, 0), (loser, 0, 1)]
    assert f"1. {winner}:" in said[3] and f"2. {loser}:" in said[3] and "Revealed:" in said[2]


def test_the_round_tool_passes_the_method_asked_for(service, state):
    add_finished_adapter(service, "news-r8")
    vote_pairs(service, "news-r8", 8)  # 8 pairs, and 16 single votes (8 👍, 8 👎)
    tools = AssistantTools(service, state)
    bogus = tools.arena.train_from_ratings(method="ppo")
    assert not bogus.ok and "Unknown round method 'ppo'" in bogus.text and state.job_ids == []
    kto = tools.arena.train_from_ratings(method="kto")  # auto would take DPO on 8 pairs
    assert kto.ok, kto.text
    job = service.store.get_job(kto.data["job_id"])
    assert job.adapter == "news-r8-kto" and job.request["spec"]["method"] == "kto"
    assert job.request["spec"]["parent"] == "news-r8" and state.job_ids == [job.id]
    auto = tools.arena.train_from_ratings()
    assert auto.ok and service.store.get_job(auto.data["job_id"]).request["spec"]["method"] == "dpo"
    assert auto.data["adapter"] == "news-r8-dpo"
