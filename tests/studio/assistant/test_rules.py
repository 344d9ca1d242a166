"""The built-in assistant: what it understands (English and Korean) and which tool each
request calls, against a temporary home with the real service and data doctor."""

from __future__ import annotations

import re

import pytest

from backend.studio.assistant.respond import respond
from backend.studio.assistant.rules import looks_like_goal
from backend.studio.session import BASE_CHOICE
from backend.studio.tools import AssistantTools
from tests.builders import WINES, write_wines


def tool_names(reply) -> list[str]:
    return [name for name, _ in reply.results]


@pytest.mark.parametrize("goal, kind", [
    ("autumn mood", "style"),
    ("classify wine as red or white", "classification"),
    ("pull product specs out of text as JSON", "extraction"),
    ("가을 분위기로 써줘", "style"),
    ("와인을 레드 또는 화이트로 분류해줘", "classification"),
    ("goal: is this review positive or negative?", "sentiment"),
])
def test_a_goal_in_plain_words_becomes_a_plan_card(service, state, goal, kind):
    reply = respond(service, state, goal)
    assert tool_names(reply) == ["set_goal"] and reply.ok
    assert state.plan is not None and state.plan.kind == kind
    assert "**Plan**" in reply.text and state.plan.probe_prompts[0] in reply.text
    assert "Next:" in reply.text and "drop example files" in reply.text


def test_labels_named_in_an_english_goal_reach_the_plan(service, state):
    respond(service, state, "classify wine as red or white")
    assert state.plan.labels == ["red", "white"]
    assert "red, white" in state.plan.system_prompt


@pytest.mark.parametrize("message", ["go", "Go!", "train", "start training", "ok, go ahead", "시작", "학습해",
                                     "학습 시작해줘", "훈련해"])
def test_go_means_train_and_a_missing_piece_is_a_reported_failure(service, state, message):
    reply = respond(service, state, message)
    assert tool_names(reply) == ["start_training"]
    assert not reply.ok and "did not start" in reply.text
    assert "goal" in reply.text and "examples" in reply.text  # says what is missing
    assert state.job_ids == []


@pytest.mark.parametrize("message, blind", [("compare", False), ("compare them blind", True), ("비교해줘", False),
                                            ("블라인드로 비교해줘", True)])
def test_compare_requests_call_the_compare_tool(service, state, message, blind, monkeypatch, closed_url):
    seen = {}
    tools_compare = AssistantTools.compare

    def spy(self, prompt=None, adapters=None, blind=False):
        seen["blind"] = blind
        return tools_compare(self, prompt, adapters, blind)

    monkeypatch.setattr(AssistantTools, "compare", spy)
    service.settings.server_url = closed_url  # nothing listens there
    respond(service, state, "autumn mood")
    reply = respond(service, state, message)
    assert tool_names(reply) == ["compare"] and seen["blind"] is blind
    assert not reply.ok and reply.text.startswith("That did not work")  # no endpoint: a failure, said so


@pytest.mark.parametrize("message", ["use base", "use the base model", "switch back to the base",
                                     "베이스 모델로 바꿔줘", "기본 모델로 돌아가"])
def test_use_base_switches_the_chat_model(service, state, message):
    state.chat_model = "some-adapter"
    reply = respond(service, state, message)
    assert tool_names(reply) == ["use_base"] and reply.ok
    assert state.chat_model == BASE_CHOICE and "base model" in reply.text


@pytest.mark.parametrize("template", ["base: {}", "use {} as base", "pick base {}", "{}를 베이스로 써줘"])
def test_pick_base_by_folder(service, state, tiny_llama, template):
    state.base = "default"
    reply = respond(service, state, template.format(tiny_llama))
    assert tool_names(reply) == ["pick_base"] and reply.ok
    assert state.base == str(tiny_llama) and "Base set to model (folder" in reply.text


def test_a_bad_base_is_a_failure_and_the_old_base_stays(service, state, tiny_llama):
    reply = respond(service, state, "base: /no/such/folder")
    assert not reply.ok and "did not work" in reply.text and "/no/such/folder" in reply.text
    assert state.base == str(tiny_llama)


def test_unrecognised_small_talk_after_a_goal_does_nothing_and_says_so(service, state):
    respond(service, state, "autumn mood")
    plan = state.plan
    reply = respond(service, state, "hello there")
    assert reply.results == [] and "did nothing" in reply.text
    assert state.plan is plan


def test_runs_in_the_goal_size_the_sweep_and_plan_resizes(service, state):
    respond(service, state, "autumn mood with 1 run")
    assert state.goal == "autumn mood" and len(state.plan.sweep) == 1
    reply = respond(service, state, "2 runs")
    assert tool_names(reply) == ["show_plan"] and len(state.plan.sweep) == 2


def test_looks_like_goal_words():
    assert looks_like_goal("write like a pirate") and looks_like_goal("분위기 있게")
    assert not looks_like_goal("status please")


def test_files_dropped_into_the_chat_are_imported(service, state, tmp_path):
    respond(service, state, "classify wine as red or white")
    reply = respond(service, state, "", files=[str(write_wines(tmp_path / "in"))])
    assert tool_names(reply) == ["add_examples"] and reply.ok
    counts = re.search(r"Imported (\d+) training and (\d+) eval examples from wine.jsonl", reply.text)
    assert counts and int(counts[1]) + int(counts[2]) == len(WINES) and int(counts[2]) >= 1
    assert "say *go*" in reply.text


def test_inspect_base_reports_the_weight_points(service, state):
    reply = respond(service, state, "inspect the base")
    assert tool_names(reply) == ["inspect_base"] and reply.ok
    assert "Layers        2 ×" in reply.text and "q_proj" in reply.text
