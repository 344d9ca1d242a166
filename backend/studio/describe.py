"""The studio's words for runs, cancels and rating tallies: one wording, shared by the
assistant, the page and the CLI."""

from __future__ import annotations

from backend.training.progress import loss_parts


def eta_text(seconds) -> str:
    if not seconds:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s left" if seconds >= 60 else f"{seconds}s left"


def progress_details(p: dict) -> list[str]:
    """A run's step, losses, speed and (while running) time left; empty parts left out."""
    total, step = p.get("total_steps") or 0, p.get("step") or 0
    details = [f"step {step}/{total}" if total else ""]
    details += loss_parts(p)
    if p.get("tokens_per_s"):
        details.append(f"{p['tokens_per_s']:.0f} tok/s")
    if p.get("status") == "running":
        details.append(eta_text(p.get("eta_s")))
    return [d for d in details if d]


def describe_job(p: dict) -> str:
    """One line per run for the assistant: ``- job 3 wine: running, step 4/10, loss 1.234``."""
    parts = [f"- job {p.get('job_id', p.get('id', '?'))} {p.get('adapter', '')}: {p.get('status')}"]
    if p.get("total_steps"):
        parts.append(f"step {p.get('step') or 0}/{p['total_steps']}")
    parts += loss_parts(p)
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
    return (f"{t['model']}: {t['ratings']} rating(s), {t['up']} 👍 / {t['down']} 👎, {t['best']} best, "
            f"win rate vs base {percent(t.get('win_rate_vs_base'))} over "
            f"{t.get('comparisons_with_base', 0)} comparison(s)")
