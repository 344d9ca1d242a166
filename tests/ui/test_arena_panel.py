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
    assert not ok and "1 preference pair(s)" in text and "so 7 more" in text
