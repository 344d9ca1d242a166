"""Typed errors. Each says what was given, what is wrong, and what to do.

Backend code raises these; the edges (CLI, HTTP server, UI) turn them into exit
codes, HTTP errors or ``gr.Error`` without rewording them.
"""

from __future__ import annotations


class TuneLabError(Exception):
    """Base of every error TuneLab raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None):
        self.message = message
        self.fix = fix
        super().__init__(message if not fix else f"{message} {fix}")


class InvalidName(TuneLabError):
    """An adapter name that breaks the naming rule or escapes adapters/."""


class BaseModelError(TuneLabError):
    """A base model that cannot be found, read or used."""


class DataError(TuneLabError):
    """An upload with errors; ``report`` holds every problem found."""

    def __init__(self, message: str, report=None, *, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.report = report


class AdapterNotFound(TuneLabError):
    """An adapter name that is not in the store or on disk."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = sorted(known)
        listing = ", ".join(self.known) if self.known else "none yet"
        super().__init__(f"No adapter named {name!r}. Known adapters: {listing}.")


class AdapterMismatch(TuneLabError):
    """An adapter that is not a PEFT LoRA adapter or was trained for another base."""


class JobError(TuneLabError):
    """A job that cannot be queued, cancelled or resumed."""


class ConfigError(TuneLabError):
    """A training or LoRA configuration that is invalid."""


class Overloaded(TuneLabError):
    """The serving endpoint's queue is full; the caller should retry after ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float = 1.0, fix: str | None = None):
        self.retry_after = retry_after
        super().__init__(message, fix=fix)


class PromptTooLong(TuneLabError):
    """A prompt that does not fit the base model's context window."""


class ServingError(TuneLabError):
    """A serving endpoint that cannot be reached or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, fix: str | None = None):
        self.status = status
        super().__init__(message, fix=fix)
