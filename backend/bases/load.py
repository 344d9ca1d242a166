"""Loading a resolved base (:class:`~backend.bases.resolve.BaseRef`): its config, its
tokenizer (with a chat template and a pad token) and its weights, never modified on
disk; and the few facts about a loaded model that training and serving both need.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM, AutoTokenizer

from backend.bases.resolve import BaseRef
from backend.errors import BaseModelError

# A plain template for bases that ship none: "User: ...\nAssistant: ..." turns. The
# generation prompt ends at "Assistant:", before the space: the space belongs to the
# answer's first token (" red"), so the prompt is a token prefix of the conversation it
# starts, and serving asks exactly the context TRL trains on (a trailing space would be
# dropped from training and left alone at serving, where no answer starts with it).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _needs_remote_code(ref: BaseRef) -> bool:
    config_path = Path(ref.path) / "config.json"
    if not config_path.is_file():
        return False
    config = json.loads(config_path.read_text())
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


def load_model(ref: BaseRef, *, dtype=None, device: str | None = None, trust_remote_code: bool = False,
               **from_pretrained):
    """The base model for training or serving (never modified on disk). ``from_pretrained``:
    more keywords for transformers (``attn_implementation``, ``quantization_config``, ``device_map``)."""
    _check_remote_code(ref, trust_remote_code)
    extra = {k: v for k, v in from_pretrained.items() if v is not None}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            ref.path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, **extra
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


def sliding_window(config) -> int | None:
    """The window of a base whose layers (some or all) attend only to their last N tokens
    (Gemma 2 and 3, Phi-3, Mistral v0.1); None when every layer sees the whole context
    (Llama, and Qwen2 with ``use_sliding_window`` off)."""
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(config, "use_sliding_window", True) is False:
        return None
    types = getattr(config, "layer_types", None)
    if types and not any("sliding" in str(kind) for kind in types):
        return None
    return window


def context_length(config) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
