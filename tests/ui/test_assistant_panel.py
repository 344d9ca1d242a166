"""Under the chat, the assistant says which adapter is best once a sweep of this session is over."""

from __future__ import annotations

from backend.studio.session import SessionState
from tests.builders import add_finished_adapter, exact_match_proof
from ui.assistant_panel import news_markdown


def test_the_best_adapter_of_the_sessions_finished_sweep_is_said_under_the_chat(service):
    state = SessionState()
    assert news_markdown(service, state) == ""  # no runs: nothing to say
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(27))
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29))
    state.job_ids = [service.store.get_adapter(n).job_id for n in ("news-r8", "news-r16")]
    service.store.update_job(state.job_ids[1], status="running")
    assert news_markdown(service, state) == ""  # a run is still going

    service.store.update_job(state.job_ids[1], status="done")
    assert news_markdown(service, state) == (
        "🏁 Sweep news is over. news-r16 is best: 29/30 vs base 13/30 few-shot — highest "
        "held-out exact match of 2 runs (next: news-r8 27/30). Next: *compare* to see news-r16 beside the base, "
        "*mark news-r16 success* (or *fail*), or try another run (say *2 runs*, then *go*).")
    assert news_markdown(service, state) == news_markdown(service, state)  # shown while it stays true, not used up


def test_a_lone_runs_proof_under_the_chat_is_a_markdown_list_then_what_next(service):
    state = SessionState()
    add_finished_adapter(service, "lone", proof=exact_match_proof(28))
    state.job_ids = [service.store.get_adapter("lone").job_id]
    figures, next_step = news_markdown(service, state).split("\n\n")
    assert figures.startswith("🏁 lone finished training:\n- exact match: ")
    assert len(figures.splitlines()) >= 3 and all(ln.startswith("- ") for ln in figures.splitlines()[1:])
    assert next_step.startswith("Next: *compare* to see lone beside the base, *mark lone success*")
