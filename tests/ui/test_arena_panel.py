"""The arena on the page: the ranking from stored votes, and "Train from my ratings" refusing
with how many more votes are needed."""

from __future__ import annotations

from backend.studio import rounds
from tests.builders import add_finished_adapter
from ui.arena_panel import arena_html


def test_the_arena_table_ranks_from_votes_and_escapes_names(service):
    add_finished_adapter(service, "news-r8")
    for i in range(3):
        rounds.add_rating(service, "news-r8", f"q{i}", "<b>good</b>", "up", comparison=f"c{i}")
        rounds.add_rating(service, "base", f"q{i}", "bad", "down", comparison=f"c{i}")
    html = arena_html(service, "compare-arena")
    assert html.index("<td>news-r8</td>") < html.index("<td>base</td>")
    assert "<td>3/0</td>" in html and "<td>0/3</td>" in html and "95% interval" in html
    assert "news-r8 leads after 6 votes" in html


def test_train_from_ratings_says_how_many_more_votes(service):
    ok, text = rounds.train_from_ratings(service)
    assert not ok and "no finished adapter" in text
    add_finished_adapter(service, "news-r8")
    rounds.add_rating(service, "news-r8", "q", "good", "up", comparison="c")
    rounds.add_rating(service, "base", "q", "bad", "down", comparison="c")
    ok, text = rounds.train_from_ratings(service)
    assert not ok and "1 preference pair from" in text and "so 7 more" in text


def test_the_next_comparison_is_the_leader_against_its_closest_challenger_on_the_least_rated_prompt(service, tmp_path):
    from types import SimpleNamespace

    for name in ("news-r8", "news-r16"):
        add_finished_adapter(service, name)
    for i in range(3):  # news-r16 beats base clearly; news-r8 has no votes: the doubt is r16 vs r8
        rounds.add_rating(service, "news-r16", "probe one", f"good {i}", "up", comparison=f"c{i}")
        rounds.add_rating(service, "base", "probe one", f"bad {i}", "down", comparison=f"c{i}")
    data = tmp_path / "import"
    data.mkdir()
    (data / "eval.jsonl").write_text('{"messages": [{"role": "user", "content": "held out one"}, '
                                     '{"role": "assistant", "content": "x"}]}\n')
    state = SimpleNamespace(plan=SimpleNamespace(probe_prompts=["probe one"]), data_dir=str(data))
    assert rounds.candidate_prompts(state) == ["probe one", "held out one"]
    chosen = rounds.next_comparison(service, state)
    assert chosen["pair"] == ["news-r16", "news-r8"] and chosen["adapters"] == ["news-r16", "news-r8"]
    assert chosen["prompt"] == "held out one"  # "probe one" already has 3 votes on news-r16
    assert rounds.next_comparison(service, SimpleNamespace(plan=None, data_dir=None)) is None
