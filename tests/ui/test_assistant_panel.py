"""Under the chat, the assistant says which adapter is best once a sweep of this session is over."""

from __future__ import annotations

from backend.studio.session import SessionState
from tests.builders import add_finished_adapter, exact_match_proof
from ui.assistant_panel import news_html
from ui.common import chat_html


def test_the_best_adapter_of_the_sessions_finished_sweep_is_said_under_the_chat(service):
    state = SessionState()
    assert news_html(service, state) == ""  # no runs: nothing to say
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(27))
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29))
    state.job_ids = [service.store.get_adapter(n).job_id for n in ("news-r8", "news-r16")]
    service.store.update_job(state.job_ids[1], status="running")
    assert news_html(service, state) == ""  # a run is still going

    service.store.update_job(state.job_ids[1], status="done")
    assert news_html(service, state) == (
        "<div class='tl-news'><p>🏁 Sweep news is over. news-r16 is best: 29/30 vs base 13/30 few-shot — highest "
        "held-out exact match of 2 runs (next: news-r8 27/30). Next: <em>compare</em> to see news-r16 beside the "
        "base, <em>mark news-r16 success</em> (or <em>fail</em>), or try another run (say <em>2 runs</em>, then "
        "<em>go</em>).</p></div>")
    assert news_html(service, state) == news_html(service, state)  # shown while it stays true, not used up


def test_a_lone_runs_proof_under_the_chat_is_a_list_with_its_markup_rendered_and_the_rest_escaped(service):
    state = SessionState()
    add_finished_adapter(service, "lone", proof=exact_match_proof(28))
    state.job_ids = [service.store.get_adapter("lone").job_id]
    shown = news_html(service, state)
    assert shown.startswith("<div class='tl-news'><p>🏁 lone finished training:</p><ul><li>exact match: ")
    assert shown.count("<li>") >= 2 and "<em>mark lone success</em>" in shown and "*" not in shown


def test_chat_markup_becomes_html_without_letting_html_through():
    assert chat_html("Say **go**, or *compare* a <b>\n- one *x*\n- 2 * 3 = 6\n\nNext: 5*4") == (
        "<p>Say <strong>go</strong>, or <em>compare</em> a &lt;b&gt;</p><ul><li>one <em>x</em></li>"
        "<li>2 * 3 = 6</li></ul><p>Next: 5*4</p>")
