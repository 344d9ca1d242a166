"""One LoRA training run: TRL's ``SFTTrainer`` + a peft ``LoraConfig``, exactly as a
:class:`~backend.hparams.RunSpec` says, ending in one adapter folder.

Input is the data doctor's normalized JSONL (``{"messages": [...]}`` per line, last
message from the assistant). Each row becomes TRL's conversational prompt/completion
form, so the loss covers the answer only.

What this module changes from TRL's defaults, and why:

* learning rate, logging every step and no gradient checkpointing come from the spec
  (TRL's 2e-5 / every 10 steps / checkpointing-on are meant for full fine-tuning);
* ``use_cpu=True`` where there is no CUDA, and bf16 only where the hardware has it;
* batches are built from examples of similar length (shuffled batch order), so little
  compute goes to padding;
* the LM head runs on answer positions only. TRL's fused head scores every position on
  machines without Triton (and computes entropy for its logs); the prompt and padding
  positions never contribute to the loss, so projecting them onto the vocabulary is
  wasted work. The decoder is called directly, so the head is not even run on one
  position per row (``logits_to_keep=1`` in bf16 on CPU became a batched copy of the
  whole 49152 x 576 head: ~0.9 s of a ~5 s step on SmolLM2-135M).

CPU path (measured with torch.profiler on SmolLM2-135M-Instruct, batches of 8 rows of
~110 tokens, 2 AMD EPYC cores with AVX512-BF16, all-linear r8 LoRA). Before: 176 tokens/s
(all tokens) with fp32 weights under bf16 autocast; top ops by self CPU time were the
matmuls (32%), LoRA dropout's ``bernoulli_`` (19%), dtype copies (11%: autocast casting
the frozen fp32 weights, peft casting every LoRA input to fp32 and back), bf16
elementwise ops (10%) and bf16 flash attention (12%). What is done about it:

* bf16 training keeps the frozen base weights in bf16 (no per-step weight casts); the
  LoRA weights, the only trained ones, stay fp32 (peft's ``autocast_adapter_dtype``)
  and the saved adapter is unchanged;
* LoRA dropout draws 15-bit random words four to a 64-bit draw (:func:`fast_dropout_class`);
* under autocast, peft's fp32 round trip of each LoRA input is skipped (autocast casts
  it straight back to bf16 for the matmul, so nothing changes numerically);
* eager attention instead of bf16 SDPA on CPU (the flash kernel is ~2x slower here);
* then the kernels of :mod:`backend.training.cpu.kernels`: each LoRA projection (frozen base +
  adapter + dropout that draws only the ~5% of positions it drops) as one autograd
  function, RMSNorm with a hand-written backward, grouped causal attention, the LM head
  and cross-entropy a block of rows at a time, and an allocator that keeps and reuses
  freed memory in huge pages (the worker process starts with
  ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``). Measured on the same 20 batches, in one
  process: about 1.4x the tokens/s of the path above; the native kernels (C, with
  LoRA's rank-r products on AVX-512) bring the benchmark to ~390 tokens/s.

Before the kernels: ~270 tokens/s in bf16 vs ~183 in fp32 with the same fixes, so 'auto' picks
bf16 wherever the CPU has bf16 units (:func:`resolve_precision`). The frozen weights get
no gradients (peft sets ``requires_grad=False``; asserted in the tests). Batches of more
rows were measured and do not help (16 rows: +7%, 32 rows: slower, from padding), so the
batch size stays what the spec says.

The run is ``accelerate launch`` compatible: every rank trains, only the main process
writes the adapter folder. Output is written to a dot-prefixed temporary folder inside
``adapters/`` and renamed into place, so a crash or a cancel leaves nothing behind and
an existing adapter is never half-overwritten.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.adapter_folder import ADAPTER_FILES, CONFIG_FILE, WEIGHTS_FILE, is_complete, write_meta
from backend.atomic import staged_folder
from backend.bases.resolve import BaseRef
from backend.bases.load import decoder_of, load_model, load_tokenizer, scales_logits
from backend.data.normalized import read_rows, split_rows, to_prompt_completion
from backend.errors import ConfigError, JobError
from backend.hardware.device import device_kind, resolve_precision
from backend.hardware.threads import set_cpu_threads
from backend.hparams import RunSpec
from backend.store import utcnow

ProgressFn = Callable[[dict], None]
StopFn = Callable[[], bool]

CHECKPOINTS = "checkpoints"


class TrainingCancelled(JobError):
    """The run was asked to stop; no adapter folder was written."""


class TrainingPaused(JobError):
    """The run was interrupted (e.g. the app shut down); a checkpoint was saved to resume from."""


class AdapterExists(JobError):
    """A finished adapter of that name exists and overwriting was not asked for."""


# --- data -------------------------------------------------------------------------------


def build_datasets(spec: RunSpec, train_file: Path, eval_file: Path | None):
    from datasets import Dataset

    train_rows = read_rows(train_file)
    if eval_file is not None and Path(eval_file).is_file():
        eval_rows = read_rows(eval_file)
    else:  # one file: held out exactly as the data doctor would have
        train_rows, eval_rows = split_rows(train_rows, eval_fraction=spec.train.eval_fraction, seed=spec.train.seed)
    system = spec.train.system_prompt
    train = Dataset.from_list([to_prompt_completion(m, system) for m in train_rows])
    evals = Dataset.from_list([to_prompt_completion(m, system) for m in eval_rows]) if eval_rows else None
    return train, evals


def plan_steps(n_train: int, spec: RunSpec, world_size: int = 1) -> int:
    per_epoch = math.ceil(n_train / (spec.train.batch_size * world_size))
    return max(1, math.ceil(per_epoch * spec.train.epochs))


def make_sft_config(spec: RunSpec, work_dir: Path, *, has_eval: bool, precision: str, device: str):
    """SFTConfig with TRL's small-run pitfalls overridden (fields checked against TRL 1.16)."""
    from trl import SFTConfig

    t = spec.train
    return SFTConfig(
        output_dir=str(Path(work_dir) / CHECKPOINTS),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_length,
        completion_only_loss=True,
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=(t.eval_steps or 0.25) if has_eval else None,
        save_strategy="steps",
        save_steps=t.save_steps or 0.2,
        save_total_limit=2,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_pin_memory=device == "cuda",
        report_to="none",
        disable_tqdm=True,
    )


# --- the trainer ---------------------------------------------------------------------------


class LengthBatchSampler:
    """Indices in batches of similar length, batch order shuffled per epoch.

    Sorting first keeps padding low; shuffling the batches (unlike transformers'
    ``LengthGroupedSampler``, which runs each mega-batch longest first) keeps the
    order of lengths from becoming a curriculum. Deterministic per (seed, epoch), so a
    resumed run skips exactly the batches it had seen.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        gen = torch.Generator().manual_seed(self.seed * 1009 + self.epoch)
        jitter = torch.rand(len(self.lengths), generator=gen).tolist()
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], jitter[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=gen).tolist()
        return iter([i for b in shuffled for i in batches[b]])


@functools.cache
def fast_dropout_class():
    """A drop-in for ``nn.Dropout`` on CPU that draws its mask from 15-bit random words.

    torch's CPU dropout draws one Bernoulli sample per element through a scalar
    generator call (~5 ms for a 8 x 200 x 576 activation on this class of machine),
    and a LoRA layer applies dropout to its input on every projection: ~20% of a
    training step went there. Here one 64-bit random draw feeds four 15-bit words
    (low 15 bits of each int16 lane), so the generator runs a quarter as often. The
    drop probability becomes ``round(p * 32768) / 32768`` (0.05 -> 0.049988) and the
    kept values are scaled by ``1 / (1 - that)``, so the expectation stays exact.
    """
    import torch

    class FastDropout(torch.nn.Module):
        def __init__(self, p: float):
            super().__init__()
            self.p = float(p)
            self.threshold = round(self.p * 32768)
            self.scale = 32768 / (32768 - self.threshold) if self.threshold < 32768 else 0.0

        def extra_repr(self) -> str:
            return f"p={self.p}"

        def forward(self, x):
            if not self.training or self.threshold == 0:
                return x
            n = x.numel()
            words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
            lanes = words.view(torch.int16)[:n].view(x.shape)
            keep = torch.bitwise_and(lanes, 0x7FFF) >= self.threshold
            return x.mul(keep).mul_(self.scale)

    return FastDropout


def use_fast_lora_dropout(model) -> int:
    """Swap peft's LoRA dropout modules for :func:`fast_dropout_class` ones (CPU only).
    Dropout has no parameters, so the adapter files are unchanged. Returns the count."""
    import torch

    fast = fast_dropout_class()
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for key, layer in list(dropouts.items()):
            if type(layer) is torch.nn.Dropout and layer.p > 0:
                dropouts[key] = fast(layer.p)
                swapped += 1
    return swapped


def _use_eager_attention(model) -> None:
    """bf16 SDPA on CPU (flash kernel) is ~2x slower than eager attention at these
    lengths (forward+backward of 8 x 9 heads x 197 x 64: 42 ms vs 20 ms)."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is None:
        return
    try:
        setter("eager")
    except (ValueError, ImportError, AttributeError):
        pass


def tune_for_device(model, *, device: str, precision: str) -> None:
    """CPU-only speed-ups that change no result beyond rounding:

    * every trained parameter is fp32 (peft's ``autocast_adapter_dtype`` does this; made sure);
    * LoRA dropout draws its mask with :func:`fast_dropout_class` (where peft's own
      forward still runs);
    * under bf16 autocast, peft's cast of each LoRA input to the fp32 adapter dtype is
      turned off: autocast casts it straight back to bf16 for the matmul, so the
      round trip (two copies of every activation, per adapted projection) changes nothing;
    * the kernels of :func:`backend.training.cpu.kernels.speed_up_cpu_training`.
    """
    import torch

    from backend.training.cpu.kernels import speed_up_cpu_training

    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    if device != "cpu":
        return
    use_fast_lora_dropout(model)
    if precision == "bf16":
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    speed_up_cpu_training(model)


def _make_trainer_class():
    """Built lazily so that importing this module never imports torch or TRL."""
    import torch
    from trl import SFTTrainer

    from backend.training.cpu.kernels import head_loss_sum

    class AnswerOnlySFTTrainer(SFTTrainer):
        """SFTTrainer that projects only answer positions onto the vocabulary and counts
        answer tokens (for tokens/s) and time spent in evaluation."""

        answer_tokens: int = 0
        eval_seconds: float = 0.0

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [len(ids) for ids in dataset["input_ids"]]
            return LengthBatchSampler(lengths, self.args.per_device_train_batch_size, self.args.seed)

        def evaluate(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                self.eval_seconds += time.perf_counter() - started

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            special_head = scales_logits(self.accelerator.unwrap_model(model).config)
            if return_outputs or special_head or "labels" not in inputs or self.args.loss_type != "nll" \
                    or self.label_smoother is not None or getattr(self, "aux_loss_enabled", False):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs["labels"]
            forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            unwrapped = self.accelerator.unwrap_model(model)
            decoder = decoder_of(unwrapped)
            if decoder is not None:
                # the decoder alone: no LM head call at all (even logits_to_keep=1 projects
                # one position per row, and bf16 on CPU turns that into a copy of the head)
                with self.accelerator.autocast():
                    hidden = decoder(**forward_inputs, use_cache=False).last_hidden_state[:, :-1]
            else:
                outputs = model(**forward_inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
                hidden = outputs.hidden_states[-1][:, :-1]
            targets = labels[:, 1:]
            mask = targets != -100
            head = unwrapped.get_output_embeddings()
            if hidden.device.type == "cpu" and type(head) is torch.nn.Linear and head.bias is None \
                    and head.weight.dtype == hidden.dtype:
                loss_sum = head_loss_sum(hidden[mask], head.weight, targets[mask])
            else:
                logits = head(hidden[mask]).float()
                loss_sum = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="sum")
            if num_items_in_batch is None:
                loss = loss_sum / mask.sum().clamp(min=1)
            else:
                loss = loss_sum / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    loss = loss * self.accelerator.num_processes
            if model.training:
                self.answer_tokens += int(mask.sum())
            return loss

    return AnswerOnlySFTTrainer


def _make_progress_callback(trainer_ref: dict, on_progress: ProgressFn | None, should_stop: StopFn | None,
                            should_pause: StopFn | None = None):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Turns the trainer's logs into progress dicts and ``should_stop()`` into a stop."""

        def __init__(self):
            self.stopped = False
            self.paused = False
            self.started = None
            self.first_step = 0
            self.history: list[dict] = []

        def _emit(self, state, **fields):
            if on_progress is None or not state.is_world_process_zero:
                return
            trainer = trainer_ref["trainer"]
            elapsed = max(1e-9, time.perf_counter() - self.started - trainer.eval_seconds)
            done = max(0, state.global_step - self.first_step)
            tokens_per_s = trainer.answer_tokens * trainer.accelerator.num_processes / elapsed if done else None
            eta = (state.max_steps - state.global_step) * elapsed / done if done else None
            on_progress(dict(step=state.global_step, total_steps=state.max_steps,
                             tokens_per_s=tokens_per_s, eta_s=eta, **fields))

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.first_step = state.global_step
            if state.is_world_process_zero and on_progress is not None:
                on_progress(dict(step=state.global_step, total_steps=state.max_steps, loss=None,
                                 eval_loss=None, tokens_per_s=None, eta_s=None,
                                 resumed_from=state.global_step))

        def on_step_end(self, args, state, control, **kwargs):
            stop = bool(should_stop()) if should_stop is not None else False
            stop = _any_rank(trainer_ref["trainer"], stop)
            if stop:
                self.stopped = True
                control.should_training_stop = True
                control.should_save = False
                control.should_evaluate = False
                return
            pause = bool(should_pause()) if should_pause is not None else False
            if _any_rank(trainer_ref["trainer"], pause):
                self.paused = True
                control.should_training_stop = True
                control.should_save = True  # the checkpoint a resumed run starts from
                control.should_evaluate = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                self.history.append({"step": state.global_step, "loss": float(logs["loss"]), "eval_loss": None})
                self._emit(state, loss=float(logs["loss"]), eval_loss=None)
            if "eval_loss" in logs:
                self.history.append({"step": state.global_step, "loss": None, "eval_loss": float(logs["eval_loss"])})
                self._emit(state, loss=None, eval_loss=float(logs["eval_loss"]))

    return ProgressCallback()


def _any_rank(trainer, flag: bool) -> bool:
    """The stop flag agreed by every rank, so distributed ranks stop at the same step."""
    if trainer is None or trainer.accelerator.num_processes == 1:
        return flag
    import torch

    value = torch.tensor([1.0 if flag else 0.0], device=trainer.accelerator.device)
    return bool(trainer.accelerator.reduce(value, reduction="sum").item() > 0)


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer_state.json was written, which
    the Trainer does last), so a run killed mid-save resumes from the one before."""
    folder = Path(work_dir) / CHECKPOINTS
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*")
             if p.name.rsplit("-", 1)[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]), default=None)


def checkpoint_step(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    state = checkpoint / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text()).get("global_step", 0))
    return int(checkpoint.name.rsplit("-", 1)[-1])


# --- the run ----------------------------------------------------------------------------------


def check_target(out_dir: Path, overwrite: bool) -> None:
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
) -> dict:
    """Train one LoRA adapter and write ``out_dir`` (= ``adapters/<name>``).

    ``should_stop()`` is asked after every step; true cancels the run (nothing written,
    :class:`TrainingCancelled`). ``should_pause()`` true stops after saving a checkpoint
    (:class:`TrainingPaused`); ``resume=True`` later continues from the last checkpoint
    in ``work_dir``. Returns the metadata written to ``tunelab.json``. Raises
    :class:`AdapterExists` when the name is taken, :class:`DataError` for unusable data.
    """
    import torch
    from peft import LoraConfig

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    check_target(out_dir, overwrite)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = device_kind()
    precision = resolve_precision(spec.train.precision, device)
    set_cpu_threads(device)

    train_ds, eval_ds = build_datasets(spec, train_file, eval_file)
    tokenizer = load_tokenizer(base_ref, plain_template=plain_template, trust_remote_code=trust_remote_code)
    # bf16: the frozen base weights live in bf16 (autocast would otherwise cast every fp32
    # weight on every forward); peft keeps the LoRA weights, the only trained ones, in fp32.
    model = load_model(base_ref, dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
                       trust_remote_code=trust_remote_code)
    if device == "cpu" and precision == "bf16":
        _use_eager_attention(model)
    try:
        peft_config = LoraConfig(**spec.lora.to_peft_kwargs())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"The LoRA configuration is invalid: {exc}") from exc

    args = make_sft_config(spec, work_dir, has_eval=eval_ds is not None, precision=precision, device=device)
    trainer_ref: dict[str, Any] = {"trainer": None}
    callback = _make_progress_callback(trainer_ref, on_progress, should_stop, should_pause)
    trainer_cls = _make_trainer_class()
    try:
        trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=[callback])
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"Could not apply the LoRA configuration to base {base_ref.spec!r}: {exc}") from exc
    trainer_ref["trainer"] = trainer
    tune_for_device(trainer.model, device=device, precision=precision)

    checkpoint = last_checkpoint(work_dir) if resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    runtime = time.perf_counter() - started
    if callback.stopped:
        raise TrainingCancelled(f"Training of {spec.name!r} was cancelled at step {trainer.state.global_step}; "
                                "no adapter was written.")
    if callback.paused and trainer.state.global_step < trainer.state.max_steps:
        raise TrainingPaused(f"Training of {spec.name!r} was interrupted at step {trainer.state.global_step}; "
                             "it resumes from its checkpoint.")

    eval_loss = _final_eval_loss(trainer, callback) if eval_ds is not None else None
    train_time = max(1e-9, runtime - trainer.eval_seconds)
    answer_tokens = trainer.answer_tokens * trainer.accelerator.num_processes
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
            "tokens_per_s": answer_tokens / train_time,
            "runtime_s": runtime,
            "train_seconds": train_time,
            "answer_tokens": answer_tokens,
            "steps": trainer.state.global_step,
            "resumed_from_step": callback.first_step,
            "examples": len(train_ds),
            "eval_examples": len(eval_ds) if eval_ds is not None else 0,
            "precision": precision,
            "device": device,
        },
        "loss_history": callback.history,
        "status": "done",
        "verdict": None,
        "created": utcnow().isoformat(timespec="seconds") + "Z",
    }
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        write_adapter_folder(trainer.accelerator.unwrap_model(trainer.model), out_dir, meta, overwrite=overwrite)
    trainer.accelerator.wait_for_everyone()
    return meta


def _final_eval_loss(trainer, callback) -> float | None:
    """Eval loss at the last step: the logged one if the schedule just evaluated, else a fresh one."""
    last = next((h for h in reversed(callback.history) if h["eval_loss"] is not None), None)
    if last is not None and last["step"] == trainer.state.global_step:
        return last["eval_loss"]
    return float(trainer.evaluate()["eval_loss"])


def write_adapter_folder(peft_model, out_dir: Path, meta: dict, *, overwrite: bool = False) -> Path:
    """Write exactly the three contract files, via a dot-prefixed temp folder + rename."""
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
    with staged_folder(out_dir) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        for extra in tmp.iterdir():  # peft adds a README.md model card; the contract is three files
            if extra.name not in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
        write_meta(tmp, meta)
        written = sorted(p.name for p in tmp.iterdir())
        if written != sorted(ADAPTER_FILES):
            raise JobError(f"peft wrote {written} instead of the adapter files {sorted(ADAPTER_FILES)}.")
    return out_dir
