"""A preference round: TRL's ``DPOTrainer`` continuing from a finished adapter.

Input is a file of normalized preference pairs (:mod:`backend.data.preference`: the prompt
as chat turns, ``chosen`` / ``rejected`` as one assistant turn each). The parent adapter
is loaded onto the frozen base as a trainable PEFT model; TRL (checked against 1.16)
then adds a frozen copy of it named ``ref`` and computes the reference log-probabilities
with that copy active, so the reference is the adapter *before the round*, not the base.
The run checks that the copy is there and refuses to train otherwise.

TRL's DPO defaults that are wrong for a small LoRA round are overridden from the spec:
learning rate (TRL's 1e-6 is for full fine-tuning), logging every step, no gradient
checkpointing, ``use_cpu`` without CUDA. The new adapter is written like any other
(:func:`backend.training.run.write_adapter_folder`: three files, staged then renamed);
its ``tunelab.json`` records ``hyperparameters.method: "dpo"``, ``parent``, the pair count
and the rating ids the pairs came from.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from trl import DPOConfig, DPOTrainer

from backend.adapter_folder import read_meta
from backend.bases.load import load_model, load_tokenizer
from backend.bases.resolve import BaseRef
from backend.data.normalized import behind_system
from backend.data.preference import MIN_PAIRS, read_pairs
from backend.errors import DataError, JobError
from backend.hardware.device import device_kind, resolve_precision
from backend.hardware.threads import set_cpu_threads
from backend.hparams import RunSpec
from backend.training.run import (TrainingCancelled, TrainingPaused, check_target, common_training_args, finished,
                                  write_from_main_process)
from backend.training.trainer import ProgressCallback, ProgressFn, StopFn
from backend.words import counted

REFERENCE = "ref"  # the name TRL gives the frozen copy of the parent adapter


class RoundDPOTrainer(DPOTrainer):
    """DPOTrainer with the counters :class:`ProgressCallback` reads (tokens trained, for
    tokens/s; no evaluation, so no time spent in it)."""

    answer_tokens: int = 0
    train_tokens: int = 0
    eval_seconds: float = 0.0

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            mask = inputs.get("attention_mask")
            self.train_tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        return super().compute_loss(model, inputs, *args, **kwargs)


def make_dpo_config(spec: RunSpec, work_dir: Path, *, precision: str, device: str) -> DPOConfig:
    return DPOConfig(
        **common_training_args(spec, work_dir, precision=precision, device=device),
        beta=spec.train.beta,
        save_strategy="no",  # a round is short: an interrupted one starts again
        eval_strategy="no",
    )


def train_dpo_adapter(
    spec: RunSpec,
    *,
    base_ref: BaseRef,
    pairs_file: Path,
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
    """Train one preference round from ``parent_dir`` on ``pairs_file`` and write ``out_dir``.

    Returns the metadata written to ``tunelab.json``. Fewer than :data:`MIN_PAIRS` pairs is
    a :class:`DataError`; a cancel a :class:`TrainingCancelled` (nothing written)."""
    out_dir, work_dir, parent_dir = Path(out_dir), Path(work_dir), Path(parent_dir)
    check_target(out_dir, overwrite)
    pairs = read_pairs(pairs_file)
    if len(pairs) < MIN_PAIRS:
        raise DataError(f"{counted(len(pairs), 'preference pair')} in {Path(pairs_file).name}; a round needs at least "
                        f"{MIN_PAIRS}.", fix=f"Rate {counted(MIN_PAIRS - len(pairs), 'more prompt', 'more prompts')} with one answer 👍 and "
                        "another 👎, then export again.")
    work_dir.mkdir(parents=True, exist_ok=True)
    device = device_kind()
    precision = resolve_precision(spec.train.precision, device)
    set_cpu_threads(device)
    if on_phase is not None:
        on_phase(f"loading the base and the parent adapter {spec.parent}")
    system = spec.train.system_prompt  # asked behind it in Compare: trained behind it too
    dataset = Dataset.from_list([{"prompt": behind_system(p["prompt"], system), "chosen": p["chosen"],
                                  "rejected": p["rejected"]} for p in pairs])
    tokenizer = load_tokenizer(base_ref, plain_template=plain_template, trust_remote_code=trust_remote_code)
    base = load_model(base_ref, dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
                      trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(base, str(parent_dir), is_trainable=True)
    callback = ProgressCallback(on_progress, should_stop, should_pause,
                                before_step=before_step if device == "cpu" else None)
    trainer = RoundDPOTrainer(model=model, ref_model=None, args=make_dpo_config(spec, work_dir, precision=precision,
                                                                                 device=device),
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
    rating_ids = sorted({i for p in pairs for i in p.get("rating_ids", [])})
    meta = {
        "name": spec.name,
        "goal": spec.goal or parent_meta.get("goal", ""),
        "base": {"spec": base_ref.spec, "name": base_ref.name, "kind": base_ref.kind},
        "parent": spec.parent,
        "data_hash": data_hash,
        "hyperparameters": {**spec.model_dump(mode="json"),
                            "lora": (parent_meta.get("hyperparameters") or {}).get("lora", spec.lora.model_dump())},
        "preference": {"pairs": len(pairs), "rating_ids": rating_ids, "beta": spec.train.beta,
                       "reference": f"{spec.parent} (the adapter before the round)"},
        "metrics": {
            "train_loss": last.get("loss"),
            "first_loss": logs[0].get("loss") if logs else None,
            "train_loss_mean": float(result.training_loss),
            "reward_accuracy": last.get("rewards/accuracies"),
            "reward_margin": last.get("rewards/margins"),
            "runtime_s": runtime,
            "train_seconds": runtime,
            "steps": trainer.state.global_step,
            "examples": len(pairs),
            "precision": precision,
            "device": device,
            "epochs_trained": trainer.state.epoch,
        },
        **finished(callback.history),
    }
    # the new adapter is the trained copy alone: TRL's frozen reference copy is dropped first
    return write_from_main_process(trainer, policy, out_dir, meta, overwrite=overwrite,
                                   before_write=lambda: policy.delete_adapter(REFERENCE))
