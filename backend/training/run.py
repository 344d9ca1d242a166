"""One LoRA training run: TRL's ``SFTTrainer`` + a peft ``LoraConfig``, exactly as a
:class:`~backend.hparams.RunSpec` says, ending in one adapter folder.

Input is the data doctor's normalized JSONL (``{"messages": [...]}`` per line, last
message from the assistant), read by :mod:`backend.data.normalized`. Each row becomes
TRL's conversational prompt/completion form, so the loss covers the answer only.

What this module changes from TRL's defaults, and why:

* learning rate, logging every step and no gradient checkpointing come from the spec
  (TRL's 2e-5 / every 10 steps / checkpointing-on are meant for full fine-tuning);
* ``use_cpu=True`` where there is no CUDA, and bf16 only where the hardware has it
  (:func:`~backend.hardware.device.resolve_precision`);
* in bf16 the frozen base weights are loaded in bf16, so autocast does not cast every
  fp32 weight on every forward; the LoRA weights, the only trained ones, stay fp32
  (peft's ``autocast_adapter_dtype``) and the saved adapter is unchanged;
* the trainer (:mod:`backend.training.trainer`) batches examples of similar length where
  batches are padded (random ones where they are padding-free) and runs the LM head on
  answer positions only;
* with held-out rows and ``early_stopping`` it evaluates about once an epoch, keeps the
  best LoRA weights and stops when the held-out loss stops falling or the time budget is
  spent (:mod:`backend.training.early_stop`); the adapter written is the best judged;
* on CPU, :func:`~backend.training.cpu.tuning.tune_for_device` installs the CPU kernels
  (and, where ``native_build`` allows, their native C versions). Batches of more rows
  than the spec's do not help on CPU (padding grows), so the batch size stays the spec's.

The run is ``accelerate launch`` compatible: every rank trains, only the main process
writes the adapter folder. Output is written to a dot-prefixed temporary folder inside
``adapters/`` and renamed into place, so a crash or a cancel leaves nothing behind and
an existing adapter is never half-overwritten. Checkpoints go to ``work_dir``
(:mod:`backend.training.checkpoints`), so a paused run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from trl import SFTConfig

from backend.adapter_folder import ADAPTER_FILES, CONFIG_FILE, WEIGHTS_FILE, is_complete, write_meta
from backend.atomic import staged_folder
from backend.bases.load import decoder_of, load_model, load_tokenizer
from backend.bases.resolve import BaseRef
from backend.data.normalized import read_rows, split_rows, to_prompt_completion
from backend.errors import ConfigError, DataError, JobError
from backend.hardware.device import device_kind, resolve_precision
from backend.hardware.threads import own_intraop_threads, set_cpu_threads
from backend.hparams import LoraSpec, RunSpec
from backend.store import utcnow
from backend.training import packed_attention
from backend.training.checkpoints import checkpoints_dir, last_checkpoint
from backend.training.cpu.native import NativeBuild
from backend.training.cpu.tuning import tune_for_device, use_eager_attention
from backend.training.early_stop import KeepBest
from backend.training.estimate import Speed, machine_id
from backend.training.progress import phase_loading, phase_tokenizing, tokens_per_s
from backend.training.quantize import load_quantized
from backend.training.recipe import Recipe, recipe_for_run
from backend.training.trainer import AnswerOnlySFTTrainer, ProgressCallback, ProgressFn, StopFn


class TrainingCancelled(JobError):
    """The run was asked to stop; no adapter folder was written."""


class TrainingPaused(JobError):
    """The run was interrupted (e.g. the app shut down); a checkpoint was saved to resume from."""


class AdapterExists(JobError):
    """A finished adapter of that name exists and overwriting was not asked for."""


def build_datasets(spec: RunSpec, train_file: Path, eval_file: Path | None) -> tuple[Dataset, Dataset | None]:
    """TRL prompt/completion datasets; one file is split exactly as the data doctor splits it."""
    train_rows = read_rows(train_file)
    if eval_file is not None and Path(eval_file).is_file():
        eval_rows = read_rows(eval_file)
    else:
        train_rows, eval_rows = split_rows(train_rows, eval_fraction=spec.train.eval_fraction, seed=spec.train.seed)
    system = spec.train.system_prompt
    train = Dataset.from_list([to_prompt_completion(m, system) for m in train_rows])
    evals = Dataset.from_list([to_prompt_completion(m, system) for m in eval_rows]) if eval_rows else None
    return train, evals


def eval_interval(spec: RunSpec, n_train: int, world_size: int = 1) -> int | float:
    """Steps between evaluations: the spec's, else about once an epoch with early stopping
    (at most every 50 steps, so a long epoch is still judged often), else 4 times a run."""
    t = spec.train
    if t.eval_steps:
        return t.eval_steps
    if not t.early_stopping:
        return 0.25
    steps_per_epoch = max(1, -(-n_train // (t.batch_size * world_size)))
    return max(1, min(steps_per_epoch, 50))


def make_sft_config(spec: RunSpec, work_dir: Path, *, has_eval: bool, precision: str, device: str,
                    eval_steps: int | float = 0.25, recipe: Recipe | None = None) -> SFTConfig:
    """SFTConfig with TRL's small-run pitfalls overridden (fields checked against TRL 1.16);
    ``recipe`` (:mod:`backend.training.recipe`) sets the batch per process, accumulation,
    checkpointing and padding-free batches for the device."""
    return SFTConfig(**sft_config_fields(spec, work_dir, has_eval=has_eval, precision=precision, device=device,
                                         eval_steps=eval_steps, recipe=recipe))


def sft_config_fields(spec: RunSpec, work_dir: Path, *, has_eval: bool, precision: str, device: str,
                      eval_steps: int | float = 0.25, recipe: Recipe | None = None) -> dict:
    """The fields :func:`make_sft_config` gives ``SFTConfig``."""
    t = spec.train
    fields = dict(
        common_training_args(spec, work_dir, precision=precision, device=device),
        per_device_eval_batch_size=t.batch_size,
        completion_only_loss=True,
        neftune_noise_alpha=t.neftune_noise_alpha,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=t.save_steps or 0.2,
        save_total_limit=2,
    )
    fields.update(_device_fields(recipe))
    if recipe is not None and recipe.padding_free and t.neftune_noise_alpha:
        # NEFTune's noise is alpha / sqrt(row length x hidden): one flattened row holds a step's
        # examples, so alpha grows by sqrt(batch) to give each token the noise a padded row gets
        fields["neftune_noise_alpha"] = t.neftune_noise_alpha * math.sqrt(recipe.per_device_batch)
    return fields


def common_training_args(spec: RunSpec, work_dir: Path, *, precision: str, device: str) -> dict:
    """The TrainingArguments fields every TuneLab run sets the same way from its spec and
    device (supervised runs' SFTConfig, preference rounds' DPOConfig)."""
    t = spec.train
    return dict(
        output_dir=str(checkpoints_dir(work_dir)),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_length,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_pin_memory=device == "cuda",
        report_to="none",
        disable_tqdm=True,
        **checkpointing_args(t.gradient_checkpointing),
    )


def checkpointing_args(on: bool, arguments: type | None = None) -> dict:
    """The training-arguments fields that switch activation checkpointing on or off, in the
    words of the installed transformers (``arguments``: its ``TrainingArguments``): 5.25 says
    ``activation_checkpointing`` (``gradient_checkpointing`` is its deprecated alias), 5.17 --
    the GPU machine's own, which the device run uses -- knows only ``gradient_checkpointing``
    and refuses the new name. Non-reentrant when on (DDP- and peft-safe)."""
    if arguments is None:
        from transformers import TrainingArguments as arguments
    names = {f.name for f in dataclasses.fields(arguments)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: on, **({f"{key}_kwargs": {"use_reentrant": False}} if on else {})}


def _device_fields(recipe: Recipe | None) -> dict:
    """The SFTConfig fields a recipe decides (none without one)."""
    if recipe is None:
        return {}
    fields = dict(per_device_train_batch_size=recipe.per_device_batch,
                  per_device_eval_batch_size=recipe.per_device_batch,
                  gradient_accumulation_steps=recipe.accumulation,
                  padding_free=recipe.padding_free, **checkpointing_args(recipe.gradient_checkpointing))
    fields.update(distributed_fields(recipe))
    if recipe.padding_free:  # TRL enforces no max_length without packing: keep_within cuts the rows instead
        fields["max_length"] = None
    return fields


# FSDP2 through accelerate's plugin (transformers' ``fsdp_config``): each decoder layer
# (the model's ``_no_split_modules``) a shard unit, weights gathered for its forward and
# backward and resharded after; the full state dict gathered for the main process to save.
FSDP_CONFIG = {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
               "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False}


def distributed_fields(recipe: Recipe | None) -> dict:
    """The TrainingArguments fields of a run in several processes (none for one): FSDP as
    :data:`FSDP_CONFIG` when the recipe chose it, else DDP without its search for unused
    parameters (every LoRA weight takes part in every step)."""
    if recipe is None or recipe.processes <= 1:
        return {}
    if recipe.strategy == "fsdp":
        return {"fsdp": "full_shard", "fsdp_config": dict(FSDP_CONFIG)}
    return {"ddp_find_unused_parameters": False}


def check_strategy(trainer, recipe: Recipe) -> None:
    """Refuse to train when accelerate did not set up the sharding the recipe chose (it runs
    FSDP on GPUs only): a run that would not fit must not start as DDP."""
    if (recipe.strategy == "fsdp") != bool(getattr(trainer, "is_fsdp_enabled", False)):
        raise JobError(f"The run's recipe chose {recipe.strategy.upper()} over {recipe.processes} processes, but "
                       f"accelerate set up {trainer.accelerator.distributed_type}.",
                       fix="Start the run with `tunelab train --processes N` on a machine with N GPUs.")


def load_base(base_ref: BaseRef, recipe: Recipe, *, trust_remote_code: bool = False):
    """The frozen base as the recipe says: its weights in the run's precision (bf16/fp16: the
    LoRA weights peft adds stay fp32), quantized where asked, the recipe's attention (eager
    in CPU bf16; on CUDA FlashAttention-2, or :mod:`~backend.training.packed_attention` for
    padding-free rows, or SDPA)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.precision, torch.float32)
    if recipe.attention == packed_attention.NAME:
        packed_attention.register()
    if recipe.quantize:
        return load_quantized(base_ref, recipe.quantize, compute_dtype=dtype, attention=recipe.attention,
                              gradient_checkpointing=recipe.gradient_checkpointing, trust_remote_code=trust_remote_code,
                              device=recipe.device)
    model = load_model(base_ref, dtype=dtype, trust_remote_code=trust_remote_code,
                       attn_implementation=recipe.attention if recipe.device == "cuda"
                       or recipe.attention == packed_attention.NAME else None)
    if recipe.device == "cpu" and recipe.attention == "eager":
        use_eager_attention(model)
    return model


def keep_within(dataset, max_length: int):
    """Rows cut to ``max_length`` tokens, rows left with no answer token dropped: what TRL
    does itself with padded batches, done here for padding-free ones. Every per-token
    column is cut: TRL 1.16 tokenizes prompt/completion rows into ``labels`` (-100 on the
    prompt), older ones into a ``completion_mask``."""
    if dataset is None or "input_ids" not in dataset.column_names:
        return dataset
    lists = [c for c in dataset.column_names if c in ("input_ids", "labels", "completion_mask", "assistant_masks")]
    dataset = dataset.map(lambda row: {c: row[c][:max_length] for c in lists})
    if "completion_mask" in lists:
        dataset = dataset.filter(lambda row: any(row["completion_mask"]))
    if "labels" in lists:
        dataset = dataset.filter(lambda row: any(label != -100 for label in row["labels"]))
    return dataset


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse up front to replace a finished adapter unless ``overwrite``."""
    if Path(out_dir).exists() and is_complete(out_dir) and not overwrite:
        raise AdapterExists(
            f"An adapter named {Path(out_dir).name!r} already exists in {Path(out_dir).parent}.",
            fix="Pick another name, delete the existing adapter first, or ask to overwrite it.",
        )


def train_adapter(
    spec: RunSpec,
    *,
    base_ref: BaseRef,
    train_file: Path,
    eval_file: Path | None,
    out_dir: Path,
    work_dir: Path,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    should_pause: StopFn | None = None,
    resume: bool = False,
    data_hash: str = "",
    overwrite: bool = False,
    plain_template: bool = False,
    trust_remote_code: bool = False,
    native_build: NativeBuild | None = None,
    on_phase: Callable[[str], None] | None = None,
    before_step: Callable[[], float] | None = None,
    recipe: Recipe | None = None,
    callbacks: list | None = None,
) -> dict:
    """Train one LoRA adapter and write ``out_dir`` (= ``adapters/<name>``).

    ``should_stop()`` is asked after every step; true cancels the run (nothing written,
    :class:`TrainingCancelled`). ``should_pause()`` true stops after saving a checkpoint
    (:class:`TrainingPaused`); ``resume=True`` later continues from the last checkpoint
    in ``work_dir``. ``native_build`` (the settings' ``native_kernels`` and native cache)
    says whether a CPU run builds and uses the native kernels; None leaves them as this
    process has them. ``on_phase(text)`` hears what the run does before its first step
    ("loading the base ...", "tokenizing 48 examples"). ``before_step()`` runs before each
    step of a CPU run and returns the seconds it waited (sharing the cores with the serving
    engine, :class:`backend.hardware.threads.CoreYield`); waiting is not training time.
    ``recipe``: the per-device choices (:mod:`backend.training.recipe`); None chooses them
    for this machine. ``callbacks``: more transformers ``TrainerCallback``s, run after the
    run's own (a benchmark's snapshots of the weights along the way). Returns the metadata
    written to ``tunelab.json``. Raises
    :class:`AdapterExists` when the name is taken, :class:`DataError` for unusable data.
    """
    entered = time.perf_counter()
    say = on_phase or (lambda text: None)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    check_target(out_dir, overwrite)
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe or recipe_for_run(spec, base_ref)
    device, precision = recipe.device, recipe.precision
    if recipe.cpu_machinery:
        set_cpu_threads(device)

    train_ds, eval_ds = build_datasets(spec, train_file, eval_file)
    say(phase_loading(base_ref.name))
    tokenizer = load_tokenizer(base_ref, plain_template=plain_template, trust_remote_code=trust_remote_code)
    model = load_base(base_ref, recipe, trust_remote_code=trust_remote_code)
    try:
        peft_config = LoraConfig(**spec.lora.to_peft_kwargs())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"The LoRA configuration is invalid: {exc}") from exc

    has_eval = eval_ds is not None
    args = make_sft_config(spec, work_dir, has_eval=has_eval, precision=precision, device=device,
                           eval_steps=eval_interval(spec, len(train_ds)), recipe=recipe)
    # only a CPU run competes with the engine for cores; a GPU run trains on
    callback = ProgressCallback(on_progress, should_stop, should_pause,
                                before_step=before_step if device == "cpu" else None)
    keep_best = None
    if has_eval and spec.train.early_stopping:
        keep_best = KeepBest(patience=spec.train.patience, time_budget_s=spec.train.time_budget_s,
                             settled_loss=spec.train.settled_loss)
    elif spec.train.time_budget_s is not None:  # no held-out rows to judge by: the budget alone stops
        keep_best = KeepBest(patience=10**9, time_budget_s=spec.train.time_budget_s)
    callbacks = [callback] + ([keep_best] if keep_best is not None else []) + list(callbacks or [])
    say(phase_tokenizing(len(train_ds), len(eval_ds) if eval_ds is not None else 0))
    try:
        trainer = AnswerOnlySFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                       processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"Could not apply the LoRA configuration to base {base_ref.spec!r}: {exc}") from exc
    callback.trainer = trainer
    trainer.length_grouped = recipe.length_grouped
    check_strategy(trainer, recipe)
    if recipe.padding_free:
        trainer.train_dataset = keep_within(trainer.train_dataset, spec.train.max_length)
        trainer.eval_dataset = keep_within(trainer.eval_dataset, spec.train.max_length)
    if len(trainer.train_dataset) == 0:  # TRL drops rows whose answer max_length cut off
        raise DataError(
            f"No training example keeps its answer within max_length {spec.train.max_length} tokens "
            f"(the chat template and the system prompt count too; {len(train_ds)} examples were given).",
            fix="Raise max_length (--max-length, the plan's max length), or shorten the examples or the system prompt.")
    if keep_best is not None:
        keep_best.model, keep_best.eval_seconds = trainer.model, lambda: trainer.eval_seconds
    if recipe.cpu_machinery:  # none of it on CUDA
        tune_for_device(trainer.model, device=device, precision=precision, native_build=native_build)
    callback.wait_between_layers(trainer.model)  # a CPU run gives the cores to an answer within a layer

    checkpoint = last_checkpoint(work_dir) if resume else None
    started = time.perf_counter()
    setup_s = started - entered
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    runtime = time.perf_counter() - started
    if callback.stopped:
        raise TrainingCancelled(f"Training of {spec.name!r} was cancelled at step {trainer.state.global_step}; "
                                "no adapter was written.")
    if callback.paused and trainer.state.global_step < trainer.state.max_steps:
        raise TrainingPaused(f"Training of {spec.name!r} was interrupted at step {trainer.state.global_step}; "
                             "it resumes from its checkpoint.")

    eval_loss = _final_eval_loss(trainer, callback) if has_eval else None
    stopping = None
    if keep_best is not None:
        keep_best.restore(trainer.state.global_step)  # the adapter written is the best judged one
        eval_loss = keep_best.best_loss if keep_best.best_loss is not None else eval_loss
        stopping = keep_best.summary()
    train_time = max(1e-9, runtime - trainer.eval_seconds - callback.waited_s)
    answer_tokens = trainer.answer_tokens * trainer.accelerator.num_processes
    train_tokens = trainer.train_tokens * trainer.accelerator.num_processes
    train_losses = [h["loss"] for h in callback.history if h["loss"] is not None]
    meta = {
        "name": spec.name,
        "goal": spec.goal,
        "base": {"spec": base_ref.spec, "name": base_ref.name, "kind": base_ref.kind},
        "data_hash": data_hash,
        "hyperparameters": spec.model_dump(mode="json"),
        "metrics": {
            "train_loss": train_losses[-1] if train_losses else None,
            "train_loss_mean": float(result.training_loss),
            "eval_loss": eval_loss,
            "tokens_per_s": tokens_per_s(train_tokens, train_time),
            "answer_tokens_per_s": tokens_per_s(answer_tokens, train_time),
            "runtime_s": runtime,
            "train_seconds": train_time,
            "eval_seconds": trainer.eval_seconds,
            "evaluations": sum(1 for h in callback.history if h["eval_loss"] is not None),
            "setup_seconds": setup_s,
            "waited_for_serving_s": callback.waited_s,
            "train_tokens": train_tokens,
            "answer_tokens": answer_tokens,
            "steps": trainer.state.global_step,
            "resumed_from_step": callback.first_step,
            "examples": len(train_ds),
            "eval_examples": len(eval_ds) if eval_ds is not None else 0,
            "precision": precision,
            "device": device,
            "processes": trainer.accelerator.num_processes,
            "strategy": recipe.strategy,
            "recipe": recipe.summary(),
            "epochs_trained": trainer.state.epoch,
            "stopping": stopping,
        },
        **finished(callback.history),
    }
    return write_from_main_process(trainer, trainer.accelerator.unwrap_model(trainer.model), out_dir, meta,
                                   overwrite=overwrite)


def finished(loss_history: list[dict]) -> dict:
    """The end of a finished run's ``tunelab.json``: its loss history, done, no verdict yet."""
    return {"loss_history": loss_history, "status": "done", "verdict": None,
            "created": utcnow().isoformat(timespec="seconds") + "Z"}


def write_from_main_process(trainer, peft_model, out_dir: Path, meta: dict, *, overwrite: bool = False,
                            before_write: Callable[[], None] | None = None) -> dict:
    """Write the adapter folder from the main process only (every rank waits on both sides,
    so none returns before the folder is whole); ``before_write`` runs there first. Under
    FSDP every rank first takes part in gathering the full weights, which the main process
    saves (its own LoRA weights are only its shard)."""
    trainer.accelerator.wait_for_everyone()
    state = trainer.accelerator.get_state_dict(trainer.model) if getattr(trainer, "is_fsdp_enabled", False) else None
    if trainer.is_world_process_zero():
        if before_write is not None:
            before_write()
        write_adapter_folder(peft_model, out_dir, meta, overwrite=overwrite, state_dict=state)
    trainer.accelerator.wait_for_everyone()
    return meta


def _final_eval_loss(trainer, callback) -> float | None:
    """Eval loss at the last step: the logged one if the schedule just evaluated, else a fresh one."""
    last = next((h for h in reversed(callback.history) if h["eval_loss"] is not None), None)
    if last is not None and last["step"] == trainer.state.global_step:
        return last["eval_loss"]
    return float(trainer.evaluate()["eval_loss"])


def write_adapter_folder(peft_model, out_dir: Path, meta: dict, *, overwrite: bool = False,
                         state_dict: dict | None = None) -> Path:
    """Write exactly the three contract files, via a dot-prefixed temp folder + rename
    (``state_dict``: the model's full weights, where the model holds only a shard of them)."""
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
    with staged_folder(out_dir) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        for extra in tmp.iterdir():  # peft adds a README.md model card; the contract is three files
            if extra.name not in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        write_meta(tmp, meta)
        written = sorted(p.name for p in tmp.iterdir())
        if written != sorted(ADAPTER_FILES):
            raise JobError(f"peft wrote {written} instead of the adapter files {sorted(ADAPTER_FILES)}.")
    return out_dir


# --- a short measured probe of this machine's speed (the plan card's estimate before any run) ----

# The probe loads the base as a run does (dtype from the precision rule, the CPU kernels of
# tune_for_device), wraps it in the plan's LoRA and times a few real forward+backward+optimizer
# steps at the plan's batch size and the data's tokens per example, the loss on the last
# quarter of each row (about an answer's share); the first step warms up and is not counted.
# A finished run later replaces the probe's figures with its own measurement.
# What the probe cannot see: a training process's start (Python, torch, transformers, trl
# imports) and its trainer's set-up; measured about 6 s on a 2-core CPU.
PROCESS_START_S = 6.0


def probe_speed(base_ref: BaseRef, *, base: str, lora: LoraSpec, batch_size: int, tokens_per_example: float,
                max_length: int, steps: int = 2, trust_remote_code: bool = False) -> Speed:
    """Time ``steps`` training steps of ``base_ref`` (after one warm-up) and return the speed
    entry that :func:`backend.training.estimate.write_speed` stores under ``base``."""
    device = device_kind()
    precision = resolve_precision("auto", device)
    previous = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device == "cpu":  # this thread times with a training process's threads; the others' default stays put
        own_intraop_threads(cores)
    try:
        loading = time.perf_counter()
        model = load_model(base_ref, dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
                           trust_remote_code=trust_remote_code)
        if device == "cpu" and precision == "bf16":
            use_eager_attention(model)
        model = get_peft_model(model, LoraConfig(**lora.to_peft_kwargs()))
        tune_for_device(model, device=device, precision=precision)
        load_s = time.perf_counter() - loading
        length = max(8, min(max_length, math.ceil(tokens_per_example)))
        vocab = model.get_output_embeddings().weight.shape[0]
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (batch_size, length), generator=generator)
        answer = max(1, length // 4)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        decoder, head = decoder_of(model), model.get_output_embeddings()
        model.train()
        timed = 0.0
        for step in range(steps + 1):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16" and device == "cpu"):
                hidden = (decoder(input_ids=ids, use_cache=False).last_hidden_state if decoder is not None
                          else model(input_ids=ids, output_hidden_states=True).hidden_states[-1])
                logits = head(hidden[:, -answer - 1:-1]).float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, -answer:].reshape(-1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:  # the first step warms caches and allocators
                timed += time.perf_counter() - started
        del model, optimizer
    finally:
        if device == "cpu":
            own_intraop_threads(previous)
    return Speed(base=base, machine=machine_id(), s_per_token=timed / (steps * batch_size * length),
                 tokens_per_example=float(length), doctor_mean_tokens=float(length), fixed_s=PROCESS_START_S + load_s,
                 source=f"from a {steps}-step probe of this machine")
