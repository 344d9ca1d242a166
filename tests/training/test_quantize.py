"""QLoRA's readying of the base (backend/training/quantize.py). bitsandbytes and CUDA are
not here, so the quantized load itself is a `gpu` test (tests/training/test_gpu_training.py);
what peft's readying does to the weights that are not quantized is the same on any
model, and is checked here on the tiny Llama in bf16."""

from __future__ import annotations

import torch


def _load_bf16(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)


def _hidden_dtypes(model) -> set[torch.dtype]:
    """The dtypes of every decoder layer's output, and the final norm's, in a forward under
    bf16 autocast (as the trainer runs it with bf16=True)."""
    seen: set[torch.dtype] = set()
    hooks = [layer.register_forward_hook(lambda _m, _i, out: seen.add((out[0] if isinstance(out, tuple) else out).dtype))
             for layer in [*model.model.layers, model.model.norm]]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_peft_upcasts_the_unquantized_weights_and_every_activation_follows(tiny_llama):
    """What ready_for_kbit_training undoes: peft's readying alone leaves every weight fp32,
    so the activations that the memory estimate counts in bf16 are fp32."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(_load_bf16(tiny_llama), use_gradient_checkpointing=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.float32 in _hidden_dtypes(model)


def test_readied_for_qlora_the_weights_and_activations_stay_in_the_compute_dtype(tiny_llama):
    from backend.training.quantize import ready_for_kbit_training

    reference = _load_bf16(tiny_llama)
    # (peft switches checkpointing on only for a model loaded in k bits: a `gpu` test's case)
    model = ready_for_kbit_training(_load_bf16(tiny_llama), torch.bfloat16, gradient_checkpointing=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())  # frozen: LoRA is added on top
    assert _hidden_dtypes(model) == {torch.bfloat16}
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, q), name  # bf16 -> fp32 -> bf16 is exact: nothing lost
