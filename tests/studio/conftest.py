"""Fixtures of the studio's tests: a Service over a temporary home, a session, a URL where
nothing listens, and one adapter trained through the real endpoint and job runner once per
module, handed to each test that changes it as a copy under a name of its own."""

from __future__ import annotations

import itertools
import json
import shutil
import socket

import pytest

from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.serving.auth import api_token
from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from backend.studio.service import Service

WINE_GOAL = "classify wine as red or white"


@pytest.fixture()
def closed_url() -> str:
    """A loopback URL on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    """The real serving endpoint (the tiny Llama as base) and a Service over a home in which
    one adapter, 'wine', was trained through the job runner from data imported by the data
    doctor; trained once per module. Tests that change an adapter take :func:`wine_copy`."""
    home = tmp_path_factory.mktemp("trained-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TUNELAB_HOME", str(home))
        env.delenv("TUNELAB_DATABASE_URL", raising=False)
        env.delenv("TUNELAB_API_TOKEN", raising=False)
        settings = Settings(home=home)
        app = create_app(settings=settings, base=str(tiny_llama), token=api_token(settings))
        url, stop = start_in_thread(app, port=0)
        service = Service(settings.model_copy(update={"server_url": url, "default_base": str(tiny_llama)}))
        try:
            data = home / "wine.jsonl"
            rows = [{"messages": [{"role": "user", "content": f"{'ruby cherry' if i % 2 else 'straw citrus'} {i}"},
                                  {"role": "assistant", "content": "red" if i % 2 else "white"}]} for i in range(12)]
            data.write_text("\n".join(json.dumps(r) for r in rows))
            imported = service.import_data([data], base=str(tiny_llama), max_length=64)
            spec = RunSpec(name="wine", base=str(tiny_llama), goal=WINE_GOAL, lora=LoraSpec(r=4, alpha=8),
                           train=TrainSpec(epochs=2, batch_size=4, max_length=64))
            job = service.train(spec, imported.folder, data_hash=imported.report.content_hash)
            # the runner looks for the "proof" event every poll; the tiny model's proof can end
            # within the default 0.5 s on a fast CPU, and the hand-over then comes only after
            # "done". A 0.05 s poll keeps it inside the proof, which the tests check
            service.runner.poll_s = 0.05
            assert service.runner.run_pending() == [job]
            assert service.progress(job)["status"] == "done"
            yield service
        finally:
            service.close()
            stop()


_copies = itertools.count(1)


@pytest.fixture()
def wine_copy(trained) -> str:
    """A copy of the trained 'wine' adapter under a name of its own ('wine-1', 'wine-2', ...),
    registered like a finished run (same base, goal and job) and loaded into the endpoint."""
    name = f"wine-{next(_copies)}"
    source = trained.store.get_adapter("wine")
    shutil.copytree(trained.paths.adapters / "wine", trained.paths.adapters / name)
    trained.store.upsert_adapter(name, base=source.base, status="done", goal=source.goal, job_id=source.job_id)
    trained.client.load_adapter(name, str(trained.paths.adapters / name))
    return name
