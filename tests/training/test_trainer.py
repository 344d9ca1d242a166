"""The trainer pieces (backend/training/trainer.py): length-grouped batches and the
answer-only head."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu.tuning import tune_for_device  # noqa: E402
from backend.training.trainer import LengthBatchSampler  # noqa: E402


def test_length_batches_are_homogeneous_and_cover_everything():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    sampler = LengthBatchSampler(lengths, batch_size=4, seed=0)
    order = list(iter(sampler))
    assert sorted(order) == list(range(8))
    batches = [sorted(lengths[i] for i in order[k:k + 4]) for k in (0, 4)]
    assert sorted(batches) == [[5, 6, 7, 8], [50, 51, 52, 53]]
    sampler.set_epoch(1)
    assert sorted(iter(sampler)) == list(range(8))


def test_answer_only_head_on_the_decoder_equals_the_full_model_loss(tiny_peft, answer_only_loss):
    model = tiny_peft(torch.float32)
    tune_for_device(model, device="cpu", precision="fp32")
    assert sum(type(m).__name__ == "FastDropout" for m in model.modules()) > 0
    model.eval()
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    labels = ids.clone()
    labels[:, :6] = -100
    labels[1, 9:] = -100
    ours = answer_only_loss(model, ids, attention, labels)
    full = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    assert torch.allclose(ours, full, atol=1e-5), (float(ours), float(full))
