"""Preference data: TRL's pairs (``prompt`` / ``chosen`` / ``rejected``, for a DPO round) and
unpaired votes (``prompt`` / ``completion`` / ``label``, for a KTO round), read and checked.

Two shapes of each are accepted, one per row (TRL's own):

* standard — ``{"prompt": "...", "chosen": "...", "rejected": "..."}``, or
  ``{"prompt": "...", "completion": "...", "label": true}``;
* conversational — ``{"prompt": [{"role": "system"|"user"|"assistant", "content"}, ...],
  "chosen": [{"role": "assistant", "content"}], "rejected": [...]}`` (or ``"completion":
  [...]`` and ``"label"``), the prompt ending with a user turn.

A row with ``chosen`` or ``rejected`` is a pair; one with ``completion`` or ``label`` an
unpaired vote; a row with neither is read as the file's first row was. A vote's ``label`` is
``true`` (👍) or ``false`` (👎); ``"up"`` / ``"down"`` are read too.

Like the data doctor's other readers, nothing raises for bad data: every problem is a
:class:`~backend.data.problems.Problem` naming file, line and field (a missing field, a
field of the wrong type, empty text, chosen == rejected, a label that is not a vote). Good
rows are normalized to the conversational shape (a standard prompt becomes one user turn,
as Compare asks it), with the ``rating_ids`` they came from kept when the file has them
(``tunelab ratings export`` writes them).
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
VOTE_FIELDS = ("prompt", "completion", "label")
VOTE_NEEDS = "'prompt', 'completion' and 'label'"
ROLES = ("system", "user", "assistant")
LABELS = {"up": True, "down": False}
PAIRS_FILE = "pairs.jsonl"
VOTES_FILE = "votes.jsonl"
MIN_PAIRS = 8  # a preference round on fewer pairs trains on noise
# A KTO round on single votes: at least as many rated answers as the 8 pairs of the smallest DPO
# round hold (16), and at least 4 of each kind. KTO's loss on the rarer side is weighted
# majority/minority so 👍 and 👎 pull alike (the KTO paper's advice for unequal votes); with
# fewer than 4 on one side, one or two answers would set half of every step, which is noise.
MIN_VOTES = 2 * MIN_PAIRS
MIN_EACH = 4


def label_of(value: Any) -> bool | None:
    """An unpaired vote's label as a bool (True: 👍), or None when it is not a vote."""
    if isinstance(value, bool):
        return value
    return LABELS.get(value.strip().lower()) if isinstance(value, str) else None


def is_vote(record: Any) -> bool:
    """True for a row in TRL's unpaired preference format (a completion with a 👍/👎 label)."""
    return isinstance(record, dict) and "completion" in record and label_of(record.get("label")) is not None


def votes_missing(up: int, down: int) -> tuple[int, int, int]:
    """How many more votes a KTO round needs: (in all, 👍 at least, 👎 at least)."""
    more_up, more_down = max(0, MIN_EACH - up), max(0, MIN_EACH - down)
    return max(MIN_VOTES - up - down, more_up + more_down), more_up, more_down


def more_votes(up: int, down: int) -> str:
    """``6 more`` / ``6 more, at least 1 more 👎 among them``: what a KTO round still needs."""
    more, more_up, more_down = votes_missing(up, down)
    sides = " and ".join(f"{n} more {face}" for n, face in ((more_up, "👍"), (more_down, "👎")) if n)
    return f"{more} more" + (f", at least {sides} among them" if sides else "")


def enough_votes(up: int, down: int) -> bool:
    return votes_missing(up, down)[0] == 0


def unpair(pair: dict) -> list[dict]:
    """A normalized pair as two normalized unpaired votes (chosen 👍, rejected 👎)."""
    ids = pair.get("rating_ids") or []
    votes = []
    for i, (side, label) in enumerate((("chosen", True), ("rejected", False))):
        vote = {"prompt": pair["prompt"], "completion": pair[side], "label": label}
        if len(ids) == 2:
            vote["rating_ids"] = [ids[i]]
        votes.append(vote)
    return votes


@dataclass
class PreferenceReport:
    """What reading preference files gave: the good pairs and unpaired votes (normalized), and
    every problem."""

    pairs: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # file -> standard | conversational | unpaired ... | mixed
    unpaired: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return bool(self.pairs or self.unpaired) and not self.errors

    @property
    def up(self) -> int:
        return sum(v["label"] for v in self.unpaired)

    @property
    def down(self) -> int:
        return len(self.unpaired) - self.up

    @property
    def rating_ids(self) -> list[int]:
        return sorted({i for row in self.pairs + self.unpaired for i in row.get("rating_ids", [])})

    def to_dict(self) -> dict:
        return {"ok": self.ok, "pairs": len(self.pairs), "unpaired": len(self.unpaired), "up": self.up,
                "down": self.down, "formats": self.formats, "problems": [p.to_dict() for p in self.problems]}

    def counts_text(self) -> str:
        """``12 preference pairs``, ``20 unpaired votes (12 👍, 8 👎)``, or both."""
        votes = f"{counted(len(self.unpaired), 'unpaired vote')} ({self.up} 👍, {self.down} 👎)"
        if self.unpaired and not self.pairs:
            return votes
        return counted(len(self.pairs), "preference pair") + (f" and {votes}" if self.unpaired else "")

    def render_text(self) -> str:
        lines = [f"{self.counts_text()} " + ("ready." if self.ok else f"read; {counted(len(self.errors), 'error')}.")]
        for name, fmt in self.formats.items():
            lines.append(f"  {name}: {fmt}")
        for p in self.problems:
            lines.append(f"  {p.severity} {p.file or ''} {p.where()}: {p.message}")
        if self.ok and self.pairs and len(self.pairs) < MIN_PAIRS:
            lines.append(f"  note: a preference round needs at least {MIN_PAIRS} pairs; "
                         f"{MIN_PAIRS - len(self.pairs)} more.")
        if self.ok and self.unpaired and not enough_votes(self.up, self.down):
            lines.append(f"  note: a KTO round needs at least {MIN_VOTES} votes with at least {MIN_EACH} 👍 and "
                         f"{MIN_EACH} 👎; {more_votes(self.up, self.down)}.")
        return "\n".join(lines)


def looks_like_preference(path: Path) -> bool:
    """True when the first record of a JSON file has a ``chosen`` or ``rejected`` key, or is an
    unpaired vote (a ``completion`` with a ``label``)."""
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
        return '"chosen"' in line or '"rejected"' in line or ('"completion"' in line and '"label"' in line)
    return isinstance(record, dict) and ("chosen" in record or "rejected" in record or is_vote(record))


def read_preference_files(paths: list[Path | str]) -> PreferenceReport:
    """Every pair and unpaired vote of ``paths`` (JSON lines, or a JSON array), with every
    problem found."""
    report = PreferenceReport()
    for path in map(Path, paths):
        name = path.name
        if not path.is_file():
            report.problems.append(FILE_NOT_FOUND.problem(name, path=str(path)))
            continue
        before, shapes, kind = len(report.pairs) + len(report.unpaired), set(), None
        for line, record in _records(path, name, report):
            kind = _kind(record, kind)
            if kind == "vote":
                vote = _vote(record, name, line, report, shapes)
                if vote is not None:
                    report.unpaired.append(vote)
            else:
                pair = _pair(record, name, line, report, shapes)
                if pair is not None:
                    report.pairs.append(pair)
        if len(report.pairs) + len(report.unpaired) == before and not any(p.file == name for p in report.errors):
            report.problems.append(EMPTY_FILE.problem(name, detail="no preference pairs or votes"))
        report.formats[name] = "mixed" if len(shapes) > 1 else next(iter(shapes), "none")
    return report


def _kind(record: Any, before: str | None) -> str:
    """A row's kind: ``pair`` or ``vote`` by its keys, else the kind of the file's first row."""
    if isinstance(record, dict) and ("chosen" in record or "rejected" in record):
        return "pair"
    if isinstance(record, dict) and ("completion" in record or "label" in record):
        return "vote"
    return before or "pair"


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


def _line_checks(name: str, line: int, report: PreferenceReport, what: str):
    """The ``problem(rule, field, **values)`` that files a problem of line ``line`` of ``name``."""
    def problem(rule, field_=None, **values):
        report.problems.append(rule.problem(name, line, field_, **{"what": what, **values}))

    return problem


def _has_fields(record: Any, fields, problem, *, fmt: str, needs: str) -> bool:
    """True when ``record`` is an object with every one of ``fields``; else each problem is filed."""
    if not isinstance(record, dict):
        problem(NOT_OBJECT, kind=type(record).__name__)
        return False
    missing = [key for key in fields if key not in record]
    for key in missing:
        problem(MISSING_FIELD, key, name=key, fmt=fmt, needs=needs)
    return not missing


def _pair(record: Any, name: str, line: int, report: PreferenceReport, shapes: set) -> dict | None:
    problem = _line_checks(name, line, report, "pair")
    if not _has_fields(record, SIDES, problem, fmt="preference", needs=NEEDS):
        return None
    conversational = isinstance(record["prompt"], list)
    shapes.add("conversational" if conversational else "standard")
    prompt = _prompt(record["prompt"], problem, answers="chosen and rejected")
    chosen, rejected = (_answer(record[side], side, problem, list_=conversational) for side in ("chosen", "rejected"))
    if prompt is None or chosen is None or rejected is None:
        return None
    if chosen.strip() == rejected.strip():
        problem(SAME_ANSWER, "rejected")
        return None
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}
    return _with_ids(pair, record)


def _vote(record: Any, name: str, line: int, report: PreferenceReport, shapes: set) -> dict | None:
    problem = _line_checks(name, line, report, "vote")
    if not _has_fields(record, VOTE_FIELDS, problem, fmt="unpaired vote", needs=VOTE_NEEDS):
        return None
    conversational = isinstance(record["prompt"], list)
    shapes.add("unpaired conversational" if conversational else "unpaired")
    prompt = _prompt(record["prompt"], problem, answers="completion")
    completion = _answer(record["completion"], "completion", problem, list_=conversational)
    label = label_of(record["label"])
    if label is None:
        problem(WRONG_TYPE, "label", expected='true (👍) or false (👎), or "up" / "down"',
                given=json.dumps(record["label"], ensure_ascii=False)[:40],
                fix="The label says whether the answer was good: true for 👍, false for 👎.")
    if prompt is None or completion is None or label is None:
        return None
    return _with_ids({"prompt": prompt, "completion": [{"role": "assistant", "content": completion}],
                      "label": label}, record)


def _prompt(value: Any, problem, *, answers: str) -> list[dict] | None:
    """The prompt as chat turns ending with a user turn: a standard prompt is one user turn."""
    if not isinstance(value, list):
        text = _text(value, "prompt", problem)
        return [{"role": "user", "content": text}] if text is not None else None
    prompt = _turns(value, "prompt", problem)
    if prompt is not None and not any(t["role"] == "user" for t in prompt):
        problem(NO_USER, "prompt", roles=", ".join(t["role"] for t in prompt) or "none")
        return None
    if prompt is not None and prompt[-1]["role"] != "user":
        problem(WRONG_TYPE, "prompt", expected="a prompt ending with a user turn",
                given=f"one ending with {prompt[-1]['role']!r}",
                fix=f"End the prompt with the user's message; the answers go in {answers}.")
        return None
    return prompt


def _with_ids(row: dict, record: dict) -> dict:
    ids = record.get("rating_ids")
    if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        row["rating_ids"] = ids
    return row


def _text(value: Any, where: str, problem) -> str | None:
    if not isinstance(value, str):
        problem(WRONG_TYPE, where, expected="a string", given=type(value).__name__,
                fix="In the standard shape the prompt and the answers are strings.")
        return None
    if not value.strip():
        problem(EMPTY_TEXT, where)
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
                fix="In the conversational shape the answers are [{\"role\": \"assistant\", ...}].")
        return None
    turns = _turns(value, side, problem)
    if turns is None:
        return None
    if turns[-1]["role"] != "assistant":
        problem(LAST_NOT_ASSISTANT, side, role=turns[-1]["role"])
        return None
    return turns[-1]["content"]


def write_pairs(pairs: list[dict], path: Path) -> Path:
    """The normalized pairs (or unpaired votes) as JSON lines (what a preference round trains on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return path


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
