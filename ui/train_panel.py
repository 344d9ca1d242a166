"""Train tab: every run with a progress bar, a live loss curve (train and eval), cancel,
and the leaderboard of the sweep once its runs are all over.

Everything shown is read from the backend (service.jobs()) on a gr.Timer, so it
survives a page reload and an app restart; the page never trains anything itself —
the job runner does, in the background. "Cancel" says what the runner did: a queued
run is cancelled at once, a running one stops at its next step, a finished one is
left as it is (and the page says so).

Two choices for the plan's next runs, from what this machine has (service.train_device):
"fit in memory" (4-bit / 8-bit QLoRA), offered only when the estimate says the base does
not fit one GPU in bf16, and the number of processes (all visible GPUs by default; fixed
to 1 on a machine without a GPU, which says why).
"""

from __future__ import annotations

import gradio as gr

from backend.studio.describe import describe_cancel, progress_details
from backend.studio.tools import ACTIVE, AssistantTools, finished_sweeps

from .common import Ctx, edge, esc, leaderboard_html, loss_svg

POLL_S = 2.0
FIT_CHOICES = [("no: bf16", "none"), ("4-bit (QLoRA)", "4bit"), ("8-bit", "8bit")]
NO_PLAN = "No plan yet: say the goal in the chat first; these choices apply to the plan's runs."


def fit_control(device: dict, plan) -> dict:
    """The "fit in memory" choice: shown only when the base does not fit the GPU in bf16,
    saying what each way would need; its value is the plan's."""
    offer = device.get("quantize_offer")
    value = (plan.train.quantize if plan is not None else None) or "none"
    return gr.Radio(choices=FIT_CHOICES, value=value, visible=bool(offer),
                    info=(offer[0].upper() + offer[1:] + ".") if offer else None)


def processes_control(device: dict, plan) -> dict:
    """The processes control: the plan's count (every visible GPU by default), 1 to the GPUs
    visible; fixed to 1 without a GPU, the note saying why."""
    gpus = device.get("gpus") or 0
    if gpus == 0:
        return gr.Number(value=1, minimum=1, maximum=1, interactive=False, info=device.get("processes_note"))
    value = plan.train.processes if plan is not None else gpus
    return gr.Number(value=min(value, gpus), minimum=1, maximum=gpus, interactive=gpus > 1,
                     info=device.get("processes_note"))


def apply_device_choices(device: dict, state, fit: str | None, processes) -> object:
    """The two choices put on the session's plan (its next runs train with them)."""
    if state.plan is None:
        raise gr.Error(NO_PLAN)
    gpus = max(1, device.get("gpus") or 0)
    try:
        count = int(processes if processes is not None else 1)
    except (TypeError, ValueError):
        raise gr.Error(f"Processes {processes!r} is not a whole number; give 1 to {gpus}.") from None
    if not 1 <= count <= gpus:
        raise gr.Error(f"Processes {count} is not between 1 and {gpus}: " + (
            "this machine has no GPU, so its runs use 1 process." if not device.get("gpus")
            else f"{gpus} GPUs are visible, one process each."))
    if fit not in (None, "none") and not device.get("quantize_offer"):
        raise gr.Error(f"The base fits in bf16 here, so it is not quantized ({fit!r} was asked).")
    quantize = None if fit in (None, "none") else fit
    state.plan.train = state.plan.train.model_copy(update={"quantize": quantize, "processes": count})
    return state


def runs_html(rows: list[dict]) -> str:
    if not rows:
        return "<div class='tl-empty' id='train-empty'>No training runs yet. Set a goal, add examples and say <b>go</b>.</div>"
    items = []
    for p in reversed(rows):
        total, step = p.get("total_steps") or 0, p.get("step") or 0
        fraction = 1.0 if p["status"] == "done" else (step / total if total else 0.0)
        shown = "stopping" if p["status"] == "running" and p.get("cancel_requested") else p["status"]
        error = f"<div class='tl-error'>{esc(p['error'])}</div>" if p.get("error") and p["status"] != "done" else ""
        items.append(
            f"<div class='tl-run tl-{esc(p['status'])}' data-job='{p['job_id']}' data-status='{esc(p['status'])}'>"
            f"<div class='tl-run-head'><b>{esc(p['adapter'])}</b> <span class='tl-badge'>{esc(shown)}</span>"
            f" <span class='tl-job'>job {p['job_id']}</span></div>"
            f"<div class='tl-bar'><div style='width:{fraction * 100:.0f}%'></div></div>"
            f"<div class='tl-run-info'>{esc(' · '.join(progress_details(p)))}</div>{error}</div>")
    return "<div class='tl-runs'>" + "".join(items) + "</div>"


def chat_with_news(service, history: list, state) -> list:
    """``history`` (the assistant chat) with what it has not said yet about this session's
    runs that are over: what each scored against the base and what to do next (said once)."""
    news = AssistantTools(service, state).sweep_news()
    return list(history or []) + [{"role": "assistant", "content": f"🏁 {line}"} for line in news]


def board_html(service, rows: list[dict], mine: list[int]) -> str:
    """The leaderboard of the newest sweep this session trained (every run's, when it trained
    none: e.g. after a reload) whose runs are all over: its adapters side by side, the
    recommended one marked and why; until then, a line saying when it appears."""
    own = [p for p in rows if p["job_id"] in set(mine)] or rows
    over = finished_sweeps(own)
    if not over:
        return ("<div class='tl-board tl-empty' id='train-board'>The sweep's leaderboard appears here when "
                "its runs are all over.</div>")
    sweep = over[-1]
    return leaderboard_html(service.leaderboard(sweep), elem_id="train-board",
                            title=f"Sweep {sweep}: ★ recommended (best held-out score; ties to the smaller, "
                                  "then faster adapter)",
                            empty=f"No run of sweep {sweep} finished: there is nothing to rank.",
                            badges=service.badges())


def cancel_target(rows: list[dict], selected) -> int:
    """The run "Cancel" acts on: the selected run when it can be cancelled, else the one that
    is running, else the only queued one; with several and none of them selected it asks which."""
    active = [p for p in rows if p["status"] in ACTIVE and not p.get("cancel_requested")]
    if selected in [p["job_id"] for p in active]:
        return selected
    running = [p for p in active if p["status"] == "running"]
    if len(running) == 1 or len(active) == 1:
        return (running or active)[0]["job_id"]
    if not active:
        raise gr.Error("No run is queued or running: there is nothing to cancel.")
    names = ", ".join(f"{p['adapter']} (job {p['job_id']}, {p['status']})" for p in active)
    raise gr.Error(f"Several runs can be cancelled: {names}. Pick one in 'Loss curve of', then cancel.")


def cancel_label(rows: list[dict], selected) -> dict:
    """The Cancel button: shown only while a run can be cancelled, naming the run it acts on."""
    try:
        job_id = cancel_target(rows, selected)
    except gr.Error:
        active = any(p["status"] in ACTIVE and not p.get("cancel_requested") for p in rows)
        return gr.Button("Cancel a run…", visible=active)
    name = next(p["adapter"] for p in rows if p["job_id"] == job_id)
    return gr.Button(f"Cancel {name} (job {job_id})", visible=True)


def cancel_note(service, job_id) -> str:
    """What cancelling ``job_id`` did, in the runner's words; an unknown or finished job is
    the service's error (shown by :func:`~ui.common.edge`), never a claim that it stops."""
    if job_id is None:
        raise gr.Error("Pick a run to cancel.")
    answer = service.cancel(int(job_id))
    return f"{describe_cancel(int(job_id), answer)} Finished adapters are untouched."


def build(ctx: Ctx) -> None:
    board = gr.HTML("", elem_id="train-leaderboard")  # the finished sweep's leaderboard, above its runs
    runs = gr.HTML(runs_html([]), elem_id="train-runs")
    with gr.Row():
        job = gr.Dropdown([], label="Loss curve of", elem_id="train-job", scale=3)
        cancel = gr.Button("Cancel this run", variant="stop", elem_id="train-cancel", scale=1, visible=False)
    plot = gr.HTML(loss_svg([], "Loss (train and eval)"), elem_id="loss-plot")
    note = gr.Markdown(elem_id="train-note")
    with gr.Row():
        fit = gr.Radio(FIT_CHOICES, value="none", label="Fit in memory", elem_id="train-fit", visible=False)
        processes = gr.Number(1, precision=0, label="Processes", elem_id="train-processes", interactive=False)
    timer = gr.Timer(POLL_S)
    signature = gr.State("")  # "job:status:phase:served;..." — changes when a run starts, is scored, served or ends

    def snapshot(selected, state):
        service = ctx.service()
        rows = service.jobs()
        choices = [(f"{p['adapter']} (job {p['job_id']}, {p['status']})", p["job_id"]) for p in reversed(rows)]
        ids = [p["job_id"] for p in rows]
        if selected not in ids:  # follow the newest running run, else the newest run
            running = [p["job_id"] for p in rows if p["status"] == "running"]
            selected = running[-1] if running else (ids[-1] if ids else None)
        current = next((p for p in rows if p["job_id"] == selected), None)
        frame = loss_svg(current["loss_history"] if current else [],
                         f"{current['adapter']}: loss (train and eval)" if current else "Loss (train and eval)",
                         waiting=(current.get("activity") or current["status"]) if current else "no run yet")
        sig = ";".join(f"{p['job_id']}:{p['status']}:{p.get('phase') or ''}:{'served' if p.get('served') else ''}"
                       for p in rows)
        return (runs_html(rows), gr.Dropdown(choices=choices, value=selected), frame, sig,
                board_html(service, rows, state.job_ids), cancel_label(rows, selected))

    def tick(selected, state):
        return snapshot(selected, state)

    shown = [runs, job, plot, signature, board, cancel]
    timer.tick(edge(tick), [job, ctx.state], shown, show_progress="hidden")
    job.input(edge(tick), [job, ctx.state], shown, show_progress="hidden")

    def cancel_run(selected):
        service = ctx.service()
        return cancel_note(service, cancel_target(service.jobs(), selected))

    # the status changes at once: the runs are drawn again right after the cancel
    cancel.click(edge(cancel_run), [job], [note]).then(edge(tick), [job, ctx.state], shown)
    # When a run is served (before its proof is done) or ends, the adapter lists elsewhere
    # (compare, chat, adapters) refresh, and the chat says so: that it can be tried now, or
    # what a finished run scored against the base and what to do next.
    def announce(history, state):
        return chat_with_news(ctx.service(), history, state), state

    def device_controls(state):
        device = ctx.service().train_device(state.plan, state.base or None)
        return fit_control(device, state.plan), processes_control(device, state.plan)

    def choose(state, fit_value, count):
        service = ctx.service()
        return apply_device_choices(service.train_device(state.plan, state.base or None), state, fit_value, count)

    ctx.on_refresh(device_controls, [fit, processes])
    fit.input(edge(choose), [ctx.state, fit, processes], [ctx.state])
    processes.input(edge(choose), [ctx.state, fit, processes], [ctx.state])

    ended = signature.change(lambda: None, None, None)
    ctx.refresh_after(ended)
    if ctx.chat is not None:
        ended.then(edge(announce), [ctx.chat, ctx.state], [ctx.chat, ctx.state], show_progress="hidden")
