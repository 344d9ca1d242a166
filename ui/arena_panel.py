"""The arena on the page: every model ranked by Bradley–Terry from all votes (score, 95%
interval, votes, how sure the leader is), and "Train from my ratings" — a preference round
from the best-rated adapter (:mod:`backend.studio.rounds`). Built into Compare and Adapters."""

from __future__ import annotations

import gradio as gr

from backend.studio import rounds
from backend.studio.tools import AssistantTools

from .common import Ctx, edge, esc


def arena_html(service, elem_id: str) -> str:
    """The table as HTML; its id is ``ELEM_ID-table`` (``elem_id`` itself is the gr.HTML block's: one id, one element)."""
    result = rounds.table(service)
    rows = []
    for r in result["rows"]:
        lo, hi = r["ci95"]
        versus = "—" if r["p_leader_wins"] is None else f"{r['p_leader_wins']:.0%}"
        rows.append(f"<tr><td>{r['rank']}</td><td>{esc(r['name'])}</td><td>{r['score']:+.2f}</td>"
                    f"<td>{lo:+.2f} to {hi:+.2f}</td><td>{r['votes']}</td><td>{r['wins']}/{r['losses']}</td>"
                    f"<td>{versus}</td></tr>")
    head = ("<tr><th>#</th><th>model</th><th>score</th><th>95% interval</th><th>votes</th><th>won/lost</th>"
            "<th>leader beats it</th></tr>")
    return (f"<div id='{elem_id}-table'><b>Arena: every model ranked from all your votes (Bradley–Terry)</b>"
            f"<table>{head}{''.join(rows)}</table><p>{esc(result['summary'])}</p></div>")


def build(ctx: Ctx, *, elem_id: str, with_round: bool = False) -> None:
    board = gr.HTML("", elem_id=elem_id)
    ctx.on_refresh(lambda state: [arena_html(ctx.service(), elem_id)], [board])
    if not with_round:
        return
    with gr.Row():
        telling = gr.Button("Compare the most telling pair (blind)", elem_id=f"{elem_id}-next", scale=1)
        go = gr.Button("Train from my ratings", elem_id=f"{elem_id}-round", scale=1)
    note = gr.Markdown(elem_id=f"{elem_id}-round-note")

    def compare_next(state):
        service = ctx.service()
        chosen = rounds.next_comparison(service, state)
        if chosen is None:
            raise gr.Error("Nothing to compare yet: the arena needs a finished adapter and a prompt (set a goal "
                           "for its probe prompts, or import data with held-out rows).")
        result = AssistantTools(service, state).compare(chosen["prompt"], chosen["adapters"], blind=True)
        if not result.ok:
            raise gr.Error(result.text)
        return state, esc(f"Blind comparison on {chosen['prompt']!r}: {chosen['why']}. Rate the answers above.")

    def start(state):
        # the assistant's tool: the round becomes one of this session's runs, as from the chat
        result = AssistantTools(ctx.service(), state).arena.train_from_ratings()
        if not result.ok:
            raise gr.Error(result.text)
        return state, result.text

    ctx.refresh_after(go.click(edge(start), [ctx.state], [ctx.state, note]))
    ctx.refresh_after(telling.click(edge(compare_next), [ctx.state], [ctx.state, note]))
