"""What every preference round does, whatever its loss: DPO on pairs (:mod:`backend.training.dpo`)
or KTO on single votes (:mod:`backend.training.kto`).

A round continues from a finished adapter: the parent is loaded onto the frozen base as a
trainable PEFT model, and TRL's trainer (DPOTrainer or KTOTrainer, checked against trl 1.16)
adds a frozen copy of it named ``ref`` and computes the reference log-probabilities with that
copy active, so the reference is the adapter *before the round*, not the base. The round
checks that the copy is there and refuses to train otherwise; the copy is dropped before the
new adapter is written (:func:`backend.training.run.write_from_main_process`: three files,
staged then renamed). Its ``tunelab.json`` records ``hyperparameters.method``, ``parent``,
``preference`` (what the round trained on: counts, rating ids, knobs) and metrics.

A round takes a supervised run's per-device recipe (:mod:`backend.training.recipe`:
precision, attention, checkpointing by the memory estimate, batch per process, DDP; the CPU
machinery only on a CPU) and records it as ``metrics.recipe``; its rows stay padded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset
from peft import PeftModel

from backend.adapter_folder import read_meta
from backend.bases.load import load_tokenizer
from backend.bases.resolve import BaseRef
from backend.data.normalized import behind_system
from backend.errors import ConfigError, JobError
from backend.hardware.threads import set_cpu_threads
from backend.hparams import RunSpec
from backend.training.recipe import Recipe, recipe_for_run
from backend.training.run import (TrainingCancelled, TrainingPaused, check_target, checkpointing_args,
                                  common_training_args, distributed_fields, finished, load_base,
                                  write_from_main_process)
from backend.training.trainer import ProgressCallback, ProgressFn, StopFn

REFERENCE = "ref"  # the name TRL gives the frozen copy of the parent adapter


class RoundCounters:
    """Mixed into a TRL preference trainer: the counters :class:`ProgressCallback` reads (tokens
    trained, for tokens/s; no evaluation, so no time spent in it)."""

    answer_tokens: int = 0
    train_tokens: int = 0
    eval_seconds: float = 0.0

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            mask = inputs.get("attention_mask")
            self.train_tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        return super().compute_loss(model, inputs, *args, **kwargs)


def round_config_args(spec: RunSpec, work_dir: Path, *, precision: str, device: str,
                      recipe: Recipe | None = None) -> dict:
    """The trainer-config fields every round sets alike: the runs' common ones, ``beta``, no
    checkpoints (a round is short: an interrupted one starts again) and no evaluation; with a
    ``recipe`` its batch per process, accumulation, checkpointing and DDP settings (its rows
    stay padded: TRL's padding-free preference batches need FlashAttention)."""
    fields = {**common_training_args(spec, work_dir, precision=precision, device=device),
              "beta": spec.train.beta, "save_strategy": "no", "eval_strategy": "no"}
    if recipe is not None:
        fields.update(per_device_train_batch_size=recipe.per_device_batch,
                      gradient_accumulation_steps=recipe.accumulation,
                      **checkpointing_args(recipe.gradient_checkpointing), **distributed_fields(recipe))
    return fields


def train_round(
    spec: RunSpec,
    *,
    rows: list[dict],
    make_trainer: Callable[..., object],
    record: dict,
    metrics: dict[str, str],
    base_ref: BaseRef,
    parent_dir: Path,
    out_dir: Path,
    work_dir: Path,
    on_progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    should_pause: StopFn | None = None,
    data_hash: str = "",
    overwrite: bool = False,
    plain_template: bool = False,
    trust_remote_code: bool = False,
    on_phase=None,
    before_step=None,
) -> dict:
    """Train one round from ``parent_dir`` and write ``out_dir``; returns its ``tunelab.json``.

    ``rows``: the trainer's dataset rows, prompts as chat turns (put behind the spec's system
    prompt here: asked behind it in Compare, trained behind it too). ``make_trainer(model=,
    args=, train_dataset=, processing_class=, callbacks=)`` builds the TRL trainer from
    :func:`round_config_args`'s fields. ``record`` is stored as ``preference``; ``metrics`` maps
    a metric's name in ``tunelab.json`` to the trainer's log key, read from the last step."""
    out_dir, work_dir, parent_dir = Path(out_dir), Path(work_dir), Path(parent_dir)
    check_target(out_dir, overwrite)
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_for_run(spec, base_ref)  # the per-device choices of a supervised run
    if recipe.strategy == "fsdp":
        raise ConfigError(f"The preference round {spec.name!r} would need FSDP ({recipe.why.get('strategy')}); "
                          "a round shards no weights.", fix="Run the round with --quantize 4bit, or on a bigger GPU.")
    device, precision = recipe.device, recipe.precision
    if recipe.cpu_machinery:  # the CPU's threads; none of it on CUDA
        set_cpu_threads(device)
    if on_phase is not None:
        on_phase(f"loading the base and the parent adapter {spec.parent}")
    system = spec.train.system_prompt
    dataset = Dataset.from_list([{**row, "prompt": behind_system(row["prompt"], system)} for row in rows])
    tokenizer = load_tokenizer(base_ref, plain_template=plain_template, trust_remote_code=trust_remote_code)
    base = load_base(base_ref, recipe, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(base, str(parent_dir), is_trainable=True)
    callback = ProgressCallback(on_progress, should_stop, should_pause,
                                before_step=before_step if device == "cpu" else None)
    trainer = make_trainer(model=model, args=round_config_args(spec, work_dir, precision=precision, device=device,
                                                               recipe=recipe),
                           train_dataset=dataset, processing_class=tokenizer, callbacks=[callback])
    callback.trainer = trainer
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if REFERENCE not in policy.peft_config:
        raise JobError("TRL did not keep a frozen copy of the parent adapter as the reference; the round would "
                       "be judged against the base instead.", fix="Use the trl version pinned in pyproject.toml.")
    started = time.perf_counter()
    result = trainer.train()
    runtime = time.perf_counter() - started
    if callback.stopped:
        raise TrainingCancelled(f"The preference round {spec.name!r} was cancelled at step "
                                f"{trainer.state.global_step}; no adapter was written.")
    if callback.paused and trainer.state.global_step < trainer.state.max_steps:
        raise TrainingPaused(f"The preference round {spec.name!r} was interrupted at step "
                             f"{trainer.state.global_step}; it starts again.")
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = logs[-1] if logs else {}
    parent_meta = read_meta(parent_dir)
    meta = {
        "name": spec.name,
        "goal": spec.goal or parent_meta.get("goal", ""),
        "base": {"spec": base_ref.spec, "name": base_ref.name, "kind": base_ref.kind},
        "parent": spec.parent,
        "data_hash": data_hash,
        "hyperparameters": {**spec.model_dump(mode="json"),
                            "lora": (parent_meta.get("hyperparameters") or {}).get("lora", spec.lora.model_dump())},
        "preference": {**record, "beta": spec.train.beta,
                       "reference": f"{spec.parent} (the adapter before the round)"},
        "metrics": {
            "train_loss": last.get("loss"),
            "first_loss": logs[0].get("loss") if logs else None,
            "train_loss_mean": float(result.training_loss),
            **{name: last.get(key) for name, key in metrics.items()},
            "runtime_s": runtime,
            "train_seconds": runtime,
            "steps": trainer.state.global_step,
            "examples": len(rows),
            "precision": precision,
            "device": device,
            "processes": trainer.accelerator.num_processes,
            "recipe": recipe.summary(),
            "epochs_trained": trainer.state.epoch,
        },
        **finished(callback.history),
    }
    # the new adapter is the trained copy alone: TRL's frozen reference copy is dropped first
    return write_from_main_process(trainer, policy, out_dir, meta, overwrite=overwrite,
                                   before_write=lambda: policy.delete_adapter(REFERENCE))


def rating_ids(rows: list[dict]) -> list[int]:
    """The ratings a round's rows came from, each once, in order."""
    return sorted({i for row in rows for i in row.get("rating_ids", [])})
