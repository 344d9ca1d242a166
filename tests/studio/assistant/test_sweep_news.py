"""When a session's sweep is over, the assistant says which adapter is best and why — once,
after its answer — and *status* says it every time; nothing is said while a run is going."""

from __future__ import annotations

from backend.studio.assistant.respond import respond
from backend.studio.tools import AssistantTools, finished_sweeps
from tests.builders import add_finished_adapter, exact_match_proof

NEXT = (" Next: *compare* to see news-r16 beside the base, *mark news-r16 success* (or *fail*), or try another "
        "run (say *2 runs*, then *go*).")
BEST = ("Sweep news is over. news-r16 is best: 29/30 vs base 13/30 few-shot — highest held-out exact match of "
        "3 runs (next: news-r8 27/30).")


def _sweep(service, state) -> int:
    """The session's sweep 'news': two finished runs and one still running; returns the running job."""
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(27))
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29))
    add_finished_adapter(service, "news-lr", sweep="news", proof=exact_match_proof(20))
    running = service.store.get_adapter("news-lr").job_id
    service.store.update_job(running, status="running")
    service.store.upsert_adapter("news-lr", status="running")
    state.job_ids += [service.store.get_adapter(n).job_id for n in ("news-r8", "news-r16", "news-lr")]
    return running


def _finish(service, job: int) -> None:
    service.store.update_job(job, status="done")
    service.store.upsert_adapter("news-lr", status="done")


def test_the_best_adapter_is_said_once_after_the_reply_when_the_sweep_is_over(service, state):
    running = _sweep(service, state)
    reply = respond(service, state, "help")
    assert "news-r16 is best" not in reply.text and "🏁" not in reply.text  # a run is still going

    _finish(service, running)
    reply = respond(service, state, "help")
    assert reply.text.endswith("\n\n🏁 " + BEST + NEXT)
    assert state.history[-1] == {"role": "assistant", "content": reply.text}
    assert "news-r16 is best" not in respond(service, state, "help").text  # said once


def test_status_says_the_best_adapter_of_a_finished_sweep_and_it_is_not_repeated_as_news(service, state):
    _finish(service, _sweep(service, state))
    reply = respond(service, state, "status")
    assert reply.text.count(BEST) == 1 and "🏁" not in reply.text
    assert BEST in respond(service, state, "status").text  # status says it every time
    assert AssistantTools(service, state).sweep_results() == [BEST + NEXT]


def test_a_sweep_with_no_scored_adapter_is_over_without_a_recommendation(service, state):
    add_finished_adapter(service, "bare-a", sweep="bare")
    (service.paths.adapters / "bare-a" / "tunelab.json").write_text('{"metrics": {}}')
    state.job_ids.append(service.store.get_adapter("bare-a").job_id)
    assert AssistantTools(service, state).sweep_news() == [
        "Sweep bare is over: 1 adapter, none with a measured score yet (no held-out rows), so none is recommended."
        " Next: *compare* to see bare-a beside the base, *mark bare-a success* (or *fail*), or try another run "
        "(say *2 runs*, then *go*)."]


def test_a_lone_run_says_what_it_scored_against_the_base_and_what_to_do_next(service, state):
    add_finished_adapter(service, "lone", proof=exact_match_proof(28))
    state.job_ids.append(service.store.get_adapter("lone").job_id)
    news = AssistantTools(service, state).sweep_news()
    assert len(news) == 1 and news[0].startswith("lone finished training:\n- exact match: ")
    assert "adapter 28/30" in news[0] and "base 6-shot 13/30" in news[0] and ".." not in news[0]
    figures, next_step = news[0].split("\n\n")  # one list item per proof line, then what to do next
    assert all(line.startswith("- ") for line in figures.splitlines()[1:]) and len(figures.splitlines()) >= 3
    assert next_step == ("Next: *compare* to see lone beside the base, *mark lone success* (or *fail*), "
                         "or try another run (say *2 runs*, then *go*).")
    assert AssistantTools(service, state).sweep_news() == []  # said once


def test_a_lone_run_that_failed_says_so_and_what_to_do(service, state):
    job = service.store.add_job("broken", {"spec": {"name": "broken"}, "train_file": "/none.jsonl"})
    service.store.update_job(job.id, status="failed", error="DataError: no rows\ntraceback...")
    state.job_ids.append(job.id)
    assert AssistantTools(service, state).sweep_news() == [
        "broken (job %d) ended failed: DataError: no rows. Next: fix what stopped it (the **Train** tab has the "
        "reason), then say *go* again." % job.id]


def test_news_asks_the_service_nothing_once_every_run_was_told(state):
    class NoService:
        def __getattr__(self, name):
            raise AssertionError(f"the service was asked for {name}")

    state.job_ids, state.told_jobs = [1, 2], [1, 2]
    assert AssistantTools(NoService(), state).sweep_news() == []
    state.job_ids.append(3)  # a new run: the service is asked, and a failure is no news, never an error
    assert AssistantTools(NoService(), state).sweep_news() == []


def test_finished_sweeps_are_those_whose_runs_are_all_over():
    jobs = [{"job_id": 1, "adapter": "a-r4", "sweep": "a", "status": "done"},
            {"job_id": 2, "adapter": "a-r8", "sweep": "a", "status": "failed"},
            {"job_id": 3, "adapter": "b-r4", "sweep": "b", "status": "done"},
            {"job_id": 4, "adapter": "b-r8", "sweep": "b", "status": "running"},
            {"job_id": 5, "adapter": "lone", "sweep": None, "status": "cancelled"}]
    assert finished_sweeps(jobs) == ["a", "lone"]


def test_a_run_served_while_it_is_scored_is_said_once_then_its_score(service, state):
    """The runner loads a run's adapter as soon as its weights are final; while its proof still
    runs, the chat says it can be tried now (once), and its score when the run is over."""
    from backend.adapter_folder import update_meta

    folder = add_finished_adapter(service, "early")
    job = service.store.get_adapter("early").job_id
    service.store.update_job(job, status="running")  # as the worker and runner leave it mid-proof
    for kind in ("attempt", "progress", "proof", "served"):
        service.store.add_event(job, kind=kind)
    state.job_ids.append(job)
    tools = AssistantTools(service, state)
    assert tools.sweep_news() == ["early is trained and already served: try it in **Compare** or **Chat** now. "
                                  "Its score against the base follows when the scoring on the held-out rows is done."]
    assert tools.sweep_news() == []  # said once
    assert "already served" in tools.training_status().text

    update_meta(folder, proof=exact_match_proof(28))
    service.store.update_job(job, status="done")
    news = tools.sweep_news()
    assert len(news) == 1 and news[0].startswith("early finished training:\n- exact match: ")


def test_a_run_still_scored_but_not_served_is_not_said_to_be_served(service, state):
    add_finished_adapter(service, "unserved")
    job = service.store.get_adapter("unserved").job_id
    service.store.update_job(job, status="running")
    for kind in ("attempt", "proof"):  # the endpoint could not load it: no "served"
        service.store.add_event(job, kind=kind)
    state.job_ids.append(job)
    assert AssistantTools(service, state).sweep_news() == []


def test_news_asked_again_and_again_remembers_each_served_run_once(service, state):
    """The page asks for news every time the runs change: the served runs it has told stay
    told, once each (the session's memory of them does not grow with each look)."""
    add_finished_adapter(service, "polled")
    job = service.store.get_adapter("polled").job_id
    service.store.update_job(job, status="running")
    for kind in ("attempt", "proof", "served"):
        service.store.add_event(job, kind=kind)
    state.job_ids.append(job)
    tools = AssistantTools(service, state)
    assert len(tools.sweep_news()) == 1
    for _ in range(3):
        assert tools.sweep_news() == []
    assert state.told_served == [job]
