"""The assistant: what it understands (English and Korean), and every tool against a
temporary home with the real service, data doctor, job runner and serving endpoint
(the tiny Llama as base)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from backend.errors import InvalidName
from backend.studio.assistant.agent import langchain_tools
from backend.studio.assistant.respond import respond
from backend.studio.assistant.rules import RuleAssistant, looks_like_goal
from backend.studio.plan_form import edit_plan
from backend.studio.session import BASE_CHOICE, AssistantTools, SessionState
from tests.builders import WINES, write_bad, write_wines


@pytest.fixture()
def state(tiny_llama):
    return SessionState(base=str(tiny_llama))


def tool_names(reply) -> list[str]:
    return [name for name, _ in reply.results]


# --- understanding --------------------------------------------------------------------------------

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


# --- tools against a temporary home ------------------------------------------------------------------

def test_add_examples_imports_and_renders_a_preview_with_the_chat_template(service, state, tmp_path):
    tools = AssistantTools(service, state)
    tools.set_goal("classify wine as red or white")
    result = tools.add_examples([str(write_wines(tmp_path / "in"))])
    assert result.ok, result.text
    assert state.n_examples == len(WINES) and Path(state.data_dir, "train.jsonl").is_file()
    assert state.data_files == ["wine.jsonl"] and state.data_hash
    assert len(state.data_preview) == 3 and "<|im_start|>user" in state.data_preview[0]
    assert "Deep ruby colour" in state.data_preview[0]
    assert "sized to 12 examples" in result.text and state.plan.train.epochs == 5.0


def test_a_bad_upload_reports_lines_and_keeps_the_previous_data(service, state, tmp_path):
    tools = AssistantTools(service, state)
    assert tools.add_examples([str(write_wines(tmp_path / "in"))]).ok
    before = (state.data_dir, state.n_examples, state.data_hash)
    result = tools.add_examples([str(write_bad(tmp_path / "bad"))])
    assert not result.ok
    assert "bad.jsonl" in result.text and "line 2" in result.text
    assert "previous data (12 examples) is still in place" in result.text
    assert (state.data_dir, state.n_examples, state.data_hash) == before


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


def test_plan_edits_validate_and_apply(service, state):
    tools = AssistantTools(service, state)
    tools.set_goal("autumn mood")
    plan = edit_plan(state.plan, name="fall-r4", runs=1, epochs=2, learning_rate=1e-3, rank=4,
                     probe_prompts=["a", " ", "b"], system_prompt="Write like October.")
    assert (plan.name, len(plan.sweep), plan.train.epochs, plan.lora.r, plan.lora.alpha) == ("fall-r4", 1, 2, 4, 8)
    assert plan.probe_prompts == ["a", "b"] and plan.train.system_prompt == "Write like October."
    assert "r4, lr 0.001, 2 epochs" in plan.render_markdown()
    with pytest.raises(InvalidName):
        edit_plan(state.plan, name="Not A Name")


def test_langchain_tools_wrap_the_same_functions(service, state):
    tools = AssistantTools(service, state)
    wrapped = {t.name: t for t in langchain_tools(tools)}
    assert {"set_goal", "add_examples", "pick_base", "inspect_base", "show_plan", "start_training", "cancel_training",
            "compare", "rate", "mark", "use_base", "use_adapter", "export"} <= set(wrapped)
    assert set(wrapped["compare"].args) == {"prompt", "adapters", "blind"}
    text = wrapped["set_goal"].invoke({"goal": "autumn mood"})
    assert "**Plan** for *autumn mood*" in text and state.plan.kind == "style"
    assert wrapped["start_training"].invoke({}).startswith("FAILED: Training needs examples")
    assert [name for name, _ in tools.log] == ["set_goal", "start_training"]


def test_an_unreachable_assistant_model_falls_back_to_the_built_in_one(service, state, closed_url):
    service.settings.assistant_url = f"{closed_url}/v1"
    service.settings.assistant_model = "any"
    reply = respond(service, state, "autumn mood")
    assert "did not answer" in reply.text and "built-in assistant handled this" in reply.text
    assert state.plan is not None and state.plan.kind == "style"


class ScriptedChatModel:
    """An OpenAI-compatible /v1/chat/completions that plays back scripted turns.

    A capable tool-calling model cannot run on this machine; this stands in for one so
    the real langchain agent, the real tools and the real service run end to end. It
    records every request so the test can check what the agent sent.
    """

    def __init__(self, turns: list[dict]):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.turns, self.requests = list(turns), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                turn = outer.turns.pop(0)
                message = {"role": "assistant", "content": turn.get("content")}
                if turn.get("tool"):
                    name, args = turn["tool"]
                    message["tool_calls"] = [{"id": f"call_{len(outer.requests)}", "type": "function",
                                              "function": {"name": name, "arguments": json.dumps(args)}}]
                payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                      "choices": [{"index": 0, "message": message,
                                                   "finish_reason": "tool_calls" if turn.get("tool") else "stop"}],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_a_configured_chat_model_drives_the_tools_as_an_agent(service, state):
    llm = ScriptedChatModel([
        {"tool": ("set_goal", {"goal": "autumn mood"})},
        {"tool": ("start_training", {})},
        {"content": "I made a plan and started training."},  # a claim the tools contradict
    ])
    service.settings.assistant_url, service.settings.assistant_model = llm.url, "scripted"
    try:
        reply = respond(service, state, "make it sound like autumn and train it")
    finally:
        llm.close()
    assert state.plan is not None and state.plan.kind == "style" and state.goal == "autumn mood"
    assert tool_names(reply) == ["set_goal", "start_training"]
    assert reply.results[0][1].ok and not reply.results[1][1].ok
    # The footer, built from what really ran, contradicts the model's claim.
    assert reply.text.endswith("Tools that ran: set_goal ✓; start_training ✗ failed")
    first = llm.requests[0]
    assert {t["function"]["name"] for t in first["tools"]} >= {"set_goal", "compare", "use_base", "export"}
    tool_message = llm.requests[2]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"].startswith("FAILED: Training needs examples")
    assert state.history[-1]["role"] == "assistant"


def test_every_tool_from_goal_to_export_with_the_real_endpoint_and_runner(served, tmp_path):
    state = SessionState()  # base "": the settings' default, the base the endpoint serves
    tools = AssistantTools(served, state)
    assistant = RuleAssistant(tools)
    assert assistant.respond("classify wine as red or white with 1 run").ok
    assert assistant.respond("", files=[str(write_wines(tmp_path / "in"))]).ok

    reply = assistant.respond("go")
    assert reply.ok and state.job_ids == [1] and state.adapter_names == ["wine"]
    assert "Queued 1 run(s): wine (job 1)" in reply.text
    assert served.runner.run_pending() == [1]  # the background runner's work, run here
    status = assistant.respond("status")
    assert "job 1 wine: done" in status.text and "loss" in status.text
    assert served.models() == ["model", "wine"]  # hot-loaded the moment it finished

    # A second "go" trains under a free name instead of clashing with "wine".
    assert assistant.respond("go").ok and state.adapter_names == ["wine", "wine-2"]
    cancelled = tools.cancel_training()  # queued -> cancelled before it starts, and it says so
    assert cancelled.ok and f"Job {state.job_ids[-1]} was cancelled before it started" in cancelled.text
    assert "stopping" not in cancelled.text
    assert served.progress(state.job_ids[-1])["status"] == "cancelled"
    assert not tools.cancel_training().ok  # nothing left to cancel, and it says so
    finished = tools.cancel_training(1)  # a finished run is not "asked to stop": it says it is done
    assert not finished.ok and "already done" in finished.text

    reply = assistant.respond('compare "Pale straw, crisp, green apple and citrus."')
    assert reply.ok, reply.text
    compared = state.comparison
    assert [a.model for a in compared.answers] == ["model", "wine"] and not compared.blind
    assert "**Base**:" in reply.text and "**wine**:" in reply.text
    assert assistant.respond("wine 👍").ok
    assert assistant.respond("base 👎").ok
    tally = served.tallies()["wine"]
    assert (tally["up"], tally["comparisons_with_base"], tally["win_rate_vs_base"]) == (1, 1, 1.0)
    rows = served.store.ratings()
    assert {(r.model, r.score, r.prompt) for r in rows} == {
        ("wine", 1, compared.prompt), ("base", -1, compared.prompt)}
    assert all(r.output == a.text for r in rows for a in compared.answers if (a.model == "wine") == (r.model == "wine"))

    blind = tools.compare(None, ["wine"], blind=True)  # default prompt: the plan's first probe
    assert blind.ok and state.comparison.prompt == state.plan.probe_prompts[0]
    assert {a.label for a in state.comparison.answers} == {"Answer A", "Answer B"} and not state.revealed
    assert "- **Answer A**:" in blind.text and "- **Answer B**:" in blind.text
    assert "- **Base**:" not in blind.text and "- **wine**:" not in blind.text  # names hidden until rated
    assert tools.rate("A", score=1, best=True).ok and state.revealed

    reply = assistant.respond("mark wine success")
    assert reply.ok and "Marked wine as success" in reply.text and "win rate vs base" in reply.text
    assert served.adapter("wine")["verdict"] == "success"

    assert assistant.respond("use wine").ok and state.chat_model == "wine"
    assert not tools.use_adapter("wine-2").ok  # cancelled: not ready to chat with
    assert assistant.respond("use base").ok and state.chat_model == BASE_CHOICE
    assert served.chat("wine", [{"role": "user", "content": "hi"}], max_tokens=4) is not None

    dest = tmp_path / "export"
    reply = assistant.respond(f"export wine to {dest}")
    assert reply.ok and (dest / "adapter_config.json").is_file() and (dest / "tunelab.json").is_file()
    assert not tools.export("wine", str(dest)).ok  # not empty any more: refused, not overwritten
    assert "wine: done" in tools.list_adapters().text
