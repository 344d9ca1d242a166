"""Imported examples as everything downstream reads them: the one reader, the one split
rule, and the one prompt/completion form.

The data doctor (:mod:`backend.data.doctor`) writes an import as ``train.jsonl`` and
``eval.jsonl``: one ``{"messages": [...]}`` per line, roles ``system``/``user``/
``assistant``, string contents, the last message the assistant's answer. Training
(:mod:`backend.training.run`) and the proof (:mod:`backend.proof.scores`) read those
files here and nowhere else, and a run given a single file splits it with the same
:func:`split_rows` the data doctor uses, so "held out" means the same rows everywhere.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from backend.errors import DataError
from backend.words import counted

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
ROLES = ("system", "user", "assistant")
MIN_EXAMPLES_FOR_EVAL = 5  # below this, nothing is held out
EVAL_SHARE = 0.2  # the rule's share of the examples held out
EVAL_FLOOR = 20  # ... raised to this many rows where three quarters still train
EVAL_CAP = 200  # ... and never more than this many
EVAL_RULE = f"{EVAL_SHARE:.0%}, at least {EVAL_FLOOR} rows where the data allows, at most {EVAL_CAP}"
_SHOWN_PROBLEMS = 20
_REIMPORT = "Import the examples through the data doctor (tunelab data check / the Data tab), which writes these files."

Messages = list[dict]
T = TypeVar("T")


def row_problem(row: Any) -> str | None:
    """What makes ``row`` (``{"messages": [...]}`` or the list itself) not a normalized
    example, or None when it is one."""
    messages = row.get("messages") if isinstance(row, dict) else row
    if not isinstance(messages, list) or not messages:
        return "no 'messages' list"
    bad = [i for i, m in enumerate(messages)
           if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str)]
    if bad:
        return f"message {bad[0]} needs a role ({'/'.join(ROLES)}) and a string content"
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's answer, after at least one prompt message"
    return None


def check_rows(rows: Sequence[Any], what: str = "examples") -> list[Messages]:
    """The message lists of in-memory rows, every problem reported at once."""
    problems = [f"row {number}: {problem}" for number, row in enumerate(rows, 1)
                if (problem := row_problem(row)) is not None]
    _raise_if(problems, f"The {what} are not normalized examples")
    return [_messages(row) for row in rows]


def read_rows(path: Path | str) -> list[Messages]:
    """The message lists of a normalized ``train.jsonl`` / ``eval.jsonl``; every bad line is
    reported at once (:class:`DataError`), and a file with no example is an error too."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Data file {str(path)!r} does not exist.", fix=_REIMPORT)
    rows, problems = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not JSON ({exc.msg})")
                continue
            problem = row_problem(row) if isinstance(row, dict) else "not a JSON object with 'messages'"
            if problem is not None:
                problems.append(f"line {number}: {problem}")
                continue
            rows.append(_messages(row))
    _raise_if(problems, f"{path.name} has {counted(len(problems), 'bad row')}")
    if not rows:
        raise DataError(f"{path.name} holds no examples.", fix="Upload at least one example.")
    return rows


def write_rows(path: Path, rows: Sequence[Messages]) -> None:
    """Write message lists as normalized JSON lines (the data doctor's import)."""
    with open(path, "w", encoding="utf-8") as handle:
        for messages in rows:
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def eval_count(n: int) -> int:
    """How many of ``n`` examples the rule holds out to judge the adapter.

    None below :data:`MIN_EXAMPLES_FOR_EVAL` (5); otherwise ``round(0.2 * n)``, raised to
    ``min(20, n // 4)`` (a floor of 20 rows, so a score is not the luck of two or three,
    where that still leaves three quarters of the data to train on) and capped at 200: the
    proof generates an answer for every held-out row, and on a CPU that judges 200 rows in
    minutes, while each row past that adds time and the score hardly moves.
    4 -> 0, 5 -> 1, 40 -> 10, 90 -> 20, 120 -> 24, 1000 -> 200.
    """
    if n < MIN_EXAMPLES_FOR_EVAL:
        return 0
    return min(EVAL_CAP, max(round(EVAL_SHARE * n), min(EVAL_FLOOR, n // 4)))


def split_rows(rows: Sequence[T], *, eval_fraction: float | None = None, seed: int) -> tuple[list[T], list[T]]:
    """The seeded train/eval split; both keep the order.

    ``eval_fraction`` None (the default everywhere) holds out :func:`eval_count` rows. An
    explicit fraction holds out ``round(n * eval_fraction)`` rows, at least one when
    ``n >= 5`` and the fraction is above 0; 0 holds out none. Below 5 rows, none either way.
    """
    n = len(rows)
    if eval_fraction is None:
        n_eval = eval_count(n)
    elif n < MIN_EXAMPLES_FOR_EVAL or eval_fraction <= 0:
        n_eval = 0
    else:
        n_eval = min(n - 1, max(1, round(n * eval_fraction)))
    if not n_eval:
        return list(rows), []
    held_out = set(random.Random(seed).sample(range(n), n_eval))
    return ([r for i, r in enumerate(rows) if i not in held_out],
            [r for i, r in enumerate(rows) if i in held_out])


def prompt_of(messages: Messages) -> Messages:
    """Every turn before the answer."""
    return [dict(role=m["role"], content=m["content"]) for m in messages[:-1]]


def answer_of(messages: Messages) -> str:
    """The answer: the last turn's text."""
    return str(messages[-1]["content"])


def behind_system(messages: Messages, system_prompt: str | None) -> Messages:
    """``messages`` with ``system_prompt`` as the first turn when they do not start with a
    system turn of their own: the one rule by which training, the proof and the serving
    endpoint put an adapter's trained system prompt in front."""
    if not system_prompt or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def to_prompt_completion(messages: Messages, system_prompt: str | None = None) -> dict:
    """TRL's conversational prompt/completion row (the loss covers the answer only), with
    ``system_prompt`` as the first turn of a prompt that has none (:func:`behind_system`)."""
    return {"prompt": prompt_of(behind_system(messages, system_prompt)),
            "completion": [{"role": "assistant", "content": answer_of(messages)}]}


def _messages(row: Any) -> Messages:
    return list(row["messages"] if isinstance(row, dict) else row)


def _raise_if(problems: list[str], headline: str) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
    raise DataError(f"{headline}: {shown}{more}.", report=problems, fix=_REIMPORT)
