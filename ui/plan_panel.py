"""Plan tab: the plan card the assistant proposed, as a form and as JSON, and "Train".

Edits go through backend.studio.plan_form (the card's own validation), so the form, the
JSON editor and the assistant produce the same card; a bad value is a gr.Error naming
the field, and the previous card stays.
"""

from __future__ import annotations

import gradio as gr
from pydantic import ValidationError

from backend.errors import TuneLabError
from backend.studio.plan_form import edit_plan, plan_from_json, validation_message
from backend.studio.session import AssistantTools

from .common import Ctx, edge

NO_PLAN = "*No plan yet.* Tell the assistant your goal (e.g. **autumn mood**) or type it below."


def build(ctx: Ctx) -> None:
    card = gr.Markdown(NO_PLAN, elem_id="plan-card")
    with gr.Row():
        goal = gr.Textbox(label="Goal", elem_id="plan-goal", scale=4,
                          placeholder="What should the adapter do? (the assistant reads the same)")
        set_goal = gr.Button("Make plan", elem_id="plan-make", scale=1)
    with gr.Accordion("Edit the plan", open=False, elem_id="plan-edit"):
        with gr.Row():
            name = gr.Textbox(label="Adapter name", elem_id="plan-name")
            runs = gr.Slider(1, 5, value=1, step=1, label="Runs in the sweep (a CPU trains them one after another)",
                             elem_id="plan-runs")
        system = gr.Textbox(label="System prompt", lines=2, elem_id="plan-system")
        probes = gr.Textbox(label="Probe prompts (one per line)", lines=4, elem_id="plan-probes")
        with gr.Row():
            epochs = gr.Number(label="Epochs", minimum=0.1, elem_id="plan-epochs")
            lr = gr.Number(label="Learning rate", elem_id="plan-lr")
            rank = gr.Number(label="LoRA rank", precision=0, minimum=1, elem_id="plan-rank")
        apply = gr.Button("Apply edits", elem_id="plan-apply")
        with gr.Accordion("Edit as JSON", open=False):
            as_json = gr.Code(language="json", elem_id="plan-json", label="Plan card (JSON)")
            apply_json = gr.Button("Apply JSON", elem_id="plan-apply-json")
    with gr.Row():
        train = gr.Button("Train this plan", variant="primary", elem_id="plan-train")
    status = gr.Markdown(elem_id="plan-status")

    form = [card, goal, name, runs, system, probes, epochs, lr, rank, as_json]

    def render(state) -> list:
        plan = state.plan
        if plan is None:
            return [NO_PLAN, gr.skip(), "", 1, "", "", None, None, None, ""]
        return [plan.render_markdown(), state.goal, plan.name, len(plan.sweep), plan.system_prompt,
                "\n".join(plan.probe_prompts), plan.train.epochs, plan.train.learning_rate, plan.lora.r,
                plan.model_dump_json(indent=2)]

    ctx.on_refresh(render, form)

    def make_plan(text, state):
        result = AssistantTools(ctx.service(), state).set_goal(text or "")
        if not result.ok:
            raise gr.Error(result.text)
        return [state, *render(state)]

    def apply_edits(state, name_v, runs_v, system_v, probes_v, epochs_v, lr_v, rank_v):
        if state.plan is None:
            raise gr.Error("There is no plan to edit yet: set a goal first.")
        try:
            state.plan = edit_plan(state.plan, name=name_v, system_prompt=system_v,
                                   probe_prompts=(probes_v or "").splitlines(), runs=int(runs_v or 1),
                                   epochs=epochs_v, learning_rate=lr_v, rank=rank_v)
        except ValidationError as exc:
            raise gr.Error(f"The plan was not changed: {validation_message(exc)}") from None
        except TuneLabError as exc:
            raise gr.Error(f"The plan was not changed: {exc}") from None
        state.plan_edited = True
        return [state, *render(state)]

    def apply_edited_json(state, text):
        plan = plan_from_json(text)  # a bad field is a ConfigError naming it; the card stays
        state.plan, state.goal, state.plan_edited = plan, plan.goal, True
        return [state, *render(state)]

    def start(state):
        result = AssistantTools(ctx.service(), state).start_training()
        if not result.ok:
            raise gr.Error(f"Training did not start: {result.text}")
        return state, f"✅ {result.text} Follow them in the **Train** tab."

    ctx.refresh_after(set_goal.click(edge(make_plan), [goal, ctx.state], [ctx.state, *form]))
    ctx.refresh_after(goal.submit(edge(make_plan), [goal, ctx.state], [ctx.state, *form]))
    ctx.refresh_after(apply.click(edge(apply_edits), [ctx.state, name, runs, system, probes, epochs, lr, rank],
                                  [ctx.state, *form]))
    ctx.refresh_after(apply_json.click(edge(apply_edited_json), [ctx.state, as_json], [ctx.state, *form]))
    ctx.refresh_after(train.click(edge(start), [ctx.state], [ctx.state, status]))
