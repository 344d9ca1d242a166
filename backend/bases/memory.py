"""Memory of LoRA training and serving on a base, from the inspector's report.

Plain arithmetic on the report's numbers (layers, widths, parameters, the LoRA ranks per
cell); nothing is loaded or measured. The training estimate counts the tensors TuneLab's
training path holds at its peak (the end of the forward pass, when every layer's saved
tensors are alive and the LM head runs), tensor by tensor: tests/bases/test_memory.py
checks it against the live tensor bytes of a real step on the CPU, and
tests/training/test_gpu_training.py against torch's measured peak on a GPU.
"""

from __future__ import annotations

from typing import Any

# The training path's LM head + cross-entropy runs this many answer positions at a time on a
# GPU (backend.training.trainer; the CPU uses cache-sized blocks of 128): only one block's
# logits ever exist, so a 128k vocabulary costs one block, not every position.
LOSS_BLOCK_ROWS = 512
CPU_LOSS_BLOCK_ROWS = 128


def memory_estimates(report: dict, batch_size: int = 8, seq_len: int = 512,
                     gradient_checkpointing: bool = False, packed: bool = False,
                     loss_block_rows: int = LOSS_BLOCK_ROWS) -> dict[str, Any]:
    """Memory for LoRA training and for serving, per base dtype d (bytes).

    Training (T = batch · seq_len tokens, h = hidden, i = intermediate (4h if unknown),
    V = vocabulary, L = layers):
      base         = total_params · d
      lora         = trainable · 4              (adapter weights stay fp32)
      grads        = trainable · 4
      optimizer    = trainable · 8              (AdamW: two fp32 moments)
      activations  = what backward needs, per token and layer:
                       2 RMSNorms   2 · h · (4 + d)   (the fp32 copy of the input, the normed output)
                       attention    5 · h · d         (q, k and v at every head (SDPA repeats the
                                                       shared k/v heads), its output, o_proj's input)
                       MLP          4 · i · d         (gate, SiLU(gate), up, their product)
                       LoRA         Σ_modules in · (d + 1) + r · d
                                    (each module's dropped-out input in d and its mask; without
                                    dropout in fp32 the input is the base's own, in bf16 a cast copy)
                     · L · T; with gradient checkpointing only each layer's input (h · d per
                     token) is kept, plus one layer's full set during its recompute.
                     ``packed`` (padding-free rows as one sequence under SDPA): the T × T block
                     mask, once as bool and per layer as an additive mask in d.
      head         = the LM head and loss on at most ``loss_block_rows`` answer positions at a
                     time: min(T, rows) · V · 8 (logits in d, fp32 log-probabilities, their
                     gradient in d), plus the final norm, the answer rows and their gradient
                     (T · h · (4 + 3d)).
      backward     = the gradients in flight through one layer: T · (2h + 2i) · d
      total        = sum; the framework, kernels' workspaces and fragmentation add some.
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
    dropout = float((lora.get("spec") or {}).get("dropout", 0.0) or 0.0) > 0
    tokens = batch_size * seq_len
    lora_inputs, lora_ranks = 0, 0  # Σ in_features and Σ r over every adapted module
    for row in lora["ranks"]:
        for r, kind in zip(row, report["module_kinds"]):
            if r:
                lora_inputs += kind["in_features"]
                lora_ranks += r
    training, serving = {}, {}
    for dtype, size in (("fp32", 4), ("bf16", 2)):
        per_layer = 2 * hidden * (4 + size) + 5 * hidden * size + 4 * inter * size
        lora_bytes = lora_ranks * size
        if dropout or size != 4:
            lora_bytes += lora_inputs * (size + (1 if dropout else 0))
        lora_per_layer = lora_bytes / layers
        mask = (tokens * tokens * (1 + size * (1 if gradient_checkpointing else layers))) if packed else 0
        if gradient_checkpointing:
            activations = (layers * hidden * size + per_layer + lora_per_layer) * tokens
        else:
            activations = layers * per_layer * tokens + lora_bytes * tokens
        parts = {
            "base": total * size,
            "lora": trainable * 4,
            "grads": trainable * 4,
            "optimizer": trainable * 8,
            "activations": int(activations + mask),
            "head": min(tokens, loss_block_rows) * vocab * 8 + tokens * hidden * (4 + 3 * size),
            "backward": tokens * (2 * hidden + 2 * inter) * size,
        }
        parts["total"] = sum(parts.values())
        training[dtype] = parts
        kv = 2 * layers * tokens * kv_heads * head_dim * size
        serve = {"base": total * size, "adapter": trainable * size, "kv_cache": kv}
        serve["total"] = sum(serve.values())
        serving[dtype] = serve
    return {"batch_size": batch_size, "seq_len": seq_len, "gradient_checkpointing": gradient_checkpointing,
            "packed": packed, "training": training, "serving": serving}
