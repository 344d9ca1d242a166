"""The trainer pieces (backend/training/trainer.py): length-grouped padded batches, random
padding-free batches, and the answer-only head."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu.tuning import tune_for_device  # noqa: E402
from backend.training.trainer import (AnswerOnlySFTTrainer, LengthBatchSampler, ShuffledSampler,  # noqa: E402
                                      whole_warmup_steps)


def test_length_batches_are_homogeneous_and_cover_everything():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    sampler = LengthBatchSampler(lengths, batch_size=4, seed=0)
    order = list(iter(sampler))
    assert sorted(order) == list(range(8))
    batches = [sorted(lengths[i] for i in order[k:k + 4]) for k in (0, 4)]
    assert sorted(batches) == [[5, 6, 7, 8], [50, 51, 52, 53]]
    sampler.set_epoch(1)
    assert sorted(iter(sampler)) == list(range(8))


def test_random_batches_are_drawn_fixed_by_seed_and_epoch():
    sampler = ShuffledSampler(8, seed=3)
    first = list(iter(sampler))
    assert sorted(first) == list(range(8)) and list(iter(ShuffledSampler(8, seed=3))) == first  # a resume sees it again
    sampler.set_epoch(1)
    second = list(iter(sampler))
    assert sorted(second) == list(range(8)) and second != first  # each epoch draws its batches anew


def test_random_batches_do_not_gather_examples_of_one_length():
    # four short and four long examples (say, billing questions and bug reports): batches of
    # four hold only one kind in 2 of the 70 ways to draw them; length-sorted batches always do
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    one_kind = 0
    for seed in range(200):
        order = list(iter(ShuffledSampler(len(lengths), seed=seed)))
        one_kind += sum(len({lengths[i] > 20 for i in order[k:k + 4]}) == 1 for k in (0, 4))
    assert one_kind / 400 < 0.1, one_kind


def test_lengths_are_grouped_only_where_batches_are_padded():
    from types import SimpleNamespace

    dataset = {"input_ids": [[1] * n for n in (5, 50, 6, 51)]}

    def sampler(padding_free: bool, length_grouped: bool):
        trainer = SimpleNamespace(train_dataset=dataset, length_grouped=length_grouped, args=SimpleNamespace(
            padding_free=padding_free, per_device_train_batch_size=2, seed=0))
        return AnswerOnlySFTTrainer._get_train_sampler(trainer)

    assert isinstance(sampler(padding_free=False, length_grouped=True), LengthBatchSampler)  # CPU: padding saved
    assert isinstance(sampler(padding_free=True, length_grouped=True), ShuffledSampler)  # nothing to save
    assert isinstance(sampler(padding_free=False, length_grouped=False), ShuffledSampler)  # random like TRL


def test_a_warmup_ratio_is_whole_steps_rounded_down():
    assert whole_warmup_steps(0.03, 20) == 0  # transformers: 1 step at rate 0 in a 20-step run
    assert (whole_warmup_steps(0.03, 33), whole_warmup_steps(0.03, 34), whole_warmup_steps(0.03, 100)) == (0, 1, 3)
    assert whole_warmup_steps(0.29, 100) == 29  # not 28: 0.29 x 100 is 28.999... in floating point
    assert whole_warmup_steps(0.5, 7) == 3


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
