"""What every panel shares: the context they are built with, and the error edge.

Panels never hold state of their own beyond Gradio components: per-session state is
the :class:`backend.assistant_tools.SessionState` in ``ctx.state`` (a ``gr.State``);
everything shared lives in the backend, reached through ``ctx.service()``.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr

from backend.errors import TuneLabError

log = logging.getLogger("tunelab.ui")

BASE_LABEL = "Base"  # what the page calls the untouched base model, everywhere


@dataclass
class Ctx:
    """Handed to every panel's ``build``.

    ``refreshers`` are (function of the session state -> list of updates, outputs):
    after anything that may change the session or the backend (an assistant turn, a
    finished job, a page load) :meth:`refresh_after` runs all of them in one call.
    """

    service: Callable[[], Any]
    state: gr.State
    refreshers: list[tuple[Callable, list]] = field(default_factory=list)

    def on_refresh(self, fn: Callable, outputs: list) -> None:
        self.refreshers.append((fn, outputs))

    def refresh_outputs(self) -> list:
        return [o for _, outputs in self.refreshers for o in outputs]

    def refresh_all(self, state) -> list:
        values: list = []
        for fn, outputs in self.refreshers:
            try:
                part = list(fn(state))
            except Exception as exc:  # one panel failing must not blank the others
                log.warning("refresh %s failed: %s", getattr(fn, "__name__", fn), exc)
                part = [gr.skip()] * len(outputs)
            values += part
        return values

    def refresh_after(self, event):
        """Chain one refresh of every panel after ``event``."""
        return event.then(edge(self.refresh_all), [self.state], self.refresh_outputs())


def _message(exc: Exception) -> str:
    if isinstance(exc, TuneLabError):
        return str(exc)
    return f"Something went wrong ({type(exc).__name__}: {exc}). The details are in the app's log."


def edge(fn: Callable) -> Callable:
    """Turn TuneLab's typed errors (and anything unexpected) into a readable gr.Error.

    The page never shows a traceback; unexpected errors are logged with theirs.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                if not isinstance(exc, TuneLabError):
                    log.exception("handler %s failed", fn.__name__)
                raise gr.Error(_message(exc)) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            if not isinstance(exc, TuneLabError):
                log.exception("handler %s failed", fn.__name__)
            raise gr.Error(_message(exc)) from None

    return call


def message_text(message: dict) -> str:
    """The text of a Chatbot message, whether its content is a string or Gradio 6's parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if isinstance(content, dict):
        return content.get("text", "")
    return ""


def esc(text: Any) -> str:
    return html.escape(str(text))


def pct(value) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def done_adapters(service) -> list[str]:
    return [row.name for row in service.store.list_adapters(status="done")]


def loss_frame(history: list[dict]):
    """A long-format frame (step, loss, series) for gr.LinePlot: train and eval curves."""
    import pandas as pd

    rows = []
    for point in history or []:
        if point.get("loss") is not None:
            rows.append({"step": point["step"], "loss": point["loss"], "series": "train"})
        if point.get("eval_loss") is not None:
            rows.append({"step": point["step"], "loss": point["eval_loss"], "series": "eval"})
    return pd.DataFrame(rows, columns=["step", "loss", "series"])
