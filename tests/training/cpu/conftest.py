"""Fixtures of the CPU kernel tests: stock and fast peft pairs, losses with gradients, relative errors."""

from __future__ import annotations

import pytest

from tests.builders import folder_ref


@pytest.fixture()
def rel_error():
    """``rel_error(a, b)``: ``|a - b| / |b|`` (Frobenius norms)."""
    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp(min=1e-12))

    return rel


@pytest.fixture()
def lora_pair(tiny_llama):
    """``lora_pair(dtype, dropout=0.0)``: two identical peft models on the tiny Llama, the
    first stock, the second with the fast LoRA linear installed."""
    import torch
    from peft import LoraConfig, get_peft_model

    from backend.bases.load import load_model
    from backend.training.cpu.lora import use_fast_lora_linear

    def make(dtype, dropout=0.0):
        models = []
        for _ in range(2):
            torch.manual_seed(0)
            models.append(get_peft_model(load_model(folder_ref(tiny_llama), dtype=dtype),
                                         LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                    target_modules="all-linear", init_lora_weights=False)))
        assert use_fast_lora_linear(models[1]) > 0
        return models

    return make


@pytest.fixture()
def loss_and_grads():
    """``loss_and_grads(model, ids, autocast=False)``: the LM loss on ``ids`` and the
    gradients of the trained parameters (fp32), by name."""
    import torch

    def run(model, ids, autocast=False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return float(loss.detach()), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}

    return run
