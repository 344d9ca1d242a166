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
from backend.studio.tools import AssistantTools

from .common import Ctx, edge, message_text

NO_PLAN = "*No plan yet.* Tell the assistant your goal (e.g. **autumn mood**) or type it below."
CARD_MARK = "**Plan** for"  # how every plan card begins (PlanCard.render_markdown)
CHANGED = "The plan changed outside this chat (in the **Plan** tab or by new data); this is the plan now:"


def chat_with_card(history: list, state) -> list:
    """``history`` (the assistant chat) whose newest plan card is the session's plan: when the
    plan changed since the chat last showed it (an edit in the Plan tab, data that re-sized
    it), the plan as it is now is added, so the chat and the tab never show two plans."""
    history = list(history or [])
    if state.plan is None:
        return history
    card = state.plan.render_markdown()
    shown = [text for m in history if m.get("role") == "assistant" and CARD_MARK in (text := message_text(m))]
    if not shown or card in shown[-1]:
        return history
    return history + [{"role": "assistant", "content": f"{CHANGED}\n\n{card}"}]


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
        again = gr.Button("Train it again anyway", elem_id="plan-train-again", visible=False)
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

    def start(state, confirm=False):
        result = AssistantTools(ctx.service(), state).start_training(confirm=confirm)
        if not result.ok and result.data.get("confirm"):  # the same plan is training: ask first
            return state, f"⚠️ {result.text}", gr.Button(visible=True)
        if not result.ok:
            raise gr.Error(f"Training did not start: {result.text}")
        return state, f"✅ {result.text} Follow them in the **Train** tab.", gr.Button(visible=False)

    def start_again(state):
        return start(state, confirm=True)

    def sync_chat(history, state):
        return chat_with_card(history, state)

    edits = [set_goal.click(edge(make_plan), [goal, ctx.state], [ctx.state, *form]),
             goal.submit(edge(make_plan), [goal, ctx.state], [ctx.state, *form]),
             apply.click(edge(apply_edits), [ctx.state, name, runs, system, probes, epochs, lr, rank],
                         [ctx.state, *form]),
             apply_json.click(edge(apply_edited_json), [ctx.state, as_json], [ctx.state, *form])]
    for edited in edits:
        ctx.refresh_after(edited)
    # the button is locked while its click is submitted, so a double click queues nothing twice
    for button, handler in ((train, start), (again, start_again)):
        submitted = button.click(lambda: gr.Button(interactive=False), None, button, queue=False)
        submitted = submitted.then(edge(handler), [ctx.state], [ctx.state, status, again])
        submitted.then(lambda: gr.Button(interactive=True), None, button, queue=False)
        ctx.refresh_after(submitted)
    if ctx.chat is not None:  # the chat's newest plan card is the tab's plan
        for edited in edits:
            edited.success(sync_chat, [ctx.chat, ctx.state], [ctx.chat], queue=False)
