"""The adapter folder contract.

``adapters/<name>/`` holds exactly:

* ``adapter_config.json`` + ``adapter_model.safetensors`` — plain PEFT, loadable by
  ``PeftModel.from_pretrained`` and by vLLM / TGI / LoRAX;
* ``tunelab.json`` — goal, base, data hash, hyperparameters, metrics, loss history,
  status and verdict.

This module owns reading and writing that folder; it imports no torch. Code that reads
a field goes through the typed views :class:`LoraConfigView` (``adapter_config.json``)
and :class:`AdapterMeta` (``tunelab.json``), never through nested ``.get()`` chains.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.atomic import replace_file
from backend.errors import AdapterMismatch
from backend.names import adapter_path

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "tunelab.json"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, META_FILE)
MAX_CONFIG_BYTES = 1024 * 1024  # a bigger adapter_config.json is not a LoRA config
PEFT_KEY_PREFIX = "base_model.model."  # what peft puts before a base module's name in its weight keys


class LoraConfigView(BaseModel):
    """The fields of peft's ``adapter_config.json`` that TuneLab reads (the rest is kept)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    peft_type: str = "LORA"
    base_model_name_or_path: str | None = None
    r: int = 8
    lora_alpha: int | float = 8
    target_modules: list[str] | str | None = None
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, int | float] = Field(default_factory=dict)
    use_rslora: bool = False
    use_dora: bool = False
    lora_bias: bool = False
    fan_in_fan_out: bool = False
    modules_to_save: list[str] | None = None

    @field_validator("rank_pattern", "alpha_pattern", mode="before")
    @classmethod
    def _none_is_empty(cls, value):
        return value or {}

    @classmethod
    def of(cls, path: Path) -> "LoraConfigView":
        """The view of the adapter at ``path`` (checked to be a PEFT LoRA adapter)."""
        return cls.model_validate(read_peft_config(path))

    def rank_of(self, module: str) -> int:
        """``module``'s rank: its ``rank_pattern`` entry (matched by peft's own rule), else ``r``."""
        return self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)

    def alpha_of(self, module: str) -> int | float:
        """``module``'s alpha: its ``alpha_pattern`` entry (matched by peft's own rule), else ``lora_alpha``."""
        return self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha)

    def scaling_of(self, module: str, rank: int) -> float:
        """What peft multiplies ``module``'s LoRA update by: alpha / rank (alpha / sqrt(rank) with rsLoRA)."""
        alpha = self.alpha_of(module)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


class BaseInfo(BaseModel):
    """The base an adapter was made for, as recorded in ``tunelab.json``."""

    model_config = ConfigDict(extra="allow")

    spec: str = ""
    name: str = ""
    kind: str = ""
    path: str = ""

    @property
    def where(self) -> str:
        """The most precise way to find that base again: its path, else what was asked for."""
        return self.path or self.spec


class AdapterMeta(BaseModel):
    """``tunelab.json``: what the adapter is for, how it was made, how it did."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    goal: str = ""
    base: BaseInfo | None = None
    data_hash: str = ""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    loss_history: list[dict[str, Any]] = Field(default_factory=list)
    status: str | None = None
    verdict: str | None = None
    proof: dict[str, Any] | None = None
    equalizer: dict[str, Any] | None = None

    @field_validator("base", mode="before")
    @classmethod
    def _base_may_be_a_string(cls, value):
        return {"spec": value} if isinstance(value, str) else value

    @field_validator("hyperparameters", "metrics", mode="before")
    @classmethod
    def _none_is_empty(cls, value):
        return value or {}

    @classmethod
    def of(cls, path: Path) -> "AdapterMeta":
        """The adapter's ``tunelab.json`` (every field at its default when there is none)."""
        return cls.model_validate(read_meta(path))

    @property
    def train(self) -> dict[str, Any]:
        """The training knobs (``hyperparameters.train``); empty for derived adapters."""
        return self.hyperparameters.get("train") or {}

    @property
    def system_prompt(self) -> str | None:
        """The system prompt the adapter was trained behind, if any."""
        return self.train.get("system_prompt") or None

    @property
    def equalizer_grid(self) -> dict[str, Any] | None:
        """The equalizer grid the LoRA config was compiled from, if it came from one."""
        return self.hyperparameters.get("equalizer") or self.equalizer


def _pattern_key(pattern: dict, module: str) -> str:
    """The key of ``pattern`` that peft applies to ``module`` (its own matching rule).

    peft imports torch; only code that already holds an adapter's tensors asks."""
    from peft.utils.other import get_pattern_key

    return get_pattern_key(list(pattern), module)


def base_module_name(name: str) -> str:
    """A module's name in the base, from its name under peft (a weight key's module part,
    or a ``PeftModel`` module path): ``base_model.model.`` dropped."""
    return name.removeprefix(PEFT_KEY_PREFIX)


def base_key(base: str) -> str:
    """A base as adapters record it (a path, a hub id or a name), reduced for a loose
    comparison: its last path part, lowercase letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", Path(str(base).rstrip("/")).name.lower())


def folder(adapters_root: Path, name: str) -> Path:
    return adapter_path(adapters_root, name)


def read_meta(path: Path) -> dict[str, Any]:
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return {}
    return json.loads(meta.read_text(encoding="utf-8"))


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write ``tunelab.json`` atomically (a reader never sees half a file)."""
    replace_file(Path(path) / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")


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
        # say what is missing, never what is there: the folder may be anyone's
        raise AdapterMismatch(
            f"Folder {str(path)!r} is not a PEFT adapter: it has no {CONFIG_FILE}.",
            fix="Point at a folder written by peft's save_pretrained or by TuneLab.",
        )
    if config_file.stat().st_size > MAX_CONFIG_BYTES:
        raise AdapterMismatch(f"{config_file} is over {MAX_CONFIG_BYTES // 1024} KiB; a LoRA config is a few KiB.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; nesting too deep
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise AdapterMismatch(f"{config_file} is not valid JSON: {why}.") from exc
    if not isinstance(config, dict):
        raise AdapterMismatch(f"{config_file} holds a JSON {type(config).__name__}, not an object.",
                              fix="adapter_config.json is the object peft's save_pretrained writes.")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterMismatch(
            f"Adapter {str(path)!r} is a {peft_type or 'unknown'} adapter, not LoRA.",
            fix="TuneLab serves and blends LoRA adapters only.",
        )
    if not (path / WEIGHTS_FILE).is_file():
        if (path / "adapter_model.bin").is_file():  # never unpickled: a pickle can run code when loaded
            raise AdapterMismatch(
                f"Adapter {str(path)!r} has its weights only as adapter_model.bin, a pickle, which can run "
                f"code when it is loaded; TuneLab loads {WEIGHTS_FILE} only.",
                fix="Convert it where you trust the file: PeftModel.from_pretrained(base, folder)"
                ".save_pretrained(new_folder) writes safetensors.")
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
