"""The adapter folder contract.

``adapters/<name>/`` holds exactly:

* ``adapter_config.json`` + ``adapter_model.safetensors`` — plain PEFT, loadable by
  ``PeftModel.from_pretrained`` and by vLLM / TGI / LoRAX;
* ``tunelab.json`` — goal, base, data hash, hyperparameters, metrics, loss history,
  status and verdict.

This module owns reading and writing that folder; it imports no torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from backend.errors import AdapterMismatch
from backend.names import adapter_path

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "tunelab.json"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, META_FILE)


def folder(adapters_root: Path, name: str) -> Path:
    return adapter_path(adapters_root, name)


def read_meta(path: Path) -> dict[str, Any]:
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return {}
    return json.loads(meta.read_text(encoding="utf-8"))


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write ``tunelab.json`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tunelab-", suffix=".json", dir=path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path / META_FILE)


def update_meta(path: Path, **fields: Any) -> dict[str, Any]:
    meta = read_meta(path)
    meta.update(fields)
    write_meta(path, meta)
    return meta


def read_peft_config(path: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, checked to be a PEFT LoRA adapter."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not path.is_dir():
        raise AdapterMismatch(f"Adapter path {str(path)!r} is not a folder.",
                              fix="Give the folder that holds adapter_config.json.")
    if not config_file.is_file():
        present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise AdapterMismatch(
            f"Folder {str(path)!r} is not a PEFT adapter: it has no {CONFIG_FILE} (it holds: {present}).",
            fix="Point at a folder written by peft's save_pretrained or by TuneLab.",
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterMismatch(f"{config_file} is not valid JSON: {exc}.") from exc
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterMismatch(
            f"Adapter {str(path)!r} is a {peft_type or 'unknown'} adapter, not LoRA.",
            fix="TuneLab serves and blends LoRA adapters only.",
        )
    if not (path / WEIGHTS_FILE).is_file() and not (path / "adapter_model.bin").is_file():
        raise AdapterMismatch(f"Adapter {str(path)!r} has no {WEIGHTS_FILE}.",
                              fix="The weights file is missing; re-export or re-train the adapter.")
    return config


def is_complete(path: Path) -> bool:
    return all((Path(path) / f).is_file() for f in ADAPTER_FILES)


def scan(adapters_root: Path) -> list[Path]:
    """Adapter folders on disk (complete ones), sorted by name."""
    root = Path(adapters_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_complete(p))
