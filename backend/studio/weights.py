"""The studio's work that needs torch: the base's tokenizer and context length for the
data doctor, the chat-template preview, the inspector (:mod:`backend.bases.inspect`), the
proof (:mod:`backend.proof.on_model`), strength and blends
(:mod:`backend.studio.blend`) and the merged export.

Imports torch, transformers and peft at its top; :class:`backend.studio.service.Service`
imports it on first use, at its one lazy seam, so importing the service stays cheap.
"""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from backend.bases.inspect import inspect_base, inspect_command_output
from backend.bases.load import context_length, load_config, load_model, load_tokenizer
from backend.bases.resolve import BaseRef
from backend.settings import Settings
from backend.studio.blend import blend_adapters, scale_adapter
from backend.proof.on_model import baseline_scores, evaluate_adapter

__all__ = ["baseline_scores", "blend_adapters", "chat_previews", "evaluate_adapter", "inspect_base", "inspect_command_output",
           "merge_into_base", "scale_adapter", "tokenizer_and_limit"]


def tokenizer_and_limit(ref: BaseRef, settings: Settings, max_length: int | None):
    """The tokenizer that measures examples for ``ref``, and the longest example it takes:
    the base's context length, or ``max_length`` when that is shorter."""
    tokenizer = load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
    limit = context_length(load_config(ref, settings.trust_remote_code))
    return tokenizer, min(limit, max_length) if max_length else limit


def chat_previews(ref: BaseRef, settings: Settings, conversations: list[list[dict]]) -> list[str]:
    """Each conversation as the base's chat template renders it."""
    tokenizer = load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
    return [tokenizer.apply_chat_template(messages, tokenize=False) for messages in conversations]


def merge_into_base(adapter: Path, ref: BaseRef, settings: Settings, dest: Path) -> Path:
    """The base with ``adapter`` merged into its weights, saved with its tokenizer at ``dest``."""
    model = load_model(ref, trust_remote_code=settings.trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    dest.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(dest)
    load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code).save_pretrained(dest)
    return dest
