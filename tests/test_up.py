"""`tunelab up` in-process: endpoint + job runner + page, the optional login, recovery
of interrupted runs at start, and a clean stop."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from backend.errors import ConfigError
from backend.settings import Settings
from ui.app import launch_kwargs


def test_launch_binds_loopback_and_takes_the_login_from_settings(settings):
    kwargs = launch_kwargs(settings)
    assert kwargs["server_name"] == "127.0.0.1" and "auth" not in kwargs
    kwargs = launch_kwargs(settings.model_copy(update={"auth": "ann:s3cret:x"}), host="0.0.0.0", port=9)
    assert callable(kwargs["auth"]) and kwargs["server_name"] == "0.0.0.0" and kwargs["server_port"] == 9
    assert asyncio.run(kwargs["auth"]("ann", "s3cret:x")) and not asyncio.run(kwargs["auth"]("ann", "s3cret"))
    for bad in ("nopassword", ":x", "user:"):
        with pytest.raises(ConfigError, match="user:password"):
            launch_kwargs(settings.model_copy(update={"auth": bad}))


def test_up_serves_the_page_behind_a_login_recovers_runs_and_stops(settings, tiny_llama):
    from backend.up import start
    from backend.store import Store

    # A run that was "running", with a cancel pending, when the last app process died.
    settings.paths.ensure()
    store = Store(settings.db_url)
    job = store.add_job("orphan", {"spec": {"name": "orphan"}, "train_file": "/nonexistent.jsonl"})
    store.update_job(job.id, status="running", pid=None, attempts=1, cancel_requested=True)
    store.upsert_adapter("orphan", base=str(tiny_llama), status="running", job_id=job.id)
    store.close()

    running = start(Settings(home=settings.home, auth="ann:s3cret"), port=0, server_port=0, base=str(tiny_llama))
    try:
        assert running.page_url.startswith("http://127.0.0.1:") and running.server_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{running.page_url}/config").status_code == 401  # the page wants a login
        with httpx.Client(base_url=running.page_url) as browser:
            refused = browser.post("/login", data={"username": "ann", "password": "wrong"})
            assert refused.status_code >= 400
            assert browser.post("/login", data={"username": "ann", "password": "s3cret"}).status_code == 200
            assert browser.get("/config").status_code == 200
        models = httpx.get(f"{running.server_url}/v1/models").json()["data"]
        assert [m["id"] for m in models] == [tiny_llama.name]
        recovered = running.service.store.get_job(job.id)  # recover() ran at start
        assert (recovered.status, recovered.error) == ("cancelled", "cancelled (its process had stopped)")
    finally:
        running.stop()
    for url in (running.page_url, running.server_url):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)


@pytest.mark.parametrize("how", ["sigint-while-started-ignoring-it", "sigterm"])
def test_the_real_command_stops_cleanly_on_ctrl_c_and_on_sigterm(how, tiny_llama, tmp_path):
    """`tunelab up` started as a non-interactive shell starts a background job (SIGINT
    ignored) still stops on SIGINT; SIGTERM (`docker stop`, systemd) stops it the same clean
    way: exit 0, the stop announced. Without its own handlers the first would be ignored
    until killed and the second would end it without stopping the job runner."""
    import signal

    from tests.builders import running_up

    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "up.log"
    ignoring, stop_with = (True, signal.SIGINT) if how.startswith("sigint") else (False, signal.SIGTERM)
    with running_up(home, str(tiny_llama), {}, log, stop_with=stop_with, ignoring_sigint=ignoring) as url:
        assert httpx.get(url, timeout=30).status_code == 200
    assert "Stopping TuneLab" in log.read_text()
