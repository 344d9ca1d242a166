"""The left side: the assistant chat. Say a goal, drop files, say "go".

A turn runs in two steps so the page answers at once: the person's message appears
and the box locks, then the assistant (backend.studio.assistant.respond) acts and replies,
then every workspace panel refreshes from the session state and the backend. Files
dropped into the box are example files, of the types the data doctor reads. Under the
chat, the assistant says which adapter is best once a sweep of this session is over
(refreshed when a run ends); the next reply in the chat says it too.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from backend.studio.assistant.respond import respond
from backend.studio.service import UPLOAD_SUFFIXES
from backend.studio.tools import AssistantTools

from .common import Ctx, edge
from .plan_panel import chat_with_card

WELCOME = (
    "Hi! Tell me what the adapter should do, in your own words — e.g. *autumn mood*, "
    "*classify wine as red or white*, *pull product specs out of text as JSON*, or *가을 분위기로 써줘*. "
    "I'll propose a plan card. Drop example files (JSONL, CSV, TXT) into this box or the **Data** tab, "
    "then say **go** (or *시작*)."
)


def news_markdown(service, state) -> str:
    """What the assistant says about this session's sweeps that are over: the best adapter
    of each and why, in the chat's markdown ("" while none is over)."""
    return "\n\n".join(f"🏁 {line}" for line in AssistantTools(service, state).sweep_results())


def build(ctx: Ctx) -> None:
    chatbot = gr.Chatbot(value=[{"role": "assistant", "content": WELCOME}], elem_id="assistant-chat",
                         label="Assistant", height=560, buttons=["copy"])
    box = gr.MultimodalTextbox(elem_id="assistant-input", file_count="multiple", file_types=UPLOAD_SUFFIXES,
                               placeholder="Your goal, a request (go · compare · use base · status · help), "
                                           "or drop example files here", show_label=False, autofocus=True)
    # rendered by Gradio's markdown, as the chat's replies are; shown only while there is news
    news = gr.Markdown("", elem_id="assistant-news", elem_classes=["tl-news"], visible=False)
    ctx.chat = chatbot  # other panels add to the chat: the plan as it is now, a run that finished
    pending = gr.State(None)

    def show_message(message, history):
        message = message or {}
        text, files = (message.get("text") or "").strip(), list(message.get("files") or [])
        history = list(history or [])
        if text:
            history.append({"role": "user", "content": text})
        for path in files:
            history.append({"role": "user", "content": f"📎 {Path(path).name}"})
        return history, gr.MultimodalTextbox(value=None, interactive=False), {"text": text, "files": files}

    def answer(message, history, state):
        history = list(history or [])
        message = message or {"text": "", "files": []}
        reply = respond(ctx.service(), state, message["text"], message["files"])
        history.append({"role": "assistant", "content": reply.text})
        history = chat_with_card(history, state)  # new data may have re-sized the plan: say it as it is
        return history, state, gr.MultimodalTextbox(interactive=True)

    def unlock():
        return gr.MultimodalTextbox(interactive=True)

    turn = box.submit(show_message, [box, chatbot], [chatbot, box, pending], queue=False)
    turn = turn.then(edge(answer), [pending, chatbot, ctx.state], [chatbot, ctx.state, box])
    turn.failure(unlock, None, [box])  # a failed turn (shown as an error) must not leave the box locked
    ctx.refresh_after(turn)

    def sweep_news(state):
        text = news_markdown(ctx.service(), state)
        return [gr.Markdown(value=text, visible=bool(text))]

    ctx.on_refresh(sweep_news, [news])
