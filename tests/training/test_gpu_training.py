"""Training on a CUDA GPU (issue 19), marked ``gpu``: skipped with the reason on a machine
without one (tests/conftest.py), run on a lent GPU machine by bench/gpu_device.sh.

A Llama built from a config (4 layers, hidden 512, random weights; throughput and memory do
not depend on the weights' values) and the tiny tokenizer, so nothing comes from the hub:
a bf16 run with the device's recipe, a 4-bit QLoRA run whose adapter loads on the bf16
base, two DDP ranks when two GPUs are visible, the inspector's memory estimate against
torch's measured peak, and padding-free rows through PyTorch's varlen kernel
(backend/training/packed_attention.py) against one SDPA call per example."""

from __future__ import annotations

import json
import random

import pytest

from backend.adapter_folder import read_meta
from tests.builders import assert_same_forward_and_backward, folder_ref, plain_peft, tiny_spec, write_color_data
from tests.tiny_model import CORPUS, make_tiny_llama

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("gpu-llama") / "model", layers=4, hidden=512, max_positions=1024)


def _train(base, root, name, **train):
    from backend.training.run import train_adapter

    data = write_color_data(root / "data")
    spec = tiny_spec(name, base, eval_fraction=0.0, early_stopping=False, **train)
    return train_adapter(spec, base_ref=folder_ref(base), train_file=data, eval_file=None,
                         out_dir=root / "adapters" / name, work_dir=root / f"work-{name}")


def test_a_bf16_training_step_on_cuda_with_the_devices_recipe(gpu_llama, tmp_path):
    import torch

    meta = _train(gpu_llama, tmp_path, "bf16", epochs=2, batch_size=4, max_length=128)
    metrics = meta["metrics"]
    recipe = metrics["recipe"]
    assert metrics["device"] == "cuda" and metrics["processes"] == 1
    assert recipe["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert recipe["attention"] in ("packed_sdpa", "flash_attention_2") and recipe["padding_free"]
    assert not recipe["cpu_machinery"] and not recipe["gradient_checkpointing"]  # a small base fits
    losses = [h["loss"] for h in meta["loss_history"] if h["loss"] is not None]
    assert all(map(lambda x: x == x and x < 100, losses)) and losses[-1] < losses[0]
    model = plain_peft(gpu_llama, tmp_path / "adapters" / "bf16", torch.bfloat16, "cuda")
    ids = torch.tensor([[1, 5, 9, 12]], device="cuda")
    assert torch.isfinite(model(input_ids=ids).logits).all()



def test_packed_rows_on_cuda_take_the_varlen_kernel_and_match_one_call_per_example():
    """The recipe's attention for padding-free rows without flash_attn: PyTorch's varlen flash
    kernel for the whole row, the same outputs and gradients (bf16 tolerance) as one SDPA call
    per example, and GQA (8 query heads over 2 key/value heads)."""
    import torch

    from backend.training.packed_attention import _per_example, _varlen, packed_attention

    if _varlen() is None:
        pytest.skip(f"torch {torch.__version__} has no torch.nn.attention.varlen.varlen_attn of the form used")

    class Layer(torch.nn.Module):
        num_key_value_groups, is_causal = 4, True

    layer = Layer()
    g = torch.Generator(device="cuda").manual_seed(0)
    lengths = [300, 17, 1024, 211]
    total = sum(lengths)
    q, k, v = (torch.randn(1, h, total, 64, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
               for h in (8, 2, 2))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    out, _ = packed_attention(layer, q, k, v, None, scaling=0.125, cu_seq_lens_q=cu, max_length_q=max(lengths))
    assert not getattr(layer, "_tunelab_varlen_failed", False), "the varlen kernel failed; per example was used"
    ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = _per_example(layer, *ref_inputs, [0, *torch.tensor(lengths).cumsum(0).tolist()], 0.0, 0.125, {})
    assert_same_forward_and_backward(out, ref, (q, k, v), ref_inputs, tol=2e-2, grad_tol=5e-2)


def test_a_4bit_qlora_run_whose_adapter_serves_on_the_bf16_base(gpu_llama, tmp_path):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install bitsandbytes)")
    import torch

    meta = _train(gpu_llama, tmp_path, "q4", epochs=2, batch_size=4, max_length=128, quantize="4bit")
    assert meta["metrics"]["recipe"]["quantize"] == "4bit" and meta["hyperparameters"]["train"]["quantize"] == "4bit"
    folder = tmp_path / "adapters" / "q4"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"]  # an ordinary PEFT folder
    model = plain_peft(gpu_llama, folder, torch.bfloat16, "cuda")  # the unquantized base
    ids = torch.tensor([[1, 5, 9, 12]], device="cuda")
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert torch.isfinite(tuned).all() and not torch.equal(tuned, plain)  # it loads, and it changes the answer
    assert not any(p.dtype == torch.uint8 for p in model.parameters())  # no 4-bit weight came with it


def test_two_ddp_processes_on_two_gpus(gpu_llama, settings):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two GPUs; {torch.cuda.device_count()} visible")
    from backend.training.jobs import JobRunner

    runner = JobRunner(settings, poll_s=0.2)
    try:
        data = write_color_data(settings.home / "data")
        job_id = runner.submit(tiny_spec("ddp", gpu_llama, epochs=2, batch_size=4, processes=2,
                                         early_stopping=False), data)
        runner.run_pending()
        job = runner.store.get_job(job_id)
        assert job.status == "done", job.error
    finally:
        runner.close()
    metrics = read_meta(settings.paths.adapters / "ddp")["metrics"]
    assert metrics["processes"] == 2 and metrics["device"] == "cuda" and metrics["recipe"]["per_device_batch"] == 2


def test_the_memory_estimate_is_within_20_percent_of_the_measured_peak(gpu_llama, tmp_path):
    import torch

    from backend.bases.inspect import inspect_base
    from backend.hparams import LoraSpec
    from backend.training.recipe import training_bytes
    from backend.training.run import train_adapter

    # rows longer than max_length, cut to it: every step is batch x max_length tokens, as the estimate assumes
    words = " ".join(CORPUS).split()
    rng = random.Random(0)
    rows = [{"messages": [{"role": "user", "content": f"write {i}"},
                          {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(400))}]}
            for i in range(16)]
    data = tmp_path / "long.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    batch, length = 8, 512
    spec = tiny_spec("mem", gpu_llama, epochs=1, batch_size=batch, max_length=length, eval_fraction=0.0,
                     early_stopping=False)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    meta = train_adapter(spec, base_ref=folder_ref(gpu_llama), train_file=data, eval_file=None,
                         out_dir=tmp_path / "adapters" / "mem", work_dir=tmp_path / "work")
    measured = torch.cuda.max_memory_allocated() - before
    recipe = meta["metrics"]["recipe"]
    assert meta["metrics"]["train_tokens"] == meta["metrics"]["steps"] * batch * length  # full rows, no padding
    report = inspect_base(str(gpu_llama) + "/config.json", lora=LoraSpec(**meta["hyperparameters"]["lora"]))
    estimate = training_bytes(report, batch=recipe["per_device_batch"], seq_len=length,
                              checkpointing=recipe["gradient_checkpointing"], precision=recipe["precision"],
                              packed=recipe["padding_free"] and recipe["attention"] == "sdpa")
    assert abs(estimate - measured) <= 0.2 * measured, \
        f"estimate {estimate / 2**20:.0f} MiB vs measured peak {measured / 2**20:.0f} MiB"


FSDP_DRIVER = """
import sys
from pathlib import Path

sys.path.insert(0, {root!r})
from backend.training.recipe import Recipe
from backend.training.run import train_adapter
from tests.builders import folder_ref, tiny_spec, write_color_data

root = Path({work!r})
spec = tiny_spec("fsdp", {base!r}, epochs=2, batch_size=4, processes=2, eval_fraction=0.0, early_stopping=False)
recipe = Recipe(device="cuda", precision="bf16", attention="sdpa", padding_free=True, gradient_checkpointing=False,
                per_device_batch=2, accumulation=1, cpu_machinery=False, quantize=None, processes=2, strategy="fsdp")
train_adapter(spec, base_ref=folder_ref({base!r}), train_file=write_color_data(root / "data"), eval_file=None,
              out_dir=root / "adapters" / "fsdp", work_dir=root / "work", recipe=recipe)
"""


def test_fsdp_over_two_gpus_writes_one_plain_peft_adapter(gpu_llama, tmp_path):
    """FSDP forced on the small base (the recipe picks it for a base that does not fit one GPU):
    two ranks under accelerate launch, the full LoRA weights gathered and written by the main
    process only, loadable by plain peft on the bf16 base."""
    import subprocess
    import sys

    import torch

    from tests.conftest import REPO_ROOT

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two GPUs; {torch.cuda.device_count()} visible")
    from backend.training.launch import worker_command

    driver = tmp_path / "driver.py"
    driver.write_text(FSDP_DRIVER.format(root=str(REPO_ROOT), work=str(tmp_path), base=str(gpu_llama)))
    launch = worker_command(sys.executable, 0, processes=2)[:-3] + [str(driver)]  # the job's launcher, this script
    done = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "adapters" / "fsdp"
    metrics = read_meta(folder)["metrics"]
    assert (metrics["processes"], metrics["strategy"], metrics["device"]) == (2, "fsdp", "cuda")
    model = plain_peft(gpu_llama, folder, torch.bfloat16, "cuda")
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and all(p.abs().sum() > 0 for p in lora.values())  # trained, whole weights (not one rank's shard)
    assert not list(tmp_path.glob("adapters/.*"))  # no staging folder left by another rank
