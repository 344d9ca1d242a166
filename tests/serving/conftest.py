"""Fixtures of the serving tests: adapters for the tiny Llama and one real endpoint per module."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from backend.serving.client import ServingClient
from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from tests.builders import make_engine, make_lora


class Served(NamedTuple):
    url: str
    engine: object
    settings: Settings


@pytest.fixture(scope="module")
def server_loras(tiny_llama, tmp_path_factory) -> list[Path]:
    """Four adapters of one shape (r 4, all-linear) with different weights."""
    root = tmp_path_factory.mktemp("server-loras")
    return [make_lora(tiny_llama, root / f"lora{i}", seed=10 + i) for i in range(4)]


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory) -> Served:
    """The real HTTP endpoint around an engine on the tiny Llama, on a free loopback port
    (one per test module); its management token is ``server.settings.api_token``. The tests
    load adapters they write under pytest's temporary folder, so it is an adapter root."""
    home = tmp_path_factory.mktemp("server-home")
    settings = Settings(home=home, api_token="test-token-123", adapter_roots=[tmp_path_factory.getbasetemp()])
    engine = make_engine(tiny_llama)
    url, stop = start_in_thread(create_app(engine, settings=settings))
    yield Served(url, engine, settings)
    stop()
    engine.stop()


@pytest.fixture()
def client(server):
    with ServingClient(server.url, server.settings.api_token) as c:
        yield c
