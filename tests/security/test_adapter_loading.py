"""Attacks on POST /v1/load_lora_adapter, against a real endpoint on a free loopback port.

Each attack asserts the refusal (status, OpenAI error shape, a message that says what is
wrong), that nothing was loaded (GET /v1/models unchanged) and that the server still serves
(a request to the base succeeds afterwards).

* containment: a ``lora_path`` outside ``<home>/adapters`` and ``adapter_roots`` (absolute,
  ``../``, a symlink inside adapters/ pointing out) is refused, even when it is a valid adapter;
* leaks: a refused folder's file names never appear in the message;
* names: ``"nl\\n"`` is not a name (the pattern is matched whole);
* broken folders: a config that is a JSON list or nested 100k levels deep, a ``tunelab.json``
  nested as deep, garbage or a lying-header ``adapter_model.safetensors`` are 400s, not 500s;
* pickles: an adapter whose weights are only ``adapter_model.bin`` is refused unopened;
* restart: ``server_state.json`` naming a folder outside the roots restores nothing from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from tests.builders import make_engine, make_lora

TOKEN = "security-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = ("secret-alpha.txt", "id_rsa", "passwords.kdbx")


class Endpoint(NamedTuple):
    url: str
    adapters: Path  # <home>/adapters
    extra_root: Path  # listed in adapter_roots
    outside: Path  # a folder no root covers, holding a valid adapter and "secret" files
    good: Path  # a valid adapter (for copies inside the roots)


@pytest.fixture(scope="module")
def endpoint(tiny_llama, tmp_path_factory) -> Endpoint:
    home = tmp_path_factory.mktemp("security-home")
    extra_root = tmp_path_factory.mktemp("security-extra-root")
    outside = tmp_path_factory.mktemp("security-outside")
    settings = Settings(home=home, api_token=TOKEN, adapter_roots=[extra_root])
    good = make_lora(tiny_llama, outside / "stolen-adapter", seed=3)
    for name in SECRETS:
        (outside / name).write_text("do not tell")
        (good / name).write_text("do not tell")
    settings.paths.adapters.mkdir(parents=True)
    engine = make_engine(tiny_llama)
    url, stop = start_in_thread(create_app(engine, settings=settings))
    yield Endpoint(url, settings.paths.adapters, extra_root, outside, good)
    stop()
    engine.stop()


def models(url: str) -> list[str]:
    response = httpx.get(url + "/v1/models", timeout=30)
    assert response.status_code == 200
    return sorted(m["id"] for m in response.json()["data"])


def load(url: str, name: str, path: str | Path) -> httpx.Response:
    return httpx.post(url + "/v1/load_lora_adapter", headers=AUTH, timeout=120,
                      json={"lora_name": name, "lora_path": str(path)})


def assert_still_serves(url: str) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "temperature": 0}
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] is not None


def assert_refused(endpoint: Endpoint, name: str, path: str | Path, *said: str, param: str = "lora_path") -> str:
    """The load is a 400 in OpenAI's error shape whose message says each of ``said``;
    nothing was loaded and the base still answers. Returns the message."""
    before = models(endpoint.url)
    response = load(endpoint.url, name, path)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    for words in said:
        assert words in error["message"], error["message"]
    assert models(endpoint.url) == before
    assert_still_serves(endpoint.url)
    return error["message"]


def copy_good(endpoint: Endpoint, where: Path) -> Path:
    shutil.copytree(endpoint.good, where, ignore=shutil.ignore_patterns(*SECRETS))
    return where


# --- what is accepted ------------------------------------------------------------------------


def test_adapters_inside_the_adapters_folder_and_the_roots_load(endpoint):
    for name, folder in (("in-home", endpoint.adapters / "in-home"), ("in-root", endpoint.extra_root / "in-root")):
        copy_good(endpoint, folder)
        response = load(endpoint.url, name, folder)
        assert response.status_code == 200, response.text
        assert name in models(endpoint.url)
        assert httpx.post(endpoint.url + "/v1/unload_lora_adapter", headers=AUTH, json={"lora_name": name},
                          timeout=60).status_code == 200
    assert_still_serves(endpoint.url)


# --- containment -----------------------------------------------------------------------------


def test_an_absolute_path_outside_is_refused_even_for_a_valid_adapter(endpoint):
    message = assert_refused(endpoint, "outside", endpoint.good, "outside the folders", "TUNELAB_ADAPTER_ROOTS")
    assert str(endpoint.adapters) not in message  # the server's layout is not told either


def test_a_dotdot_path_out_of_the_adapters_folder_is_refused(endpoint):
    relative = Path(os.path.relpath(endpoint.good, endpoint.adapters))
    assert relative.parts[0] == ".."
    assert_refused(endpoint, "dotdot", f"{endpoint.adapters}/{relative}", "outside the folders")


def test_a_symlink_inside_adapters_pointing_out_is_refused(endpoint):
    link = endpoint.adapters / "sneaky"
    link.symlink_to(endpoint.good, target_is_directory=True)
    message = assert_refused(endpoint, "sneaky", link, "outside the folders")
    assert str(endpoint.outside) not in message  # the link's target is not told


# --- leaks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["outside", "/root", "/etc", "inside"])
def test_a_refused_folder_lists_none_of_its_files(endpoint, where):
    if where == "inside":  # allowed, but not an adapter: says what is missing
        folder = endpoint.adapters / "not-an-adapter"
        folder.mkdir(exist_ok=True)
        for name in SECRETS:
            (folder / name).write_text("do not tell")
        said = "no adapter_config.json"
    else:
        folder = endpoint.outside if where == "outside" else Path(where)
        said = "outside the folders"
    message = assert_refused(endpoint, "leak", folder, said)
    try:
        present = os.listdir(folder)
    except OSError:
        present = []
    words = set(re.split(r"[^\w.-]+", message.replace(str(folder), "")))
    leaked = sorted(name for name in {*present, *SECRETS} if name in words)
    assert leaked == [], message


# --- names -----------------------------------------------------------------------------------


def test_a_name_with_a_trailing_newline_is_refused(endpoint):
    folder = endpoint.adapters / "newline"
    if not folder.exists():
        copy_good(endpoint, folder)
    assert_refused(endpoint, "nl\n", folder, "Invalid adapter name", param=None)


# --- broken folders --------------------------------------------------------------------------


def _config_is_a_list(folder: Path) -> None:
    (folder / "adapter_config.json").write_text('["peft_type", "LORA"]')


def _config_nested_deep(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)


def _meta_nested_deep(folder: Path) -> None:
    (folder / "tunelab.json").write_text("{\"a\":" * 100_000 + "1" + "}" * 100_000)


def _weights_are_garbage(folder: Path) -> None:
    (folder / "adapter_model.safetensors").write_bytes(b"this is no safetensors file, only text " * 8)


def _weights_header_lies(folder: Path) -> None:
    header = b'{"__metadata__": {}}'
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 10_000_000) + header)


@pytest.mark.parametrize("break_it, said", [
    (_config_is_a_list, "adapter_config.json holds a JSON list, not an object"),
    (_config_nested_deep, "adapter_config.json is not valid JSON: nested too deeply"),
    (_meta_nested_deep, "has a tunelab.json that cannot be read"),
    (_weights_are_garbage, "adapter_model.safetensors that is not a readable safetensors file"),
    (_weights_header_lies, "adapter_model.safetensors that is not a readable safetensors file"),
], ids=["config-list", "config-nested", "meta-nested", "weights-garbage", "weights-lying-header"])
def test_a_broken_folder_is_a_400_that_says_what_is_wrong(endpoint, break_it, said):
    folder = copy_good(endpoint, endpoint.adapters / f"broken-{break_it.__name__.strip('_')}")
    break_it(folder)
    assert_refused(endpoint, "broken", folder, said)


class _RunsCode:
    """Unpickling this runs ``touch`` on the marker: what a hostile adapter_model.bin does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_adapter_is_refused_unopened(endpoint, tmp_path):
    """adapter_model.bin is a pickle: it is never unpickled (torch.load's weights_only would
    stop most payloads, but not opening it at all stops every one)."""
    import pickle

    folder = copy_good(endpoint, endpoint.adapters / "pickled")
    (folder / "adapter_model.safetensors").unlink()
    marker = tmp_path / "the-pickle-ran"
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"w": _RunsCode(marker)}))
    assert_refused(endpoint, "pickled", folder, "adapter_model.bin, a pickle", "safetensors")
    assert not marker.exists()


# --- restart -----------------------------------------------------------------------------------


def test_a_restart_does_not_restore_an_adapter_outside_the_roots(tiny_llama, tmp_path, endpoint):
    """server_state.json is a list of paths too: one outside the roots is skipped, not loaded."""
    settings = Settings(home=tmp_path / "home", api_token=TOKEN)
    inside = copy_good(endpoint, settings.paths.adapters / "kept")
    settings.paths.server_state.parent.mkdir(parents=True)
    settings.paths.server_state.write_text(json.dumps(
        {"base": "tiny-llama", "adapters": {"kept": str(inside), "smuggled": str(endpoint.good)}}))
    engine = make_engine(tiny_llama)
    url, stop = start_in_thread(create_app(engine, settings=settings))
    try:
        assert models(url) == ["kept", "tiny-llama"]
        assert_still_serves(url)
    finally:
        stop()
        engine.stop()
    assert set(json.loads(settings.paths.server_state.read_text())["adapters"]) == {"kept"}
