"""Compare tab: one prompt, the base and each chosen adapter side by side.

Every model gets the same prompt and the same sampling: greedy by default where the goal's
answers can be checked (backend/studio/trust.py), with a visible temperature control; the
status line says the settings. Blind mode hides the labels and shuffles the order until
every answer is rated or a best one is picked. Each answer can be rated 👍/👎 or picked as
best; ratings are stored with the prompt and the outputs (service.rate), and what they do
is said beside the buttons. Every adapter is listed with its verdict badge; beside the
success / fail buttons: the adapter's tallies (ratings, win rate against the base).
"""

from __future__ import annotations

import gradio as gr

from backend.studio import trust
from backend.studio.tools import AssistantTools

from . import arena_panel
from .common import Ctx, edge, esc, pct

MAX_ANSWERS = 5  # the base + up to four adapters at once


def _answer_label(state, i: int, badges: dict) -> str:
    c = state.comparison
    answer = c.answers[i]
    rated = state.rated.get(answer.model)
    mark = ""
    if rated:
        mark = " · ⭐ best" if rated.get("best") else {1: " · 👍", -1: " · 👎"}.get(rated.get("score"), "")
    if c.blind and not state.revealed:
        return f"### {esc(answer.label)}{mark}"
    name = "Base" if i == _base_index(state) else trust.labelled(answer.model, badges.get(answer.model))
    shown = f"{esc(answer.label)} = {esc(name)}" if c.blind else esc(name)
    return f"### {shown}{mark}"


def choices(names: list[str], badges: dict) -> list[tuple[str, str]]:
    """Adapter pickers show ``name — badge`` and keep the name as the value."""
    return [(trust.labelled(n, badges.get(n)), n) for n in names]


def status_line(comparison, hint: str) -> str:
    """``Compared on “prompt” — all answered greedily, same prompt, max 64 tokens. hint``."""
    return f"Compared on “{esc(comparison.prompt)}” — {esc(comparison.settings_text)}. {hint}"


def _base_index(state) -> int | None:
    c = state.comparison
    if c is None:
        return None
    for i, a in enumerate(c.answers):
        if a.model == state.served_base:
            return i
    return None


def tallies_table(tallies: dict) -> list[list]:
    rows = []
    for name, t in sorted(tallies.items()):
        rows.append([name, t["ratings"], t["up"], t["down"], t["best"], pct(t.get("win_rate_vs_base")),
                     t.get("comparisons_with_base", 0)])
    return rows


def tally_line(tallies: dict, name: str | None) -> str:
    if not name:
        return "*Pick an adapter.*"
    t = tallies.get(name)
    if not t:
        return f"**{esc(name)}**: no ratings yet — compare and rate a few answers first."
    return (f"**{esc(name)}**: {t['ratings']} rating(s) · {t['up']} 👍 · {t['down']} 👎 · {t['best']} best · "
            f"win rate vs base **{pct(t.get('win_rate_vs_base'))}** over {t.get('comparisons_with_base', 0)} "
            "comparison(s)")


SCORING_NOTE = "*Being scored on the held-out rows now: its suggestion appears here when that is done.*"


def suggestion_line(proof: dict | None) -> str:
    """The proof's verdict suggestion, shown beside the success / fail buttons (the person decides)."""
    verdict = (proof or {}).get("verdict")
    if not verdict:
        return "*No measured suggestion yet (the proof runs after training when rows were held out).*"
    icon = {"beats_base": "🟢", "no_better": "🟡", "too_few_rows": "⚪", "changed_nothing": "🔴"}.get(
        verdict.get("suggestion"), "⚪")
    return f"{icon} Suggestion from the held-out rows: {esc(verdict['text'])}"


def mark_line(service, tallies: dict, name: str | None, badges: dict | None = None) -> str:
    """The adapter's badge, its tally and, for a trained adapter, its proof's suggestion."""
    line = tally_line(tallies, name)
    if name and (badges or {}).get(name):
        line = f"**{esc(name)}** is *{esc(badges[name])}*.\n\n" + line
    if name and name in service.adapter_names(status="done"):
        proof = service.adapter_meta(name).proof
        line += "\n\n" + (SCORING_NOTE if not proof and service.being_scored(name) else suggestion_line(proof))
    return line


def build(ctx: Ctx) -> None:
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", elem_id="compare-prompt", scale=3,
                            placeholder="Type a prompt, or pick one of the plan's probe prompts")
        probe = gr.Dropdown([], label="Probe prompts", elem_id="compare-probe", scale=2)
    with gr.Row():
        models = gr.CheckboxGroup([], label="Adapters to compare with the base", elem_id="compare-models", scale=3)
        blind = gr.Checkbox(False, label="Blind (hide names, shuffle)", elem_id="compare-blind", scale=1)
        run = gr.Button("Compare", variant="primary", elem_id="compare-run", scale=1)
    with gr.Row():
        temperature = gr.Slider(0.0, 1.5, value=trust.default_temperature(None), step=0.1, scale=1,
                                label="Temperature (0 = greedy), the same for every model",
                                elem_id="compare-temperature")
        sampling = gr.Markdown(trust.default_note(None), elem_id="compare-sampling", elem_classes=["tl-caption"])
    status = gr.Markdown(elem_id="compare-status")
    slots = []
    with gr.Row(equal_height=True):
        for i in range(MAX_ANSWERS):
            with gr.Column(visible=False, elem_classes=["tl-answer"], elem_id=f"compare-slot-{i}") as column:
                label = gr.Markdown(elem_id=f"compare-label-{i}")
                text = gr.Markdown(elem_id=f"compare-answer-{i}", elem_classes=["tl-answer-text"])
                with gr.Row():
                    up = gr.Button("👍", size="sm", elem_id=f"compare-up-{i}", min_width=40)
                    down = gr.Button("👎", size="sm", elem_id=f"compare-down-{i}", min_width=40)
                    best = gr.Button("Best", size="sm", elem_id=f"compare-best-{i}", min_width=50)
            slots.append((column, label, text, up, down, best))
    gr.Markdown(trust.RATING_NOTE, elem_id="compare-rating-note", elem_classes=["tl-caption"])
    gr.Markdown("#### Tallies")
    tallies = gr.Dataframe(headers=["adapter", "ratings", "👍", "👎", "best", "win rate vs base", "comparisons"],
                           value=[], interactive=False, elem_id="compare-tallies", wrap=True)
    arena_panel.build(ctx, elem_id="compare-arena", with_round=True)
    with gr.Row():
        mark_pick = gr.Dropdown([], label="Adapter", elem_id="mark-adapter", scale=2)
        mark_tally = gr.Markdown(elem_id="mark-tally")
    with gr.Row():
        success = gr.Button("Mark success ✅", elem_id="mark-success")
        fail = gr.Button("Mark fail ❌", elem_id="mark-fail")
    mark_status = gr.Markdown(elem_id="mark-status")

    slot_outputs = [c for column, label, text, *_ in slots for c in (column, label, text)]

    def render_slots(state, badges: dict) -> list:
        out = []
        c = state.comparison
        for i in range(MAX_ANSWERS):
            if c is None or i >= len(c.answers):
                out += [gr.Column(visible=False), "", ""]
            else:
                out += [gr.Column(visible=True), _answer_label(state, i, badges),
                        esc(c.answers[i].text.strip()) or "*(empty)*"]
        return out

    def render(state) -> list:
        service = ctx.service()
        names, badges = service.adapter_names(status="done"), service.badges()
        compared = [a.model for a in state.comparison.answers if a.model in names] if state.comparison else []
        # the picks stay as the person left them: a refresh after Compare or a vote must not reset them
        chosen = compared or [n for n in state.adapter_names if n in names] or names[-1:]
        probes = state.plan.probe_prompts if state.plan else []
        data = service.tallies()
        current = chosen[-1] if chosen else (names[-1] if names else None)
        task = state.plan.kind if state.plan else service.adapters_task(chosen)
        return [gr.Dropdown(choices=probes), gr.CheckboxGroup(choices=choices(names, badges), value=chosen),
                trust.temperature_of(state, "compare", task), trust.default_note(task), tallies_table(data),
                gr.Dropdown(choices=choices(names, badges), value=current), mark_line(service, data, current, badges),
                *render_slots(state, badges)]

    ctx.on_refresh(render, [probe, models, temperature, sampling, tallies, mark_pick, mark_tally, *slot_outputs])

    def set_temperature(value, state):
        state.compare_temperature = float(value)
        return state

    def compare(prompt_v, chosen, blind_v, temperature_v, state):
        service = ctx.service()
        if not chosen:
            raise gr.Error("Pick at least one adapter to compare with the base (adapters appear when trained).")
        if float(temperature_v) != trust.temperature_of(state, "compare", service.adapters_task(list(chosen))):
            state.compare_temperature = float(temperature_v)
        result = AssistantTools(service, state).compare(prompt_v, list(chosen), blind=bool(blind_v))
        if not result.ok:
            raise gr.Error(f"The comparison failed: {result.text}")
        hint = ("Blind: names are hidden until every answer is rated or one is picked best."
                if blind_v else "Rate each answer, or pick the best.")
        return state, status_line(state.comparison, hint), *render_slots(state, service.badges())

    def rate(i: int, score: int, is_best: bool):
        def handler(state):
            c = state.comparison
            if c is None or i >= len(c.answers):
                raise gr.Error("There is no answer here to rate; compare first.")
            service = ctx.service()
            result = AssistantTools(service, state).rate(c.answers[i].model, score=score, best=is_best)
            if not result.ok:
                raise gr.Error(result.text)
            return state, result.text, *render_slots(state, service.badges())

        return handler

    for i, (_, _, _, up, down, best) in enumerate(slots):
        for button, score, is_best in ((up, 1, False), (down, -1, False), (best, 1, True)):
            ctx.refresh_after(button.click(edge(rate(i, score, is_best)), [ctx.state],
                                           [ctx.state, status, *slot_outputs]))

    def mark(verdict: str):
        def handler(name, state):
            if not name:
                raise gr.Error("Pick the adapter to mark.")
            result = AssistantTools(ctx.service(), state).mark(verdict, name)
            if not result.ok:
                raise gr.Error(result.text)
            return f"{'✅' if verdict == 'success' else '❌'} {esc(result.text)}"

        return handler

    def show_tally(name):
        service = ctx.service()
        return mark_line(service, service.tallies(), name, service.badges())

    probe.input(lambda p: p, [probe], [prompt])
    temperature.input(set_temperature, [temperature, ctx.state], [ctx.state])
    ctx.refresh_after(run.click(edge(compare), [prompt, models, blind, temperature, ctx.state],
                                [ctx.state, status, *slot_outputs]))
    mark_pick.input(edge(show_tally), [mark_pick], [mark_tally])
    ctx.refresh_after(success.click(edge(mark("success")), [mark_pick, ctx.state], [mark_status]))
    ctx.refresh_after(fail.click(edge(mark("fail")), [mark_pick, ctx.state], [mark_status]))
