"""Base tab: pick the base to train on (default, hub id, local folder, .gguf) and see
the inspector's weight points — a summary and a layers × modules heatmap.
"""

from __future__ import annotations

import gradio as gr

from backend.studio.tools import AssistantTools

from .common import Ctx, edge, esc, heatmap_html


def build(ctx: Ctx) -> None:
    with gr.Row():
        picker = gr.Dropdown(["default"], value="default", allow_custom_value=True, scale=4, elem_id="base-picker",
                             label="Base to train on", info="default (SmolLM2-135M-Instruct), a hub id "
                             "(org/name), a local model folder, or a .gguf file")
        use = gr.Button("Use this base", elem_id="base-use", scale=1)
        inspect_btn = gr.Button("Inspect", elem_id="base-inspect", scale=1)
    chosen = gr.Markdown(elem_id="base-chosen")
    summary = gr.Textbox(label="Weight points", lines=14, max_lines=40, interactive=False, elem_id="base-summary")
    heat = gr.HTML(elem_id="base-heatmap")

    def render(state) -> list:
        service = ctx.service()
        current = state.base or service.settings.default_base or "default"
        specs = ["default", *[b["spec"] for b in service.list_bases() if b["spec"] not in ("default", "")]]
        if current not in specs:
            specs.append(current)
        try:
            served = service.models()[0]
        except Exception:
            served = "(the serving endpoint is not reachable)"
        note = f"New runs train on **{esc(current)}**. The serving endpoint answers with **{esc(served)}**."
        return [gr.Dropdown(choices=specs, value=current), note]

    ctx.on_refresh(render, [picker, chosen])

    def pick(spec, state):
        result = AssistantTools(ctx.service(), state).pick_base(spec or "default")
        if not result.ok:
            raise gr.Error(result.text)
        gr.Info(result.text)
        return state

    def inspect(state):
        tools = AssistantTools(ctx.service(), state)
        result = tools.inspect_base()
        if not result.ok:
            raise gr.Error(result.text)
        return result.text, heatmap_html(result.data["heatmap"])

    ctx.refresh_after(use.click(edge(pick), [picker, ctx.state], [ctx.state]))
    inspect_btn.click(edge(inspect), [ctx.state], [summary, heat])
