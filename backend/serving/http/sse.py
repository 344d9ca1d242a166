"""Server-sent events, the streaming format of both protocols: one ``data:`` line per event."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi.responses import StreamingResponse


def sse(data: Any) -> str:
    """One event: ``data`` as JSON, or as is when it is a string (OpenAI's ``[DONE]``)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    """The streamed answer, with the headers that keep proxies from buffering it."""
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
