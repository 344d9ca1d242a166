"""The page's run controls: the chat's newest plan card is the Plan tab's plan, Cancel is
shown only when something can be cancelled and names the run it acts on (or asks which), a
run being cancelled says "stopping" at once, and the chat says when a run finished."""

from __future__ import annotations

import gradio as gr
import pytest

from backend.studio.plan_form import edit_plan
from backend.studio.tools import AssistantTools
from tests.builders import add_finished_adapter, exact_match_proof
from ui.plan_panel import CHANGED, chat_with_card
from ui.train_panel import cancel_label, cancel_target, chat_with_news, runs_html


def _run(job_id, status, adapter="wine", **extra):
    return {"job_id": job_id, "adapter": adapter, "status": status, "step": 0, "total_steps": 0, **extra}


def test_the_chat_says_the_plan_again_when_the_tab_changed_it(service, state):
    AssistantTools(service, state).set_goal("classify wine as red or white with 3 runs", runs=3)
    history = [{"role": "assistant", "content": "Here is a plan:\n\n" + state.plan.render_markdown()}]
    assert chat_with_card(history, state) == history  # the same plan: nothing is added
    state.plan = edit_plan(state.plan, runs=1)  # the Plan tab set 1 run
    synced = chat_with_card(history, state)
    assert len(synced) == 2 and synced[-1]["content"] == f"{CHANGED}\n\n{state.plan.render_markdown()}"
    assert "(1 run," in synced[-1]["content"] and "(3 runs," in history[0]["content"]
    assert chat_with_card(synced, state) == synced  # said once
    assert chat_with_card([{"role": "assistant", "content": "hello"}], state) == [
        {"role": "assistant", "content": "hello"}]  # a chat that showed no plan is left alone


def test_cancel_acts_on_the_selected_active_run_else_the_running_one_else_asks():
    rows = [_run(1, "done"), _run(2, "running", "wine-2"), _run(3, "queued", "wine-3")]
    assert cancel_target(rows, 3) == 3  # the selected run, when it can be cancelled
    assert cancel_target(rows, 1) == 2  # a finished run is selected: the running one
    queued = [_run(1, "done"), _run(4, "queued", "a"), _run(5, "queued", "b")]
    with pytest.raises(gr.Error, match=r"Several runs can be cancelled: a \(job 4, queued\), b \(job 5, queued\)"):
        cancel_target(queued, 1)
    with pytest.raises(gr.Error, match="nothing to cancel"):
        cancel_target([_run(1, "done")], 1)


def test_cancel_is_shown_only_when_a_run_can_be_cancelled_and_names_it():
    assert cancel_label([_run(1, "done")], 1).visible is False
    label = cancel_label([_run(1, "done"), _run(2, "running", "wine-2")], 1)
    assert label.visible is True and label.value == "Cancel wine-2 (job 2)"
    stopping = [_run(2, "running", "wine-2", cancel_requested=True)]
    assert cancel_label(stopping, 2).visible is False  # already stopping: nothing more to cancel
    html = runs_html(stopping)
    assert "<span class='tl-badge'>stopping</span>" in html


def test_the_chat_says_once_what_a_finished_run_scored_and_what_next(service, state):
    add_finished_adapter(service, "wine", proof=exact_match_proof(27))
    state.job_ids.append(service.store.get_adapter("wine").job_id)
    chat = chat_with_news(service, [{"role": "user", "content": "go"}], state)
    assert len(chat) == 2 and chat[-1]["content"].startswith("🏁 wine finished training:\n- exact match: ")
    assert "adapter 27/30" in chat[-1]["content"] and "*mark wine success*" in chat[-1]["content"]
    assert chat_with_news(service, chat, state) == chat  # said once
