"""One LoRA run (backend/train.py) in-process, on the tiny Llama; the real default
base only under ``-m slow``. Runs through the job runner live in test_jobs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.adapter_folder import ADAPTER_FILES, read_meta
from backend.bases.resolve import BaseRef, resolve_base
from backend.errors import ConfigError
from backend.hparams import RunSpec
from backend.training.plan import make_sweep, suggest_sweep
from backend.training.run import (
    AdapterExists,
    LengthBatchSampler,
    TrainingCancelled,
    train_adapter,
    write_adapter_folder,
)
from tests.builders import folder_ref, make_earlier_adapter, snapshot, tiny_spec, write_color_data

# --- data ---------------------------------------------------------------------------------


def test_length_batches_are_homogeneous_and_cover_everything():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53]
    sampler = LengthBatchSampler(lengths, batch_size=4, seed=0)
    order = list(iter(sampler))
    assert sorted(order) == list(range(8))
    batches = [sorted(lengths[i] for i in order[k:k + 4]) for k in (0, 4)]
    assert sorted(batches) == [[5, 6, 7, 8], [50, 51, 52, 53]]
    sampler.set_epoch(1)
    assert sorted(iter(sampler)) == list(range(8))


# --- sweeps ----------------------------------------------------------------------------------


def test_sweep_varies_one_knob_at_a_time():
    base = RunSpec(name="autumn")
    specs = make_sweep(base, epochs=[2], learning_rate=[1e-4], r=[16])
    assert [s.name for s in specs] == ["autumn", "autumn-e2", "autumn-lr1e-4", "autumn-r16"]
    assert specs[1].train.epochs == 2 and specs[1].lora == base.lora
    assert specs[2].train.learning_rate == 1e-4 and specs[2].train.epochs == base.train.epochs
    assert specs[3].lora.r == 16 and specs[3].lora.alpha / specs[3].lora.r == base.lora.alpha / base.lora.r
    assert make_sweep(base, epochs=[base.train.epochs]) == [base]
    with pytest.raises(ConfigError, match="at most 5"):
        make_sweep(base, epochs=[1, 2, 4, 5, 6])


def test_suggested_sweep_gives_tiny_data_more_epochs():
    small, large = suggest_sweep(20), suggest_sweep(20000)
    assert 1 <= len(small) + 1 <= 5 and 1 <= len(large) + 1 <= 5
    most_epochs = lambda vs: max((v["epochs"] for v in vs if "epochs" in v), default=0)  # noqa: E731
    assert most_epochs(small) > most_epochs(large)
    assert all(len(make_sweep(RunSpec(name="x"), **{k: [v] for k, v in var.items()})) == 2 for var in small)


# --- a run -------------------------------------------------------------------------------


def test_cancel_writes_nothing(tiny_llama, settings, tmp_path):
    data = write_color_data(tmp_path / "data")
    out = settings.paths.ensure().adapters / "stopped"
    seen = []
    with pytest.raises(TrainingCancelled, match="cancelled at step 1"):
        train_adapter(tiny_spec("stopped", tiny_llama, epochs=20), base_ref=folder_ref(tiny_llama),
                      train_file=data, eval_file=None, out_dir=out, work_dir=tmp_path / "work",
                      on_progress=seen.append, should_stop=lambda: True)
    assert not out.exists()
    assert [p.name for p in settings.paths.adapters.iterdir()] == []  # no temp folder left either
    assert seen and seen[0]["step"] == 0 and seen[0]["total_steps"] > 1


def test_existing_adapter_refused_up_front(tiny_llama, settings, tmp_path):
    earlier = make_earlier_adapter(settings, tiny_llama, "taken")
    before = snapshot(earlier)
    with pytest.raises(AdapterExists, match="'taken' already exists"):
        train_adapter(tiny_spec("taken", tiny_llama), base_ref=folder_ref(tiny_llama),
                      train_file=write_color_data(tmp_path), eval_file=None, out_dir=earlier,
                      work_dir=tmp_path / "work")
    assert snapshot(earlier) == before
    assert sorted(before) == sorted(ADAPTER_FILES)


@pytest.mark.slow
def test_real_default_base_trains_a_few_steps(settings, tmp_path):
    """The real provisioning path (downloads/converts SmolLM2 once into the home)."""
    from peft import PeftModel

    from backend.bases.load import load_model

    ref = resolve_base("default", settings)
    data = write_color_data(tmp_path / "data", n=8)
    out = settings.paths.ensure().adapters / "smol"
    spec = RunSpec(name="smol", train={"epochs": 1, "batch_size": 4, "max_length": 64, "eval_fraction": 0})
    steps = []
    meta = train_adapter(spec, base_ref=ref, train_file=data, eval_file=None, out_dir=out,
                         work_dir=tmp_path / "work", on_progress=steps.append)
    assert sorted(p.name for p in out.iterdir()) == sorted(ADAPTER_FILES)
    assert meta["metrics"]["steps"] == 2 and meta["base"]["name"] == "SmolLM2-135M-Instruct"
    assert read_meta(out)["status"] == "done"
    assert PeftModel.from_pretrained(load_model(ref), out) is not None
    assert [s["step"] for s in steps if s.get("loss") is not None] == [1, 2]


# --- the CPU speed-ups keep the loss what it was -------------------------------------------------


def test_fast_dropout_drops_at_rate_p_and_keeps_the_mean():
    import torch

    from backend.training.run import fast_dropout_class

    drop = fast_dropout_class()(0.05)
    x = torch.ones(64, 4096, requires_grad=True)
    y = drop(x)
    dropped = float((y.detach() == 0).float().mean())
    assert 0.045 < dropped < 0.055
    assert abs(float(y.detach().mean()) - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient is the same mask and scale
    assert torch.equal(drop.eval()(x), x)


def _tiny_peft(tiny_llama, dtype):
    import torch
    from peft import LoraConfig, get_peft_model

    from backend.bases.load import load_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(folder_ref(tiny_llama), dtype=dtype),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear",
                                      init_lora_weights=False))
    return model


def _answer_only_loss(model, ids, attention, labels):
    import torch

    from backend.bases.load import decoder_of

    hidden = decoder_of(model)(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    mask = targets != -100
    logits = model.get_output_embeddings()(hidden[mask]).float()
    return torch.nn.functional.cross_entropy(logits, targets[mask])


def test_answer_only_head_on_the_decoder_equals_the_full_model_loss(tiny_llama):
    import torch

    from backend.training.run import tune_for_device

    model = _tiny_peft(tiny_llama, torch.float32)
    tune_for_device(model, device="cpu", precision="fp32")
    assert sum(type(m).__name__ == "FastDropout" for m in model.modules()) > 0
    model.eval()
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    labels = ids.clone()
    labels[:, :6] = -100
    labels[1, 9:] = -100
    ours = _answer_only_loss(model, ids, attention, labels)
    full = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    assert torch.allclose(ours, full, atol=1e-5), (float(ours), float(full))


def test_bf16_base_trains_fp32_lora_only_and_matches_fp32_loss(tiny_llama):
    import torch

    from backend.training.run import tune_for_device

    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(2))
    attention = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :6] = -100
    reference = _tiny_peft(tiny_llama, torch.float32).eval()
    want = float(reference(input_ids=ids, attention_mask=attention, labels=labels).loss)

    model = _tiny_peft(tiny_llama, torch.bfloat16)
    tune_for_device(model, device="cpu", precision="bf16")
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and p.dtype == torch.float32 for n, p in trained.items())
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if not p.requires_grad)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _answer_only_loss(model, ids, attention, labels)
    assert abs(float(got) - want) / want < 0.03, (float(got), want)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _answer_only_loss(model, ids, attention, labels).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
