"""LoRA dropout with fewer random draws (backend/training/cpu/dropout.py): the same
Bernoulli(p) distribution, seeded by torch's generator."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu.dropout import FastDropout, drop_positions, use_fast_lora_dropout  # noqa: E402


def test_drop_positions_are_bernoulli_p_sorted_and_seeded():
    n, p, runs = 20_000, 0.05, 50
    counts, per_tenth = [], torch.zeros(10)
    for _ in range(runs):
        pos = drop_positions(n, p)
        assert pos.dtype == torch.int64 and bool((pos[1:] > pos[:-1]).all()) and 0 <= int(pos.min())
        assert int(pos.max()) < n
        counts.append(len(pos))
        per_tenth += torch.bincount(pos // (n // 10), minlength=10)
    mean = sum(counts) / runs
    sd = math.sqrt(n * p * (1 - p))
    assert abs(mean - n * p) < 4 * sd / math.sqrt(runs)  # rate p
    spread = math.sqrt(sum((c - mean) ** 2 for c in counts) / (runs - 1))
    assert 0.6 * sd < spread < 1.5 * sd  # binomial spread, not a fixed count
    assert float(per_tenth.max() / per_tenth.min()) < 1.15  # uniform over positions
    torch.manual_seed(7)
    first = drop_positions(n, p)
    torch.manual_seed(7)
    assert torch.equal(first, drop_positions(n, p))
    assert len(drop_positions(n, 0.0)) == 0 and len(drop_positions(10, 1.0)) == 10
    many = drop_positions(400, 0.9)  # more than one draw of gaps
    assert len(many) > 300 and int(many.max()) < 400


def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean():
    drop = FastDropout(0.05)
    x = torch.ones(64, 4096, requires_grad=True)
    y = drop(x)
    dropped = float((y.detach() == 0).float().mean())
    assert 0.045 < dropped < 0.055
    assert abs(float(y.detach().mean()) - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient is the same mask and scale
    assert torch.equal(drop.eval()(x), x)


def test_peft_lora_dropouts_are_swapped_and_the_adapter_is_unchanged(tiny_peft):
    model = tiny_peft(torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = use_fast_lora_dropout(model)
    assert swapped > 0 and swapped == sum(type(m) is FastDropout for m in model.modules())
    assert all(m.p == 0.1 for m in model.modules() if type(m) is FastDropout)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
