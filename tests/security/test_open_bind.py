"""Binding beyond loopback with no login is refused before anything starts or binds
(issue 16): the page without TUNELAB_AUTH, ``tunelab serve`` (its chat routes have no
login) always; ``--insecure-no-auth`` / TUNELAB_INSECURE_NO_AUTH lets it through, and the
loopback hosts need nothing."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

import backend.serving.http.app as http_app
import backend.up as up_module
from backend.cli import app
from backend.errors import ConfigError
from backend.settings import Settings


class Started(Exception):
    """Raised by a stand-in for what would start a server: the check let the call through."""


def _forbid_starting(monkeypatch):
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        raise Started()

    def build(*args, **kwargs):  # building the app binds nothing: record it and go on to the bind
        calls.append((args, kwargs))

    for module, names in ((up_module, ("start_in_thread", "create_ui")), (http_app, ("create_app",))):
        for name in names:
            monkeypatch.setattr(module, name, record)
    monkeypatch.setattr(up_module, "create_app", build)
    monkeypatch.setattr(http_app.uvicorn, "run", record)
    return calls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def test_up_on_an_open_host_without_a_login_is_refused_before_anything_starts(settings, monkeypatch):
    calls = _forbid_starting(monkeypatch)
    page, endpoint = _free_port(), _free_port()
    with pytest.raises(ConfigError) as refused:
        up_module.start(settings.model_copy(update={"host": "0.0.0.0", "auth": None}),
                        port=page, server_port=endpoint)
    message = str(refused.value)
    assert "'0.0.0.0'" in message and "no login" in message
    assert "TUNELAB_AUTH=user:password" in message and "127.0.0.1" in message and "--insecure-no-auth" in message
    assert calls == [] and _port_is_free(page) and _port_is_free(endpoint)


def test_serve_on_an_open_host_is_refused_before_the_base_loads(settings, monkeypatch):
    calls = _forbid_starting(monkeypatch)
    port = _free_port()
    for login in (None, "ann:s3cret"):  # the page's login does not guard the endpoint's chat routes
        with pytest.raises(ConfigError, match="chat routes have no login"):
            http_app.serve(settings.model_copy(update={"auth": login}), host="0.0.0.0", port=port)
    assert calls == [] and _port_is_free(port)


def test_the_cli_says_what_was_given_and_what_to_do(settings, monkeypatch):
    calls = _forbid_starting(monkeypatch)
    monkeypatch.delenv("TUNELAB_AUTH", raising=False)
    monkeypatch.delenv("TUNELAB_INSECURE_NO_AUTH", raising=False)
    for command in (["up", "--host", "0.0.0.0"], ["serve", "--host", "192.168.1.5"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert command[-1] in text and "TUNELAB_AUTH=user:password" in text and "--insecure-no-auth" in text
    assert calls == []


def test_the_explicit_override_lets_it_start(settings, monkeypatch):
    calls = _forbid_starting(monkeypatch)
    with pytest.raises(Started):
        up_module.start(settings.model_copy(update={"host": "0.0.0.0", "insecure_no_auth": True}), port=0, server_port=0)
    assert calls[-1][1]["host"] == "0.0.0.0"  # the endpoint binds where it was told
    with pytest.raises(Started):
        http_app.serve(settings.model_copy(update={"insecure_no_auth": True}), host="0.0.0.0")
    monkeypatch.setenv("TUNELAB_INSECURE_NO_AUTH", "1")
    assert Settings(home=settings.home).insecure_no_auth
    for command in (["up", "--host", "0.0.0.0", "--insecure-no-auth"], ["serve", "--host", "0.0.0.0", "--insecure-no-auth"]):
        monkeypatch.delenv("TUNELAB_INSECURE_NO_AUTH", raising=False)
        result = CliRunner().invoke(app, command)
        assert isinstance(result.exception, Started), result.output


def test_a_login_opens_the_page_but_keeps_the_endpoint_on_loopback(settings, monkeypatch):
    calls = _forbid_starting(monkeypatch)
    with pytest.raises(Started):
        up_module.start(settings.model_copy(update={"host": "0.0.0.0", "auth": "ann:s3cret"}), port=0, server_port=0)
    assert calls[-1][1]["host"] == "127.0.0.1"  # the chat routes have no login: not exposed


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "LOCALHOST", "[::1]"])
def test_loopback_needs_no_login(settings, host, monkeypatch):
    settings.model_copy(update={"auth": None}).check_open_bind(host, login=False, what="x")
    calls = _forbid_starting(monkeypatch)
    with pytest.raises(Started):
        http_app.serve(settings, host=host)
    assert len(calls) == 1
