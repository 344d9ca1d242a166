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
from backend.studio.session import SessionState
from backend.studio.tools import AssistantTools


def respond(service, state: SessionState, message: str, files: list[str] | None = None) -> Reply:
    """Answer one message (with optional dropped files) for one session. A sweep of this
    session that is over since the last reply is said after the answer, once: its best
    adapter and why (:meth:`~backend.studio.tools.AssistantTools.sweep_news`)."""
    tools = AssistantTools(service, state)
    reply = _answer(tools, service.settings, message, files)
    news = tools.sweep_news()
    if news:
        said = reply.text
        reply.text = "\n\n".join([said, *(f"🏁 {line}" for line in news)])
        if state.history and state.history[-1] == {"role": "assistant", "content": said}:
            state.history[-1] = {"role": "assistant", "content": reply.text}
    return reply


def _answer(tools: AssistantTools, settings, message: str, files: list[str] | None) -> Reply:
    """The agent's answer when a chat model is configured (the built-in one when it fails), else the built-in one's."""
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
