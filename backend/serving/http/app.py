"""The serving endpoint over HTTP: OpenAI/vLLM-shaped and TGI-shaped routes on one engine.

* OpenAI-compatible (shaped like vLLM): ``POST /v1/chat/completions``,
  ``POST /v1/completions`` (SSE streams ending in ``data: [DONE]``), ``GET /v1/models``.
* vLLM's runtime LoRA API: ``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``
  (bearer token).
* TGI-compatible: ``POST /generate``, ``POST /generate_stream``, ``POST /`` (what
  ``InferenceClient.text_generation`` calls), ``GET /info``, ``GET /health``.
* ``GET /metrics`` in Prometheus format, from a registry owned by this app.

The model is loaded in the app's lifespan, never at import. The set of loaded
adapters is kept in a JSON state file under the home and reloaded at start-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.errors import AdapterMismatch, AdapterNotFound, InvalidName, Overloaded, PromptTooLong, TuneLabError
from backend.names import validate_name
from backend.serving.auth import api_token
from backend.settings import Settings

log = logging.getLogger("tunelab.server")

STATE_FILE_NAME = "server_state.json"


# --- state -------------------------------------------------------------------------


def state_file(settings: Settings) -> Path:
    return settings.paths.home / ".tunelab" / STATE_FILE_NAME


def read_state(path: Path) -> dict[str, str]:
    """Adapters loaded before (name -> folder); empty when there is no readable state."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    adapters = data.get("adapters", {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in adapters.items()} if isinstance(adapters, dict) else {}


def write_state(path: Path, base: str, adapters: dict[str, str]) -> None:
    """Write the state file atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".server-state-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"base": base, "adapters": adapters, "saved_at": time.time()}, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# --- metrics ------------------------------------------------------------------------------------


class Metrics:
    """Prometheus metrics in a registry of this app only (no global state)."""

    def __init__(self, engine_getter):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("tunelab_requests", "Generation requests by route and HTTP status.",
                                ["route", "status"], registry=self.registry)
        self.prompt_tokens = Counter("tunelab_prompt_tokens", "Prompt tokens processed.", registry=self.registry)
        self.generated_tokens = Counter("tunelab_generated_tokens", "Tokens generated.", registry=self.registry)
        self.latency = Histogram("tunelab_request_latency_seconds", "Time from request to last token.",
                                 registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128))
        self.first_token = Histogram("tunelab_time_to_first_token_seconds", "Time from request to first token.",
                                     registry=self.registry,
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16))
        self.adapter_ops = Counter("tunelab_adapter_operations", "Adapter loads and unloads by outcome.",
                                   ["op", "outcome"], registry=self.registry)
        queue = Gauge("tunelab_queue_depth", "Requests waiting for a batch slot.", registry=self.registry)
        queue.set_function(lambda: engine_getter().queue_depth() if engine_getter() else 0)
        running = Gauge("tunelab_running_requests", "Requests in the running batch.", registry=self.registry)
        running.set_function(lambda: engine_getter().running() if engine_getter() else 0)
        adapters = Gauge("tunelab_adapters_loaded", "Adapters loaded in the engine.", registry=self.registry)
        adapters.set_function(lambda: len(engine_getter().adapters()) if engine_getter() else 0)
        rows = Gauge("tunelab_batch_rows_max", "Most rows ever run in one forward pass.", registry=self.registry)
        rows.set_function(lambda: engine_getter().stats.max_rows if engine_getter() else 0)
        slot_loads = Gauge("tunelab_adapter_slot_loads", "Adapter loads that copied into a prepared slot "
                           "(no module rebuilt).", registry=self.registry)
        slot_loads.set_function(lambda: engine_getter().stats.slot_loads if engine_getter() else 0)
        preparing = Gauge("tunelab_spare_slots_preparing", "1 while spare adapter slots are being prepared "
                          "in the background, else 0.", registry=self.registry)
        preparing.set_function(lambda: int(engine_getter().preparing_spares()) if engine_getter() else 0)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


# --- errors --------------------------------------------------------------------------------------


def _status_of(exc: Exception) -> tuple[int, str, str]:
    """HTTP status, OpenAI error type, short code for a TuneLab error."""
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
    status, kind, code = _status_of(exc)
    message = str(exc)
    if isinstance(exc, AdapterNotFound):
        param = param or "model"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=_headers_for(exc))


def tgi_error(exc: Exception) -> JSONResponse:
    status, _, code = _status_of(exc)
    kind = {404: "not_found", 429: "overloaded", 400: "validation", 500: "generation"}.get(status, "generation")
    return JSONResponse({"error": str(exc), "error_type": kind}, status_code=422 if kind == "validation" else status,
                        headers=_headers_for(exc))


class _AuthError(Exception):
    pass


# --- request parsing -----------------------------------------------------------------------------


def _stops(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"'stop' must be a string or a list of strings, got {value!r}.")


def _number(body: dict, key: str, default, kind=float, low=None, high=None):
    value = body.get(key, default)
    if value is None:
        return default
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{key}' must be a number, got {body.get(key)!r}.") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"'{key}' must be between {low} and {high}, got {value}.")
    return value


def _openai_params(body: dict, default_max: int):
    from backend.serving.engine import SamplingParams

    if int(body.get("n") or 1) != 1:
        raise ValueError("Only n=1 is supported; send one request per answer.")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max
    return SamplingParams(
        max_tokens=_number({"max_tokens": max_tokens}, "max_tokens", default_max, int, 1, None),
        temperature=_number(body, "temperature", 1.0, float, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, float, 0.0, 1.0),
        seed=body.get("seed"),
        stop=_stops(body.get("stop")),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )


def _tgi_params(parameters: dict, default_max: int):
    from backend.serving.engine import SamplingParams

    sample = bool(parameters.get("do_sample")) or parameters.get("temperature") is not None \
        or parameters.get("top_p") is not None
    temperature = _number(parameters, "temperature", 1.0, float, 0.0, 100.0) if sample else 0.0
    return SamplingParams(
        max_tokens=_number(parameters, "max_new_tokens", default_max, int, 1, None),
        temperature=temperature,
        top_p=_number(parameters, "top_p", 1.0, float, 0.0, 1.0),
        seed=parameters.get("seed"),
        stop=_stops(parameters.get("stop")),
    )


def _message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _sse(data: Any) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


_TGI_FINISH = {"stop": "eos_token", "length": "length", "cancelled": "eos_token", "error": "eos_token"}


# --- the app ---------------------------------------------------------------------------------------


def create_app(engine=None, *, settings: Settings | None = None, base: str | None = None,
               token: str | None = None, state_path: Path | None = None, restore: bool = True,
               engine_options: dict | None = None, default_max_tokens: int = 256) -> FastAPI:
    """Build the serving app.

    Give an :class:`~backend.serving.engine.Engine` (tests, benchmarks) or let the lifespan
    load ``base`` (default: ``settings.default_base``) with ``engine_options``.
    ``restore`` reloads the adapters listed in the state file at start-up.
    """
    settings = settings or Settings()
    token_value = token or api_token(settings)
    state_at = Path(state_path) if state_path else state_file(settings)
    holder: dict[str, Any] = {"engine": engine}
    metrics = Metrics(lambda: holder["engine"])
    state_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = holder["engine"] is None
        if owned:
            from backend.serving.engine import Engine

            holder["engine"] = await run_in_threadpool(
                Engine.from_base, base or settings.default_base, settings, **(engine_options or {}))
        engine_ = holder["engine"]
        engine_.start()
        app.state.engine = engine_
        if restore:
            await run_in_threadpool(_restore, engine_)
        try:
            yield
        finally:
            if owned:
                engine_.stop()

    def _restore(engine_) -> None:
        wanted = read_state(state_at)
        for name, path in wanted.items():
            if name in engine_.adapters():
                continue
            try:
                engine_.load_adapter(name, path)
                log.info("restored adapter %s from %s", name, path)
            except TuneLabError as exc:
                log.warning("could not restore adapter %s from %s: %s", name, path, exc)
        _save_state(engine_)

    def _save_state(engine_) -> None:
        with state_lock:
            write_state(state_at, engine_.base_name, {n: i.path for n, i in engine_.adapters().items()})

    app = FastAPI(title="TuneLab serving endpoint", lifespan=lifespan)
    app.state.metrics = metrics
    app.state.token = token_value

    def get_engine():
        return holder["engine"]

    def require_token(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token_value):
            raise _AuthError()

    @app.exception_handler(_AuthError)
    async def _auth_failed(request: Request, exc: _AuthError):
        message = ("Missing or wrong bearer token. Send 'Authorization: Bearer <token>' with the token from "
                   "TUNELAB_API_TOKEN or the file " + str(settings.paths.api_token_file) + ".")
        return JSONResponse({"error": {"message": message, "type": "authentication_error", "param": None,
                                       "code": "invalid_api_key"}}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = ValueError(f"Invalid request: {exc.errors()}")
        return openai_error(err) if request.url.path.startswith("/v1/") else tgi_error(err)

    async def _json_body(request: Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"The request body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise ValueError("The request body must be a JSON object.")
        return body

    # --- OpenAI-compatible ----------------------------------------------------------------

    @app.get("/v1/models")
    async def list_models(engine_=Depends(get_engine)):
        created = int(time.time())
        data = [{"id": engine_.base_name, "object": "model", "created": created, "owned_by": "tunelab",
                 "root": engine_.base_path, "parent": None, "max_model_len": engine_.context_limit}]
        for name, info in sorted(engine_.adapters().items()):
            data.append({"id": name, "object": "model", "created": int(info.loaded_at), "owned_by": "tunelab",
                         "root": info.path, "parent": engine_.base_name, "max_model_len": engine_.context_limit})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, engine_=Depends(get_engine)):
        try:
            body = await _json_body(request)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ValueError("'messages' must be a non-empty list of {role, content} objects.")
            adapter = engine_.resolve_model(body.get("model"))
            params = _openai_params(body, default_max_tokens)
            prompt = engine_.encode_chat([{"role": m.get("role", "user"), "content": _message_text(m.get("content"))}
                                          for m in messages])
            handle = engine_.submit(prompt, adapter, params, asynchronous=True)
        except (TuneLabError, ValueError, TypeError) as exc:
            metrics.requests.labels("chat", str(_status_of(exc)[0])).inc()
            return openai_error(exc)
        model = body.get("model") or engine_.base_name
        return await _openai_answer(handle, model, chat=True, stream=bool(body.get("stream")),
                                    include_usage=bool((body.get("stream_options") or {}).get("include_usage")))

    @app.post("/v1/completions")
    async def completions(request: Request, engine_=Depends(get_engine)):
        try:
            body = await _json_body(request)
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise ValueError("'prompt' must be a string (one prompt per request).")
            adapter = engine_.resolve_model(body.get("model"))
            params = _openai_params(body, 16)
            handle = engine_.submit(engine_.encode_text(prompt), adapter, params, asynchronous=True)
        except (TuneLabError, ValueError, TypeError) as exc:
            metrics.requests.labels("completions", str(_status_of(exc)[0])).inc()
            return openai_error(exc)
        model = body.get("model") or engine_.base_name
        return await _openai_answer(handle, model, chat=False, stream=bool(body.get("stream")),
                                    include_usage=bool((body.get("stream_options") or {}).get("include_usage")))

    async def _openai_answer(handle, model: str, *, chat: bool, stream: bool, include_usage: bool):
        route = "chat" if chat else "completions"
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        started = time.perf_counter()

        def usage(last):
            return {"prompt_tokens": last.prompt_tokens, "completion_tokens": last.completion_tokens,
                    "total_tokens": last.prompt_tokens + last.completion_tokens}

        def finish_reason(last):
            return "length" if last.finish_reason == "length" else "stop"

        if not stream:
            last, first = None, None
            async for event in handle:
                first = first or time.perf_counter()
                last = event
            _observe(route, last, started, first)
            if last.finish_reason == "error":
                return openai_error(TuneLabError(f"Generation failed: {last.error}"))
            text = last.generated_text or ""
            choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": finish_reason(last), "logprobs": None} if chat else
                      {"index": 0, "text": text, "finish_reason": finish_reason(last), "logprobs": None})
            return {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice],
                    "usage": usage(last)}

        async def events():
            chunk_kind = "chat.completion.chunk" if chat else "text_completion"
            if chat:
                yield _sse({"id": ident, "object": chunk_kind, "created": created, "model": model,
                            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None, "logprobs": None}]})
            first, last = None, None
            async for event in handle:
                first = first or time.perf_counter()
                last = event
                done = event.finish_reason is not None
                if not event.text and not done:
                    continue
                if event.finish_reason == "error":
                    yield _sse({"error": {"message": f"Generation failed: {event.error}", "type": "server_error",
                                          "param": None, "code": "internal_error"}})
                    break
                piece = {"index": 0, "finish_reason": finish_reason(event) if done else None, "logprobs": None}
                if chat:
                    piece["delta"] = {"content": event.text} if event.text else {}
                else:
                    piece["text"] = event.text
                yield _sse({"id": ident, "object": chunk_kind, "created": created, "model": model,
                            "choices": [piece]})
            if last is not None and include_usage and last.finish_reason != "error":
                yield _sse({"id": ident, "object": chunk_kind, "created": created, "model": model,
                            "choices": [], "usage": usage(last)})
            _observe(route, last, started, first)
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _observe(route, last, started, first) -> None:
        status = "200" if last is not None and last.finish_reason != "error" else "500"
        metrics.requests.labels(route, status).inc()
        if last is not None:
            metrics.prompt_tokens.inc(last.prompt_tokens)
            metrics.generated_tokens.inc(last.completion_tokens)
        metrics.latency.observe(time.perf_counter() - started)
        if first is not None:
            metrics.first_token.observe(first - started)

    # --- vLLM's runtime LoRA API -------------------------------------------------------------

    @app.post("/v1/load_lora_adapter", dependencies=[Depends(require_token)])
    async def load_lora_adapter(request: Request, engine_=Depends(get_engine)):
        try:
            body = await _json_body(request)
            name, path = body.get("lora_name"), body.get("lora_path")
            if not name or not path:
                raise ValueError("Both 'lora_name' and 'lora_path' must be provided.")
            validate_name(name)
            await run_in_threadpool(engine_.load_adapter, name, path, inplace=bool(body.get("load_inplace")))
        except (TuneLabError, ValueError, TypeError) as exc:
            metrics.adapter_ops.labels("load", "refused").inc()
            return openai_error(exc, param="lora_path" if isinstance(exc, AdapterMismatch) else None)
        metrics.adapter_ops.labels("load", "ok").inc()
        await run_in_threadpool(_save_state, engine_)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", dependencies=[Depends(require_token)])
    async def unload_lora_adapter(request: Request, engine_=Depends(get_engine)):
        try:
            body = await _json_body(request)
            name = body.get("lora_name")
            if not name:
                raise ValueError("'lora_name' must be provided.")
            await run_in_threadpool(engine_.unload_adapter, name)
        except (TuneLabError, ValueError, TypeError) as exc:
            metrics.adapter_ops.labels("unload", "refused").inc()
            return openai_error(exc, param="lora_name")
        metrics.adapter_ops.labels("unload", "ok").inc()
        await run_in_threadpool(_save_state, engine_)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    # --- TGI-compatible -------------------------------------------------------------------------

    def _tgi_submit(engine_, body: dict):
        inputs = body.get("inputs")
        if not isinstance(inputs, str) or not inputs:
            raise ValueError("'inputs' must be a non-empty string.")
        parameters = body.get("parameters") or {}
        adapter = engine_.resolve_model(parameters.get("adapter_id"))
        params = _tgi_params(parameters, 100)
        handle = engine_.submit(engine_.encode_text(inputs), adapter, params, asynchronous=True)
        return handle, parameters, params

    def _details(last, tokens, params) -> dict:
        reason = "stop_sequence" if last.finish_reason == "stop" and last.token_id is not None \
            and not last.special else _TGI_FINISH.get(last.finish_reason, "eos_token")
        return {"finish_reason": reason, "generated_tokens": last.completion_tokens + (1 if last.special else 0),
                "seed": params.seed, "prefill": [], "tokens": tokens}

    def _token(event) -> dict:
        return {"id": event.token_id, "text": event.token_text, "logprob": event.logprob, "special": event.special}

    async def _generate(body: dict, engine_):
        try:
            handle, parameters, params = _tgi_submit(engine_, body)
        except (TuneLabError, ValueError, TypeError) as exc:
            metrics.requests.labels("generate", str(_status_of(exc)[0])).inc()
            return tgi_error(exc)
        started, first, last, tokens = time.perf_counter(), None, None, []
        async for event in handle:
            first = first or time.perf_counter()
            if event.token_id is not None:
                tokens.append(_token(event))
            last = event
        _observe("generate", last, started, first)
        if last.finish_reason == "error":
            return JSONResponse({"error": f"Generation failed: {last.error}", "error_type": "generation"},
                                status_code=424)
        text = last.generated_text or ""
        if parameters.get("return_full_text"):
            text = body["inputs"] + text
        answer = {"generated_text": text}
        if parameters.get("details"):
            answer["details"] = _details(last, tokens, params)
        return answer

    async def _generate_stream(body: dict, engine_):
        try:
            handle, parameters, params = _tgi_submit(engine_, body)
        except (TuneLabError, ValueError, TypeError) as exc:
            metrics.requests.labels("generate_stream", str(_status_of(exc)[0])).inc()
            return tgi_error(exc)
        started = time.perf_counter()

        async def events():
            first, last, index = None, None, 0
            async for event in handle:
                first = first or time.perf_counter()
                last = event
                if event.finish_reason == "error":
                    yield _sse({"error": f"Generation failed: {event.error}", "error_type": "generation"})
                    break
                done = event.finish_reason is not None
                if event.token_id is None and not done:
                    continue
                index += 1
                token = _token(event) if event.token_id is not None else {
                    "id": 0, "text": "", "logprob": None, "special": True}
                payload = {"index": index, "token": token, "top_tokens": None, "generated_text": None,
                           "details": None}
                if done:
                    text = event.generated_text or ""
                    payload["generated_text"] = body["inputs"] + text if parameters.get("return_full_text") else text
                    payload["details"] = {k: v for k, v in _details(event, [], params).items()
                                          if k in ("finish_reason", "generated_tokens", "seed")}
                yield _sse(payload)
            _observe("generate_stream", last, started, first)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/generate")
    async def generate(request: Request, engine_=Depends(get_engine)):
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return tgi_error(exc)
        return await _generate(body, engine_)

    @app.post("/generate_stream")
    async def generate_stream(request: Request, engine_=Depends(get_engine)):
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return tgi_error(exc)
        return await _generate_stream(body, engine_)

    @app.post("/")
    async def compat_generate(request: Request, engine_=Depends(get_engine)):
        """TGI's root route, the one ``InferenceClient.text_generation`` posts to."""
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return tgi_error(exc)
        if body.get("stream"):
            return await _generate_stream(body, engine_)
        answer = await _generate(body, engine_)
        return [answer] if isinstance(answer, dict) else answer

    @app.get("/info")
    async def info(engine_=Depends(get_engine)):
        return {"model_id": engine_.base_name, "model_sha": None, "model_pipeline_tag": "text-generation",
                "model_dtype": str(next(engine_.model.parameters()).dtype),
                "model_device_type": str(next(engine_.model.parameters()).device.type),
                "max_concurrent_requests": engine_.max_queue + engine_.max_batch,
                "max_best_of": 1, "max_stop_sequences": 8, "max_input_tokens": engine_.context_limit - 1,
                "max_total_tokens": engine_.context_limit, "max_batch_size": engine_.max_batch,
                "validation_workers": 1, "router": "tunelab", "version": "0.1.0",
                "adapters": sorted(engine_.adapters()), "engine": engine_.describe()}

    @app.get("/health")
    async def health(engine_=Depends(get_engine)):
        if engine_ is None or not engine_.alive():
            return JSONResponse({"error": "The engine is not running.", "error_type": "unhealthy"},
                                status_code=503)
        return {"status": "ok", "base": engine_.base_name, "adapters": len(engine_.adapters()),
                "queue_depth": engine_.queue_depth(), "running": engine_.running()}

    @app.get("/metrics")
    async def prometheus_metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


# --- running it --------------------------------------------------------------------------------------


def serve(settings: Settings | None = None, base: str | None = None, host: str | None = None,
          port: int | None = None, threads: int | None = None, **app_options) -> None:
    """Run the serving endpoint in the foreground (``tunelab serve``); binds 127.0.0.1 by default.

    Alone, the endpoint has the machine to itself, so it serves with every core unless
    ``threads`` says otherwise (``tunelab up`` keeps the engine's default of half the
    cores, leaving the rest to training runs beside it).
    """
    import os

    import uvicorn

    from backend.hardware.threads import single_threaded_by_default

    single_threaded_by_default()  # the engine's scheduler thread alone takes `threads` (see torch_threads)
    settings = settings or Settings()
    engine_options = {"threads": threads or os.cpu_count() or 1, **(app_options.pop("engine_options", None) or {})}
    app = create_app(settings=settings, base=base, engine_options=engine_options, **app_options)
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="info",
                timeout_graceful_shutdown=5)


def start_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 120.0):
    """Run ``app`` with uvicorn in a background thread; return ``(url, stop)``.

    ``port`` 0 picks a free port (the socket is bound here, so there is no race).
    ``stop()`` shuts the server down and waits for it.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"tunelab-server-{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"The server did not start: {failure[0] if failure else 'it exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"The server did not start within {timeout} s.")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    return f"http://{host}:{bound_port}", stop
