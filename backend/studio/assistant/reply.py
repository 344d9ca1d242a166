"""What an assistant says, and the tool results it is based on (both assistants return one)."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.studio.session import ToolResult


@dataclass
class Reply:
    text: str
    results: list[tuple[str, ToolResult]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for _, r in self.results)
