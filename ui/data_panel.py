"""Data tab: drop example files; the data doctor's report; a preview in the base's
chat template. A bad upload shows its errors by file and line and leaves the
previously imported data in place (the session keeps its old data folder). The pickers
offer exactly the file types the data doctor reads; the samples are the ones shipped
with TuneLab.

A second drop takes an optional evaluation file: its rows judge the adapter instead of
rows held back from the training files (which share their phrasings). Dropped or
removed after the examples, it re-imports them judged the new way; the status says how
many rows will judge and where they come from.
"""

from __future__ import annotations

import gradio as gr

from backend.studio.service import UPLOAD_SUFFIXES
from backend.studio.session import AssistantTools

from .common import Ctx, edge, esc


def _status(state, failure: str | None = None) -> str:
    if failure:
        head = f"❌ **Not imported.** {esc(failure.splitlines()[0])}"
        if state.data_dir:
            head += f"\n\nThe previous data is still in place: **{state.n_examples} examples** from {', '.join(state.data_files)}."
        return head
    if not state.data_dir:
        return "*No examples yet.* Drop JSONL, CSV or TXT files above (or into the chat box), or use a sample."
    return (f"✅ **{state.n_examples} examples** imported from {', '.join(state.data_files)} "
            f"(content hash `{state.data_hash[:12]}`).\n\n{judged_line(state)}")


def judged_line(state) -> str:
    """How many rows will judge the adapter and where they come from, for the status."""
    return f"{esc(state.data_judged)}." if state.data_judged else ""


EVAL_LABEL = ("Evaluation file (optional): rows that judge the adapter instead of rows held back from your "
              "training file")


def _preview(state) -> str:
    if not state.data_preview:
        return ""
    blocks = [f"**Example {i}** (as the base's chat template renders it)\n```text\n{text.strip()}\n```"
              for i, text in enumerate(state.data_preview, 1)]
    return "\n\n".join(blocks)


def add_examples(service, state, files, eval_files) -> None:
    """Import ``files`` into the session, judged on ``eval_files`` (none: rows held back
    from ``files``). The data doctor's refusal stays in the session (``state.data_error``,
    the previous data kept) and is warned about; any other failure is a gr.Error."""
    result = AssistantTools(service, state).add_examples(list(files), list(eval_files or []))
    if not result.ok and not state.data_error:  # not the data doctor's refusal
        raise gr.Error(f"The examples were not imported: {result.text}")
    if not result.ok:
        gr.Warning("The upload has problems; nothing was imported and the previous data is kept.")


def judge_with(service, state, eval_files) -> bool:
    """The evaluation drop changed: the imported examples again, judged the new way (True).
    Before any examples the files wait for them in the session, so examples dropped into
    the chat are judged on them too (False: nothing imported)."""
    if not state.data_paths:
        state.eval_paths = [str(f) for f in eval_files or []]
        return False
    if not eval_files and not state.eval_paths:
        return False
    add_examples(service, state, state.data_paths, eval_files)
    return True


def build(ctx: Ctx) -> None:
    upload = gr.File(label="Drop example files (JSONL, CSV, TXT)", file_count="multiple",
                     file_types=UPLOAD_SUFFIXES, elem_id="data-upload")
    held_out = gr.File(label=EVAL_LABEL, file_count="multiple", file_types=UPLOAD_SUFFIXES,
                       elem_id="data-eval-upload", height=120)
    with gr.Row():
        sample = gr.Dropdown([], label="…or use a sample dataset", elem_id="data-sample", scale=3)
        use_sample = gr.Button("Use sample", elem_id="data-use-sample", scale=1)
    status = gr.Markdown("*No examples yet.*", elem_id="data-status")
    report = gr.Textbox(label="Data doctor's report", lines=12, max_lines=30, interactive=False,
                        elem_id="data-report", buttons=["copy"])
    preview = gr.Markdown(elem_id="data-preview")

    def render(state) -> list:
        if state.data_error:  # the last upload was refused: its file, its errors, the old data kept
            return [gr.skip(), _status(state, state.data_error), state.data_error, _preview(state)]
        # Imported (or nothing yet): the status line names the files; the drop zone is free again.
        return [None, _status(state), state.data_report, _preview(state)]

    def render_samples(state) -> list:
        return [gr.Dropdown(choices=[p.name for p in ctx.service().samples()])]

    ctx.on_refresh(render, [upload, status, report, preview])
    ctx.on_refresh(render_samples, [sample])

    def add(files, eval_files, state):
        if not files:
            return state, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        add_examples(ctx.service(), state, files, eval_files)
        return state, *render(state)

    def add_sample(name, eval_files, state):
        if not name:
            raise gr.Error("Pick a sample dataset first.")
        return add([str(ctx.service().sample(name))], eval_files, state)

    def judge(eval_files, state):
        if not judge_with(ctx.service(), state, eval_files):
            return state, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return state, *render(state)

    outputs = [ctx.state, upload, status, report, preview]
    ctx.refresh_after(upload.upload(edge(add), [upload, held_out, ctx.state], outputs))
    ctx.refresh_after(use_sample.click(edge(add_sample), [sample, held_out, ctx.state], outputs))
    ctx.refresh_after(held_out.upload(edge(judge), [held_out, ctx.state], outputs))
    ctx.refresh_after(held_out.clear(edge(judge), [held_out, ctx.state], outputs))
