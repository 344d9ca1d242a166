"""Example files for the data tests: write one, and the rows and turns they hold."""

from __future__ import annotations

import json
from pathlib import Path


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*rows) -> str:
    """JSON lines of ``rows``; a string row is written as it is (to write broken lines)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def where(report) -> set[tuple]:
    """(rule code, file, line, field) of every problem in ``report``."""
    return {(p.code, p.file, p.line, p.field) for p in report.problems}


def chat(user: str, answer: str) -> dict:
    """One normalized row: a user turn and the answer."""
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def U(text: str) -> dict:
    return {"role": "user", "content": text}


def A(text: str) -> dict:
    return {"role": "assistant", "content": text}


def S(text: str) -> dict:
    return {"role": "system", "content": text}
