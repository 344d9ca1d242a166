"""Per-device training choices (backend/training/recipe.py): a pure function of the device's
facts, the spec and the inspector's report, so a described H100 (or a 16 GiB card) is decided
here on a CPU; and a real tiny run that applies a recipe (padding-free batches train the same
loss as padded ones, and the CPU machinery stays off when the recipe says so)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.bases.inspect import inspect_base
from backend.errors import ConfigError
from backend.hparams import RunSpec, TrainSpec
from backend.training.recipe import (GIB, HEADROOM, DeviceFacts, Recipe, choose_recipe, quantize_offer,
                                     training_bytes)

H100 = DeviceFacts(kind="cuda", name="NVIDIA H100 80GB HBM3", total_memory=80 * GIB, bf16=True, flash_attn=False)
H100_FA = DeviceFacts(kind="cuda", name="NVIDIA H100 80GB HBM3", total_memory=80 * GIB, bf16=True, flash_attn=True)
T4 = DeviceFacts(kind="cuda", name="Tesla T4", total_memory=16 * GIB, bf16=False)
CPU = DeviceFacts(kind="cpu", name="CPU", bf16=True)
CPU_NO_BF16 = DeviceFacts(kind="cpu", name="CPU", bf16=False)

LLAMA_8B = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                max_position_embeddings=8192, tie_word_embeddings=False)
LLAMA_1B = dict(LLAMA_8B, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_key_value_heads=8,
                tie_word_embeddings=True)


@pytest.fixture(scope="module")
def report_8b():
    return inspect_base(LLAMA_8B)


@pytest.fixture(scope="module")
def report_1b():
    return inspect_base(LLAMA_1B)


def spec(**train) -> RunSpec:
    return RunSpec(name="r", train=TrainSpec(**train))


# --- the choice is made per device ----------------------------------------------------------------


def test_a_cpu_gets_the_cpu_machinery_and_padded_batches():
    for facts, precision in ((CPU, "bf16"), (CPU_NO_BF16, "fp32")):
        recipe = choose_recipe(facts, spec(batch_size=8), None)
        assert (recipe.device, recipe.precision, recipe.cpu_machinery, recipe.padding_free) == \
            ("cpu", precision, True, False)
        assert recipe.attention == ("eager" if precision == "bf16" else None)
        assert (recipe.gradient_checkpointing, recipe.per_device_batch, recipe.accumulation) == (False, 8, 1)
        assert recipe.length_grouped  # padded rows of similar lengths: little padding
    assert choose_recipe(CPU, spec(gradient_checkpointing=True), None).gradient_checkpointing


def test_a_cuda_gpu_gets_bf16_sdpa_padding_free_and_no_cpu_machinery(report_1b):
    recipe = choose_recipe(H100, spec(batch_size=8, max_length=512), report_1b)
    assert (recipe.device, recipe.precision, recipe.attention, recipe.padding_free, recipe.cpu_machinery) == \
        ("cuda", "bf16", "packed_sdpa", True, False)
    assert "no T × T mask" in recipe.why["attention"]
    assert not recipe.length_grouped  # padding-free: no padding to save, so random batches, like TRL
    assert recipe.quantize is None and recipe.memory_budget == int(80 * GIB * HEADROOM)
    assert choose_recipe(H100_FA, spec(), report_1b).attention == "flash_attention_2"


def test_packed_attention_only_where_each_example_attends_to_its_whole_length(report_1b):
    """A base with a sliding window (Mistral v0.1's 4096 here) keeps transformers' sdpa and its
    mask, which applies the window; so does a base the inspector could not read. Qwen2's
    window is off unless use_sliding_window is set."""
    mistral = inspect_base(dict(LLAMA_1B, model_type="mistral", architectures=["MistralForCausalLM"],
                                sliding_window=4096))
    assert mistral["sliding_window"] == 4096 and report_1b["sliding_window"] is None
    recipe = choose_recipe(H100, spec(), mistral)
    assert recipe.attention == "sdpa" and recipe.padding_free and "4096-token window" in recipe.why["attention"]
    assert choose_recipe(H100, spec(), None).attention == "sdpa"
    assert choose_recipe(H100_FA, spec(), mistral).attention == "flash_attention_2"  # FlashAttention windows itself
    qwen = dict(LLAMA_1B, model_type="qwen2", architectures=["Qwen2ForCausalLM"], sliding_window=32768)
    assert inspect_base(qwen)["sliding_window"] is None
    assert inspect_base(dict(qwen, use_sliding_window=True, max_window_layers=0))["sliding_window"] == 32768

def test_a_gpu_without_bf16_trains_in_fp16_and_an_explicit_choice_wins(report_1b):
    assert choose_recipe(T4, spec(batch_size=2, max_length=256), report_1b).precision == "fp16"
    assert "loss scaling" in choose_recipe(T4, spec(batch_size=2, max_length=256), report_1b).why["precision"]
    assert choose_recipe(H100, spec(precision="fp32"), report_1b).attention == "packed_sdpa"  # no flash kernel
    assert choose_recipe(H100_FA, spec(precision="fp32"), report_1b).attention == "packed_sdpa"
    assert choose_recipe(H100, spec(precision="fp32"), report_1b).precision == "fp32"


def test_checkpointing_only_when_the_estimate_exceeds_the_gpu(report_8b):
    budget = int(80 * GIB * HEADROOM)
    fits = spec(batch_size=4, max_length=1024)
    assert training_bytes(report_8b, batch=4, seq_len=1024, checkpointing=False, precision="bf16",
                          packed=False) <= budget
    recipe = choose_recipe(H100, fits, report_8b)
    assert (recipe.gradient_checkpointing, recipe.per_device_batch, recipe.accumulation) == (False, 4, 1)
    assert recipe.why["checkpointing"].startswith("off")

    long = spec(batch_size=4, max_length=4096)
    assert training_bytes(report_8b, batch=4, seq_len=4096, checkpointing=False, precision="bf16", packed=False) > budget
    recipe = choose_recipe(H100, long, report_8b)
    assert recipe.gradient_checkpointing and recipe.why["checkpointing"].startswith("on")
    assert recipe.memory_estimate <= budget


def test_memory_already_held_on_the_gpu_is_not_counted_as_the_runs(report_8b):
    """`tunelab up` serving an 8B in bf16 on the same H100 holds ~16 GiB of it: a run that
    fits the idle card without checkpointing checkpoints there, and one that fits neither
    is refused naming what is in use."""
    import dataclasses

    from backend.errors import ConfigError

    fits_idle = spec(batch_size=4, max_length=1024)
    serving = dataclasses.replace(H100, in_use=16 * GIB)
    assert serving.budget() == int(80 * GIB * HEADROOM) - 16 * GIB
    needs = training_bytes(report_8b, batch=4, seq_len=1024, checkpointing=False, precision="bf16", packed=True)
    assert serving.budget() < needs <= H100.budget()
    assert not choose_recipe(H100, fits_idle, report_8b).gradient_checkpointing
    shared = choose_recipe(serving, fits_idle, report_8b)
    assert shared.gradient_checkpointing and shared.memory_budget == serving.budget()
    assert shared.memory_estimate <= serving.budget()
    crowded = dataclasses.replace(H100, in_use=70 * GIB)
    with pytest.raises(ConfigError) as refused:
        choose_recipe(crowded, fits_idle, report_8b)
    assert "70.0 GiB of it in use" in refused.value.message


def test_the_estimate_sizes_the_batch_and_accumulation_keeps_the_examples_per_step(report_8b):
    recipe = choose_recipe(H100, spec(batch_size=32, max_length=4096), report_8b)
    assert recipe.gradient_checkpointing and recipe.per_device_batch < 32
    assert recipe.per_device_batch * recipe.accumulation >= 32
    assert training_bytes(report_8b, batch=recipe.per_device_batch, seq_len=4096, checkpointing=True,
                          precision="bf16", packed=False) <= recipe.memory_budget
    assert training_bytes(report_8b, batch=recipe.per_device_batch * 2, seq_len=4096, checkpointing=True,
                          precision="bf16", packed=False) > recipe.memory_budget  # the biggest that fits
    assert "accumulated" in recipe.why["batch"]


def test_processes_split_the_batch_one_gpu_each(report_1b):
    two_gpus = DeviceFacts(**{**H100.__dict__, "count": 2})
    recipe = choose_recipe(two_gpus, spec(batch_size=8, processes=2), report_1b)
    assert (recipe.processes, recipe.per_device_batch) == (2, 4)
    with pytest.raises(ConfigError) as exc:
        choose_recipe(H100, spec(processes=2), report_1b)
    assert "--processes 2" in exc.value.message and "1 visible" in exc.value.message
    assert choose_recipe(CPU, spec(batch_size=5, processes=2), None).per_device_batch == 3


# --- several processes: DDP where the run fits one device, FSDP where it does not ---------------------


def test_several_gpus_shard_with_fsdp_only_when_one_gpu_cannot_hold_the_run(report_8b, report_1b):
    two_t4 = DeviceFacts(**{**T4.__dict__, "count": 2})
    two_h100 = DeviceFacts(**{**H100.__dict__, "count": 2})
    ddp = choose_recipe(two_h100, spec(batch_size=8, max_length=1024, processes=2), report_8b)
    assert (ddp.strategy, ddp.per_device_batch) == ("ddp", 4) and ddp.why["strategy"].startswith("DDP")
    # 8B in bf16 needs ~16 GiB of weights before anything trains: no 16 GiB card holds it alone
    assert training_bytes(report_8b, batch=1, seq_len=1024, checkpointing=True, precision="fp16",
                          packed=False) > 16 * GIB * HEADROOM
    fsdp = choose_recipe(two_t4, spec(batch_size=4, max_length=1024, processes=2), report_8b)
    assert fsdp.strategy == "fsdp" and fsdp.why["strategy"].startswith("FSDP") and "2 GPUs" in fsdp.why["strategy"]
    assert fsdp.memory_estimate <= fsdp.memory_budget  # a shard of the base and the state fits each card
    assert fsdp.memory_estimate < training_bytes(report_8b, batch=fsdp.per_device_batch, seq_len=1024,
                                                 checkpointing=True, precision="fp16", packed=False)
    with pytest.raises(ConfigError):  # one process on that card: refused as before (quantizing offered)
        choose_recipe(T4, spec(batch_size=4, max_length=1024), report_8b)
    assert choose_recipe(two_t4, spec(batch_size=4, max_length=1024, processes=2), report_1b).strategy == "ddp"
    assert choose_recipe(two_t4, spec(batch_size=4, max_length=1024, processes=2, quantize="4bit"),
                         report_8b).strategy == "ddp"  # QLoRA makes it fit one card
    assert choose_recipe(H100, spec(), report_1b).strategy == "single"


def test_cpu_ranks_use_ddp_whatever_the_base():
    recipe = choose_recipe(CPU, spec(processes=2), None)
    assert recipe.strategy == "ddp" and "GPUs only" in recipe.why["strategy"]


def test_the_strategy_becomes_accelerates_fsdp_or_ddp_settings(tmp_path):
    from backend.training.run import FSDP_CONFIG, distributed_fields, make_sft_config

    base = dict(device="cuda", precision="bf16", attention="sdpa", padding_free=True, gradient_checkpointing=True,
                per_device_batch=2, accumulation=1, cpu_machinery=False, quantize=None, processes=2)
    fsdp = make_sft_config(spec(max_length=64), tmp_path, has_eval=False, precision="fp32", device="cpu",
                           recipe=Recipe(**base, strategy="fsdp"))
    plugin = fsdp.fsdp_plugin_args  # what transformers hands accelerate's FullyShardedDataParallelPlugin
    assert (plugin["fsdp_version"], plugin["auto_wrap_policy"], plugin["state_dict_type"],
            plugin["reshard_after_forward"]) == (2, "TRANSFORMER_BASED_WRAP", "FULL_STATE_DICT", True)
    assert "transformer_cls_names_to_wrap" not in plugin  # accelerate wraps the model's _no_split_modules
    ddp = make_sft_config(spec(max_length=64), tmp_path, has_eval=False, precision="fp32", device="cpu",
                          recipe=Recipe(**base, strategy="ddp"))
    assert ddp.fsdp_plugin_args is None and ddp.ddp_find_unused_parameters is False
    assert distributed_fields(Recipe(**{**base, "processes": 1})) == {} and FSDP_CONFIG["version"] == 2


TRANSFORMERS_517 = Path(__file__).with_name("transformers_5_17_training_arguments.txt")


def _transformers_517_arguments():
    """A dataclass with exactly the fields of transformers 5.17.0's TrainingArguments (the GPU
    image's version; this venv has 5.25), read from the list kept beside this test."""
    import dataclasses

    names = [n for n in TRANSFORMERS_517.read_text().splitlines() if n and not n.startswith("#")]
    return dataclasses.make_dataclass("TrainingArguments517", [(n, object, dataclasses.field(default=None))
                                                               for n in names])


def test_checkpointing_is_asked_for_in_the_installed_transformers_words(tmp_path):
    """transformers 5.25 (this venv) takes ``activation_checkpointing``; 5.17, the GPU
    machine's own, knows only ``gradient_checkpointing`` and refuses the other name, so
    every GPU run would stop before its first step. The names come from the arguments
    class given: this venv's, and one with exactly 5.17's fields."""
    from transformers import TrainingArguments

    from backend.training.run import checkpointing_args, make_sft_config

    import transformers
    from packaging.version import Version

    # this venv has 5.25; bench/gpu_rehearsal.sh runs this test with 5.17, the GPU image's
    installed = "activation" if Version(transformers.__version__) >= Version("5.25") else "gradient"
    assert checkpointing_args(True) == {f"{installed}_checkpointing": True,
                                        f"{installed}_checkpointing_kwargs": {"use_reentrant": False}}
    old = _transformers_517_arguments()
    assert checkpointing_args(True, old) == {"gradient_checkpointing": True,
                                             "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    assert checkpointing_args(False, old) == {"gradient_checkpointing": False}
    old(**checkpointing_args(True, old))  # accepted as given
    with pytest.raises(TypeError):
        old(activation_checkpointing=True)  # what every run passed before
    on = Recipe(device="cuda", precision="bf16", attention="sdpa", padding_free=True, gradient_checkpointing=True,
                per_device_batch=2, accumulation=1, cpu_machinery=False, quantize=None, processes=1)
    config = make_sft_config(spec(max_length=64), tmp_path, has_eval=False, precision="fp32", device="cpu", recipe=on)
    assert config.gradient_checkpointing and config.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert isinstance(config, TrainingArguments)


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_every_training_argument_a_gpu_run_sets_exists_in_the_gpu_images_transformers(tmp_path, strategy):
    """The device run trains with transformers 5.17 (not carried: too big), so every
    TrainingArguments field TuneLab's supervised runs and preference rounds set must be
    one 5.17 has; the checkpointing fields are named per version (above). TRL's own fields
    are not TrainingArguments' (TRL is carried at this venv's version)."""
    import dataclasses

    from transformers import TrainingArguments

    from backend.training.preference_round import round_config_args
    from backend.training.run import checkpointing_args, sft_config_fields

    ours = {f.name for f in dataclasses.fields(TrainingArguments)}
    old = {f.name for f in dataclasses.fields(_transformers_517_arguments())}
    per_version = set(checkpointing_args(True)) | set(checkpointing_args(True, _transformers_517_arguments()))
    gpu = Recipe(device="cuda", precision="bf16", attention="sdpa", padding_free=True, gradient_checkpointing=True,
                 per_device_batch=2, accumulation=2, cpu_machinery=False, quantize=None,
                 processes=1 if strategy == "single" else 2, strategy=strategy)
    sft = sft_config_fields(spec(max_length=64, neftune_noise_alpha=5.0), tmp_path, has_eval=True,
                            precision="bf16", device="cuda", recipe=gpu)
    dpo = round_config_args(RunSpec(name="r", method="dpo", parent="p", train=TrainSpec(batch_size=8)), tmp_path,
                            precision="bf16", device="cuda", recipe=gpu)
    for fields in (sft, dpo):
        set_here = (set(fields) & ours) - per_version
        assert set_here and set_here <= old, sorted(set_here - old)


def test_a_run_whose_recipe_says_fsdp_is_refused_where_accelerate_did_not_shard(tiny_llama, tmp_path):
    from backend.errors import JobError

    recipe = Recipe(device="cpu", precision="fp32", attention=None, padding_free=False, gradient_checkpointing=False,
                    per_device_batch=4, accumulation=1, cpu_machinery=False, quantize=None, processes=1,
                    strategy="fsdp")
    with pytest.raises(JobError) as exc:
        _run(tiny_llama, tmp_path, recipe, "unsharded")
    assert "FSDP" in exc.value.message and not (tmp_path / "adapters" / "unsharded").exists()


# --- quantization: CUDA only, offered by the estimate -----------------------------------------------


def test_quantize_is_refused_without_cuda_saying_it_needs_a_gpu():
    with pytest.raises(ConfigError) as exc:
        choose_recipe(CPU, spec(quantize="4bit"), None)
    assert "needs a CUDA GPU" in exc.value.message and "--quantize 4bit" in exc.value.message


def test_the_estimate_offers_quantization_when_the_base_does_not_fit_in_bf16(report_8b, report_1b):
    assert quantize_offer(H100, spec(batch_size=4, max_length=1024), report_8b) is None
    assert quantize_offer(T4, spec(max_length=1024), report_1b) is None
    offer = quantize_offer(T4, spec(max_length=1024), report_8b)
    assert offer.startswith("the base does not fit in bf16") and "--quantize 4bit would need ~" in offer
    q4 = training_bytes(report_8b, batch=1, seq_len=1024, checkpointing=True, precision="bf16", quantize="4bit")
    assert f"~{q4 / GIB:.1f} GiB" in offer and q4 < 16 * GIB * HEADROOM
    with pytest.raises(ConfigError) as exc:  # not quantized: refused, saying what would fit
        choose_recipe(T4, spec(batch_size=4, max_length=1024), report_8b)
    assert "--quantize 4bit would need" in exc.value.fix
    recipe = choose_recipe(T4, spec(batch_size=4, max_length=1024, quantize="4bit"), report_8b)
    assert recipe.quantize == "4bit" and recipe.memory_estimate <= recipe.memory_budget
    assert quantize_offer(CPU, spec(), report_8b) is None


def test_a_4bit_base_is_about_a_quarter_of_bf16(report_8b):
    bf16 = training_bytes(report_8b, batch=1, seq_len=16, checkpointing=True, precision="bf16")
    q4 = training_bytes(report_8b, batch=1, seq_len=16, checkpointing=True, precision="bf16", quantize="4bit")
    # 8B Llama: ~15 GiB of bf16 weights; 4-bit decoder linears (~7B params) + bf16 embeddings and head (~2 GiB)
    assert 14 * GIB < bf16 < 17 * GIB and 5 * GIB < q4 < 6.5 * GIB



def test_a_preference_round_is_sized_for_padded_rows_and_dpo_for_both_answers_of_each_pair(report_8b):
    """The 8B at batch 4 x 1024 fits an H100 without checkpointing as a supervised run (packed),
    but a DPO round puts 8 padded rows through the model: sized as a supervised run, it would
    have run out of memory; sized for its rows it checkpoints. KTO's KL partner has no gradients."""
    def round_spec(method: str) -> RunSpec:
        return RunSpec(name="r", method=method, parent="p", train=TrainSpec(batch_size=4, max_length=1024))

    sft = choose_recipe(H100, spec(batch_size=4, max_length=1024), report_8b)
    assert sft.padding_free and not sft.gradient_checkpointing
    for method, rows in (("dpo", 2), ("kto", 1)):
        recipe = choose_recipe(H100, round_spec(method), report_8b)
        assert not recipe.padding_free and recipe.why["batches"].startswith("padded")
        assert ("2 rows per example" in recipe.why["batches"]) == (rows == 2)
        assert recipe.memory_estimate == training_bytes(
            report_8b, batch=rows * recipe.per_device_batch,
            seq_len=1024, checkpointing=recipe.gradient_checkpointing, precision="bf16", packed=False)
        assert recipe.memory_estimate <= recipe.memory_budget
    dpo = choose_recipe(H100, round_spec("dpo"), report_8b)
    assert dpo.gradient_checkpointing and dpo.why["checkpointing"].startswith("on")
    assert training_bytes(report_8b, batch=8, seq_len=1024, checkpointing=False, precision="bf16") > dpo.memory_budget
    assert not choose_recipe(H100, round_spec("kto"), report_8b).gradient_checkpointing
    offer = quantize_offer(T4, round_spec("dpo"), report_8b)
    assert "batch 1 (2 rows" in offer

# --- a real tiny run applies the recipe ------------------------------------------------------------------


def _run(tiny_llama, root, recipe: Recipe, name: str):
    from backend.training.run import train_adapter
    from tests.builders import folder_ref, tiny_spec, write_color_data

    data = write_color_data(root / "data")
    run_spec = tiny_spec(name, tiny_llama, epochs=1, early_stopping=False, eval_fraction=0.0)
    run_spec = run_spec.model_copy(update={"lora": run_spec.lora.model_copy(update={"dropout": 0.0})})
    return train_adapter(run_spec, base_ref=folder_ref(tiny_llama), train_file=data, eval_file=None,
                         out_dir=root / "adapters" / name, work_dir=root / f"work-{name}", recipe=recipe)


def test_padding_free_batches_train_the_same_loss_and_the_cpu_machinery_stays_off(tiny_llama, tmp_path):
    # (neither recipe groups lengths, so both draw the same random batches)
    padded = Recipe(device="cpu", precision="fp32", attention="sdpa", padding_free=False,
                    gradient_checkpointing=False, per_device_batch=4, accumulation=1, cpu_machinery=False,
                    quantize=None, processes=1)
    flat = Recipe(**{**padded.summary(), "padding_free": True})
    # the attention the recipe picks for padding-free rows on a GPU without flash_attn (its
    # per-example path, as there when the varlen kernel is missing)
    packed = Recipe(**{**flat.summary(), "attention": "packed_sdpa"})
    a = _run(tiny_llama, tmp_path, padded, "padded")
    b = _run(tiny_llama, tmp_path, flat, "flat")
    c = _run(tiny_llama, tmp_path, packed, "packed")
    first = [h["loss"] for h in a["loss_history"] if h["loss"] is not None]
    second = [h["loss"] for h in b["loss_history"] if h["loss"] is not None]
    third = [h["loss"] for h in c["loss_history"] if h["loss"] is not None]
    assert len(first) == len(second) == len(third) == 4
    assert first == pytest.approx(second, rel=1e-4)  # same examples, same model: only the layout differs
    assert first == pytest.approx(third, rel=1e-4)
    assert c["metrics"]["recipe"]["attention"] == "packed_sdpa"
    assert b["metrics"]["recipe"]["padding_free"] and not b["metrics"]["recipe"]["cpu_machinery"]
    assert b["metrics"]["processes"] == 1
    # the tokens trained are the same: padding-free has no pad tokens to leave out
    assert a["metrics"]["train_tokens"] == b["metrics"]["train_tokens"]


def test_the_gpu_recipe_runs_whole_on_a_cpu_with_long_rows_and_a_held_out_split(tiny_llama, tmp_path):
    """Everything the CUDA recipe switches on at once, as a lent GPU would first run it:
    padding-free rows attended example by example, accumulation, checkpointing, none of
    the CPU machinery, random batches, rows past max_length (some cut, some left with no
    answer and dropped) and a held-out split judged with early stopping."""
    import json
    import math

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from backend.training.run import train_adapter
    from tests.builders import COLORS, folder_ref, tiny_spec

    rows = [{"messages": [{"role": "user", "content": f"color of {obj}?"}, {"role": "assistant", "content": color}]}
            for obj, color in list(COLORS.items()) * 3]
    rows += [{"messages": [{"role": "user", "content": "describe " + "a very long thing " * (8 + k)},
                           {"role": "assistant", "content": "white " * (2 + k)}]} for k in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    gpu_like = Recipe(device="cpu", precision="fp32", attention="packed_sdpa", padding_free=True,
                      gradient_checkpointing=True, per_device_batch=2, accumulation=2, cpu_machinery=False,
                      quantize=None, processes=1)
    meta = train_adapter(tiny_spec("gpu-like", tiny_llama, epochs=3, eval_fraction=0.25, early_stopping=True),
                         base_ref=folder_ref(tiny_llama), train_file=data, eval_file=None,
                         out_dir=tmp_path / "adapters" / "gpu-like", work_dir=tmp_path / "work", recipe=gpu_like)
    metrics = meta["metrics"]
    assert metrics["recipe"]["padding_free"] and not metrics["recipe"]["length_grouped"]
    losses = [h["loss"] for h in meta["loss_history"] if h["loss"] is not None]
    assert losses and all(math.isfinite(x) for x in losses) and math.isfinite(metrics["eval_loss"])
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama),
                                        tmp_path / "adapters" / "gpu-like")
    assert sum("lora_B" in n and p.abs().sum() > 0 for n, p in adapter.named_parameters()) > 0  # it trained


def test_the_recipe_sets_trls_knobs_and_padding_free_rows_still_stop_at_max_length(tmp_path):
    from datasets import Dataset

    from backend.training.run import keep_within, make_sft_config

    flat = Recipe(device="cuda", precision="bf16", attention="sdpa", padding_free=True, gradient_checkpointing=True,
                  per_device_batch=2, accumulation=4, cpu_machinery=False, quantize=None, processes=1)
    args = make_sft_config(spec(max_length=64, neftune_noise_alpha=5.0), tmp_path, has_eval=False, precision="fp32",
                           device="cpu", recipe=flat)
    assert (args.padding_free, args.max_length, args.per_device_train_batch_size, args.gradient_accumulation_steps,
            args.gradient_checkpointing) == (True, None, 2, 4, True)
    assert args.neftune_noise_alpha == pytest.approx(5.0 * 2 ** 0.5)  # per token as in a padded row of 2
    padded = make_sft_config(spec(max_length=64, neftune_noise_alpha=5.0), tmp_path, has_eval=False,
                             precision="fp32", device="cpu", recipe=Recipe(**{**flat.summary(), "padding_free": False}))
    assert (padded.padding_free, padded.max_length, padded.neftune_noise_alpha) == (False, 64, 5.0)
    rows = Dataset.from_list([{"input_ids": list(range(10)), "completion_mask": [0] * 6 + [1] * 4},
                              {"input_ids": list(range(10)), "completion_mask": [0] * 9 + [1]},
                              {"input_ids": list(range(4)), "completion_mask": [0, 0, 1, 1]}])
    kept = keep_within(rows, 8)  # TRL's rule: cut to max_length, drop a row whose answer is all cut off
    assert [len(r) for r in kept["input_ids"]] == [8, 4] and kept["completion_mask"][0] == [0] * 6 + [1, 1]
    # TRL 1.16 tokenizes into labels (-100 on the prompt): they are cut with the ids, or the
    # padding-free collator meets a row whose labels outrun its positions
    labelled = Dataset.from_list([{"input_ids": list(range(10)), "labels": [-100] * 6 + [6, 7, 8, 9]},
                                  {"input_ids": list(range(10)), "labels": [-100] * 9 + [9]},
                                  {"input_ids": list(range(4)), "labels": [-100, -100, 2, 3]}])
    kept = keep_within(labelled, 8)
    assert [len(r) for r in kept["input_ids"]] == [len(r) for r in kept["labels"]] == [8, 4]
    assert kept["labels"][0] == [-100] * 6 + [6, 7]


def test_the_job_runner_tells_a_gpu_machine_without_torch(tmp_path, monkeypatch):
    from backend.training.launch import nvidia_gpu_present

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    dev = tmp_path / "dev"
    dev.mkdir()
    assert not nvidia_gpu_present(dev)  # a CPU machine: the worker gets the CPU allocator settings
    (dev / "nvidiactl").touch()
    (dev / "nvidia0").touch()
    assert nvidia_gpu_present(dev)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not nvidia_gpu_present(dev)
