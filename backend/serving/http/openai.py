"""OpenAI-compatible routes, shaped like vLLM's, and vLLM's runtime LoRA API.

* ``POST /v1/chat/completions``, ``POST /v1/completions`` (``stream``: SSE ending in
  ``data: [DONE]``; ``model`` is an adapter's name or the base's; ``return_token_ids``, as
  vLLM: ``prompt_token_ids`` and each choice's ``token_ids``, every token picked, special
  ones included, so a client can check an answer against a reference model), ``GET /v1/models``
  (an adapter's ``system_prompt``: what a chat request to it without a system message is
  asked behind, the one it was trained with).
* ``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``, behind the bearer token.

Every route finds the engine, the metrics and the saved-adapter state on ``app.state``.
"""

from __future__ import annotations

import secrets
import time
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from backend.errors import AdapterMismatch, TuneLabError
from backend.names import inside_roots, validate_name
from backend.serving.http.errors import Unauthorized, openai_error, openai_failure, status_of
from backend.serving.http.protocol import (ChatCompletionRequest, CompletionRequest, LoadLoraAdapterRequest,
                                           UnloadLoraAdapterRequest, parse_body)
from backend.serving.http.sse import event_stream, sse
from backend.serving.requests import RequestHandle, TokenEvent

router = APIRouter(prefix="/v1")


def require_token(request: Request) -> None:
    """The ``Authorization: Bearer`` header must carry the endpoint's token."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), request.app.state.token):
        raise Unauthorized(request.app.state.token_file)


@router.get("/models")
async def list_models(request: Request):
    engine = request.app.state.engine
    created = int(time.time())
    data = [{"id": engine.base_name, "object": "model", "created": created, "owned_by": "tunelab",
             "root": engine.base_path, "parent": None, "max_model_len": engine.context_limit}]
    for name, info in sorted(engine.adapters().items()):
        data.append({"id": name, "object": "model", "created": int(info.loaded_at), "owned_by": "tunelab",
                     "root": info.path, "parent": engine.base_name, "max_model_len": engine.context_limit,
                     "system_prompt": info.system_prompt})
    return {"object": "list", "data": data}


@router.post("/chat/completions")
async def chat_completions(request: Request):
    engine = request.app.state.engine
    try:
        body = parse_body(ChatCompletionRequest, await request.body())
        adapter = engine.resolve_model(body.model)
        # tokenizing a long prompt takes seconds: off the event loop, so other clients are answered meanwhile
        prompt = await run_in_threadpool(engine.encode_chat, body.conversation(), adapter)
        handle = engine.submit(prompt, adapter, body.sampling(), asynchronous=True)
    except (TuneLabError, ValueError, TypeError) as exc:
        request.app.state.metrics.requests.labels("chat", str(status_of(exc)[0])).inc()
        return openai_error(exc)
    return await _answer(request, handle, body, prompt, chat=True)


@router.post("/completions")
async def completions(request: Request):
    engine = request.app.state.engine
    try:
        body = parse_body(CompletionRequest, await request.body())
        adapter = engine.resolve_model(body.model)
        prompt = await run_in_threadpool(engine.encode_text, body.prompt)  # off the event loop
        handle = engine.submit(prompt, adapter, body.sampling(), asynchronous=True)
    except (TuneLabError, ValueError, TypeError) as exc:
        request.app.state.metrics.requests.labels("completions", str(status_of(exc)[0])).inc()
        return openai_error(exc)
    return await _answer(request, handle, body, prompt, chat=False)


async def _answer(request: Request, handle: RequestHandle, body: ChatCompletionRequest | CompletionRequest,
                  prompt: list[int], *, chat: bool):
    """The whole answer as one JSON object, or streamed as SSE chunks; with ``return_token_ids``
    the prompt's ids (on the response for chat, on the choice for text, as vLLM) and the
    answer's (each chunk's own, when streamed)."""
    ids = bool(body.return_token_ids)
    metrics = request.app.state.metrics
    route = "chat" if chat else "completions"
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    model = body.model or request.app.state.engine.base_name
    started = time.perf_counter()

    if not body.stream:
        last, first, picked = None, None, []
        async for event in handle:
            first = first or time.perf_counter()
            last = event
            if event.token_id is not None:
                picked.append(event.token_id)
        metrics.observe(route, last, started, first)
        if last.finish_reason == "error":
            return JSONResponse(openai_failure(last.error), status_code=500)
        text = last.generated_text or ""
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": _finish_reason(last), "logprobs": None} if chat else
                  {"index": 0, "text": text, "finish_reason": _finish_reason(last), "logprobs": None})
        answer = {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
                  "model": model, "choices": [choice], "usage": _usage(last)}
        if ids:
            choice["token_ids"] = picked
            (answer if chat else choice)["prompt_token_ids"] = prompt
        return answer

    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list, **extra) -> str:
        return sse({"id": ident, "object": chunk_kind, "created": created, "model": model, "choices": choices,
                    **extra})

    async def events():
        if chat:
            opening = {"prompt_token_ids": prompt} if ids else {}
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                          "logprobs": None}], **opening)
        first, last, unsent = None, None, []  # unsent: ids picked since the last chunk went out
        started_text = False  # a text completion's first chunk carries the prompt's ids
        async for event in handle:
            first = first or time.perf_counter()
            last = event
            if event.token_id is not None:
                unsent.append(event.token_id)
            done = event.finish_reason is not None
            if not event.text and not done:
                continue
            if event.finish_reason == "error":
                yield sse(openai_failure(event.error))
                break
            piece = {"index": 0, "finish_reason": _finish_reason(event) if done else None, "logprobs": None}
            if chat:
                piece["delta"] = {"content": event.text} if event.text else {}
            else:
                piece["text"] = event.text
            if ids:
                piece["token_ids"], unsent = unsent, []
                if not chat and not started_text:
                    piece["prompt_token_ids"], started_text = prompt, True
            yield chunk([piece])
        if last is not None and body.include_usage and last.finish_reason != "error":
            yield chunk([], usage=_usage(last))
        metrics.observe(route, last, started, first)
        yield sse("[DONE]")

    return event_stream(events())


def _usage(last: TokenEvent) -> dict:
    return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens}


def _finish_reason(last: TokenEvent) -> str:
    return "length" if last.finish_reason == "length" else "stop"


# --- vLLM's runtime LoRA API ---------------------------------------------------------------------


@router.post("/load_lora_adapter", dependencies=[Depends(require_token)])
async def load_lora_adapter(request: Request):
    state = request.app.state
    try:
        body = parse_body(LoadLoraAdapterRequest, await request.body())
        validate_name(body.lora_name)
        path = inside_roots(body.lora_path, state.adapter_roots)
        await run_in_threadpool(state.engine.load_adapter, body.lora_name, path,
                                inplace=bool(body.load_inplace))
    except (TuneLabError, ValueError, TypeError) as exc:
        state.metrics.adapter_ops.labels("load", "refused").inc()
        return openai_error(exc, param="lora_path" if isinstance(exc, AdapterMismatch) else None)
    state.metrics.adapter_ops.labels("load", "ok").inc()
    await run_in_threadpool(state.saved_adapters.save, state.engine)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/unload_lora_adapter", dependencies=[Depends(require_token)])
async def unload_lora_adapter(request: Request):
    state = request.app.state
    try:
        body = parse_body(UnloadLoraAdapterRequest, await request.body())
        await run_in_threadpool(state.engine.unload_adapter, body.lora_name)
    except (TuneLabError, ValueError, TypeError) as exc:
        state.metrics.adapter_ops.labels("unload", "refused").inc()
        return openai_error(exc, param="lora_name")
    state.metrics.adapter_ops.labels("unload", "ok").inc()
    await run_in_threadpool(state.saved_adapters.save, state.engine)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
