"""The fast LoRA linear (backend/training/cpu/lora.py) against peft's: same values and
gradients (tight in fp32, bf16 rounding in bf16), on every path (native LoRA products,
native dropout with torch's products, torch only), and peft's forward wherever it
does not apply."""

from __future__ import annotations

import ctypes

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu import lora, native  # noqa: E402
from backend.training.cpu.dropout import draw_seed, drop_positions  # noqa: E402
from backend.training.cpu.lora import LoraLinearFunction  # noqa: E402

pytestmark = pytest.mark.usefixtures("native_build")  # the kernels in use, as a run with the setting on


def test_fast_lora_linear_matches_peft_in_fp32(lora_pair, loss_and_grads, rel_error):
    stock, fast = lora_pair(torch.float32)
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    want_loss, want = loss_and_grads(stock.train(), ids)
    got_loss, got = loss_and_grads(fast.train(), ids)
    assert abs(got_loss - want_loss) < 1e-5
    assert all(rel_error(got[n], want[n]) < 1e-4 for n in want)


def test_fast_lora_linear_under_bf16_autocast_is_as_close_to_fp32_as_peft(lora_pair, loss_and_grads, rel_error):
    """bf16 weights under autocast, against the same model in fp32: the kernels' loss and
    LoRA gradients are no farther from fp32 than stock peft's in bf16 (the native LoRA
    products keep their r-wide sums in fp32, so they are closer)."""
    stock, fast = lora_pair(torch.bfloat16)
    reference, _ = lora_pair(torch.float32)
    for model in (stock, fast):
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    want_loss, want = loss_and_grads(reference.train(), ids)
    stock_loss, stock_grads = loss_and_grads(stock.train(), ids, autocast=True)
    got_loss, got = loss_and_grads(fast.train(), ids, autocast=True)
    assert abs(got_loss - want_loss) / want_loss < 0.01
    stock_error = max(rel_error(stock_grads[n], want[n]) for n in want)
    assert 0 < stock_error < 0.15  # bf16 is not exact, and not far off
    assert max(rel_error(got[n], want[n]) for n in want) <= stock_error
    assert all(g.dtype == torch.float32 for g in got.values())


def test_fast_lora_linear_leaves_mixed_batches_and_disabled_adapters_to_peft(lora_pair):
    stock, fast = lora_pair(torch.float32)
    ids = torch.randint(3, 300, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mixed = [m(input_ids=ids, adapter_names=["default", "__base__"]).logits for m in (stock.eval(), fast.eval())]
        assert torch.allclose(mixed[0], mixed[1], atol=1e-5)
        with fast.disable_adapter():
            off = fast(input_ids=ids).logits
        with stock.disable_adapter():
            assert torch.allclose(off, stock(input_ids=ids).logits, atol=1e-6)


def test_lora_linear_function_with_dropout_is_lora_on_the_dropped_input():
    """Values and all three gradients against autograd through the reference formula,
    in float64, with the drop positions drawn from the same generator state."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 24, dtype=torch.float64, generator=gen).requires_grad_(True)
    weight = torch.randn(40, 24, dtype=torch.float64, generator=gen)
    bias = torch.randn(40, dtype=torch.float64, generator=gen)
    lora_a = torch.randn(4, 24, dtype=torch.float64, generator=gen).requires_grad_(True)
    lora_b = torch.randn(40, 4, dtype=torch.float64, generator=gen).requires_grad_(True)
    grad = torch.randn(3, 11, 40, dtype=torch.float64, generator=gen)
    for p in (0.0, 0.3):
        torch.manual_seed(5)
        out = LoraLinearFunction.apply(x, weight, bias, lora_a, lora_b, 2.0, p)
        got = torch.autograd.grad(out, (x, lora_a, lora_b), grad)
        torch.manual_seed(5)
        keep = torch.ones(x.numel(), dtype=torch.float64)
        if p:
            keep[drop_positions(x.numel(), p)] = 0
            assert 0.2 < 1 - float(keep.mean()) < 0.4
        dropped = x * keep.view_as(x) / (1 - p)
        want_out = x @ weight.t() + bias + (dropped @ lora_a.t() @ lora_b.t()) * 2.0
        want = torch.autograd.grad(want_out, (x, lora_a, lora_b), grad)
        assert torch.allclose(out, want_out, atol=1e-12)
        for g, w in zip(got, want):
            assert g.shape == w.shape and torch.allclose(g, w, atol=1e-10)


@pytest.mark.parametrize("path", ["native-lora", "native-dropout", "torch"])
def test_lora_linear_function_bf16_dropout_on_every_path(monkeypatch, rel_error, path):
    """bf16 with dropout: the native LoRA products (mask hashed once, kept as bits for the
    backward pass), the native hashed mask with torch's products (an AVX-512-less build)
    and the torch fallback (drop positions) all give LoRA on the dropped input, against
    an fp32 reference through autograd with the same mask."""
    native_on = path != "torch"
    if native_on and native.kernels() is None:
        pytest.skip(f"native kernels not loaded: {native.status()['why']}")
    if path == "native-lora" and not native.kernels().tl_lora_vectorized():
        pytest.skip("the native library was not built for AVX-512 (no LoRA products)")
    lib = native.kernels()
    if path == "native-dropout":
        monkeypatch.setattr(lora, "_native_lora", lambda *args: None)
    if not native_on:
        monkeypatch.setattr(native, "kernels", lambda: None)
    x_rows_used = []
    if path == "native-lora":
        real = lora._native_lora_forward
        monkeypatch.setattr(lora, "_native_lora_forward", lambda ctx, lib, x2, *rest: x_rows_used.append(
            x2.shape[0]) or real(ctx, lib, x2, *rest))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 50, 64, generator=gen).bfloat16().requires_grad_(True)
    weight = (torch.randn(96, 64, generator=gen) * 0.1).bfloat16()
    lora_a = (torch.randn(8, 64, generator=gen) * 0.1).requires_grad_(True)
    lora_b = (torch.randn(96, 8, generator=gen) * 0.1).requires_grad_(True)
    grad = torch.randn(4, 50, 96, generator=gen).bfloat16()
    p = 0.2
    torch.manual_seed(7)
    out = LoraLinearFunction.apply(x, weight, None, lora_a, lora_b, 2.0, p)
    got = torch.autograd.grad(out, (x, lora_a, lora_b), grad)
    torch.manual_seed(7)
    if native_on:
        mask = torch.empty(x.numel(), dtype=torch.uint8)
        lib.tl_dropout_mask(x.numel(), draw_seed(), native.dropout_threshold(p), ctypes.c_void_p(mask.data_ptr()))
        keep = mask.float()
    else:
        keep = torch.ones(x.numel())
        keep[drop_positions(x.numel(), p)] = 0
    assert 0.15 < 1 - float(keep.mean()) < 0.25
    xf = x.detach().float().requires_grad_(True)
    af, bf = lora_a.detach().clone().requires_grad_(True), lora_b.detach().clone().requires_grad_(True)
    want_out = xf @ weight.float().t() + (xf * keep.view_as(xf) / (1 - p)) @ af.t() @ bf.t() * 2.0
    want = torch.autograd.grad(want_out, (xf, af, bf), grad.float())
    assert out.dtype is torch.bfloat16 and rel_error(out.float(), want_out) < 0.01
    for g, w in zip(got, want):
        assert g.shape == w.shape and rel_error(g.float(), w) < 0.02
    assert got[1].dtype is torch.float32 and got[2].dtype is torch.float32  # fp32 LoRA weights' gradients
    assert x_rows_used == ([200] if path == "native-lora" else [])  # the path named is the path taken


def test_fast_lora_linear_trains_with_dropout_and_draws_new_positions_each_call(lora_pair):
    _, fast = lora_pair(torch.float32, dropout=0.5)
    layer = fast.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 5, layer.in_features)
    plain = layer.base_layer(x) + layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]
    layer.train()
    first, second = layer(x), layer(x)
    assert not torch.allclose(first, second)  # fresh positions per call
    assert not torch.allclose(first, plain)
    assert torch.allclose(layer.eval()(x), plain, atol=1e-5)  # no dropout in eval mode
    loss = layer.train()(x).square().sum()
    loss.backward()
    assert layer.lora_A["default"].weight.grad is not None and layer.base_layer.weight.grad is None
