"""The endpoint's two error shapes, from the same typed errors.

OpenAI's error object on ``/v1/*`` (``{"error": {"message", "type", "param", "code"}}``,
what the openai SDK and vLLM clients parse) and TGI's ``{"error", "error_type"}`` on
the TGI routes. The status follows the error: an unknown adapter is 404, a full queue
429 with ``Retry-After``, a request that breaks the protocol 400 (422 on TGI routes, as
TGI answers validation errors), a missing or wrong bearer token 401.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse

from backend.errors import AdapterMismatch, AdapterNotFound, InvalidName, Overloaded, PromptTooLong


class Unauthorized(Exception):
    """A management call without the endpoint's bearer token."""

    def __init__(self, token_file: Path):
        super().__init__("Missing or wrong bearer token.")
        self.token_file = token_file


def status_of(exc: Exception) -> tuple[int, str, str]:
    """HTTP status, OpenAI error type, short code for an error raised while serving a request."""
    if isinstance(exc, AdapterNotFound):
        return 404, "NotFoundError", "model_not_found"
    if isinstance(exc, Overloaded):
        return 429, "rate_limit_error", "overloaded"
    if isinstance(exc, PromptTooLong):
        return 400, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, (AdapterMismatch, InvalidName)):
        return 400, "invalid_request_error", "adapter_mismatch" if isinstance(exc, AdapterMismatch) else "invalid_name"
    if isinstance(exc, (ValueError, TypeError)):
        return 400, "invalid_request_error", "invalid_value"
    return 500, "server_error", "internal_error"


def _headers_for(exc: Exception) -> dict[str, str]:
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(max(1, int(round(exc.retry_after))))}
    return {}


def openai_error(exc: Exception, param: str | None = None) -> JSONResponse:
    """OpenAI's error object; ``param`` names the request field at fault (an invalid
    request names its own, an unknown adapter is ``model``)."""
    status, kind, code = status_of(exc)
    param = param or getattr(exc, "param", None) or ("model" if isinstance(exc, AdapterNotFound) else None)
    return JSONResponse({"error": {"message": str(exc), "type": kind, "param": param, "code": code}},
                        status_code=status, headers=_headers_for(exc))


def openai_failure(error: str | None) -> dict:
    """The error object of a generation that failed in the engine (sent inside a stream too)."""
    return {"error": {"message": f"Generation failed: {error}", "type": "server_error", "param": None,
                      "code": "internal_error"}}


def tgi_error(exc: Exception) -> JSONResponse:
    status, _, _ = status_of(exc)
    kind = {404: "not_found", 429: "overloaded", 400: "validation", 500: "generation"}.get(status, "generation")
    return JSONResponse({"error": str(exc), "error_type": kind}, status_code=422 if kind == "validation" else status,
                        headers=_headers_for(exc))


def tgi_failure(error: str | None) -> dict:
    """TGI's error of a generation that failed in the engine (sent inside a stream too)."""
    return {"error": f"Generation failed: {error}", "error_type": "generation"}


async def invalid_request(request: Request, exc: ValueError) -> JSONResponse:
    """A body that breaks the protocol, answered in the shape of the route's protocol (an
    exception handler: routes that parse with :func:`~backend.serving.http.protocol.parse_body`
    and do not catch its error themselves)."""
    return openai_error(exc) if request.url.path.startswith("/v1/") else tgi_error(exc)


async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
    """The 401 answer (an exception handler: see :func:`backend.serving.http.app.create_app`)."""
    message = ("Missing or wrong bearer token. Send 'Authorization: Bearer <token>' with the token from "
               f"TUNELAB_API_TOKEN or the file {exc.token_file}.")
    return JSONResponse({"error": {"message": message, "type": "authentication_error", "param": None,
                                   "code": "invalid_api_key"}}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 in the route's
    error shape, from its ``Content-Length`` before a byte of it is read, or, for a body
    sent without one (chunked), as soon as what was read passes the limit. A body within
    the limit is read here and handed on unchanged."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away before sending its whole body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send, None)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # what comes next: the client's disconnect

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send, declared: int | None):
        mb = 1024 * 1024
        given = f"is {declared / mb:.1f} MB" if declared is not None else f"is over {self.limit / mb:g} MB"
        message = (f"The request body {given}; this endpoint reads at most {self.limit / mb:g} MB "
                   "(TUNELAB_MAX_BODY_MB). Send a shorter prompt, or raise the limit.")
        if scope["path"].startswith("/v1/"):
            content = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": "body_too_large"}}
        else:
            content = {"error": message, "error_type": "validation"}
        await JSONResponse(content, status_code=413, headers={"Connection": "close"})(scope, receive, send)
