"""The training-memory estimate (backend/bases/memory.py) against the tensors a real step holds.

A CPU has no ``max_memory_allocated``, and RSS moves with the allocator's whims, so
:class:`tests.builders.LiveBytes` counts exactly: every tensor storage an op creates, from
its creation until its last reference dies (storages keep their Python object while alive,
so a weak reference to it says when it is freed). Its peak is the CPU's analogue of torch's CUDA
peak; tests/training/test_gpu_training.py checks the same estimate against that on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from backend.bases.inspect import inspect_base
from backend.bases.memory import LOSS_BLOCK_ROWS, memory_estimates
from backend.hparams import LoraSpec
from backend.training.cpu.head_loss import head_loss_sum
from backend.training.recipe import GIB, training_bytes
from tests.builders import LiveBytes
from tests.tiny_model import make_tiny_llama

LLAMA_8B = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                max_position_embeddings=8192, tie_word_embeddings=False)


def test_live_bytes_counts_what_is_held_and_frees_what_is_dropped():
    with LiveBytes() as live:
        a = torch.zeros(1000, 250)  # 1 MB
        b = a + 1
        assert live.live == 2_000_000
        del b
        assert live.live == 1_000_000 and live.peak == 2_000_000


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("memory") / "llama", layers=2, hidden=256, max_positions=1024)


def test_the_lm_head_holds_one_blocks_logits_not_every_positions():
    """The head + loss of a GPU run (the plain torch path, which fp32 on a CPU also takes):
    its peak is the estimate's head term, far below every answer position's logits."""
    tokens, hidden, vocab = 2048, 64, 8192
    report = inspect_base(dict(LLAMA_8B, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=4, vocab_size=vocab))
    head_term = memory_estimates(report, batch_size=1, seq_len=tokens)["training"]["fp32"]["head"]
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(tokens, hidden, generator=gen, requires_grad=True)
    weight = torch.randn(vocab, hidden, generator=gen) / 8
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    with LiveBytes() as live:
        head_loss_sum(rows, weight, targets, block_rows=LOSS_BLOCK_ROWS).backward()
    assert abs(live.peak - head_term) <= 0.1 * head_term, (live.peak, head_term)
    with LiveBytes() as stock:  # what a full-logits head would hold
        torch.nn.functional.cross_entropy(rows @ weight.t(), targets, reduction="sum").backward()
    assert stock.peak > 3 * live.peak


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_a_bf16_training_step_holds_what_the_estimate_counts(llama, checkpointing, monkeypatch):
    """A LoRA step as a GPU run takes it (bf16 base, fp32 LoRA, autocast, SDPA, the decoder
    then the blocked head): the live peak above the weights is within 25% of the estimate's
    activations + head + in-flight gradients + LoRA gradients."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backend.training.cpu import head_loss, native

    # the head as on a GPU: plain torch products, neither oneDNN's packed head nor the
    # native softmax pass a bf16 CPU would take (and a packed weight is opaque to LiveBytes)
    monkeypatch.setattr(head_loss, "packed_head", lambda weight, block_rows: None)
    monkeypatch.setattr(native, "kernels", lambda: None)
    lora = LoraSpec(r=8, alpha=16, dropout=0.0)
    model = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(**lora.to_peft_kwargs()))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    batch, length = 2, 512
    ids = torch.randint(0, 384, (batch, length), generator=torch.Generator().manual_seed(0))
    decoder, head = model.base_model.model.model, model.get_output_embeddings()
    with LiveBytes() as live:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
        targets = ids[:, 1:]
        loss = head_loss_sum(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1),
                             block_rows=LOSS_BLOCK_ROWS)
        loss.backward()
    report = inspect_base(str(llama / "config.json"), lora=lora)
    parts = memory_estimates(report, batch_size=batch, seq_len=length,
                             gradient_checkpointing=checkpointing)["training"]["bf16"]
    estimate = parts["activations"] + parts["head"] + parts["backward"] + parts["grads"]
    assert abs(estimate - live.peak) <= 0.25 * live.peak, (estimate, live.peak, parts)


def test_a_128k_vocabulary_no_longer_dominates_the_8b_qlora_estimate():
    """Issue 19's target shape: 8B QLoRA at batch 4 x 1024 under 12 GiB; the head is one block."""
    report = inspect_base(LLAMA_8B, LoraSpec(r=16, alpha=32))
    parts = memory_estimates(report, batch_size=4, seq_len=1024, gradient_checkpointing=True,
                             packed=True)["training"]["bf16"]
    assert parts["head"] < 0.75 * GIB  # every position's fp32 logits would be 3.9 GiB
    q4 = training_bytes(report, batch=4, seq_len=1024, checkpointing=True, precision="bf16", quantize="4bit",
                        packed=True)
    assert 6 * GIB < q4 < 12 * GIB
    # packed rows under SDPA keep a T x T mask per layer; checkpointing keeps one layer's
    unpacked = memory_estimates(report, batch_size=4, seq_len=1024, gradient_checkpointing=False)
    packed = memory_estimates(report, batch_size=4, seq_len=1024, gradient_checkpointing=False, packed=True)
    assert packed["training"]["bf16"]["activations"] - unpacked["training"]["bf16"]["activations"] == \
        4096 * 4096 * (1 + 2 * 32)
