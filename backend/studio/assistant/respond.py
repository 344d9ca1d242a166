"""The one entry point to the assistant, for the page and the tests: one message (and any
dropped files) for one session -> a :class:`~backend.studio.assistant.reply.Reply`.

With ``assistant_url`` and ``assistant_model`` set, the langchain agent
(:mod:`backend.studio.assistant.agent`) answers; when its model cannot be reached the
built-in :class:`~backend.studio.assistant.rules.RuleAssistant` answers instead and says
so. Without them, the built-in assistant answers.
"""

from __future__ import annotations

from backend.studio.assistant.reply import Reply
from backend.studio.assistant.rules import RuleAssistant
from backend.studio.session import AssistantTools, SessionState


def respond(service, state: SessionState, message: str, files: list[str] | None = None) -> Reply:
    """Answer one message (with optional dropped files) for one session."""
    tools = AssistantTools(service, state)
    settings = service.settings
    if not (settings.assistant_url and settings.assistant_model):
        return RuleAssistant(tools).respond(message, files)
    try:
        return _agent(tools, settings).respond(message, files)
    except Exception as exc:  # the model is down or answered nonsense: the built-in one takes over
        if tools.log:  # some tools already ran: report them rather than running anything twice
            done = "; ".join(f"{name}: {r}" for name, r in tools.log)
            return Reply(f"The assistant model stopped with an error ({type(exc).__name__}: {exc}) after "
                         f"these tool calls: {done}", results=list(tools.log))
        reply = RuleAssistant(tools).respond(message, files)
        reply.text = (f"(The assistant model at {settings.assistant_url} did not answer: "
                      f"{type(exc).__name__}. The built-in assistant handled this.)\n\n" + reply.text)
        return reply


def _agent(tools: AssistantTools, settings):
    """The tool-calling agent; langchain loads here, only when a chat model is configured."""
    from backend.studio.assistant.agent import AgentAssistant

    return AgentAssistant(tools, url=settings.assistant_url, model=settings.assistant_model,
                          api_key=settings.assistant_api_key)
