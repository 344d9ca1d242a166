"""The assistant and a person's own table: a dropped ``email,label`` CSV is a question with a
guess, not a refusal; "use email as the input and label as the answer" (or in Korean) imports
it; and no message that is not a goal ever replaces the goal and the plan. Against the real
service and data doctor with the tiny Llama."""

from __future__ import annotations

import pytest

from backend.studio.assistant.respond import respond
from backend.studio.assistant.rules import column_mapping
from tests.builders import write_support_emails, write_wines

GOAL = "Sort customer support emails into billing, bug or other. Answer with one word."


def tool_names(reply) -> list[str]:
    return [name for name, _ in reply.results]


@pytest.fixture()
def emails(tmp_path) -> str:
    return str(write_support_emails(tmp_path / "in"))


def test_a_dropped_table_with_other_names_is_a_question_with_a_guess(service, state, emails):
    respond(service, state, GOAL)
    plan = state.plan
    reply = respond(service, state, "", files=[emails])
    assert tool_names(reply) == ["add_examples"] and not reply.ok
    assert "emails.csv has the columns 'email', 'label'" in reply.text
    assert "My guess: 'email' is the input and 'label' the answer" in reply.text
    assert "3 distinct short values (billing, bug, other)" in reply.text
    assert "“Input column”" in reply.text and "--input-column" not in reply.text  # the page's words
    assert "not imported:" not in reply.text  # a question, not a refusal
    assert state.data_dir is None and state.pending_paths == [emails]
    assert state.column_guess["input"] == "email" and state.plan is plan


@pytest.mark.parametrize("message", [
    "use email as the input and label as the answer",
    "email을 입력으로, label을 답으로 써 줘",
    "input_column=email output_column=label",
    "입력은 email, 답은 label",
    "the input is email and the answer is label",
])
def test_saying_the_columns_imports_the_file(service, state, emails, message):
    respond(service, state, "", files=[emails])
    reply = respond(service, state, message)
    assert tool_names(reply) == ["choose_columns"] and reply.ok, reply.text
    assert "Imported" in reply.text and "(input 'email', answer 'label')" in reply.text
    assert "Labels: billing 16 · bug 16 · other 16 (balanced" in reply.text
    assert state.n_examples == 48 and state.data_columns == {"input": "email", "output": "label"}
    assert state.pending_paths == [] and state.plan is None  # the columns are not a goal


def test_the_goal_and_the_plan_stand_when_the_columns_are_said(service, state, emails):
    respond(service, state, GOAL)
    goal, plan = state.goal, state.plan
    respond(service, state, "", files=[emails])
    reply = respond(service, state, "email을 입력으로, label을 답으로 써 줘")
    assert tool_names(reply) == ["choose_columns"] and reply.ok, reply.text
    assert state.goal == goal and state.plan.goal == plan.goal and state.plan.name == plan.name
    assert state.plan.kind == "classification" and state.plan.labels == plan.labels
    assert "Before training, the base gets" in reply.text  # the plan is now sized to the data and scored


def test_one_column_named_the_other_is_the_guess_and_a_wrong_name_is_said(service, state, emails):
    respond(service, state, "", files=[emails])
    wrong = respond(service, state, "use body as the input column")
    assert not wrong.ok and "has no column 'body'; its columns are 'email', 'label'" in wrong.text
    assert state.data_dir is None
    reply = respond(service, state, "use email as the input")
    assert reply.ok and state.data_columns == {"input": "email", "output": "label"}


def test_columns_without_a_file_change_nothing(service, state):
    respond(service, state, GOAL)
    goal, plan = state.goal, state.plan
    reply = respond(service, state, "input_column=email output_column=label")
    assert tool_names(reply) == ["choose_columns"] and not reply.ok
    assert "no file to choose columns of yet" in reply.text
    assert state.plan is plan and state.goal == goal


def test_columns_of_a_file_read_by_its_keys_are_refused(service, state, tmp_path):
    respond(service, state, "", files=[str(write_wines(tmp_path / "in"))])
    reply = respond(service, state, "input_column=text output_column=label")
    assert not reply.ok and "has no columns to choose" in reply.text


@pytest.mark.parametrize("message", [
    "hello there", "what does label mean?", "input_column=email output_column=label",
    "classify them into billing or other instead", "write it better", "이거 뭐야?", "분류 결과가 궁금해",
])
def test_no_unrelated_message_replaces_the_goal_or_the_plan(service, state, message):
    respond(service, state, GOAL)
    goal, plan = state.goal, state.plan
    reply = respond(service, state, message)
    assert "set_goal" not in tool_names(reply)
    assert state.goal == goal and state.plan is plan


def test_a_goal_like_message_says_how_to_replace_the_goal_and_goal_colon_does(service, state):
    respond(service, state, GOAL)
    reply = respond(service, state, "classify wine as red or white")
    assert reply.results == [] and "changed nothing" in reply.text
    assert "say *goal: classify wine as red or white*" in reply.text
    reply = respond(service, state, "goal: classify wine as red or white")
    assert tool_names(reply) == ["set_goal"] and state.plan.labels == ["red", "white"]


def test_the_mapping_words():
    columns = ["email", "label"]
    assert column_mapping("use email as the input and label as the answer", columns) == ("email", "label")
    assert column_mapping("email을 입력으로, label을 답으로 써 줘", columns) == ("email", "label")
    assert column_mapping("label을 정답으로", columns) == (None, "label")
    assert column_mapping("이메일을 입력으로 라벨을 답으로", ["이메일", "라벨"]) == ("이메일", "라벨")
    assert column_mapping("review is the input and sentiment is the output", ["review", "sentiment"]) == (
        "review", "sentiment")
    assert column_mapping("Use JSON as the output format", columns) is None  # not this file's columns
    for message in ("autumn mood", "classify wine as red or white", "use wine", "가을 분위기로 써 줘"):
        assert column_mapping(message, columns) is None


def test_a_korean_goal_gets_a_korean_plan(service, state):
    reply = respond(service, state, "가을 분위기로 써 줘")
    assert tool_names(reply) == ["set_goal"] and reply.ok
    plan = state.plan
    assert plan.kind == "style" and plan.name == "autumn-mood"
    assert plan.system_prompt == "가을 분위기로 글을 쓰세요." and "써 줘" not in plan.system_prompt
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in probe) for probe in plan.probe_prompts)
