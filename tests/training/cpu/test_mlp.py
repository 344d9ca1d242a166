"""The gated MLP's SiLU-mul (backend/training/cpu/mlp.py) against the stock ops."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu.mlp import silu_mul, use_fast_silu_mul  # noqa: E402


def test_silu_mul_matches_the_stock_ops_in_bf16(native_lib, rel_error):
    gen = torch.Generator().manual_seed(4)
    gate = (torch.randn(6, 33, 80, generator=gen) * 4).bfloat16()
    gate.view(-1)[:4] = torch.tensor([0.0, -100.0, 100.0, -3.0])  # zero, saturated both ways
    up = torch.randn(6, 33, 80, generator=gen).bfloat16()
    grad = torch.randn(6, 33, 80, generator=gen).bfloat16()
    results = []
    for fn in (silu_mul, lambda g, u: torch.nn.functional.silu(g.float()) * u.float()):
        g, u = gate.clone().requires_grad_(True), up.clone().requires_grad_(True)
        out = fn(g, u)
        results.append((out.float(), *(t.float() for t in torch.autograd.grad(out, (g, u), grad.to(out.dtype)))))
    native_out = silu_mul(gate.requires_grad_(True), up)
    assert native_out.dtype is torch.bfloat16 and type(native_out.grad_fn).__name__ == "SiluMulFunctionBackward"
    for got, want in zip(results[0], results[1]):
        assert torch.isfinite(got).all() and rel_error(got, want) < 1e-2
    assert torch.equal(silu_mul(gate.float(), up.float()), torch.nn.functional.silu(gate.float()) * up.float())


def test_fast_silu_mul_is_installed_on_llama_mlps_and_trains_like_peft(native_build, lora_pair, loss_and_grads,
                                                                       rel_error):
    stock, fast = lora_pair(torch.bfloat16)
    assert use_fast_silu_mul(fast) == fast.config.num_hidden_layers
    ids = torch.randint(0, fast.config.vocab_size, (2, 12))
    want_loss, want = loss_and_grads(stock, ids)
    got_loss, got = loss_and_grads(fast, ids)
    assert abs(got_loss - want_loss) < 0.02 and all(rel_error(got[n], want[n]) < 0.05 for n in want)
