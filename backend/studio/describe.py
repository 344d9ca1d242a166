"""The studio's words for runs, cancels and rating tallies: one wording, shared by the
assistant, the page and the CLI."""

from __future__ import annotations

from backend.adapter_folder import AdapterMeta
from backend.hparams import RunSpec
from backend.proof.intervals import describe as describe_figure
from backend.proof.scores import number, share
from backend.training.progress import loss_parts, tokens_text
from backend.words import counted

__all__ = ["describe_figure", "number", "share"]  # the proof's wording, for the page (which imports only the studio)


def eta_text(seconds) -> str:
    if not seconds:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s left" if seconds >= 60 else f"{seconds}s left"


def progress_details(p: dict) -> list[str]:
    """What a run is doing now (its phase: "loading the base ...", "tokenizing 48 examples",
    "step 3/18", "scoring ..."; else its step), its losses, speed (the one tokens/s,
    :func:`backend.training.progress.tokens_per_s`) and, while running, time left; empty
    parts left out."""
    total, step = p.get("total_steps") or 0, p.get("step") or 0
    details = [p.get("activity") or (f"step {step}/{total}" if total else "")]
    details += loss_parts(p)
    details.append(tokens_text(p.get("tokens_per_s")))
    if p.get("phase") == "scoring":
        details.append("training done" if p.get("activity") else "training done; scoring the adapter on the held-out rows")
        details.append("served: try it in Compare or Chat" if p.get("served") else "")
    elif p.get("status") == "running":
        details.append(eta_text(p.get("eta_s")))
    return [d for d in details if d]


def served_text(p: dict) -> str:
    """What the chat says when a run's adapter is served while its proof still runs."""
    return (f"{p['adapter']} is trained and already served: try it in **Compare** or **Chat** now. "
            "Its score against the base follows when the scoring on the held-out rows is done.")


def describe_job(p: dict) -> str:
    """One line per run for the assistant: ``- job 3 wine: running, step 4/10, loss 1.234``."""
    parts = [f"- job {p.get('job_id', p.get('id', '?'))} {p.get('adapter', '')}: {p.get('status')}"]
    if p.get("total_steps"):
        parts.append(f"step {p.get('step') or 0}/{p['total_steps']}")
    parts += loss_parts(p)
    if p.get("phase") == "scoring":
        parts.append("training done, scoring the adapter on the held-out rows"
                     + (" (already served: try it)" if p.get("served") else ""))
    if p.get("error"):
        parts.append(f"error: {p['error']}")
    return ", ".join(parts)


def describe_cancel(job_id: int, answer: str) -> str:
    """What a cancel did, from the job runner's answer (the job's status right after it)."""
    if answer == "cancelled":
        return f"Job {job_id} was cancelled before it started."
    if answer == "running":
        return f"Job {job_id} is stopping: it ends at its next step and is marked cancelled."
    return f"Job {job_id}: {answer}"


def percent(value) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def describe_tally(t: dict) -> str:
    return (f"{t['model']}: {counted(t['ratings'], 'rating')}, {t['up']} 👍 / {t['down']} 👎, {t['best']} best, "
            f"win rate vs base {percent(t.get('win_rate_vs_base'))} over "
            f"{counted(t.get('comparisons_with_base', 0), 'comparison')}")


def spec_line(spec: RunSpec) -> str:
    """One line: what a run will do (``LoRA r16 alpha 32, lr 0.0005, batch 4, ...``)."""
    t = spec.train
    settled = f" or reaches {t.settled_loss:g}" if t.settled_loss is not None else ""
    stop = (f"up to {t.epochs:g} epochs, stopping when the held-out loss stops falling (patience {t.patience})"
            f"{settled}" if t.early_stopping else f"{t.epochs:g} epochs")
    budget = f", at most {t.time_budget_s / 60:g} min of training" if t.time_budget_s else ""
    system = f", system prompt {t.system_prompt!r}" if t.system_prompt else ""
    return f"LoRA r{spec.lora.r} alpha {spec.lora.alpha}, lr {t.learning_rate:g}, batch {t.batch_size}, {stop}{budget}{system}"


def proof_lines(meta: AdapterMeta) -> list[str]:
    """What a finished run's proof says, in a few lines: the figures with their intervals,
    the "changed nothing" warning and the verdict suggestion (for the CLI and the assistant)."""
    proof = meta.proof or {}
    extra = getattr(meta, "model_extra", None) or {}
    if not proof:
        return [f"proof failed: {extra['proof_error']}"] if extra.get("proof_error") else []
    lines = []
    judged = proof.get("judged_by") or {}
    em, style = proof.get("exact_match"), proof.get("style")
    if em:
        parts = [f"base zero-shot {describe_figure(em['base_zero_shot'])}" if em.get("base_zero_shot") else "",
                 f"base {em.get('k')}-shot {describe_figure(em['base_few_shot'])}" if em.get("base_few_shot") else "",
                 f"adapter {describe_figure(em['adapter'])}" if em.get("adapter") else ""]
        lines.append("exact match: " + "; ".join(p for p in parts if p))
    if style:
        parts = [f"{label} {describe_figure(style[name]['both'])}" for name, label in
                 (("base", "base"), ("prompted", "base asked for it"), ("adapter", "adapter")) if style.get(name)]
        lines.append("on-style and on-task: " + "; ".join(parts))
    if judged:
        lines.append(f"judged on {judged.get('rows')} rows {judged.get('note', '')}".rstrip())
    nothing = proof.get("changed_nothing") or {}
    if nothing.get("flag"):
        lines.append("WARNING: it changed nothing measurable (" + "; ".join(nothing["reasons"]) + "). Likely causes: "
                     + "; ".join(nothing["causes"]) + ".")
    forgot = proof.get("forgetting")
    if forgot:
        lines.append(f"forgetting check: {forgot['changed']}/{forgot['total']} everyday prompts answered differently")
    if proof.get("verdict"):
        lines.append(f"suggestion: {proof['verdict']['text']}")
    return lines
