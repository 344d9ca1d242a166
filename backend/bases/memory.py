"""Rough memory of LoRA training and serving on a base, from the inspector's report.

Plain arithmetic on the report's numbers (layers, widths, parameters, the LoRA ranks per
cell); nothing is loaded or measured.
"""

from __future__ import annotations

from typing import Any


def memory_estimates(report: dict, batch_size: int = 8, seq_len: int = 512,
                     gradient_checkpointing: bool = False) -> dict[str, Any]:
    """Rough memory for LoRA training and for serving, per base dtype (bytes).

    Training (per dtype d of the frozen base, b = batch, s = sequence length):
      base         = total_params · bytes(d)
      lora         = trainable · 4              (adapter weights stay fp32)
      grads        = trainable · 4
      optimizer    = trainable · 8              (AdamW: two fp32 moments)
      activations  = L · b·s · (10·h + 4·i + Σ_lora(in + r)/L) · bytes(d)
                     + 2 · b·s·V · 4            (fp32 logits and their gradient)
                     where h = hidden, i = intermediate (4h if unknown), V = vocab; the
                     per-layer term counts the tensors a decoder block keeps for backward
                     (norms, q/k/v/o, residuals, MLP gate/up/act/down). With gradient
                     checkpointing only each layer's input (h per token) is kept, plus
                     one layer's full set during recompute.
      total        = sum; expect ±50%: kernels, fragmentation and the framework add some.
    Serving:
      base + adapter weights in d + KV cache 2 · L · b·s · kv_heads · head_dim · bytes(d).
    """
    layers = report["num_layers"] or 1
    hidden = report["hidden_size"] or 0
    inter = report["intermediate_size"] or 4 * hidden
    vocab = report["vocab_size"] or 0
    heads = report["num_attention_heads"] or 1
    kv_heads = report["num_key_value_heads"] or heads
    head_dim = hidden // heads if heads else hidden
    total = report["total_params"]
    lora = report["lora"]
    trainable = lora["trainable_params"]
    tokens = batch_size * seq_len
    lora_act = 0
    for row in lora["ranks"]:
        for r, kind in zip(row, report["module_kinds"]):
            if r:
                lora_act += kind["in_features"] + r
    training, serving = {}, {}
    for dtype, size in (("fp32", 4), ("bf16", 2)):
        per_layer = 10 * hidden + 4 * inter
        if gradient_checkpointing:
            block = (layers * hidden + per_layer) * tokens * size
        else:
            block = layers * per_layer * tokens * size
        activations = block + lora_act * tokens * size + 2 * tokens * vocab * 4
        parts = {
            "base": total * size,
            "lora": trainable * 4,
            "grads": trainable * 4,
            "optimizer": trainable * 8,
            "activations": activations,
        }
        parts["total"] = sum(parts.values())
        training[dtype] = parts
        kv = 2 * layers * tokens * kv_heads * head_dim * size
        serve = {"base": total * size, "adapter": trainable * size, "kv_cache": kv}
        serve["total"] = sum(serve.values())
        serving[dtype] = serve
    return {"batch_size": batch_size, "seq_len": seq_len, "gradient_checkpointing": gradient_checkpointing,
            "training": training, "serving": serving}
