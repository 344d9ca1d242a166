"""What reading one file gives: its normalized examples, its problems, its formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backend.data.problems import Problem, Rule


@dataclass
class RawExample:
    """A normalized example as read from a file, before upload-wide checks."""

    messages: list[dict]
    line: int | None
    format: str


@dataclass
class FileRead:
    """What one file gave: its examples, its problems and the format(s) detected."""

    name: str
    examples: list[RawExample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)

    def add(self, rule: Rule, line: int | None = None, field_: str | None = None, **values: Any) -> None:
        self.problems.append(rule.problem(self.name, line, field_, **values))

    def found(self, fmt: str) -> None:
        if fmt not in self.formats:
            self.formats.append(fmt)

    @property
    def format(self) -> str:
        if not self.formats:
            return "unknown"
        if len(self.formats) == 1:
            return self.formats[0]
        return "mixed: " + ", ".join(self.formats)

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)
