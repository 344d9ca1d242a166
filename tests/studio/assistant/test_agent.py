"""The assistant as a langchain tool-calling agent: the tools it is given, the model it
talks to (a scripted OpenAI-compatible server), the footer of what really ran, and the
fall back to the built-in assistant when the model cannot be reached."""

from __future__ import annotations

from backend.studio.assistant.agent import langchain_tools
from backend.studio.assistant.respond import respond
from backend.studio.tools import AssistantTools
from tests.builders import ScriptedChatModel


def tool_names(reply) -> list[str]:
    return [name for name, _ in reply.results]


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
