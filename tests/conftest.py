"""Shared fixtures: a temporary TUNELAB_HOME and tiny models built from a config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny_model import make_tiny_gpt2, make_tiny_llama  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA is visible (`bench/gpu_device.sh` on a lent GPU
    machine) and are skipped, with the reason, everywhere else."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none (bench/gpu_device.sh runs these on one)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A saved 2-layer Llama folder with a chat template (shared, read-only)."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_llama_other(tmp_path_factory) -> Path:
    """A Llama of another shape (hidden 32), for 'adapter trained for another base'."""
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama-other") / "model", hidden=32, seed=1)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2") / "model")


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A fresh TUNELAB_HOME for one test; every path TuneLab writes lands here."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    # tests write example files beside the home (tmp_path/"in"): the page may read them there
    monkeypatch.setenv("TUNELAB_DATA_ROOTS", str(tmp_path))
    monkeypatch.delenv("TUNELAB_DATABASE_URL", raising=False)
    monkeypatch.delenv("TUNELAB_API_TOKEN", raising=False)
    return home


@pytest.fixture()
def settings(home):
    from backend.settings import Settings

    return Settings(home=home)


@pytest.fixture()
def served(settings, tiny_llama):
    """The real serving endpoint on a free loopback port with the tiny Llama as base, and
    a Service that talks to it (its job runner hot-loads finished adapters into it)."""
    from backend.serving.auth import api_token
    from backend.serving.http.app import create_app, start_in_thread
    from backend.studio.service import Service

    app = create_app(settings=settings, base=str(tiny_llama), token=api_token(settings))
    url, stop = start_in_thread(app, port=0)
    svc = Service(settings.model_copy(update={"server_url": url, "default_base": str(tiny_llama)}))
    yield svc
    svc.close()
    stop()


@pytest.fixture()
def service(settings):
    """The studio's one door over the temporary home (no model loaded until asked)."""
    from backend.studio.service import Service

    svc = Service(settings)
    yield svc
    svc.close()


@pytest.fixture()
def state(tiny_llama):
    """A fresh session that trains on the tiny Llama."""
    from backend.studio.session import SessionState

    return SessionState(base=str(tiny_llama))
