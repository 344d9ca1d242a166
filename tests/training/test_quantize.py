"""QLoRA (backend/training/quantize.py) on the CPU. What peft's readying does to the weights
that are not quantized is the same on any model, and is checked on the tiny Llama in bf16.
The whole 4-bit run goes through bitsandbytes' CPU backend in a child process: make installs
bitsandbytes beside the venv (``.venv/opt/bitsandbytes``), not in it, because peft imports
it whenever it is importable (a second and more per process). The same run on CUDA is a
`gpu` test (tests/training/test_gpu_training.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

BESIDE_THE_VENV = Path(sys.prefix) / "opt" / "bitsandbytes"  # the Makefile's --target


def _load_bf16(tiny_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.bfloat16)


def _hidden_dtypes(model) -> set[torch.dtype]:
    """The dtypes of every decoder layer's output, and the final norm's, in a forward under
    bf16 autocast (as the trainer runs it with bf16=True)."""
    seen: set[torch.dtype] = set()
    hooks = [layer.register_forward_hook(lambda _m, _i, out: seen.add((out[0] if isinstance(out, tuple) else out).dtype))
             for layer in [*model.model.layers, model.model.norm]]
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_peft_upcasts_the_unquantized_weights_and_every_activation_follows(tiny_llama):
    """What ready_for_kbit_training undoes: peft's readying alone leaves every weight fp32,
    so the activations that the memory estimate counts in bf16 are fp32."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(_load_bf16(tiny_llama), use_gradient_checkpointing=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.float32 in _hidden_dtypes(model)


def test_readied_for_qlora_the_weights_and_activations_stay_in_the_compute_dtype(tiny_llama):
    from backend.training.quantize import ready_for_kbit_training

    reference = _load_bf16(tiny_llama)
    # (peft switches checkpointing on only for a model loaded in k bits: a `gpu` test's case)
    model = ready_for_kbit_training(_load_bf16(tiny_llama), torch.bfloat16, gradient_checkpointing=True)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in model.parameters())  # frozen: LoRA is added on top
    assert _hidden_dtypes(model) == {torch.bfloat16}
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, q), name  # bf16 -> fp32 -> bf16 is exact: nothing lost


QLORA_RUN = """
import json, sys
from pathlib import Path
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from backend.hparams import RunSpec
from backend.training.recipe import Recipe
from backend.training import run
from tests.builders import folder_ref, write_color_data

held_in_4bit = []
def load_quantized(*args, **kwargs):  # what the run trained on: count its 4-bit layers
    model = quantized(*args, **kwargs)
    held_in_4bit.append(sum(type(m).__name__ == "Linear4bit" for m in model.modules()))
    return model
quantized, run.load_quantized = run.load_quantized, load_quantized

base, root = Path(sys.argv[1]), Path(sys.argv[2])
spec = RunSpec(name="q4", base=str(base), goal="say the color",
               train={"epochs": 2, "batch_size": 4, "max_length": 64, "learning_rate": 5e-3, "quantize": "4bit",
                      "eval_fraction": 0.0, "early_stopping": False})
recipe = Recipe(device="cpu", precision="bf16", attention="packed_sdpa", padding_free=True,
                gradient_checkpointing=True, per_device_batch=2, accumulation=2, cpu_machinery=False,
                quantize="4bit", processes=1)
meta = run.train_adapter(spec, base_ref=folder_ref(base), train_file=write_color_data(root / "data"), eval_file=None,
                         out_dir=root / "q4", work_dir=root / "work", recipe=recipe)
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), root / "q4")
ids = torch.tensor([[1, 5, 9, 12]])
with torch.no_grad():
    tuned = model(input_ids=ids).logits
    with model.disable_adapter():
        plain = model(input_ids=ids).logits
losses = [h["loss"] for h in meta["loss_history"] if h.get("loss") is not None]
print(json.dumps({"held_in_4bit": held_in_4bit, "losses": losses, "recipe": meta["metrics"]["recipe"],
                  "finite": bool(torch.isfinite(tuned).all()), "changes_the_answer": not torch.equal(tuned, plain),
                  "dtypes": sorted({str(p.dtype) for p in model.parameters()})}))
"""


def test_a_4bit_qlora_run_trains_and_its_adapter_loads_on_the_unquantized_base(tiny_llama, tmp_path):
    """NF4 with double quantization and bf16 compute, as on a GPU, through the training path
    a GPU run takes (padding-free rows, checkpointing): the loss falls, and the adapter is an
    ordinary PEFT folder that loads on the bf16 base, not quantized, and changes its answer.
    bench/gpu_rehearsal.sh runs it with the GPU image's transformers (5.17)."""
    paths = [str(BESIDE_THE_VENV)] if BESIDE_THE_VENV.is_dir() else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")]),
                                                         str(REPO_ROOT)])}
    found = subprocess.run([sys.executable, "-c", "import bitsandbytes"], env=env, capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"bitsandbytes is neither in the venv nor at {BESIDE_THE_VENV} (make installs it there)")
    done = subprocess.run([sys.executable, "-c", QLORA_RUN, str(tiny_llama), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["recipe"]["quantize"] == "4bit" and result["recipe"]["padding_free"]
    assert result["held_in_4bit"] == [14]  # every linear layer of the 2-layer Llama's blocks, 7 each
    assert result["losses"][-1] < result["losses"][0], result["losses"]
    assert result["finite"] and result["changes_the_answer"]
    assert "torch.uint8" not in result["dtypes"]  # no 4-bit weight came with the adapter
    config = json.loads((tmp_path / "q4" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and "quantization_config" not in config
