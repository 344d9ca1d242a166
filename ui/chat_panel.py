"""Chat tab: a playground chat with a model switcher. "Base" is always the first
choice, one click away; every adapter is listed with its verdict badge. Switching the
model starts a fresh conversation (a note says so), so the base never answers by building
on an adapter's earlier turns; the turns sent are only the current model's conversation
(:func:`turns_for`). The temperature control is visible: greedy by default where the
goal's answers can be checked (backend/studio/trust.py). Answers stream from the serving
endpoint, signed with the model and how it was sampled.
"""

from __future__ import annotations

import re

import gradio as gr

from backend.studio import trust
from backend.studio.session import BASE_CHOICE

from .common import BASE_LABEL, Ctx, edge, esc, message_text

SIGNATURE = "\n\n<sub>— {} · {}</sub>"  # which model answered and how, shown under each answer
_SIGNED = re.compile(r"\n\n<sub>— ([^<·]*?)(?: · [^<]*)?</sub>$")
FRESH_NOTE = "Switching the model starts a fresh conversation, so one model never sees another's answers."


def _unsigned(text: str) -> str:
    """The answer without its model signature (the model never sees the signature)."""
    return _SIGNED.sub("", text)


def signer(message: dict) -> str | None:
    """The label of the model that signed an answer ('Base', 'wine'), None for other turns."""
    if message.get("role") != "assistant":
        return None
    match = _SIGNED.search(message_text(message))
    return match.group(1).strip() if match else None


def conversation_model(history: list[dict]) -> str | None:
    """Who the conversation shown is with: the signer of its last signed answer."""
    return next((who for who in map(signer, reversed(history or [])) if who), None)


def turns_for(history: list[dict], label: str) -> list[dict]:
    """The turns sent to ``label``: those after the last answer another model signed, unsigned."""
    start = 0
    for i, message in enumerate(history or []):
        who = signer(message)
        if who and who != label:
            start = i + 1
    return [{"role": m["role"], "content": _unsigned(message_text(m))} for m in (history or [])[start:]
            if m.get("role") in ("user", "assistant")]


def how_sampled(temperature: float) -> str:
    return "greedy" if not temperature else f"temperature {temperature:g}"


def switch_model(choice, history, state):
    """The switcher moved (by a click or by the assistant): a fresh conversation when the one
    shown is with another model. Returns the state, the chat, the note."""
    state.chat_model = BASE_CHOICE if choice in (None, BASE_LABEL) else choice
    label = _choice(state)
    before = conversation_model(history) or (None if not history else "the previous model")
    if history and before != label:
        note = (f"Now chatting with **{esc(label)}** in a fresh conversation: the one with {esc(before)} was "
                f"cleared, so {esc(label)} does not build on its answers.")
        return state, [], note
    return state, history, f"Now chatting with **{esc(label)}**. {FRESH_NOTE}"


def _choice(state) -> str:
    return BASE_LABEL if state.chat_model == BASE_CHOICE else state.chat_model


def build(ctx: Ctx) -> None:
    with gr.Row():
        model = gr.Radio([BASE_LABEL], value=BASE_LABEL, label="Model", elem_id="chat-model", scale=3)
        temperature = gr.Slider(0.0, 1.5, value=trust.default_temperature(None), step=0.1, scale=2,
                                label="Temperature (0 = greedy)", elem_id="playground-temperature")
    note = gr.Markdown(FRESH_NOTE, elem_id="playground-note", elem_classes=["tl-caption"])
    chatbot = gr.Chatbot([], elem_id="playground-chat", label="Playground", height=420, buttons=["copy", "copy_all"])
    with gr.Row():
        box = gr.Textbox(placeholder="Say something to the selected model…", show_label=False, scale=5,
                         elem_id="playground-input")
        send = gr.Button("Send", variant="primary", elem_id="playground-send", scale=1)
        clear = gr.Button("Clear", elem_id="playground-clear", scale=1)
    with gr.Accordion("Settings", open=False):
        system = gr.Textbox(label="System prompt (empty: the plan's, if any)", elem_id="playground-system")
        max_tokens = gr.Slider(8, 512, value=96, step=8, label="Max new tokens", elem_id="playground-max-tokens")
    sampling = gr.Markdown(trust.default_note(None), elem_id="playground-sampling", elem_classes=["tl-caption"])

    def render(state) -> list:
        service = ctx.service()
        names, badges = service.adapter_names(status="done"), service.badges()
        choice = _choice(state)
        if choice != BASE_LABEL and choice not in names:
            names.append(choice)
        # no plan (e.g. after a reload): the task of the adapter chatted with, else of the newest one
        task = state.plan.kind if state.plan else service.adapters_task([choice, *reversed(names)])
        return [gr.Radio(choices=[BASE_LABEL, *[(trust.labelled(n, badges.get(n)), n) for n in names]], value=choice),
                trust.temperature_of(state, "chat", task), trust.default_note(task)]

    ctx.on_refresh(render, [model, temperature, sampling])

    def set_temperature(value, state):
        state.chat_temperature = float(value)
        return state

    def show(text, history):
        if not (text or "").strip():
            raise gr.Error("Type a message first.")
        return "", [*(history or []), {"role": "user", "content": text.strip()}]

    def stream(history, state, system_v, max_tokens_v, temperature_v):
        service = ctx.service()
        served = service.models()
        target = served[0] if state.chat_model == BASE_CHOICE else state.chat_model
        if target not in served:  # finished, not hot-loaded yet: load it now
            service.sync_endpoint()
            served = service.models()
        if target not in served:
            raise gr.Error(f"{target} is not loaded in the serving endpoint (it serves: {', '.join(served)}).")
        label = _choice(state)
        system_prompt = (system_v or "").strip() or (state.plan.system_prompt if state.plan else "")
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns_for(history, label)
        history = [*history, {"role": "assistant", "content": ""}]
        text = ""
        for delta in service.stream_chat(target, messages, max_tokens=int(max_tokens_v),
                                         temperature=float(temperature_v)):
            text += delta
            history[-1] = {"role": "assistant", "content": text}
            yield history
        signed = SIGNATURE.format(label, how_sampled(float(temperature_v)))
        history[-1] = {"role": "assistant", "content": f"{text if text.strip() else '*(empty answer)*'}{signed}"}
        yield history

    model.change(edge(switch_model), [model, chatbot, ctx.state], [ctx.state, chatbot, note])
    temperature.input(set_temperature, [temperature, ctx.state], [ctx.state])
    for trigger in (box.submit, send.click):
        trigger(edge(show), [box, chatbot], [box, chatbot], queue=False).success(
            edge(stream), [chatbot, ctx.state, system, max_tokens, temperature], [chatbot])
    clear.click(lambda: [], None, [chatbot])
