"""What a caller hands the engine and gets back: sampling parameters, token events, the
handle to iterate them, and the engine's own record of a request in flight.

Nothing here touches torch: the HTTP protocol builds :class:`SamplingParams` without
loading a model library.
"""

from __future__ import annotations

import asyncio
import queue
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from backend.errors import TuneLabError

BASE_ROW = "__base__"  # peft's name for "no adapter" in adapter_names


@dataclass
class SamplingParams:
    """How to pick tokens. ``temperature`` 0 means greedy."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # keep going past end-of-sequence (benchmarks; vLLM has the same knob)


@dataclass
class TokenEvent:
    """One step of one request: the token picked and the text it adds.

    ``text`` is the new visible text (it may be empty while a stop string or a
    multi-byte character is still incomplete). The last event carries
    ``finish_reason`` ('stop', 'length', 'cancelled' or 'error') and ``generated_text``.
    """

    token_id: int | None
    token_text: str
    logprob: float | None
    special: bool
    text: str
    finish_reason: str | None = None
    generated_text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None
    batch_rows_max: int


@dataclass(eq=False)  # two requests are the same only if they are one object
class Request:
    """A request in flight, as the scheduler sees it (callers hold a :class:`RequestHandle`)."""

    id: int
    prompt_ids: list[int]
    internal_adapter: str  # peft name, or BASE_ROW
    public_adapter: str | None
    params: SamplingParams
    sync_queue: "queue.Queue | None" = None
    async_queue: "asyncio.Queue | None" = None
    loop: "asyncio.AbstractEventLoop | None" = None
    submitted_at: float = field(default_factory=time.monotonic)
    generator: Any = None  # torch.Generator of a sampled request, None when greedy
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
    cancelled: bool = False
    done: bool = False
    batch_rows_max: int = 0

    def emit(self, event: TokenEvent) -> None:
        if event.finish_reason is not None:
            self.done = True
        if self.sync_queue is not None:
            self.sync_queue.put(event)
        elif self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.async_queue.put_nowait, event)
            except RuntimeError:  # the loop closed in between: nobody is listening any more
                pass


class RequestHandle:
    """A submitted request: iterate (sync or async) over its :class:`TokenEvent`s.

    ``wake`` tells the scheduler to look again (a cancelled request leaves its batch
    at the next step).
    """

    def __init__(self, request: Request, wake: Callable[[], None]):
        self._request = request
        self._wake = wake

    @property
    def batch_rows_max(self) -> int:
        """Most rows that shared a forward pass with this request (1 = served alone)."""
        return self._request.batch_rows_max

    def cancel(self) -> None:
        self._request.cancelled = True
        self._wake()

    def __iter__(self) -> Iterator[TokenEvent]:
        sink = self._request.sync_queue
        if sink is None:
            raise TypeError("This request was submitted for async iteration; use `async for`.")
        while True:
            event = sink.get()
            yield event
            if event.finish_reason is not None:
                return

    async def __aiter__(self):
        sink = self._request.async_queue
        if sink is None:
            raise TypeError("This request was submitted for sync iteration; use `for`.")
        try:
            while True:
                event = await sink.get()
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            if not self._request.done:
                self.cancel()

    def result(self) -> Completion:
        """Block until finished; raise :class:`TuneLabError` if the request failed."""
        ids: list[int] = []
        last = None
        for event in self:
            if event.token_id is not None and not event.special:
                ids.append(event.token_id)
            last = event
        return self._completion(ids, last)

    def _completion(self, ids, last: TokenEvent) -> Completion:
        if last.finish_reason == "error":
            raise TuneLabError(f"Generation failed: {last.error}")
        return Completion(text=last.generated_text or "", token_ids=ids, finish_reason=last.finish_reason,
                          prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                          adapter=self._request.public_adapter, batch_rows_max=self._request.batch_rows_max)


def error_text(exc: BaseException, limit: int = 400) -> str:
    """One line naming an exception, short enough for an event or an error message."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + " ..."
