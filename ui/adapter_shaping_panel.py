"""Shaping and proving a trained adapter: the lower part of the Adapters tab.

* Strength: the picked adapter at 0–2× its update, as a new adapter.
* Blend pad (the "2-D equalizer"): wa · A + wb · B of two adapters, as a new adapter.
* Proof: what the picked adapter learned — eval loss / perplexity base vs adapter,
  exact match (base zero- and few-shot vs adapter, with 95% intervals) or the style judge
  (base, base asked for the style, adapter), the "changed nothing" check, the forgetting
  check, the verdict suggestion and the ‖ΔW‖/‖W‖ heatmap; the stored proof shows as soon as an adapter is picked, "Evaluate" makes a
  new one.

New adapters are registered by the service like trained ones, so after the page-wide
refresh they are in every adapter list (Adapters, Compare, Chat).
"""

from __future__ import annotations

import gradio as gr

from backend.studio.describe import describe_figure, number

from .common import Ctx, edge, esc, heatmap_html

NO_PROOF = "*No proof stored for this adapter yet: press **Evaluate**.*"


# --- pure functions (tested without a browser) --------------------------------------------------------


def proof_markdown(proof: dict | None) -> str:
    """The proof as a small table: each measure for the base and for the adapter, every
    share with its row count and 95% interval, the "changed nothing" warning, the
    forgetting check and the verdict suggestion."""
    if not proof:
        return NO_PROOF
    ev = proof.get("eval") or {}
    base, adapter = ev.get("base") or {}, ev.get("adapter") or {}
    judged = proof.get("judged_by") or {}
    lines = [f"**Proof** for `{esc(proof.get('adapter', '?'))}` — task {esc(proof.get('task', '?'))}, "
             f"{adapter.get('rows', '?')} held-out rows, {adapter.get('tokens', '?')} answer tokens "
             f"({esc(proof.get('created_at', ''))}, {proof.get('elapsed_s', '?')} s)"]
    if judged.get("note"):
        lines.append(f"*Judged on {judged.get('rows', '?')} rows {esc(judged['note'])}.*")
    lines += ["", "| measure | base | adapter |", "|---|---|---|",
              f"| eval loss | {number(base.get('loss'))} | {number(adapter.get('loss'))} |",
              f"| perplexity | {number(base.get('perplexity'), 2)} | {number(adapter.get('perplexity'), 2)} |"]
    em = proof.get("exact_match")
    if em and em.get("adapter"):
        base_cells = "; ".join(f"{label} {describe_figure(em[key])}" for key, label in
                               (("base_zero_shot", "zero-shot"), ("base_few_shot", f"{em.get('k')}-shot"))
                               if em.get(key))
        lines.append(f"| exact match | {base_cells} | {describe_figure(em['adapter'])} |")
        for field, figure in ((em.get("per_field") or {}).get("adapter") or {}).items():
            few = ((em.get("per_field") or {}).get("base_few_shot") or {}).get(field)
            lines.append(f"| field `{esc(field)}` | {describe_figure(few) if few else '—'} | {describe_figure(figure)} |")
    style = proof.get("style")
    if style and style.get("adapter"):
        for key, label in (("style", "carries the style"), ("on_task", "does what was asked"), ("both", "both")):
            lines.append(f"| {label} | base {describe_figure(style['base'][key])}; asked for it "
                         f"{describe_figure(style['prompted'][key])} | {describe_figure(style['adapter'][key])} |")
    sc = proof.get("self_consistency")
    if sc:
        lines.append(f"| self-consistency | — | {sc['mean']:.0%} of {sc['n_samples']} samples agree "
                     f"(temperature {sc['temperature']}) |")
    div, forgot = proof.get("divergence"), proof.get("forgetting")
    if div:
        lines.append(f"| answers changed | — | {div['changed']}/{div['total']} held-out prompts "
                     f"(mean change {div['mean_change']:.0%}) |")
    if forgot:
        lines.append(f"| forgetting check | — | {forgot['changed']}/{forgot['total']} everyday prompts answered "
                     "differently |")
    nothing = proof.get("changed_nothing") or {}
    if nothing.get("flag"):
        lines += ["", f"⚠️ **The adapter changed nothing measurable**: {esc('; '.join(nothing['reasons']))}. "
                      f"Likely causes: {esc('; '.join(nothing['causes']))}."]
    dw = proof.get("delta_w") or {}
    if dw:
        lines += ["", f"Weight change ‖ΔW‖/‖W‖: max {number(dw.get('max'))}, mean {number(dw.get('mean'))} "
                      f"over {dw.get('modules_adapted', '?')} modules."]
    verdict = proof.get("verdict")
    if verdict:
        lines += ["", f"**Suggestion**: {esc(verdict['text'])} *(you decide: mark it success or fail)*"]
    return "\n".join(lines)


def proof_heatmap(proof: dict | None) -> str:
    dw = (proof or {}).get("delta_w")
    if not dw:
        return ""
    return heatmap_html(dw, "‖ΔW‖ / ‖W‖ per layer × module (· = not adapted)", elem_id="proof-heatmap-table",
                        fmt=lambda v: f"{v:.2g}")


def derived_name(name: str | None) -> str | None:
    name = (name or "").strip()
    return name or None


# --- the section --------------------------------------------------------------------------------------


def build(ctx: Ctx, pick: gr.Dropdown) -> None:
    """Strength, blend pad and proof for the Adapters tab's ``pick``."""
    with gr.Accordion("Strength and blend (new adapters)", open=False, elem_id="shape-box"):
        with gr.Row():
            strength = gr.Slider(0, 2, value=1, step=0.05, label="Strength (× the picked adapter's update)",
                                 elem_id="shape-strength", scale=3)
            strength_name = gr.Textbox(label="New name (optional)", placeholder="NAME-x1p5",
                                       elem_id="shape-strength-name", scale=2)
            make_strength = gr.Button("Make adapter at this strength", elem_id="shape-make-strength", scale=1)
        gr.Markdown("**Blend pad**: wa · A + wb · B — two sliders are the two axes of the pad "
                    "(1, 0 = A alone; 0.5, 0.5 = halfway; 1, 1 = both at full strength).")
        with gr.Row():
            blend_a = gr.Dropdown([], label="Adapter A", elem_id="shape-blend-a")
            blend_b = gr.Dropdown([], label="Adapter B", elem_id="shape-blend-b")
        with gr.Row():
            wa = gr.Slider(0, 2, value=0.5, step=0.05, label="wa (A's weight)", elem_id="shape-wa")
            wb = gr.Slider(0, 2, value=0.5, step=0.05, label="wb (B's weight)", elem_id="shape-wb")
        with gr.Row():
            blend_name = gr.Textbox(label="New name (optional)", placeholder="A-B-blend", elem_id="shape-blend-name",
                                    scale=3)
            make_blend = gr.Button("Make blend", elem_id="shape-make-blend", scale=1)
        shape_note = gr.Markdown(elem_id="shape-note")
    with gr.Accordion("What it learned (proof)", open=True, elem_id="proof-box"):
        with gr.Row():
            samples = gr.Slider(0, 10, value=5, step=1, label="self-consistency samples (classification)",
                                elem_id="proof-samples", scale=3)
            evaluate = gr.Button("Evaluate", elem_id="proof-evaluate", scale=1)
        proof_md = gr.Markdown(NO_PROOF, elem_id="proof-summary")
        proof_heat = gr.HTML(elem_id="proof-heatmap")

    def stored(name):
        if not name:
            return NO_PROOF, ""
        proof = ctx.service().adapter_meta(name).proof
        return proof_markdown(proof), proof_heatmap(proof)

    def run_eval(name, n):
        if not name:
            raise gr.Error("Pick an adapter to evaluate.")
        proof = ctx.service().evaluate(name, n_samples=int(n))
        return proof_markdown(proof), proof_heatmap(proof)

    def do_strength(name, s, new_name, state):
        if not name:
            raise gr.Error("Pick an adapter first (the list at the top of this tab).")
        made = ctx.service().strength(name, float(s), new_name=derived_name(new_name))
        state.adapter_names.append(made)
        return state, f"✅ Made **{esc(made)}**: {esc(name)} at strength {float(s):g}. It is in every adapter list."

    def do_blend(a, b, wa_v, wb_v, new_name, state):
        if not a or not b:
            raise gr.Error("Pick two adapters to blend (A and B).")
        made = ctx.service().blend(a, b, float(wa_v), float(wb_v), new_name=derived_name(new_name))
        state.adapter_names.append(made)
        return state, f"✅ Made **{esc(made)}** = {float(wa_v):g} · {esc(a)} + {float(wb_v):g} · {esc(b)}."

    def render(state) -> list:
        names = ctx.service().adapter_names(status="done")
        return [gr.Dropdown(choices=names), gr.Dropdown(choices=names)]

    ctx.on_refresh(render, [blend_a, blend_b])
    pick.change(edge(stored), [pick], [proof_md, proof_heat])
    evaluate.click(edge(run_eval), [pick, samples], [proof_md, proof_heat])
    ctx.refresh_after(make_strength.click(edge(do_strength), [pick, strength, strength_name, ctx.state],
                                          [ctx.state, shape_note]))
    ctx.refresh_after(make_blend.click(edge(do_blend), [blend_a, blend_b, wa, wb, blend_name, ctx.state],
                                       [ctx.state, shape_note]))
