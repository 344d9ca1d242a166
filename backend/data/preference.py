"""Preference pairs: TRL's ``prompt`` / ``chosen`` / ``rejected`` rows, read and checked.

Two shapes are accepted, one per row (TRL's own):

* standard — ``{"prompt": "...", "chosen": "...", "rejected": "..."}``;
* conversational — ``{"prompt": [{"role": "system"|"user"|"assistant", "content"}, ...],
  "chosen": [{"role": "assistant", "content"}], "rejected": [...]}``, the prompt ending
  with a user turn.

Like the data doctor's other readers, nothing raises for bad data: every problem is a
:class:`~backend.data.problems.Problem` naming file, line and field (a missing side, a
side of the wrong type, empty text, chosen == rejected). Good rows are normalized to the
conversational shape (a standard prompt becomes one user turn, as Compare asks it), with
the ``rating_ids`` they came from kept when the file has them
(``tunelab ratings export --format preference`` writes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.data.problems import (
    BAD_JSON,
    EMPTY_FILE,
    EMPTY_TEXT,
    FILE_NOT_FOUND,
    LAST_NOT_ASSISTANT,
    MISSING_FIELD,
    NO_USER,
    NOT_OBJECT,
    SAME_ANSWER,
    UNKNOWN_ROLE,
    WRONG_TYPE,
    Problem,
)
from backend.words import counted

SIDES = ("prompt", "chosen", "rejected")
NEEDS = "'prompt', 'chosen' and 'rejected'"
ROLES = ("system", "user", "assistant")
PAIRS_FILE = "pairs.jsonl"
MIN_PAIRS = 8  # a preference round on fewer pairs trains on noise


@dataclass
class PreferenceReport:
    """What reading preference files gave: the good pairs (normalized), and every problem."""

    pairs: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # file -> standard | conversational | mixed

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return bool(self.pairs) and not self.errors

    @property
    def rating_ids(self) -> list[int]:
        return sorted({i for pair in self.pairs for i in pair.get("rating_ids", [])})

    def to_dict(self) -> dict:
        return {"ok": self.ok, "pairs": len(self.pairs), "formats": self.formats,
                "problems": [p.to_dict() for p in self.problems]}

    def render_text(self) -> str:
        lines = [f"{counted(len(self.pairs), 'preference pair')} "
                 + ("ready." if self.ok else f"read; {counted(len(self.errors), 'error')}.")]
        for name, fmt in self.formats.items():
            lines.append(f"  {name}: {fmt}")
        for p in self.problems:
            lines.append(f"  {p.severity} {p.file or ''} {p.where()}: {p.message}")
        if self.ok and len(self.pairs) < MIN_PAIRS:
            lines.append(f"  note: a preference round needs at least {MIN_PAIRS} pairs; "
                         f"{MIN_PAIRS - len(self.pairs)} more.")
        return "\n".join(lines)


def looks_like_preference(path: Path) -> bool:
    """True when the first record of a JSON file has a ``chosen`` or ``rejected`` key."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            head = handle.read(65536)
    except (OSError, UnicodeDecodeError):
        return False
    first = head.lstrip()[:1]
    text = head.lstrip()[1:] if first == "[" else head.lstrip()
    line = text.lstrip().split("\n", 1)[0]
    try:
        record = json.loads(line.rstrip().rstrip(","))
    except (ValueError, RecursionError):  # not JSON, or nested too deeply: the doctor says which, by line
        return '"chosen"' in line or '"rejected"' in line
    return isinstance(record, dict) and ("chosen" in record or "rejected" in record)


def read_preference_files(paths: list[Path | str]) -> PreferenceReport:
    """Every pair of ``paths`` (JSON lines, or a JSON array), with every problem found."""
    report = PreferenceReport()
    for path in map(Path, paths):
        name = path.name
        if not path.is_file():
            report.problems.append(FILE_NOT_FOUND.problem(name, path=str(path)))
            continue
        before, shapes = len(report.pairs), set()
        for line, record in _records(path, name, report):
            pair = _pair(record, name, line, report, shapes)
            if pair is not None:
                report.pairs.append(pair)
        if len(report.pairs) == before and not any(p.file == name for p in report.errors):
            report.problems.append(EMPTY_FILE.problem(name, detail="no preference pairs"))
        report.formats[name] = "mixed" if len(shapes) > 1 else next(iter(shapes), "none")
    return report


def _records(path: Path, name: str, report: PreferenceReport):
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if text.lstrip()[:1] == "[":
        try:
            records = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            error = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
            report.problems.append(BAD_JSON.problem(name, getattr(exc, "lineno", None), error=error))
            return
        if not isinstance(records, list):  # "[1] x" is caught above; a top-level array is all there is
            records = [records]
        for number, record in enumerate(records, 1):
            yield number, record
        return
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except (ValueError, RecursionError) as exc:
            report.problems.append(BAD_JSON.problem(name, number, error=str(exc)[:120]))


def _pair(record: Any, name: str, line: int, report: PreferenceReport, shapes: set) -> dict | None:
    def problem(rule, field_=None, **values):
        report.problems.append(rule.problem(name, line, field_, **values))

    if not isinstance(record, dict):
        problem(NOT_OBJECT, kind=type(record).__name__)
        return None
    missing = [side for side in SIDES if side not in record]
    for side in missing:
        problem(MISSING_FIELD, side, name=side, fmt="preference", needs=NEEDS)
    if missing:
        return None
    conversational = isinstance(record["prompt"], list)
    shapes.add("conversational" if conversational else "standard")
    if conversational:
        prompt = _turns(record["prompt"], "prompt", problem)
        chosen, rejected = (_answer(record[side], side, problem, list_=True) for side in ("chosen", "rejected"))
        if prompt is not None and not any(t["role"] == "user" for t in prompt):
            problem(NO_USER, "prompt", roles=", ".join(t["role"] for t in prompt) or "none")
            prompt = None
        elif prompt is not None and prompt[-1]["role"] != "user":
            problem(WRONG_TYPE, "prompt", expected="a prompt ending with a user turn",
                    given=f"one ending with {prompt[-1]['role']!r}",
                    fix="End the prompt with the user's message; the answers go in chosen and rejected.")
            prompt = None
    else:
        prompt = _text(record["prompt"], "prompt", problem)
        prompt = [{"role": "user", "content": prompt}] if prompt is not None else None
        chosen, rejected = (_answer(record[side], side, problem, list_=False) for side in ("chosen", "rejected"))
    if prompt is None or chosen is None or rejected is None:
        return None
    if chosen.strip() == rejected.strip():
        problem(SAME_ANSWER, "rejected")
        return None
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}
    ids = record.get("rating_ids")
    if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        pair["rating_ids"] = ids
    return pair


def _text(value: Any, where: str, problem) -> str | None:
    if not isinstance(value, str):
        problem(WRONG_TYPE, where, expected="a string", given=type(value).__name__,
                fix="In the standard shape prompt, chosen and rejected are all strings.")
        return None
    if not value.strip():
        problem(EMPTY_TEXT, where, what="pair")
        return None
    return value


def _turns(value: list, where: str, problem) -> list[dict] | None:
    turns = []
    for i, turn in enumerate(value):
        path = f"{where}[{i}]"
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            problem(WRONG_TYPE, path, expected='{"role": ..., "content": ...}', given=type(turn).__name__,
                    fix="Each turn is an object with a role and a content.")
            return None
        if turn["role"] not in ROLES:
            problem(UNKNOWN_ROLE, f"{path}.role", role=turn["role"], accepted=", ".join(ROLES))
            return None
        content = _text(turn["content"], f"{path}.content", problem)
        if content is None:
            return None
        turns.append({"role": turn["role"], "content": content})
    return turns


def _answer(value: Any, side: str, problem, *, list_: bool) -> str | None:
    if not list_:
        return _text(value, side, problem)
    if not isinstance(value, list) or not value:
        problem(WRONG_TYPE, side, expected="a list of one assistant turn", given=type(value).__name__,
                fix="In the conversational shape chosen and rejected are [{\"role\": \"assistant\", ...}].")
        return None
    turns = _turns(value, side, problem)
    if turns is None:
        return None
    if turns[-1]["role"] != "assistant":
        problem(LAST_NOT_ASSISTANT, side, role=turns[-1]["role"])
        return None
    return turns[-1]["content"]


def write_pairs(pairs: list[dict], path: Path) -> Path:
    """The normalized pairs as JSON lines (what a preference round trains on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
