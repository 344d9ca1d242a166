"""The CPU training kernels (backend/cpu_kernels.py) against the stock modules they
replace: same values and gradients (tight in fp32, bf16 rounding in bf16), and the
stock path wherever a kernel does not apply."""

from __future__ import annotations

import ctypes
import math

import pytest

from backend.bases.resolve import BaseRef

torch = pytest.importorskip("torch")


def folder_ref(path) -> BaseRef:
    return BaseRef(spec=str(path), name=path.name, kind="folder", path=path)


# --- dropout ---------------------------------------------------------------------------------------


def test_drop_positions_are_bernoulli_p_sorted_and_seeded():
    from backend.training.cpu.kernels import drop_positions

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


# --- LoRA linear -----------------------------------------------------------------------------------


def _lora_pair(tiny_llama, dtype, dropout=0.0):
    """Two identical peft models on the tiny Llama: one stock, one with the kernels."""
    from peft import LoraConfig, get_peft_model

    from backend.bases.load import load_model
    from backend.training.cpu.kernels import use_fast_lora_linear

    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(get_peft_model(load_model(folder_ref(tiny_llama), dtype=dtype),
                                     LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                target_modules="all-linear", init_lora_weights=False)))
    assert use_fast_lora_linear(models[1]) > 0
    return models


def _loss_and_grads(model, ids, autocast=False):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return float(loss), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_fast_lora_linear_matches_peft_in_fp32(tiny_llama):
    stock, fast = _lora_pair(tiny_llama, torch.float32)
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    want_loss, want = _loss_and_grads(stock.train(), ids)
    got_loss, got = _loss_and_grads(fast.train(), ids)
    assert abs(got_loss - want_loss) < 1e-5
    assert all(_rel(got[n], want[n]) < 1e-4 for n in want)


def test_fast_lora_linear_under_bf16_autocast_is_as_close_to_fp32_as_peft(tiny_llama):
    """bf16 weights under autocast, against the same model in fp32: the kernels' loss and
    LoRA gradients are no farther from fp32 than stock peft's in bf16 (the native LoRA
    products keep their r-wide sums in fp32, so they are closer)."""
    stock, fast = _lora_pair(tiny_llama, torch.bfloat16)
    reference, _ = _lora_pair(tiny_llama, torch.float32)
    for model in (stock, fast):
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    want_loss, want = _loss_and_grads(reference.train(), ids)
    stock_loss, stock_grads = _loss_and_grads(stock.train(), ids, autocast=True)
    got_loss, got = _loss_and_grads(fast.train(), ids, autocast=True)
    assert abs(got_loss - want_loss) / want_loss < 0.01
    stock_error = max(_rel(stock_grads[n], want[n]) for n in want)
    assert 0 < stock_error < 0.15  # bf16 is not exact, and not far off
    assert max(_rel(got[n], want[n]) for n in want) <= stock_error
    assert all(g.dtype == torch.float32 for g in got.values())


def test_fast_lora_linear_leaves_mixed_batches_and_disabled_adapters_to_peft(tiny_llama):
    stock, fast = _lora_pair(tiny_llama, torch.float32)
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
    from backend.training.cpu.kernels import _lora_linear_function, drop_positions

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 24, dtype=torch.float64, generator=gen).requires_grad_(True)
    weight = torch.randn(40, 24, dtype=torch.float64, generator=gen)
    bias = torch.randn(40, dtype=torch.float64, generator=gen)
    lora_a = torch.randn(4, 24, dtype=torch.float64, generator=gen).requires_grad_(True)
    lora_b = torch.randn(40, 4, dtype=torch.float64, generator=gen).requires_grad_(True)
    grad = torch.randn(3, 11, 40, dtype=torch.float64, generator=gen)
    for p in (0.0, 0.3):
        torch.manual_seed(5)
        out = _lora_linear_function().apply(x, weight, bias, lora_a, lora_b, 2.0, p)
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
def test_lora_linear_function_bf16_dropout_on_every_path(monkeypatch, path):
    """bf16 with dropout: the native LoRA products (mask hashed once, kept as bits for the
    backward pass), the native hashed mask with torch's products (an AVX-512-less build)
    and the torch fallback (drop positions) all give LoRA on the dropped input, against
    an fp32 reference through autograd with the same mask."""
    import backend.training.cpu.kernels as kernels
    from backend.training.cpu import native

    native_on = path != "torch"
    if native_on and native.kernels() is None:
        pytest.skip(f"native kernels not loaded: {native.status()['why']}")
    if path == "native-lora" and not native.kernels().tl_lora_vectorized():
        pytest.skip("the native library was not built for AVX-512 (no LoRA products)")
    if path == "native-dropout":
        monkeypatch.setattr(kernels, "_native_lora", lambda *args: None)
    if not native_on:
        monkeypatch.setattr(kernels, "native_kernels", lambda: None)
    x_rows_used = []
    if path == "native-lora":
        real = kernels._native_lora_forward
        monkeypatch.setattr(kernels, "_native_lora_forward", lambda ctx, lib, x2, *rest: x_rows_used.append(
            x2.shape[0]) or real(ctx, lib, x2, *rest))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 50, 64, generator=gen).bfloat16().requires_grad_(True)
    weight = (torch.randn(96, 64, generator=gen) * 0.1).bfloat16()
    lora_a = (torch.randn(8, 64, generator=gen) * 0.1).requires_grad_(True)
    lora_b = (torch.randn(96, 8, generator=gen) * 0.1).requires_grad_(True)
    grad = torch.randn(4, 50, 96, generator=gen).bfloat16()
    p = 0.2
    torch.manual_seed(7)
    out = kernels._lora_linear_function().apply(x, weight, None, lora_a, lora_b, 2.0, p)
    got = torch.autograd.grad(out, (x, lora_a, lora_b), grad)
    torch.manual_seed(7)
    if native_on:
        mask = torch.empty(x.numel(), dtype=torch.uint8)
        native.kernels().tl_dropout_mask(x.numel(), native.draw_seed(), native.dropout_threshold(p),
                                         ctypes.c_void_p(mask.data_ptr()))
        keep = mask.float()
    else:
        keep = torch.ones(x.numel())
        keep[kernels.drop_positions(x.numel(), p)] = 0
    assert 0.15 < 1 - float(keep.mean()) < 0.25
    xf = x.detach().float().requires_grad_(True)
    af, bf = lora_a.detach().clone().requires_grad_(True), lora_b.detach().clone().requires_grad_(True)
    want_out = xf @ weight.float().t() + (xf * keep.view_as(xf) / (1 - p)) @ af.t() @ bf.t() * 2.0
    want = torch.autograd.grad(want_out, (xf, af, bf), grad.float())
    assert out.dtype is torch.bfloat16 and _rel(out.float(), want_out) < 0.01
    for g, w in zip(got, want):
        assert g.shape == w.shape and _rel(g.float(), w) < 0.02
    assert got[1].dtype is torch.float32 and got[2].dtype is torch.float32  # fp32 LoRA weights' gradients
    assert x_rows_used == ([200] if path == "native-lora" else [])  # the path named is the path taken


def test_fast_lora_linear_trains_with_dropout_and_draws_new_positions_each_call(tiny_llama):
    _, fast = _lora_pair(tiny_llama, torch.float32, dropout=0.5)
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


# --- gated MLP activation ---------------------------------------------------------------------------


def test_silu_mul_matches_the_stock_ops_in_bf16():
    from backend.training.cpu import native
    from backend.training.cpu.kernels import silu_mul

    if native.kernels() is None:
        pytest.skip(f"native kernels not loaded: {native.status()['why']}")
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
        assert torch.isfinite(got).all() and _rel(got, want) < 1e-2
    assert torch.equal(silu_mul(gate.float(), up.float()), torch.nn.functional.silu(gate.float()) * up.float())


def test_fast_silu_mul_is_installed_on_llama_mlps_and_trains_like_peft(tiny_llama):
    from backend.training.cpu.kernels import use_fast_silu_mul

    stock, fast = _lora_pair(tiny_llama, torch.bfloat16)
    assert use_fast_silu_mul(fast) == fast.config.num_hidden_layers
    ids = torch.randint(0, fast.config.vocab_size, (2, 12))
    want_loss, want = _loss_and_grads(stock, ids)
    got_loss, got = _loss_and_grads(fast, ids)
    assert abs(got_loss - want_loss) < 0.02 and all(_rel(got[n], want[n]) < 0.05 for n in want)


# --- RMSNorm ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol,native_on", [(torch.float32, 1e-5, True), (torch.bfloat16, 2e-2, True),
                                                  (torch.bfloat16, 2e-2, False)], ids=["fp32", "bf16-native", "bf16-torch"])
def test_rms_norm_function_matches_llama_rms_norm(monkeypatch, dtype, tol, native_on):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    import backend.training.cpu.kernels as kernels
    from backend.training.cpu import native
    from backend.training.cpu.kernels import use_fast_rms_norm

    loaded = []  # native libraries handed out: only to bf16 inputs, and only when on
    monkeypatch.setattr(kernels, "native_kernels", lambda: loaded.append(native.kernels()) or loaded[-1]
                        if native_on else None)

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
    assert outs[1].dtype == torch.float32 and _rel(outs[1], outs[0]) < tol
    assert _rel(grads[1], grads[0]) < tol
    assert bool(loaded) == (native_on and dtype is torch.bfloat16)
    fast.weight.requires_grad_(True)  # a trained norm weight: the stock forward runs
    assert fast(x.clone().requires_grad_(True)).grad_fn.name() != "RMSNormFunctionBackward"


# --- attention -------------------------------------------------------------------------------------


def _llama(tiny_llama, attention):
    from backend.bases.load import load_model
    from backend.training.cpu.kernels import use_causal_attention

    model = load_model(folder_ref(tiny_llama), dtype=torch.float32).train()
    if attention == "ours":
        assert use_causal_attention(model)
    else:
        model.set_attn_implementation(attention)
    return model


@pytest.mark.parametrize("side", ["right", "left", "none"])
def test_causal_attention_matches_eager_on_real_tokens(tiny_llama, side):
    ids = torch.randint(3, 300, (3, 12), generator=torch.Generator().manual_seed(5))
    attention = torch.ones_like(ids)
    if side == "right":
        attention[1, 8:] = 0
        attention[2, 5:] = 0
    elif side == "left":
        attention[1, :4] = 0
    results = []
    for kind in ("eager", "ours"):
        model = _llama(tiny_llama, kind)
        out = model(input_ids=ids, attention_mask=attention).logits
        (out * attention[..., None]).square().sum().backward()
        results.append((out.detach(), next(model.model.layers[0].self_attn.q_proj.parameters()).grad))
    real = attention.bool()
    assert torch.allclose(results[1][0][real], results[0][0][real], atol=1e-4)
    assert _rel(results[1][1], results[0][1]) < 1e-4


def test_causal_attention_generates_like_eager(tiny_llama):
    ids = torch.randint(3, 300, (1, 6), generator=torch.Generator().manual_seed(9))
    outs = []
    for kind in ("eager", "ours"):
        model = _llama(tiny_llama, kind).eval()
        outs.append(model.generate(input_ids=ids, max_new_tokens=6, do_sample=False))
    assert torch.equal(outs[0], outs[1])


# --- LM head + cross-entropy -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_head_loss_sum_matches_cross_entropy(dtype, tol):
    from backend.training.cpu.kernels import head_loss_sum

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
    assert _rel(results[1][1], results[0][1]) < tol
    with torch.no_grad():
        assert abs(float(head_loss_sum(hidden, weight, targets)) - results[0][0]) / results[0][0] < tol


def test_head_loss_sum_bf16_same_on_native_and_torch_paths(monkeypatch):
    import backend.training.cpu.kernels as kernels

    weight = (torch.randn(3000, 48) * 0.3).bfloat16()
    hidden = torch.randn(150, 48).bfloat16()
    targets = torch.randint(0, 3000, (150,))
    results = []
    for native_on in (True, False):
        if not native_on:
            monkeypatch.setattr(kernels, "native_kernels", lambda: None)
        h = hidden.clone().requires_grad_(True)
        loss = kernels.head_loss_sum(h, weight, targets, block_rows=64)
        loss.backward()
        results.append((float(loss), h.grad.float()))
    assert abs(results[0][0] - results[1][0]) / results[1][0] < 1e-4
    assert _rel(results[0][1], results[1][1]) < 1e-2


def test_packed_head_equals_the_plain_products_and_follows_in_place_changes():
    from backend.training.cpu.kernels import _packed_head
    from backend.hardware.prepack import available, packed_linear

    if not available():
        pytest.skip("this torch build has no oneDNN packed linear")
    weight = (torch.randn(700, 64) * 0.3).bfloat16()
    hidden = torch.randn(20, 64).bfloat16()
    packed = _packed_head(weight, 32)
    assert _packed_head(weight, 32) is packed  # made once
    assert torch.equal(packed_linear(hidden, packed[0]), hidden @ weight.t())
    probs = torch.randn(20, 700).bfloat16()
    assert _rel(packed_linear(probs, packed[1]).float(), (probs @ weight).float()) < 1e-2
    with torch.no_grad():
        weight.mul_(2)  # a changed head is packed again
    repacked = _packed_head(weight, 32)
    assert repacked is not packed and torch.equal(packed_linear(hidden, repacked[0]), hidden @ weight.t())
    assert _packed_head(weight.float(), 32) is None and _packed_head(weight.clone().requires_grad_(True), 32) is None


def test_head_loss_sum_trains_a_head_that_is_not_frozen():
    from backend.training.cpu.kernels import head_loss_sum

    weight = torch.randn(50, 8, requires_grad=True)
    head_loss_sum(torch.randn(5, 8), weight, torch.randint(0, 50, (5,))).backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0


def test_keep_freed_memory_on_glibc():
    import platform

    from backend.training.cpu.kernels import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


def test_hugepage_malloc_env_adds_the_tunable_once_and_keeps_others():
    from backend.training.cpu.kernels import HUGEPAGE_TUNABLE, hugepage_malloc_env

    assert hugepage_malloc_env({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": HUGEPAGE_TUNABLE}
    both = hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert both["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGEPAGE_TUNABLE}"
    assert hugepage_malloc_env(both) == both
    assert hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.hugetlb=0"  # a person's own choice stays


def test_tune_for_device_installs_the_kernels_on_cpu_only(tiny_llama):
    from peft import LoraConfig, get_peft_model

    from backend.bases.load import load_model
    from backend.training.cpu.kernels import lora_linear_forward
    from backend.training.run import tune_for_device

    def peft_model():
        return get_peft_model(load_model(folder_ref(tiny_llama)), LoraConfig(r=4, target_modules="all-linear"))

    gpu, cpu = peft_model(), peft_model()
    tune_for_device(gpu, device="cuda", precision="bf16")  # a GPU run keeps peft's and transformers' forwards
    tune_for_device(cpu, device="cpu", precision="fp32")
    for model, fast in ((gpu, False), (cpu, True)):
        layer = model.base_model.model.model.layers[0]
        forward = vars(layer.self_attn.q_proj).get("forward")
        assert (forward is not None and forward.__func__ is lora_linear_forward) is fast
        assert ("forward" in vars(layer.input_layernorm)) is fast
