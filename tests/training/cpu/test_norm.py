"""RMSNorm with a hand-written backward (backend/training/cpu/norm.py) against LlamaRMSNorm."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu import native  # noqa: E402
from backend.training.cpu.norm import use_fast_rms_norm  # noqa: E402


@pytest.mark.parametrize("dtype,tol,native_on", [(torch.float32, 1e-5, True), (torch.bfloat16, 2e-2, True),
                                                  (torch.bfloat16, 2e-2, False)], ids=["fp32", "bf16-native", "bf16-torch"])
def test_rms_norm_function_matches_llama_rms_norm(monkeypatch, native_build, rel_error, dtype, tol, native_on):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    real = native.kernels
    loaded = []  # native libraries handed out: only to bf16 inputs, and only when on
    monkeypatch.setattr(native, "kernels", lambda: loaded.append(real()) or loaded[-1] if native_on else None)

    stock = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    stock.weight.data = torch.rand(48, dtype=dtype) + 0.5
    stock.weight.requires_grad_(False)
    fast = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    fast.load_state_dict(stock.state_dict())
    fast.weight.requires_grad_(False)
    assert use_fast_rms_norm(fast) == 1
    x = (torch.randn(4, 7, 48) * 3).to(dtype)
    grad = torch.randn(4, 7, 48).to(dtype)
    outs, grads = [], []
    for norm in (stock, fast):
        xi = x.clone().requires_grad_(True)
        out = norm(xi)
        out.backward(grad)
        outs.append(out.float())
        grads.append(xi.grad.float())
    assert outs[1].dtype == torch.float32 and rel_error(outs[1], outs[0]) < tol
    assert rel_error(grads[1], grads[0]) < tol
    assert bool(loaded) == (native_on and dtype is torch.bfloat16)
    fast.weight.requires_grad_(True)  # a trained norm weight: the stock forward runs
    assert fast(x.clone().requires_grad_(True)).grad_fn.name() != "RMSNormFunctionBackward"
