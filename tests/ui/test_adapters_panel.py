"""The Adapters tab's leaderboard: every finished adapter, sweep by sweep, best first, the
recommended one of each sweep marked with why; rows without a score listed, never marked."""

from __future__ import annotations

from tests.builders import add_finished_adapter, exact_match_proof
from ui.adapters_panel import board_html
from ui.common import leaderboard_html


def test_every_sweep_is_ranked_with_its_recommended_adapter_marked(service):
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(29), size=2_000_000)
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29), size=4_000_000)
    add_finished_adapter(service, "news-bare", sweep="news")
    add_finished_adapter(service, "wine", proof=exact_match_proof(5, 10, base_few_shot=6, suggestion="no_better"))
    html = board_html(service)
    order = [html.index(f"data-adapter='{n}'") for n in ("news-r8", "news-r16", "news-bare", "wine")]
    assert order == sorted(order)  # the tie went to the smaller adapter; the unscored one last
    assert html.count("data-recommended='true'") == 2
    assert "<td>news-r8</td><td>news</td><td>29/30 (97%)</td><td>base 13/30 few-shot</td><td>1m 00s</td>" \
           "<td>2.0 MB</td><td>beats base</td>" in html
    assert "data-adapter='news-bare' data-recommended='false'><td></td>" in html and "not measured yet" in html
    assert "★ news-r8 is best: 29/30 vs base 13/30 few-shot — ties news-r16 at 29/30; smaller adapter " \
           "(2.0 MB vs 4.0 MB)." in html
    assert "its proof says it does no better than the base" in html and "<td>no better</td>" in html


def test_an_empty_board_says_so_and_names_are_escaped(service):
    assert "No finished adapters to rank yet." in board_html(service)
    row = {"sweep": "s", "name": "<b>x</b>", "recommended": False, "score_text": "eval loss 1.000",
           "base_text": "", "train_text": "?", "size_text": "?", "verdict": None}
    html = leaderboard_html([row], elem_id="t")
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html and "<ul" not in html
