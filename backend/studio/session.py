"""One browser session's state, and what each of its tools returns.

:class:`SessionState` is everything one browser session (or one assistant conversation)
remembers; the page holds it in a ``gr.State`` and passes it in, so nothing here is
module-level state. A tool (:mod:`backend.studio.tools`, :mod:`backend.studio.arena_tools`)
returns a :class:`ToolResult` built only from what the service actually returned; a failure
is a result with ``ok=False`` (never an exception, never a claim of success), so both the
built-in assistant and a tool-calling agent report failures as failures.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from backend.errors import TuneLabError

logger = logging.getLogger(__name__)

BASE_CHOICE = "base"  # the session's chat model when the untouched base is chosen


@dataclass
class SessionState:
    """Everything one browser session (or one assistant conversation) remembers.

    Held in ``gr.State``; shared state (adapters, jobs, ratings) lives in the backend.
    """

    goal: str = ""
    plan: PlanCard | None = None
    plan_edited: bool = False
    data_dir: str | None = None
    data_hash: str = ""
    n_examples: int = 0
    data_files: list[str] = field(default_factory=list)
    data_paths: list[str] = field(default_factory=list)  # the imported training files, to judge on another file
    eval_paths: list[str] = field(default_factory=list)  # separate evaluation files (none: rows held back)
    data_judged: str = ""  # how many rows will judge the adapter and where they come from
    data_report: str = ""  # the data doctor's last report, as text
    data_error: str = ""  # the last refused upload's report ("" once an upload succeeds)
    data_preview: list[str] = field(default_factory=list)
    data_columns: dict = field(default_factory=dict)  # {"input", "output"} the data was read by ({}: by their names)
    column_guess: dict = field(default_factory=dict)  # the table file's columns, first rows and guess (ColumnGuess)
    pending_paths: list[str] = field(default_factory=list)  # files waiting for their columns to be chosen
    data_labels: str = ""  # the imported answers' label counts and balance ("" when they are not labels)
    base: str = ""  # "" = the settings' default base (the one `tunelab up --base` serves)
    chat_model: str = BASE_CHOICE
    # the person's temperature in Compare / Chat; None: the goal's default (trust.temperature_of)
    compare_temperature: float | None = None
    chat_temperature: float | None = None
    job_ids: list[int] = field(default_factory=list)
    told_jobs: list[int] = field(default_factory=list)  # runs of sweeps whose outcome the assistant has said
    told_served: list[int] = field(default_factory=list)  # runs said to be served while still being scored
    adapter_names: list[str] = field(default_factory=list)
    comparison: Any = None  # backend.studio.comparison.Comparison
    served_base: str = ""  # the endpoint's name for the base in the last comparison
    rated: dict[str, dict] = field(default_factory=dict)  # model -> {"score", "best"} in this comparison
    history: list[dict] = field(default_factory=list)  # the assistant conversation (role/content)

    @property
    def revealed(self) -> bool:
        """Blind labels are revealed once every answer is rated or a best one picked."""
        c = self.comparison
        if c is None or not c.blind:
            return True
        return any(r.get("best") for r in self.rated.values()) or all(a.model in self.rated for a in c.answers)


@dataclass
class ToolResult:
    ok: bool
    text: str
    data: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text if self.ok else f"FAILED: {self.text}"


def failed(exc: Exception) -> ToolResult:
    """A failed result in the error's own words (a typed error's), else by type and message."""
    return ToolResult(False, str(exc) if isinstance(exc, TuneLabError) else f"{type(exc).__name__}: {exc}")


def tool(fn):
    """Run a tool, turn any error into a failed result, and log the call.

    Typed TuneLab errors carry their own words; anything else (an endpoint that is
    down, a bug) is reported by type and message, and its traceback goes to the log,
    never to the page.
    """

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            result = fn(self, *args, **kwargs)
        except TuneLabError as exc:
            result = failed(exc)
        except Exception as exc:
            logger.exception("tool %s failed", fn.__name__)
            result = failed(exc)
        self.log.append((fn.__name__, result))
        return result

    return wrapper
