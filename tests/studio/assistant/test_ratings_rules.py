"""The assistant on ratings: the arena's ranking in its answer, and "train from my ratings" /
"내 평가로 다시 학습해" starting a preference round (or saying how many more votes it needs)."""

from __future__ import annotations

from backend.studio import rounds
from backend.studio.assistant.respond import respond
from tests.builders import add_finished_adapter


def vote_pairs(service, adapter: str, n: int) -> None:
    for i in range(n):
        rounds.add_rating(service, adapter, f"q{i}", f"good {i}", "up", comparison=f"c{i}")
        rounds.add_rating(service, "base", f"q{i}", f"bad {i}", "down", comparison=f"c{i}")


def test_the_ranking_is_in_the_answer(service, state):
    add_finished_adapter(service, "news-r8")
    vote_pairs(service, "news-r8", 2)
    reply = respond(service, state, "show me the leaderboard")
    assert "1. news-r8:" in reply.text and "2. base:" in reply.text and "95% CI" in reply.text
    assert "news-r8 leads after 4 votes" in reply.text


def test_train_from_my_ratings_in_korean_says_how_many_more_votes(service, state):
    add_finished_adapter(service, "news-r8")
    vote_pairs(service, "news-r8", 3)
    reply = respond(service, state, "내 평가로 다시 학습해")
    assert "3 preference pairs" in reply.text and "so 5 more" in reply.text
    assert not any(j.adapter.endswith("-dpo") for j in service.store.list_jobs())  # nothing queued


def test_train_from_my_ratings_queues_a_round_from_the_best_rated_adapter(service, state):
    add_finished_adapter(service, "news-r8")
    add_finished_adapter(service, "news-r16")
    vote_pairs(service, "news-r16", 8)
    reply = respond(service, state, "train from my ratings")
    assert "preference round **news-r16-dpo** from **news-r16** on 8 pairs" in reply.text
    job = service.store.list_jobs()[-1]
    assert job.adapter == "news-r16-dpo" and job.status == "queued"
    assert job.request["spec"]["method"] == "dpo" and job.request["spec"]["parent"] == "news-r16"


def test_which_is_best_and_순위_are_answered_with_the_ranking_tool(service, state):
    add_finished_adapter(service, "news-r8")
    vote_pairs(service, "news-r8", 2)
    for question in ("which is best?", "순위 보여줘", "어느 게 제일 좋아?"):
        reply = respond(service, state, question)
        assert [name for name, _ in reply.results] == ["ranking"], question
        assert "1. news-r8:" in reply.text and "2. base:" in reply.text and "95% CI" in reply.text
    assert service.store.ratings() and not [r for r in service.store.ratings() if r.best]  # nothing was rated


def test_train_from_my_ratings_makes_the_round_one_of_the_sessions_runs(service, state):
    add_finished_adapter(service, "news-r8")
    vote_pairs(service, "news-r8", 8)
    reply = respond(service, state, "train from my ratings")
    job = service.store.list_jobs()[-1]
    assert job.adapter == "news-r8-dpo" and state.job_ids == [job.id]
    assert [name for name, _ in reply.results] == ["train_from_ratings"] and reply.ok
