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
