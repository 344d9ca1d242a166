"""Chat tab: a playground chat with a model switcher. "Base" is always the first
choice, one click away; switching model keeps the conversation (the next answer
simply comes from the other model). Answers stream from the serving endpoint.
"""

from __future__ import annotations

import re

import gradio as gr

from backend.studio.session import BASE_CHOICE

from .common import BASE_LABEL, Ctx, edge, message_text

SIGNATURE = "\n\n<sub>— {}</sub>"  # which model answered, shown under each answer
_SIGNED = re.compile(r"\n\n<sub>— [^<]*</sub>$")


def _unsigned(text: str) -> str:
    """The answer without its model signature (the model never sees the signature)."""
    return _SIGNED.sub("", text)


def _choice(state) -> str:
    return BASE_LABEL if state.chat_model == BASE_CHOICE else state.chat_model


def build(ctx: Ctx) -> None:
    model = gr.Radio([BASE_LABEL], value=BASE_LABEL, label="Model", elem_id="chat-model")
    chatbot = gr.Chatbot([], elem_id="playground-chat", label="Playground", height=420, buttons=["copy", "copy_all"])
    with gr.Row():
        box = gr.Textbox(placeholder="Say something to the selected model…", show_label=False, scale=5,
                         elem_id="playground-input")
        send = gr.Button("Send", variant="primary", elem_id="playground-send", scale=1)
        clear = gr.Button("Clear", elem_id="playground-clear", scale=1)
    with gr.Accordion("Settings", open=False):
        system = gr.Textbox(label="System prompt (empty: the plan's, if any)", elem_id="playground-system")
        max_tokens = gr.Slider(8, 512, value=96, step=8, label="Max new tokens", elem_id="playground-max-tokens")
        temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.1, label="Temperature (0 = greedy)",
                                elem_id="playground-temperature")

    def render(state) -> list:
        names = ctx.service().adapter_names(status="done")
        choice = _choice(state)
        if choice != BASE_LABEL and choice not in names:
            names.append(choice)
        return [gr.Radio(choices=[BASE_LABEL, *names], value=choice)]

    ctx.on_refresh(render, [model])

    def switch(choice, state):
        state.chat_model = BASE_CHOICE if choice in (None, BASE_LABEL) else choice
        return state

    def show(text, history):
        if not (text or "").strip():
            raise gr.Error("Type a message first.")
        return "", [*(history or []), {"role": "user", "content": text.strip()}]

    def stream(history, state, system_v, max_tokens_v, temperature_v):
        service = ctx.service()
        served = service.models()
        target = served[0] if state.chat_model == BASE_CHOICE else state.chat_model
        if target not in served:
            raise gr.Error(f"{target} is not loaded in the serving endpoint (it serves: {', '.join(served)}).")
        system_prompt = (system_v or "").strip() or (state.plan.system_prompt if state.plan else "")
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": m["role"], "content": _unsigned(message_text(m))} for m in history
            if m["role"] in ("user", "assistant")]
        label = BASE_LABEL if state.chat_model == BASE_CHOICE else target
        history = [*history, {"role": "assistant", "content": ""}]
        text = ""
        for delta in service.stream_chat(target, messages, max_tokens=int(max_tokens_v),
                                         temperature=float(temperature_v)):
            text += delta
            history[-1] = {"role": "assistant", "content": text}
            yield history
        history[-1] = {"role": "assistant",
                       "content": f"{text if text.strip() else '*(empty answer)*'}{SIGNATURE.format(label)}"}
        yield history

    model.input(edge(switch), [model, ctx.state], [ctx.state])
    for trigger in (box.submit, send.click):
        trigger(edge(show), [box, chatbot], [box, chatbot], queue=False).success(
            edge(stream), [chatbot, ctx.state, system, max_tokens, temperature], [chatbot])
    clear.click(lambda: [], None, [chatbot])
