"""The assistant as a langchain tool-calling agent, for a capable chat model behind any
OpenAI-compatible URL (``TUNELAB_ASSISTANT_URL`` / ``TUNELAB_ASSISTANT_MODEL``).

It acts only through the session's tools (:class:`backend.studio.tools.AssistantTools`,
wrapped as langchain ``StructuredTool`` s), and its reply ends with the list of tools
that really ran and whether each worked, so a model cannot claim what did not happen.
Imports langchain at its top: :mod:`backend.studio.assistant.respond` imports this
module only when a chat model is configured.
"""

from __future__ import annotations

import inspect
import typing
from typing import Callable

from langchain.agents import create_agent
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from pydantic import create_model

from backend.studio.assistant.reply import Reply
from backend.studio.session import ToolResult
from backend.studio.tools import AssistantTools

SYSTEM_PROMPT = (
    "You are TuneLab's assistant. You help a person train LoRA adapters: set the goal (which proposes a plan "
    "card), add example files (and choose which columns of a table hold the inputs and the answers), pick and "
    "inspect a base model, start training, watch status, cancel, compare the base with adapters, rate answers, "
    "mark adapters success or fail, switch the playground chat between the base and an adapter, export, rank "
    "every model from all the votes (the arena), show the comparison worth voting on next, export the ratings as "
    "preference pairs and train a preference round from them. "
    "Act only through the tools. Report exactly what each tool returned; a result starting with FAILED is a "
    "failure: say so and say what to do. Never say something happened unless a tool returned it. Set a new "
    "goal only when the person asks for one; a message about columns, files or anything else never replaces "
    "the goal. End with what the person can do next. Answer in the person's language."
)
HISTORY_TURNS = 20  # earlier messages of the conversation sent along with each new one


class AgentAssistant:
    """A langchain tool-calling agent over the session's tools."""

    def __init__(self, tools: AssistantTools, *, url: str, model: str, api_key: str | None = None,
                 timeout: float = 60.0):
        self.tools = tools
        self.url, self.model_name, self.api_key, self.timeout = url, model, api_key, timeout

    def _agent(self):
        model = ChatOpenAI(base_url=self.url, model=self.model_name, api_key=self.api_key or "not-needed",
                           temperature=0, timeout=self.timeout, max_retries=0)
        return create_agent(model=model, tools=langchain_tools(self.tools), system_prompt=SYSTEM_PROMPT)

    def respond(self, message: str, files: list[str] | None = None) -> Reply:
        state = self.tools.state
        start = len(self.tools.log)
        content = message or ""
        if files:
            content += "\n\n(The person attached these example files: " + ", ".join(map(str, files)) + ")"
        result = self._agent().invoke(
            {"messages": [*state.history[-HISTORY_TURNS:], {"role": "user", "content": content}]})
        answer = result["messages"][-1].content
        if isinstance(answer, list):  # content blocks
            answer = "".join(block.get("text", "") if isinstance(block, dict) else str(block) for block in answer)
        results = self.tools.log[start:]
        if results:
            answer += "\n\n" + "Tools that ran: " + "; ".join(
                f"{name} {'✓' if r.ok else '✗ failed'}" for name, r in results)
        state.history += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
        return Reply(answer, results=results)


def langchain_tools(tools: AssistantTools) -> list[StructuredTool]:
    """The session's tools as langchain StructuredTools; each returns the result's text."""

    def wrap(fn: Callable[..., ToolResult]) -> StructuredTool:
        def run(**kwargs):
            return str(fn(**kwargs))

        return StructuredTool.from_function(func=run, name=fn.__name__, description=(fn.__doc__ or fn.__name__).strip(),
                                            args_schema=_schema(fn))

    return [wrap(fn) for fn in tools.functions()]


def _schema(fn: Callable):
    """A pydantic model of ``fn``'s parameters (for the agent's tool schema)."""
    hints = typing.get_type_hints(fn)
    fields = {}
    for pname, param in inspect.signature(fn).parameters.items():
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (hints.get(pname, str), default)
    return create_model(f"{fn.__name__}_args", **fields)
