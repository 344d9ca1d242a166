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


def test_an_adapter_served_while_its_proof_runs_says_it_is_being_scored(service):
    """Compare's mark line and the Adapters card say the proof is under way, not that there
    is none; once the job is over they show the proof's suggestion."""
    from backend.adapter_folder import AdapterMeta, update_meta
    from ui.adapters_panel import details_markdown
    from ui.compare_panel import SCORING_NOTE, mark_line

    folder = add_finished_adapter(service, "early")
    job = service.store.get_adapter("early").job_id
    service.store.update_job(job, status="running")
    for kind in ("attempt", "proof", "served"):
        service.store.add_event(job, kind=kind)
    assert service.being_scored("early")
    assert SCORING_NOTE in mark_line(service, {}, "early")
    card = details_markdown(service.adapter("early"), AdapterMeta.of(folder))
    assert "**Status**: done (being scored on the held-out rows)" in card

    update_meta(folder, proof=exact_match_proof(28))
    service.store.update_job(job, status="done")
    assert not service.being_scored("early")
    assert SCORING_NOTE not in mark_line(service, {}, "early") and "Suggestion from the held-out rows" in mark_line(
        service, {}, "early")
    assert "**Status**: done\n" in details_markdown(service.adapter("early"), AdapterMeta.of(folder)) + "\n"
