"""Data tab: drop example files; the data doctor's report; a preview in the base's
chat template. A bad upload shows its errors by file and line and leaves the
previously imported data in place (the session keeps its old data folder). The pickers
offer exactly the file types the data doctor reads; the samples are the ones shipped
with TuneLab.

A second drop takes an optional evaluation file: its rows judge the adapter instead of
rows held back from the training files (which share their phrasings). Dropped or
removed after the examples, it re-imports them judged the new way; the status says how
many rows will judge and where they come from.

A table (CSV/TSV, or JSONL of plain fields) shows its first rows and columns with two
pickers, "Input column" and "Answer column", prefilled by the guess
(:mod:`backend.data.columns`): one whose columns have known names (input/output,
question/answer, ...) imports at once, one with other names (``email,label``) imports
when "Import with these columns" is pressed; picking other columns and pressing it
re-imports. Once imported, label-like answers show their counts, and a label with 3× or
more the examples of another is said plainly.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from backend.studio.service import UPLOAD_SUFFIXES
from backend.studio.tools import IMPORT_COLUMNS_LABEL, INPUT_COLUMN_LABEL, OUTPUT_COLUMN_LABEL, AssistantTools

from .common import Ctx, edge, esc


def _status(state, failure: str | None = None) -> str:
    if state.pending_paths and not failure:
        head = (f"🟡 **Choose the columns.** {esc(', '.join(_names(state.pending_paths)))}: check the "
                f"“{INPUT_COLUMN_LABEL}” and “{OUTPUT_COLUMN_LABEL}” below and press **{IMPORT_COLUMNS_LABEL}**. "
                "Nothing is imported yet.")
        if state.data_dir:
            head += f"\n\nThe previous data is still in place: **{state.n_examples} examples** from {', '.join(state.data_files)}."
        return head
    if failure:
        head = f"❌ **Not imported.** {esc(failure.splitlines()[0])}"
        if state.data_dir:
            head += f"\n\nThe previous data is still in place: **{state.n_examples} examples** from {', '.join(state.data_files)}."
        return head
    if not state.data_dir:
        return "*No examples yet.* Drop JSONL, CSV or TXT files above (or into the chat box), or use a sample."
    columns = state.data_columns
    read_by = (f" (input column **{esc(columns['input'])}**, answer column **{esc(columns['output'])}**)"
               if columns else "")
    return (f"✅ **{state.n_examples} examples** imported from {', '.join(state.data_files)}{read_by} "
            f"(content hash `{state.data_hash[:12]}`).\n\n{judged_line(state)}")


def _names(paths: list[str]) -> list[str]:
    return [Path(p).name for p in paths]


def columns_note(state) -> str:
    """The table's columns (what each holds) and the guess, or the columns the data was read by."""
    guess = state.column_guess
    if not guess:
        return ""
    held = " · ".join(f"`{esc(c)}` ({esc(guess['described'].get(c, ''))})" for c in guess["columns"])
    lines = [f"**{esc(guess['file'])}**: {len(guess['columns'])} columns: {held}."]
    if state.data_columns or (guess.get("named") and not state.pending_paths and state.data_dir):
        lines.append(f"Read with input **{esc(guess['input'])}** and answer **{esc(guess['output'])}**. "
                     f"Pick others and press **{IMPORT_COLUMNS_LABEL}** to import it again that way.")
    elif guess.get("input") and guess.get("output"):
        lines.append(f"Best guess: input **{esc(guess['input'])}**, answer **{esc(guess['output'])}** "
                     f"({esc('; '.join(guess.get('why') or []))}).")
    return "\n\n".join(lines)


def columns_table(state) -> str:
    """The table's first rows, the input and answer columns marked."""
    guess = state.column_guess
    if not guess or not guess.get("columns"):
        return ""
    role = {guess.get("input"): ("tl-col-input", "input"), guess.get("output"): ("tl-col-output", "answer")}
    head = "".join(f"<th class='{role.get(c, ('', ''))[0]}' data-column='{esc(c)}'>{esc(c)}"
                   + (f" <small>({role[c][1]})</small>" if c in role else "") + "</th>" for c in guess["columns"])
    body = "".join("<tr>" + "".join(f"<td class='{role.get(c, ('', ''))[0]}'>{esc(row.get(c, ''))}</td>"
                                    for c in guess["columns"]) + "</tr>" for row in guess["rows"])
    return (f"<div class='tl-board' id='data-columns-table'><div class='tl-caption'>First rows of "
            f"{esc(guess['file'])}</div><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def labels_line(state) -> str:
    """The imported answers' label counts, and a plain warning when they are out of balance."""
    if not state.data_labels or not state.data_dir:
        return ""
    return ("⚠️ " if "Out of balance" in state.data_labels else "") + esc(state.data_labels)


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
    the previous data kept) and is warned about; a table whose columns must be chosen waits
    in the session (``state.pending_paths``) with the guess; any other failure is a gr.Error."""
    result = AssistantTools(service, state).add_examples(list(files), list(eval_files or []))
    _said(result, state)


def import_with_columns(service, state, input_column, output_column) -> None:
    """Import the table waiting for its columns (else the imported one again) read by these columns."""
    if not input_column or not output_column:
        raise gr.Error(f"Pick the {INPUT_COLUMN_LABEL.lower()} and the {OUTPUT_COLUMN_LABEL.lower()} first.")
    _said(AssistantTools(service, state).choose_columns(input_column, output_column), state)


def _said(result, state) -> None:
    """What the page says about an import's result: a refusal is a warning (the report shows
    it), the columns to choose nothing more (the status and the pickers say it), anything
    else an error."""
    if result.ok:
        return
    if state.data_error:
        gr.Warning("The upload has problems; nothing was imported and the previous data is kept.")
    elif not result.data.get("choose"):  # the columns to choose: the status and the pickers say so
        raise gr.Error(f"The examples were not imported: {result.text}")


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
    with gr.Column(visible=False, elem_id="data-columns") as column_box:
        column_note = gr.Markdown(elem_id="data-columns-note")
        column_rows = gr.HTML(elem_id="data-columns-preview")
        with gr.Row(equal_height=True):
            input_pick = gr.Dropdown([], label=INPUT_COLUMN_LABEL, elem_id="data-input-column", interactive=True)
            output_pick = gr.Dropdown([], label=OUTPUT_COLUMN_LABEL, elem_id="data-output-column", interactive=True)
            confirm = gr.Button(IMPORT_COLUMNS_LABEL, variant="primary", elem_id="data-import-columns")
    labels = gr.Markdown(elem_id="data-labels")
    report = gr.Textbox(label="Data doctor's report", lines=12, max_lines=30, interactive=False,
                        elem_id="data-report", buttons=["copy"])
    preview = gr.Markdown(elem_id="data-preview")

    def render(state) -> list:
        guess = state.column_guess
        columns = [gr.Column(visible=bool(guess)), columns_note(state), columns_table(state),
                   gr.Dropdown(choices=guess.get("columns", []), value=guess.get("input")),
                   gr.Dropdown(choices=guess.get("columns", []), value=guess.get("output")), labels_line(state)]
        if state.data_error:  # the last upload was refused: its file, its errors, the old data kept
            return [gr.skip(), _status(state, state.data_error), state.data_error, _preview(state), *columns]
        if state.pending_paths:  # a table waiting for its columns: the drop zone keeps it
            return [gr.skip(), _status(state), state.data_report, _preview(state), *columns]
        # Imported (or nothing yet): the status line names the files; the drop zone is free again.
        return [None, _status(state), state.data_report, _preview(state), *columns]

    def render_samples(state) -> list:
        return [gr.Dropdown(choices=[p.name for p in ctx.service().samples()])]

    shown = [upload, status, report, preview, column_box, column_note, column_rows, input_pick, output_pick, labels]
    ctx.on_refresh(render, shown)
    ctx.on_refresh(render_samples, [sample])
    skip = [gr.skip()] * len(shown)

    def add(files, eval_files, state):
        if not files:
            return state, *skip
        add_examples(ctx.service(), state, files, eval_files)
        return state, *render(state)

    def add_sample(name, eval_files, state):
        if not name:
            raise gr.Error("Pick a sample dataset first.")
        return add([str(ctx.service().sample(name))], eval_files, state)

    def judge(eval_files, state):
        if not judge_with(ctx.service(), state, eval_files):
            return state, *skip
        return state, *render(state)

    def import_columns(input_v, output_v, state):
        import_with_columns(ctx.service(), state, input_v, output_v)
        return state, *render(state)

    def keep_pick(role: str):
        def pick(value, state):  # a refresh before the import shows the person's pick, not the guess
            if state.column_guess and value:
                state.column_guess[role] = value
            return state

        return pick

    outputs = [ctx.state, *shown]
    ctx.refresh_after(upload.upload(edge(add), [upload, held_out, ctx.state], outputs))
    ctx.refresh_after(use_sample.click(edge(add_sample), [sample, held_out, ctx.state], outputs))
    ctx.refresh_after(held_out.upload(edge(judge), [held_out, ctx.state], outputs))
    ctx.refresh_after(held_out.clear(edge(judge), [held_out, ctx.state], outputs))
    ctx.refresh_after(confirm.click(edge(import_columns), [input_pick, output_pick, ctx.state], outputs))
    input_pick.input(keep_pick("input"), [input_pick, ctx.state], [ctx.state], show_progress="hidden")
    output_pick.input(keep_pick("output"), [output_pick, ctx.state], [ctx.state], show_progress="hidden")
