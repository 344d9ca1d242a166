"""tune_for_device (backend/training/cpu/tuning.py): the CPU speed-ups go on a CPU run
only, train only the fp32 LoRA weights, follow the native_kernels setting, and keep
the loss what it was."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backend.training.cpu import native  # noqa: E402
from backend.training.cpu.lora import lora_linear_forward  # noqa: E402
from backend.training.cpu.native import NativeBuild  # noqa: E402
from backend.training.cpu.tuning import tune_for_device  # noqa: E402


def test_tune_for_device_installs_the_kernels_on_cpu_only(tiny_peft):
    gpu, cpu = tiny_peft(torch.float32), tiny_peft(torch.float32)
    assert tune_for_device(gpu, device="cuda", precision="bf16") == {}  # peft's and transformers' forwards stay
    installed = tune_for_device(cpu, device="cpu", precision="fp32")
    assert installed["lora_linear"] > 0 and installed["rms_norm"] > 0 and installed["attention"] is True
    for model, fast in ((gpu, False), (cpu, True)):
        layer = model.base_model.model.model.layers[0]
        forward = vars(layer.self_attn.q_proj).get("forward")
        assert (forward is not None and forward.__func__ is lora_linear_forward) is fast
        assert ("forward" in vars(layer.input_layernorm)) is fast
        assert any(type(m).__name__ == "FastDropout" for m in model.modules()) is fast


def test_the_native_kernels_follow_the_setting_handed_down(tiny_peft, native_build, tmp_path):
    try:
        off = tune_for_device(tiny_peft(torch.float32), device="cpu", precision="fp32",
                              native_build=NativeBuild(enabled=False, cache_dir=tmp_path))
        assert off["native_kernels"] is False and native.kernels() is None
        assert native.status()["why"] == native.TURNED_OFF and not list(tmp_path.iterdir())
        on = tune_for_device(tiny_peft(torch.float32), device="cpu", precision="fp32", native_build=native_build)
        assert on["native_kernels"] is (native.kernels() is not None) and native.status()["loaded"] is on["native_kernels"]
    finally:
        native.use(native_build)


def test_bf16_base_trains_fp32_lora_only_and_matches_fp32_loss(tiny_peft, answer_only_loss, native_build):
    """bf16 forced (it runs, more slowly, on a CPU without bf16 units too)."""
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(2))
    attention = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :6] = -100
    reference = tiny_peft(torch.float32).eval()
    want = float(reference(input_ids=ids, attention_mask=attention, labels=labels).loss)

    model = tiny_peft(torch.bfloat16)
    tune_for_device(model, device="cpu", precision="bf16")
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and p.dtype == torch.float32 for n, p in trained.items())
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if not p.requires_grad)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = answer_only_loss(model, ids, attention, labels)
    assert abs(float(got) - want) / want < 0.03, (float(got), want)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        answer_only_loss(model, ids, attention, labels).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
