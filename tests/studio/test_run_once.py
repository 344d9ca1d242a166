"""A plan is queued once unless the person confirms a second copy; "cancel" acts on the one
run that can be cancelled or asks which; the plan card says how long the plan takes on this
machine (a real probe of the tiny Llama), and the estimate follows the card's edits. Real
service, store, data doctor and session; the queued jobs are never run here."""

from __future__ import annotations

from backend.studio.assistant.rules import RuleAssistant
from backend.studio.plan_form import edit_plan
from backend.studio.tools import AssistantTools
from tests.builders import write_wines


def _ready(service, state, tmp_path) -> AssistantTools:
    tools = AssistantTools(service, state)
    assert tools.set_goal("classify wine as red or white").ok
    assert tools.add_examples([str(write_wines(tmp_path / "in"))]).ok
    return tools


def test_a_second_train_of_the_same_plan_asks_first_and_confirming_queues_it(service, state, tmp_path):
    tools = _ready(service, state, tmp_path)
    first = tools.start_training()
    assert first.ok and first.data["job_ids"] == [1]
    again = tools.start_training()  # a double click, or "go" said twice
    assert not again.ok and again.data == {"confirm": True, "job_ids": [1]}
    assert "already training on the same data: job 1 (wine, queued)" in again.text
    assert "Nothing new was queued" in again.text and "*train again*" in again.text
    assert [j["id"] for j in service.runner.jobs()] == [1]
    reply = RuleAssistant(tools).respond("train again")
    assert reply.ok and "Queued 1 run: wine-2 (job 2)" in reply.text
    # an edited plan is another plan: it is queued without asking
    state.plan = edit_plan(state.plan, epochs=2)
    assert tools.start_training().ok and len(service.runner.jobs()) == 3


def test_cancel_acts_on_the_one_run_or_asks_which(service, state, tmp_path):
    tools = _ready(service, state, tmp_path)
    assert tools.start_training().ok and tools.start_training(confirm=True).ok
    ask = tools.cancel_training()
    assert not ask.ok and ask.data["job_ids"] == [1, 2]
    assert "Several runs can be cancelled: job 1 wine (queued); job 2 wine-2 (queued). Which one?" in ask.text
    assert [j["status"] for j in service.runner.jobs()] == ["queued", "queued"]  # nothing was cancelled
    assert tools.cancel_training(2).ok and service.progress(2)["status"] == "cancelled"
    one = tools.cancel_training()  # one left: no question
    assert one.ok and "Job 1 was cancelled before it started" in one.text
    assert tools.start_training().ok and tools.start_training(confirm=True).ok
    every = RuleAssistant(tools).respond("cancel all")
    assert every.ok and {service.progress(j)["status"] for j in (3, 4)} == {"cancelled"}


def test_the_plan_card_says_how_long_it_takes_and_follows_the_edits(service, state, tmp_path):
    tools = _ready(service, state, tmp_path)
    plan = state.plan
    assert plan.timing["speed"]["source"] == "from a 2-step probe of this machine"
    assert plan.timing["n_train"] == 9 and plan.timing["n_eval"] == 3
    one = plan.time_estimate()
    assert 0 < one["about_s"] <= one["at_most_s"] and one["runs"] == 1
    line = next(ln for ln in plan.render_markdown().splitlines() if ln.startswith("- **Time**: "))
    assert "on this machine" in line and "probe" in line
    three = tools.show_plan(runs=3)
    assert "3 runs one after another" in three.text
    assert state.plan.time_estimate()["at_most_s"] == 3 * one["at_most_s"]
    longer = edit_plan(state.plan, epochs=plan.train.epochs * 2, runs=1)
    assert longer.time_estimate()["at_most_s"] > one["at_most_s"]
    # the probe is measured once per base and machine: the next plan reads it back
    assert service.timing(state.data_dir, plan, base=state.base, probe=False)["speed"] == plan.timing["speed"]


def test_a_cpu_plan_is_one_run_a_gpu_plan_a_sweep_and_asking_wins(service):
    assert service.gpu() is False  # this machine trains on its CPU
    assert len(service.plan("classify wine as red or white").sweep) == 1
    assert len(service.plan("classify wine as red or white", max_runs=3).sweep) == 3
    service._gpu = True  # what the service found on a machine with a CUDA GPU
    assert len(service.plan("classify wine as red or white").sweep) == 3
    assert len(service.plan("classify wine as red or white", max_runs=1).sweep) == 1
