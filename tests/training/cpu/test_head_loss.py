"""The blocked LM-head loss (backend/training/cpu/head_loss.py) against cross-entropy
over the whole head, on the native and torch paths."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.hardware.prepack import available, packed_linear  # noqa: E402
from backend.training.cpu import native  # noqa: E402
from backend.training.cpu.head_loss import head_loss_sum, packed_head  # noqa: E402


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_head_loss_sum_matches_cross_entropy(native_build, rel_error, dtype, tol):
    weight = (torch.randn(500, 32) * 0.3).to(dtype)
    hidden = torch.randn(70, 32).to(dtype)
    targets = torch.randint(0, 500, (70,))
    results = []
    for fn in ("stock", "ours"):
        h = hidden.clone().requires_grad_(True)
        if fn == "stock":
            loss = torch.nn.functional.cross_entropy((h @ weight.t()).float(), targets, reduction="sum")
        else:
            loss = head_loss_sum(h, weight, targets, block_rows=16)  # several blocks, one partial
        (loss / 70).backward()
        results.append((float(loss), h.grad.float()))
    assert abs(results[1][0] - results[0][0]) / results[0][0] < tol
    assert rel_error(results[1][1], results[0][1]) < tol
    with torch.no_grad():
        assert abs(float(head_loss_sum(hidden, weight, targets)) - results[0][0]) / results[0][0] < tol


def test_head_loss_sum_bf16_same_on_native_and_torch_paths(native_build, monkeypatch, rel_error):
    weight = (torch.randn(3000, 48) * 0.3).bfloat16()
    hidden = torch.randn(150, 48).bfloat16()
    targets = torch.randint(0, 3000, (150,))
    results = []
    for native_on in (True, False):
        if not native_on:
            monkeypatch.setattr(native, "kernels", lambda: None)
        h = hidden.clone().requires_grad_(True)
        loss = head_loss_sum(h, weight, targets, block_rows=64)
        loss.backward()
        results.append((float(loss), h.grad.float()))
    assert abs(results[0][0] - results[1][0]) / results[1][0] < 1e-4
    assert rel_error(results[0][1], results[1][1]) < 1e-2


def test_packed_head_equals_the_plain_products_and_follows_in_place_changes(rel_error):
    if not available():
        pytest.skip("this torch build has no oneDNN packed linear")
    weight = (torch.randn(700, 64) * 0.3).bfloat16()
    hidden = torch.randn(20, 64).bfloat16()
    packed = packed_head(weight, 32)
    assert packed_head(weight, 32) is packed  # made once
    assert torch.equal(packed_linear(hidden, packed[0]), hidden @ weight.t())
    probs = torch.randn(20, 700).bfloat16()
    assert rel_error(packed_linear(probs, packed[1]).float(), (probs @ weight).float()) < 1e-2
    with torch.no_grad():
        weight.mul_(2)  # a changed head is packed again
    repacked = packed_head(weight, 32)
    assert repacked is not packed and torch.equal(packed_linear(hidden, repacked[0]), hidden @ weight.t())
    assert packed_head(weight.float(), 32) is None and packed_head(weight.clone().requires_grad_(True), 32) is None


def test_head_loss_sum_trains_a_head_that_is_not_frozen():
    weight = torch.randn(50, 8, requires_grad=True)
    head_loss_sum(torch.randn(5, 8), weight, torch.randint(0, 50, (5,))).backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0
