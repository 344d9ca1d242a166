"""Adapters tab: the leaderboard of every finished adapter (★ the recommended one of each
sweep, and why, and each one's verdict badge); each adapter's goal, data, hyperparameters, loss curve, ratings and
verdict (from the service and the typed view of its tunelab.json), use it in the chat,
and export it; below, its strength / blend pad and its proof (ui/adapter_shaping_panel.py).
"""

from __future__ import annotations

import json

import gradio as gr

from backend.studio import trust
from backend.studio.tools import AssistantTools

from . import adapter_shaping_panel, arena_panel
from .common import Ctx, edge, esc, leaderboard_html, loss_svg, pct


def details_markdown(row: dict, meta) -> str:
    """The adapter's card: ``row`` from ``service.adapter``, ``meta`` its tunelab.json
    (``service.adapter_meta``)."""
    lora, train, metrics = meta.hyperparameters.get("lora") or {}, meta.train, meta.metrics
    ratings = row.get("ratings")
    suggestion = ((meta.proof or {}).get("verdict") or {}).get("suggestion")
    verdict = trust.verdict_badge(row.get("verdict"), suggestion)
    lines = [
        f"### {esc(row['name'])}",
        f"- **Status**: {esc(row['status'])}" + (" (being scored on the held-out rows)" if row.get("scoring")
                                                  else "") + (f" — {esc(row['error'])}" if row.get("error") else ""),
        f"- **Verdict**: {verdict}",
        f"- **Goal**: {esc(row.get('goal') or meta.goal or '—')}",
        f"- **Base**: {esc((meta.base.name if meta.base else '') or row.get('base') or '—')}",
        f"- **Data**: {metrics.get('examples', '?')} training / {metrics.get('eval_examples', '?')} eval examples, "
        f"hash `{esc(str(meta.data_hash or '—')[:12])}`",
    ]
    if lora or train:
        lines.append(f"- **Hyperparameters**: LoRA r{lora.get('r')} alpha {lora.get('alpha')} on "
                     f"{esc(lora.get('target_modules'))}, dropout {lora.get('dropout')}; "
                     f"{train.get('epochs')} epochs, lr {train.get('learning_rate')}, batch {train.get('batch_size')}")
    if metrics:
        parts = [f"{k.replace('_', ' ')} {v:.3f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                 for k, v in metrics.items() if k in ("train_loss", "eval_loss", "tokens_per_s", "runtime_s", "steps")
                 and v is not None]
        lines.append(f"- **Metrics**: {esc(', '.join(parts))}")
    if ratings:
        lines.append(f"- **Ratings**: {ratings['ratings']} ({ratings['up']} 👍 / {ratings['down']} 👎, "
                     f"{ratings['best']} best), win rate vs base {pct(ratings.get('win_rate_vs_base'))}")
    else:
        lines.append("- **Ratings**: none yet")
    if row.get("path"):
        lines.append(f"- **Folder**: `{esc(row['path'])}`")
    return "\n".join(lines)


def board_html(service) -> str:
    """Every finished adapter side by side, sweep by sweep, best first; ★ the recommended one."""
    return leaderboard_html(service.leaderboard(), elem_id="adapters-board", show_sweep=True, badges=service.badges(),
                            title="Leaderboard: ★ recommended in its sweep (best held-out score; ties to the "
                                  "smaller, then faster adapter)")


def build(ctx: Ctx) -> None:
    board = gr.HTML("", elem_id="adapters-leaderboard")
    arena_panel.build(ctx, elem_id="adapters-arena")
    with gr.Row():
        pick = gr.Dropdown([], label="Adapter", elem_id="adapters-pick", scale=3)
        refresh = gr.Button("Refresh", elem_id="adapters-refresh", scale=1)
        use = gr.Button("Chat with it", elem_id="adapters-use", scale=1)
    details = gr.Markdown("*No adapters yet.*", elem_id="adapters-detail")
    plot = gr.HTML(loss_svg([], "Loss"), elem_id="adapters-loss")
    with gr.Accordion("tunelab.json", open=False):
        raw = gr.Code(language="json", elem_id="adapters-json")
    with gr.Row():
        dest = gr.Textbox(label="Export to (an empty folder)", elem_id="adapters-export-dest", scale=3)
        merged = gr.Checkbox(False, label="Merged model", elem_id="adapters-export-merged", scale=1)
        export = gr.Button("Export", elem_id="adapters-export", scale=1)
    note = gr.Markdown(elem_id="adapters-note")
    adapter_shaping_panel.build(ctx, pick)

    def show(name):
        if not name:
            return "*No adapters yet.*", loss_svg([], "Loss"), ""
        service = ctx.service()
        row, meta = service.adapter(name), service.adapter_meta(name)
        frame = loss_svg(meta.loss_history, f"{name}: loss (train and eval)")
        return details_markdown(row, meta), frame, json.dumps(row["meta"], indent=2)

    def render(state) -> list:
        service = ctx.service()
        names = service.adapter_names()
        current = state.adapter_names[-1] if state.adapter_names and state.adapter_names[-1] in names else (
            names[-1] if names else None)
        badges = service.badges()
        return [board_html(service), gr.Dropdown(choices=[(trust.labelled(n, badges.get(n)), n) for n in names],
                                                 value=current), *show(current)]

    ctx.on_refresh(render, [board, pick, details, plot, raw])

    def use_it(name, state):
        result = AssistantTools(ctx.service(), state).use_adapter(name or "")
        if not result.ok:
            raise gr.Error(result.text)
        return state, f"{esc(result.text)} Open the **Chat** tab."

    def do_export(name, folder, merged_v, state):
        if not name or not (folder or "").strip():
            raise gr.Error("Pick an adapter and give an empty folder to export to.")
        result = AssistantTools(ctx.service(), state).export(name, folder.strip(), merged=bool(merged_v))
        if not result.ok:
            raise gr.Error(result.text)
        return esc(result.text)

    pick.input(edge(show), [pick], [details, plot, raw])
    refresh.click(edge(render), [ctx.state], [board, pick, details, plot, raw])
    ctx.refresh_after(use.click(edge(use_it), [pick, ctx.state], [ctx.state, note]))
    export.click(edge(do_export), [pick, dest, merged, ctx.state], [note])
