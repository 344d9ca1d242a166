"""The sweep's leaderboard: its adapters side by side, and the one recommended.

Pure: it is handed each finished adapter's record (name, sweep, the proof and metrics of
its ``tunelab.json``, its weights' size) and reads nothing itself; the service gathers
the records (:meth:`backend.studio.service.Service.leaderboard`), the page, the CLI and
the assistant show the rows.

The ranking rule, per sweep (adapters trained by one plan share a sweep; an adapter
trained alone is a sweep of one):

1. The measured score, best first, of the strongest kind the sweep has: held-out exact
   match (the adapter's share of correct answers), else the share of generated answers
   judged both in style and on task, else the lowest eval loss (the proof's, else the
   training's final one). An adapter lacking that kind of score is listed below the ones
   that have it.
2. Ties — the same share (equal correct counts out of the same rows), or eval losses equal
   to 3 decimals — go to the smaller adapter, then to the one that trained faster, then
   by name.
3. The first row is recommended when it has a measured score; an adapter with none is
   listed but never recommended. Its ``why`` says what it won on.

Every proof key is optional: an adapter with no proof, or an older proof, still gets a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable

from backend.words import counted

EXACT, STYLE, LOSS = "exact_match", "style", "eval_loss"
MEASURES = (EXACT, STYLE, LOSS)  # strongest first
MEASURE_WORDS = {EXACT: "held-out exact match", STYLE: "share in style and on task", LOSS: "eval loss"}
# what a proof's suggestion means for the recommended row, when it is a caveat
CAVEATS = {"no_better": "it does no better than the base", "changed_nothing": "it changed nothing",
           "too_few_rows": "too few held-out rows to tell"}


@dataclass
class Record:
    """What the leaderboard needs about one finished adapter."""

    name: str
    sweep: str | None = None  # None: a sweep of its own
    proof: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    size_bytes: int | None = None


# --- reading a proof (every key optional) ------------------------------------------------------


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(part) -> tuple[int, int, list | None] | None:
    """(correct, total, ci95) of a ``{"correct", "total", "score", "ci95"}`` part, None when unusable."""
    part = _dict(part)
    correct, total = _number(part.get("correct")), _number(part.get("total"))
    if correct is None or total is None or total <= 0 or correct < 0:
        return None
    ci = part.get("ci95")
    ci = [float(ci[0]), float(ci[1])] if (isinstance(ci, (list, tuple)) and len(ci) == 2
                                          and all(_number(v) is not None for v in ci)) else None
    return int(correct), int(total), ci


def percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def count_text(count: tuple[int, int, list | None]) -> str:
    """``29/30 (97%, 95% CI 83–99%)``; without an interval ``29/30 (97%)``."""
    correct, total, ci = count
    interval = f", 95% CI {ci[0] * 100:.0f}–{ci[1] * 100:.0f}%" if ci else ""
    return f"{correct}/{total} ({percent(correct / total)}{interval})"


def size_text(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 60:
        whole = int(round(seconds))
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _measure(record: Record) -> dict:
    """The record's strongest measured score: measure, value, tie key, short and long text, base."""
    proof = _dict(record.proof)
    em = _dict(proof.get("exact_match"))
    adapter = _count(em.get("adapter")) or _count(em.get("adapter_zero_shot"))  # the older key too
    if adapter:
        base, words = _count(em.get("base_few_shot")), "few-shot"
        if base is None:
            base, words = _count(em.get("base_zero_shot")), "zero-shot"
        correct, total, _ = adapter
        return {"measure": EXACT, "value": correct / total, "key": Fraction(correct, total),
                "short": f"{correct}/{total}", "text": count_text(adapter), "correct": correct, "total": total,
                "ci95": adapter[2], "base": f"base {base[0]}/{base[1]} {words}" if base else ""}
    style = _dict(proof.get("style"))
    adapter = _count(_dict(style.get("adapter")).get("both"))
    if adapter:
        base, words = _count(_dict(style.get("prompted")).get("both")), "prompted base"
        if base is None:
            base, words = _count(_dict(style.get("base")).get("both")), "base"
        correct, total, _ = adapter
        return {"measure": STYLE, "value": correct / total, "key": Fraction(correct, total),
                "short": f"{correct}/{total} in style and on task", "text": f"{count_text(adapter)} style+on task",
                "correct": correct, "total": total, "ci95": adapter[2],
                "base": f"{words} {base[0]}/{base[1]}" if base else ""}
    evals = _dict(proof.get("eval"))
    loss = _number(_dict(evals.get("adapter")).get("loss"))
    if loss is None:
        loss = _number(_dict(record.metrics).get("eval_loss"))
    if loss is not None:
        base = _number(_dict(evals.get("base")).get("loss"))
        return {"measure": LOSS, "value": loss, "key": round(loss, 3), "short": f"eval loss {loss:.3f}",
                "text": f"eval loss {loss:.3f}", "correct": None, "total": None, "ci95": None,
                "base": f"base loss {base:.3f}" if base is not None else ""}
    return {"measure": None, "value": None, "key": None, "short": "", "text": "not measured yet",
            "correct": None, "total": None, "ci95": None, "base": ""}


def _row(record: Record) -> dict:
    measured = _measure(record)
    verdict = _dict(_dict(record.proof).get("verdict"))
    seconds = _number(_dict(record.metrics).get("train_seconds"))
    return {
        "sweep": record.sweep or record.name, "name": record.name, "rank": 0,
        "measure": measured["measure"], "score": measured["value"], "correct": measured["correct"],
        "total": measured["total"], "ci95": measured["ci95"], "score_text": measured["text"],
        "short": measured["short"], "base_text": measured["base"],
        "train_seconds": seconds, "train_text": seconds_text(seconds),
        "size_bytes": record.size_bytes, "size_text": size_text(record.size_bytes),
        "verdict": verdict.get("suggestion") if isinstance(verdict.get("suggestion"), str) else None,
        "verdict_text": verdict.get("text") if isinstance(verdict.get("text"), str) else "",
        "recommended": False, "why": "", "_key": measured["key"],
    }


# --- ranking ------------------------------------------------------------------------------------


def _sort_key(row: dict) -> tuple:
    tier = MEASURES.index(row["measure"]) if row["measure"] else len(MEASURES)
    key = row["_key"]
    score = 0 if key is None else (key if row["measure"] == LOSS else -key)  # best first
    size = row["size_bytes"] if row["size_bytes"] is not None else math.inf
    seconds = row["train_seconds"] if row["train_seconds"] is not None else math.inf
    return tier, score, size, seconds, row["name"]


def _tied(a: dict, b: dict) -> bool:
    return a["measure"] == b["measure"] and a["_key"] == b["_key"]


def _tie_reason(best: dict, other: dict) -> str:
    if best["size_bytes"] != other["size_bytes"]:
        return f"smaller adapter ({best['size_text']} vs {other['size_text']})"
    if best["train_seconds"] != other["train_seconds"]:
        return f"same size, faster to train ({best['train_text']} vs {other['train_text']})"
    return "same size and train time; first by name"


def _why(best: dict, board: list[dict]) -> str:
    same = [r for r in board if r["measure"] == best["measure"]]
    what = MEASURE_WORDS[best["measure"]]
    if len(board) == 1:
        why = f"the only run of its sweep, measured by {what}"
    elif len(same) == 1:
        why = f"the only run of {len(board)} with a {what}"
    elif _tied(best, same[1]):
        tied = [r["name"] for r in same[1:] if _tied(best, r)]
        why = f"ties {', '.join(tied)} at {best['short']}; {_tie_reason(best, same[1])}"
    else:
        word = "lowest" if best["measure"] == LOSS else "highest"
        why = f"{word} {what} of {len(same)} runs (next: {same[1]['name']} {same[1]['short']})"
    caveat = CAVEATS.get(best["verdict"] or "")
    return f"{why}; but its proof says {caveat}" if caveat else why


def rank_sweep(records: Iterable[Record]) -> list[dict]:
    """One sweep's rows, best first, numbered, with the recommended one marked and why."""
    board = sorted((_row(r) for r in records), key=_sort_key)
    for number, row in enumerate(board, 1):
        row["rank"] = number
    if board and board[0]["measure"] is not None:
        board[0]["recommended"] = True
        board[0]["why"] = _why(board[0], board)
    for row in board:
        del row["_key"]
    return board


def leaderboard(records: Iterable[Record]) -> list[dict]:
    """Every sweep's rows (sweeps in the order they first appear, each ranked by :func:`rank_sweep`)."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.sweep or record.name, []).append(record)
    return [row for group in groups.values() for row in rank_sweep(group)]


def by_sweep(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of :func:`leaderboard` grouped by sweep, order kept."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["sweep"], []).append(row)
    return groups


# --- words ----------------------------------------------------------------------------------------


def verdict_words(suggestion: str | None) -> str:
    """A proof's suggestion as words: ``beats_base`` -> ``beats base``; none -> ``—``."""
    return suggestion.replace("_", " ") if suggestion else "—"


def best_line(rows: list[dict]) -> str | None:
    """The recommended row of ``rows`` (one sweep's) in one sentence, e.g.
    ``news-r16 is best: 29/30 vs base 13/30 few-shot — highest held-out exact match of 3 runs
    (next: news-r8 27/30).``; None when no row is recommended."""
    best = next((r for r in rows if r["recommended"]), None)
    if best is None:
        return None
    versus = f" vs {best['base_text']}" if best["base_text"] else ""
    return f"{best['name']} is best: {best['short']}{versus} — {best['why']}."


def sweep_summary(sweep: str, rows: list[dict]) -> str:
    """What to say when ``sweep`` is over: its best line, or why none is recommended."""
    line = best_line(rows)
    if line:
        return f"Sweep {sweep} is over. {line}"
    if not rows:
        return f"Sweep {sweep} is over, but none of its runs finished: there is nothing to rank."
    return (f"Sweep {sweep} is over: {counted(len(rows), 'adapter')}, none with a measured score yet "
            "(no held-out rows), so none is recommended.")
