"""Module kinds: the words the inspector and the equalizer share for where LoRA acts.

*layer stack*  the ``nn.ModuleList`` of repeated blocks (``model.layers``, ``transformer.h``).
*module kind*  a linear module's path relative to its block, e.g. ``self_attn.q_proj`` or
               GPT-2's ``attn.c_attn``; one column of the inspector's heatmap and of the
               equalizer's grid.
*cell*         one module kind in one layer, e.g. ``model.layers.3.self_attn.q_proj``.
"""

from __future__ import annotations

import re

_ATTENTION_WORDS = ("attn", "attention")
_MLP_WORDS = ("mlp", "ffn", "feed_forward", "feedforward", "experts", "moe", "dense_h_to_4h", "dense_4h_to_h")
# a cell's full name: the layer stack's path, the layer's index, the module kind
LAYER_PATH = re.compile(r"^(?P<prefix>.*?)\.(?P<index>\d+)\.(?P<kind>.+)$")


def module_group(kind: str) -> str:
    """'attention', 'mlp' or 'other', from the words in a module kind's path.

    Conventions differ (``self_attn.q_proj``, ``attn.c_attn``, ``self_attention.query_key_value``,
    ``mlp.c_fc``, ``feed_forward.w1``); the first path segment usually says which.
    """
    lowered = kind.lower()
    head = lowered.split(".")[0]
    for words, group in ((_ATTENTION_WORDS, "attention"), (_MLP_WORDS, "mlp")):
        if any(word in head for word in words):
            return group
    for words, group in ((_ATTENTION_WORDS, "attention"), (_MLP_WORDS, "mlp")):
        if any(word in lowered for word in words):
            return group
    return "other"
