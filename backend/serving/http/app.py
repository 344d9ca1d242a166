"""The serving endpoint over HTTP: OpenAI/vLLM-shaped and TGI-shaped routes on one engine.

:func:`create_app` builds the FastAPI app from its routers (:mod:`.openai`, :mod:`.tgi`,
:mod:`.metrics`); the routes reach the engine, the metrics and the token through
``app.state``. The model is loaded in the app's lifespan, never at import, and the
adapters the endpoint served before (:mod:`.state`) are loaded again at start-up.
:func:`serve` runs it in the foreground (``tunelab serve``), :func:`start_in_thread`
in a background thread (``tunelab up``, tests).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from backend.serving.auth import api_token
from backend.serving.http import metrics, openai, tgi
from backend.serving.http.errors import BodyLimit, Unauthorized, invalid_request, unauthorized
from backend.serving.http.protocol import InvalidRequest
from backend.serving.http.schema import describe_bodies
from backend.serving.http.state import SavedAdapters
from backend.settings import Settings


def create_app(engine=None, *, settings: Settings, base: str | None = None, token: str | None = None,
               state_path: Path | None = None, restore: bool = True, engine_options: dict | None = None) -> FastAPI:
    """Build the serving app.

    Give an :class:`~backend.serving.engine.Engine` (tests, benchmarks) or let the lifespan
    load ``base`` (default: ``settings.default_base``) with ``engine_options``.
    ``restore`` reloads the adapters listed in the state file at start-up.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = app.state.engine is None
        if owned:
            from backend.serving.engine import Engine  # the one lazy seam: loading torch and the model

            app.state.engine = await run_in_threadpool(
                Engine.from_base, base or settings.default_base, settings, **(engine_options or {}))
        app.state.engine.start()
        if restore:
            await run_in_threadpool(app.state.saved_adapters.restore, app.state.engine, app.state.adapter_roots)
        try:
            yield
        finally:
            if owned:
                app.state.engine.stop()

    app = FastAPI(title="TuneLab serving endpoint", lifespan=lifespan)
    app.state.engine = engine
    app.state.metrics = metrics.Metrics(lambda: app.state.engine)
    app.state.token = token or api_token(settings)
    app.state.token_file = settings.paths.api_token_file
    app.state.saved_adapters = SavedAdapters(state_path or settings.paths.server_state)
    # the folders load_lora_adapter accepts a lora_path in (symlinks resolved first)
    app.state.adapter_roots = [settings.paths.adapters, *settings.adapter_roots]
    app.add_middleware(BodyLimit, limit=int(settings.max_body_mb * 1024 * 1024))
    app.add_exception_handler(Unauthorized, unauthorized)
    app.add_exception_handler(InvalidRequest, invalid_request)
    app.include_router(openai.router)
    app.include_router(tgi.router)
    app.include_router(metrics.router)
    describe_bodies(app)  # /openapi.json names each route's request body
    return app


def serve(settings: Settings, base: str | None = None, host: str | None = None, port: int | None = None,
          threads: int | None = None, **app_options) -> None:
    """Run the serving endpoint in the foreground (``tunelab serve``); binds 127.0.0.1 by default.

    Alone, the endpoint has the machine to itself, so it serves with every core unless
    ``threads`` says otherwise (``tunelab up`` keeps the engine's default of half the
    cores, leaving the rest to training runs beside it). Only the engine's scheduler
    thread uses them (:meth:`backend.serving.engine.Engine.from_base`).
    """
    settings.check_open_bind(host, login=False, what="the endpoint's chat routes have no login")
    engine_options = {"threads": threads or os.cpu_count() or 1, **(app_options.pop("engine_options", None) or {})}
    app = create_app(settings=settings, base=base, engine_options=engine_options, **app_options)
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="info",
                timeout_graceful_shutdown=5)


def start_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 120.0):
    """Run ``app`` with uvicorn in a background thread; return ``(url, stop)``.

    ``port`` 0 picks a free port (the socket is bound here, so there is no race).
    ``stop()`` shuts the server down and waits for it.
    """
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
