"""TGI-compatible routes: ``POST /generate``, ``POST /generate_stream``, ``POST /`` (what
``InferenceClient.text_generation`` posts to), ``GET /info``, ``GET /health``.

``parameters.adapter_id`` names the adapter (absent: the base). Every route finds the
engine and the metrics on ``app.state``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend.errors import TuneLabError
from backend.serving.http.errors import status_of, tgi_error, tgi_failure
from backend.serving.http.protocol import GenerateRequest, parse_body
from backend.serving.http.sse import event_stream, sse
from backend.serving.requests import SamplingParams, TokenEvent

router = APIRouter()

_TGI_FINISH = {"stop": "eos_token", "length": "length", "cancelled": "eos_token", "error": "eos_token"}


# a body that breaks the protocol raises InvalidRequest, answered by the app's handler
# (backend.serving.http.errors.invalid_request) in TGI's error shape


@router.post("/generate")
async def generate(request: Request):
    return await _generate(request, parse_body(GenerateRequest, await request.body()))


@router.post("/generate_stream")
async def generate_stream(request: Request):
    return await _generate_stream(request, parse_body(GenerateRequest, await request.body()))


@router.post("/")
async def compat_generate(request: Request):
    """TGI's root route, the one ``InferenceClient.text_generation`` posts to."""
    body = parse_body(GenerateRequest, await request.body())
    if body.stream:
        return await _generate_stream(request, body)
    answer = await _generate(request, body)
    return [answer] if isinstance(answer, dict) else answer


@router.get("/info")
async def info(request: Request):
    engine = request.app.state.engine
    return {"model_id": engine.base_name, "model_sha": None, "model_pipeline_tag": "text-generation",
            "model_dtype": str(next(engine.model.parameters()).dtype),
            "model_device_type": str(next(engine.model.parameters()).device.type),
            "max_concurrent_requests": engine.max_queue + engine.max_batch,
            "max_best_of": 1, "max_stop_sequences": 8, "max_input_tokens": engine.context_limit - 1,
            "max_total_tokens": engine.context_limit, "max_batch_size": engine.max_batch,
            "validation_workers": 1, "router": "tunelab", "version": "0.1.0",
            "adapters": sorted(engine.adapters()), "engine": engine.describe()}


@router.get("/health")
async def health(request: Request):
    engine = request.app.state.engine
    if engine is None or not engine.alive():
        return JSONResponse({"error": "The engine is not running.", "error_type": "unhealthy"}, status_code=503)
    return {"status": "ok", "base": engine.base_name, "adapters": len(engine.adapters()),
            "queue_depth": engine.queue_depth(), "running": engine.running()}


async def _submit(request: Request, body: GenerateRequest):
    engine = request.app.state.engine
    adapter = engine.resolve_model(body.parameters.adapter_id)
    params = body.parameters.sampling()
    prompt = await run_in_threadpool(engine.encode_text, body.inputs)  # a long prompt: off the event loop
    return engine.submit(prompt, adapter, params, asynchronous=True), params


def _full_text(body: GenerateRequest, text: str) -> str:
    return body.inputs + text if body.parameters.return_full_text else text


def _details(last: TokenEvent, tokens: list[dict], params: SamplingParams) -> dict:
    reason = "stop_sequence" if last.finish_reason == "stop" and last.token_id is not None \
        and not last.special else _TGI_FINISH.get(last.finish_reason, "eos_token")
    return {"finish_reason": reason, "generated_tokens": last.completion_tokens + (1 if last.special else 0),
            "seed": params.seed, "prefill": [], "tokens": tokens}


def _token(event: TokenEvent) -> dict:
    return {"id": event.token_id, "text": event.token_text, "logprob": event.logprob, "special": event.special}


async def _generate(request: Request, body: GenerateRequest):
    metrics = request.app.state.metrics
    try:
        handle, params = await _submit(request, body)
    except (TuneLabError, ValueError, TypeError) as exc:
        metrics.requests.labels("generate", str(status_of(exc)[0])).inc()
        return tgi_error(exc)
    started, first, last, tokens = time.perf_counter(), None, None, []
    async for event in handle:
        first = first or time.perf_counter()
        if event.token_id is not None:
            tokens.append(_token(event))
        last = event
    metrics.observe("generate", last, started, first)
    if last.finish_reason == "error":
        return JSONResponse(tgi_failure(last.error), status_code=424)
    answer = {"generated_text": _full_text(body, last.generated_text or "")}
    if body.parameters.details:
        answer["details"] = _details(last, tokens, params)
    return answer


async def _generate_stream(request: Request, body: GenerateRequest):
    metrics = request.app.state.metrics
    try:
        handle, params = await _submit(request, body)
    except (TuneLabError, ValueError, TypeError) as exc:
        metrics.requests.labels("generate_stream", str(status_of(exc)[0])).inc()
        return tgi_error(exc)
    started = time.perf_counter()

    async def events():
        first, last, index = None, None, 0
        async for event in handle:
            first = first or time.perf_counter()
            last = event
            if event.finish_reason == "error":
                yield sse(tgi_failure(event.error))
                break
            done = event.finish_reason is not None
            if event.token_id is None and not done:
                continue
            index += 1
            token = _token(event) if event.token_id is not None else {
                "id": 0, "text": "", "logprob": None, "special": True}
            payload = {"index": index, "token": token, "top_tokens": None, "generated_text": None, "details": None}
            if done:
                payload["generated_text"] = _full_text(body, event.generated_text or "")
                payload["details"] = {k: v for k, v in _details(event, [], params).items()
                                      if k in ("finish_reason", "generated_tokens", "seed")}
            yield sse(payload)
        metrics.observe("generate_stream", last, started, first)

    return event_stream(events())
