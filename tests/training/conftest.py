"""Fixtures of the training tests: the native kernels loaded once, tiny peft models, the answer-only loss."""

from __future__ import annotations

import pytest

from backend.training.cpu import native
from backend.training.cpu.native import NativeBuild
from tests.builders import folder_ref


@pytest.fixture(scope="session")
def native_build(tmp_path_factory) -> NativeBuild:
    """The native kernels built once for the session (in a temporary cache) and in use:
    what a training run with ``native_kernels`` on asks for."""
    build = NativeBuild(enabled=True, cache_dir=tmp_path_factory.mktemp("native-cache"))
    native.use(build)
    return build


@pytest.fixture()
def native_lib(native_build):
    """The loaded native library; skips the test (with the reason) where it cannot be built."""
    lib = native.use(native_build)
    if lib is None:
        pytest.skip(f"native kernels not loaded: {native.status()['why']}")
    return lib


@pytest.fixture()
def tiny_peft(tiny_llama):
    """``tiny_peft(dtype)``: a peft model (all-linear r4, dropout 0.1, random B) on the tiny Llama."""
    import torch
    from peft import LoraConfig, get_peft_model

    from backend.bases.load import load_model

    def make(dtype):
        torch.manual_seed(0)
        return get_peft_model(load_model(folder_ref(tiny_llama), dtype=dtype),
                              LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear",
                                         init_lora_weights=False))

    return make


@pytest.fixture()
def answer_only_loss():
    """``answer_only_loss(model, ids, attention, labels)``: the decoder, then the head on
    answer positions only, as the trainer computes it."""
    import torch

    from backend.bases.load import decoder_of

    def loss(model, ids, attention, labels):
        hidden = decoder_of(model)(input_ids=ids, attention_mask=attention,
                                   use_cache=False).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        mask = targets != -100
        logits = model.get_output_embeddings()(hidden[mask]).float()
        return torch.nn.functional.cross_entropy(logits, targets[mask])

    return loss
