"""``tunelab up``: the serving endpoint, the job runner and the page, in one process.

Start order: the serving endpoint (loads the base, restores the adapters it served
before), then the job runner's background thread (``start()`` runs ``recover()``
first, so runs interrupted by the last shutdown resume from their checkpoints), then
the Gradio page. Ctrl-C stops them in the reverse order: the page, the runner (a
running job is paused at a checkpoint and resumes next time), the endpoint.

Everything binds 127.0.0.1 unless ``--host`` says otherwise; set ``TUNELAB_AUTH`` to
``user:password`` before binding the page beyond loopback (without it, or
``--insecure-no-auth``, start refuses before anything binds). Beyond loopback the
endpoint, whose chat routes have no login, still binds 127.0.0.1 unless
``--insecure-no-auth``. ``tunelab up`` (backend/cli.py)
is the one command line; this module takes the settings it is given.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable

from backend.serving.auth import api_token
from backend.serving.http.app import create_app, start_in_thread
from backend.serving.vllm_server import start_vllm
from backend.settings import LOOPBACK_HOSTS, Settings
from backend.studio.service import Service
from ui.app import create_ui, launch_kwargs

log = logging.getLogger("tunelab.up")


@dataclass
class Running:
    """Handles on a started TuneLab: the URLs, the shared service, and how to stop."""

    server_url: str
    page_url: str
    service: Service
    _stops: list[Callable[[], None]] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """Stop the page, then the job runner, then the serving endpoint (idempotent)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception:  # keep stopping the rest
                log.exception("while stopping")

    def wait(self) -> None:
        """Block until Ctrl-C, SIGTERM (``docker stop``, systemd) or :meth:`stop` from another
        thread, then stop cleanly. Both signals are handled here even when the process was
        started with them ignored (a non-interactive shell starts ``tunelab up &`` ignoring
        SIGINT; a container's first process has no default action for SIGTERM)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, _interrupt)
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("\nStopping TuneLab (a running job pauses at a checkpoint and resumes next time) ...", flush=True)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            self.stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def start(settings: Settings, *, host: str | None = None, port: int | None = None,
          server_port: int | None = None, base: str | None = None, run_jobs: bool = True,
          engine: str = "embedded", gpus: int = 1) -> Running:
    """Start the endpoint, the job runner and the page; return at once (see :meth:`Running.wait`).

    ``port`` is the page's (default ``settings.ui_port``, 7860), ``server_port`` the
    endpoint's (default ``settings.port``, 8000); 0 picks a free one (tests). ``base``
    defaults to the settings' default base. ``engine`` "vllm" starts a supervised vLLM
    server (:mod:`backend.serving.vllm_server`, over ``gpus`` GPUs) instead of the embedded
    engine; finished adapters load into it the same way, again after each restart.
    """
    host = host or settings.host
    server_port = settings.port if server_port is None else server_port
    ui_port = settings.ui_port if port is None else port
    settings.check_open_bind(host, login=bool(settings.auth), what="the page has no login (TUNELAB_AUTH is unset)")
    kwargs = launch_kwargs(settings, host, ui_port or None)  # checks TUNELAB_AUTH before loading anything
    # The endpoint's chat routes have no login: beyond loopback it stays on 127.0.0.1 unless --insecure-no-auth.
    server_host = host if settings.insecure_no_auth or host.strip("[]").lower() in LOOPBACK_HOSTS else "127.0.0.1"
    stops: list[Callable[[], None]] = []
    try:
        if settings.server_url:  # an external endpoint (e.g. vLLM): nothing to start here
            server_url = settings.server_url
        elif engine == "vllm":
            started: list[Service] = []  # a restarted vLLM lost its adapters: the service loads them again
            supervisor = start_vllm(settings, base=base, host=server_host, port=server_port or free_port(server_host),
                                    gpus=gpus, on_restart=lambda: started and started[0].sync_endpoint())
            stops.append(supervisor.stop)
            server_url = supervisor.url
        else:
            app = create_app(settings=settings, base=base or settings.default_base, token=api_token(settings))
            server_url, stop_server = start_in_thread(app, host=server_host, port=server_port, timeout=600)
            stops.append(stop_server)
            if server_host in ("0.0.0.0", "::"):
                server_url = server_url.replace(f"//{server_host}:", "//127.0.0.1:")
        # New runs train on the base the endpoint serves, so their adapters load into it.
        update = {"server_url": server_url, **({"default_base": base} if base else {})}
        settings = settings.model_copy(update=update)
        service = Service(settings)
        stops.append(service.close)
        if engine == "vllm":
            started.append(service)
        try:
            loaded = service.sync_endpoint()  # adapters trained while no endpoint was up
            if loaded:
                log.info("Loaded %d adapter(s) into the endpoint: %s", len(loaded), ", ".join(loaded))
        except Exception as exc:  # an external endpoint may be down; the page still starts and says so
            log.warning("Could not sync adapters into %s: %s", server_url, exc)
        if run_jobs:
            service.runner.start()  # recover() first, then the background thread
            stops.append(lambda: service.runner.stop())
        # Gradio writes dropped files under GRADIO_TEMP_DIR (read when the page is built and
        # launched): inside the home, not the machine-wide /tmp/gradio.
        os.environ["GRADIO_TEMP_DIR"] = str(settings.paths.page_uploads)
        demo = create_ui(lambda: service)
        demo.queue(default_concurrency_limit=4)
        kwargs["server_port"] = ui_port or free_port(host)
        demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
        stops.append(demo.close)
    except BaseException:
        for stop in reversed(stops):
            try:
                stop()
            except Exception:
                log.exception("while stopping after a failed start")
        raise
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    page_url = f"http://{shown_host}:{kwargs['server_port']}"
    return Running(server_url=server_url, page_url=page_url, service=service, _stops=stops)


def up(settings: Settings, *, host: str | None = None, port: int | None = None,
       server_port: int | None = None, base: str | None = None, engine: str = "embedded", gpus: int = 1) -> None:
    """Start everything and block until Ctrl-C (``tunelab up`` / ``make run``).

    ``port``: the page (default 7860); ``server_port``: the serving endpoint (default 8000).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    running = start(settings, host=host, port=port, server_port=server_port, base=base, engine=engine, gpus=gpus)
    print(f"TuneLab page:      {running.page_url}", flush=True)
    tgi = f" · {running.server_url}/generate (TGI)" if engine == "embedded" else " (vLLM)"
    print(f"Serving endpoint:  {running.server_url}/v1 (OpenAI){tgi}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    running.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now at ``host`` (the loopback for a wildcard address)."""
    with socket.socket() as sock:
        sock.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return sock.getsockname()[1]

