"""TRL's ``SFTTrainer`` as a LoRA run uses it: answer-only head, batches, progress.

* :class:`AnswerOnlySFTTrainer` runs the LM head on answer positions only, a block of
  them at a time (:func:`backend.training.cpu.head_loss.head_loss_sum`, on every device:
  the whole (answer tokens x vocabulary) logits never exist). TRL's head
  scores every position on machines without Triton (and computes entropy for its
  logs), but the prompt and padding positions never contribute to the loss, so
  projecting them onto the vocabulary is wasted work. The decoder is called directly,
  so the head is not even run on one position per row (``logits_to_keep=1`` in bf16 on
  CPU becomes a batched copy of the whole head). It also counts the tokens trained
  (for tokens/s, :func:`backend.training.progress.tokens_per_s`), the answer tokens and
  the time spent in evaluation.
* :class:`LengthBatchSampler` builds padded batches of examples of similar length, so
  little compute goes to padding (a CPU recipe's ``length_grouped``); :class:`ShuffledSampler`
  draws batches at random, like plain TRL: padding-free ones (CUDA), where grouping would
  save nothing, and any run whose recipe does not group.
* Its warmup is the ratio's whole steps, rounded down (:func:`whole_warmup_steps`).
* :class:`ProgressCallback` turns the trainer's logs into progress dicts and the
  caller's ``should_stop()`` / ``should_pause()`` into a stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from backend.bases.load import decoder_of, scales_logits
from backend.bases.memory import CPU_LOSS_BLOCK_ROWS, LOSS_BLOCK_ROWS
from backend.training.cpu.head_loss import head_loss_sum
from backend.training.progress import tokens_per_s

ProgressFn = Callable[[dict], None]
StopFn = Callable[[], bool]


class LengthBatchSampler:
    """Indices in batches of similar length, batch order shuffled per epoch: for padded
    batches (the CPU's), where it saves the padding.

    Sorting first keeps padding low; shuffling the batches (unlike transformers'
    ``LengthGroupedSampler``, which runs each mega-batch longest first) keeps the
    order of lengths from becoming a curriculum. The price is in what a step learns
    from: on ``bench/batches.py`` one epoch of random batches ended 2.9% below these
    batches' held-out loss but took 1.37x the time, and given that time these batches
    ended level with random ones or below (docs/training.md#batches). Deterministic per
    (seed, epoch), so a resumed run skips exactly the batches it had seen.
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
        gen = torch.Generator().manual_seed(self.seed * 1009 + self.epoch)
        jitter = torch.rand(len(self.lengths), generator=gen).tolist()
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], jitter[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=gen).tolist()
        return iter([i for b in shuffled for i in batches[b]])


class ShuffledSampler:
    """Every example once per epoch, in a random order fixed by (seed, epoch): for
    padding-free batches (CUDA's), which have no padding to save by grouping lengths.

    Batches are random draws, as in plain TRL: grouping by length would only cost what a
    step learns from (in real data length goes with the task or the label), with no time
    to show for it. Deterministic, so a resumed run skips exactly the examples it had seen.
    """

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1009 + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())


def whole_warmup_steps(ratio: float, total_steps: int) -> int:
    """Warmup steps for a warmup ``ratio`` of ``total_steps``, rounded down.

    transformers rounds up, and its linear warmup starts at rate 0: a 20-step run's 3%
    (0.6 of a step) became one step that learned nothing, 5% of the run (without it the
    held-out loss of such runs was 0.3-1.1% lower, docs/training.md#batches). Rounded
    down, a run shorter than 1 / ratio steps has no warmup, a longer one its whole steps."""
    return int(ratio * total_steps + 1e-9)  # (0.29 x 100 is 28.999... in floating point)


class AnswerOnlySFTTrainer(SFTTrainer):
    """SFTTrainer that projects only answer positions onto the vocabulary and counts
    tokens trained (prompt and answer, no padding: for tokens/s), answer tokens and time
    spent in evaluation."""

    answer_tokens: int = 0
    train_tokens: int = 0
    eval_seconds: float = 0.0
    length_grouped: bool = False  # padded batches of similar lengths (the recipe's choice, set by the run)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.padding_free or not self.length_grouped:
            return ShuffledSampler(len(dataset), self.args.seed)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        return LengthBatchSampler(lengths, self.args.per_device_train_batch_size, self.args.seed)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if 0 < self.args.warmup_steps < 1:  # a ratio: this run's whole steps of it, before transformers rounds up
            self.args.warmup_steps = whole_warmup_steps(self.args.warmup_steps, num_training_steps)
        return super().create_scheduler(num_training_steps, optimizer)

    def evaluate(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.eval_seconds += time.perf_counter() - started

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            mask = inputs.get("attention_mask")
            self.train_tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        unwrapped = self.accelerator.unwrap_model(model)
        if return_outputs or scales_logits(unwrapped.config) or "labels" not in inputs \
                or self.args.loss_type != "nll" or self.label_smoother is not None \
                or getattr(self, "aux_loss_enabled", False) or getattr(self, "is_fsdp_enabled", False):
            # (under FSDP the head's weight is a shard outside the model's forward: TRL's own loss)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        # under DDP the forward must go through the wrapper (it arms the gradient all-reduce)
        decoder = decoder_of(unwrapped) if unwrapped is model else None
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
        if type(head) is torch.nn.Linear and head.bias is None and head.weight.is_floating_point():
            # a block of answer rows at a time: the (answer tokens x vocabulary) logits never exist
            # whole (with a 128k vocabulary they would be GiBs on a GPU); a QLoRA base's fp32 final
            # norm hands fp32 rows to a bf16 head: cast, as autocast would
            rows = hidden[mask].to(head.weight.dtype)
            block = CPU_LOSS_BLOCK_ROWS if hidden.device.type == "cpu" else LOSS_BLOCK_ROWS
            loss_sum = head_loss_sum(rows, head.weight, targets[mask], block_rows=block)
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


class ProgressCallback(TrainerCallback):
    """Turns the trainer's logs into progress dicts and ``should_stop()`` into a stop.

    ``trainer`` is set once the trainer is built (it takes this callback as an argument).
    ``history`` collects every logged loss and eval loss, for ``tunelab.json``.
    """

    def __init__(self, on_progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                 should_pause: StopFn | None = None, before_step: Callable[[], float] | None = None):
        self.on_progress, self.should_stop, self.should_pause = on_progress, should_stop, should_pause
        self.before_step = before_step  # e.g. wait while the serving engine answers (backend.hardware.threads.CoreYield)
        self.waited_s = 0.0  # spent in before_step: not training time
        self.trainer: AnswerOnlySFTTrainer | None = None
        self.stopped = False
        self.paused = False
        self.started = None
        self.first_step = 0
        self.history: list[dict] = []

    def _emit(self, state, **fields):
        if self.on_progress is None or not state.is_world_process_zero:
            return
        trainer = self.trainer
        elapsed = max(1e-9, time.perf_counter() - self.started - trainer.eval_seconds - self.waited_s)
        done = max(0, state.global_step - self.first_step)
        speed = tokens_per_s(trainer.train_tokens * trainer.accelerator.num_processes, elapsed) if done else None
        eta = (state.max_steps - state.global_step) * elapsed / done if done else None
        self.on_progress(dict(step=state.global_step, total_steps=state.max_steps,
                              tokens_per_s=speed, eta_s=eta, **fields))

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.first_step = state.global_step
        if state.is_world_process_zero and self.on_progress is not None:
            self.on_progress(dict(step=state.global_step, total_steps=state.max_steps, loss=None,
                                  eval_loss=None, tokens_per_s=None, eta_s=None, resumed_from=state.global_step))

    def wait(self, *_args) -> None:
        """Run ``before_step`` (the serving engine's answers go first) and count its wait."""
        if self.before_step is not None:
            self.waited_s += self.before_step() or 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.wait()

    def wait_between_layers(self, model) -> int:
        """Also wait before each decoder layer of a training forward pass, so an answer that
        arrives mid-step waits for one layer, not a whole step; returns the layers hooked."""
        if self.before_step is None:
            return 0
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        for layer in layers:
            layer.register_forward_pre_hook(lambda module, _inputs: self.wait() if module.training else None)
        return len(layers)

    def on_step_end(self, args, state, control, **kwargs):
        stop = bool(self.should_stop()) if self.should_stop is not None else False
        if any_rank(self.trainer, stop):
            self.stopped = True
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False
            return
        pause = bool(self.should_pause()) if self.should_pause is not None else False
        if any_rank(self.trainer, pause):
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


def any_rank(trainer, flag: bool) -> bool:
    """The flag agreed by every rank (true if any rank's is), so distributed ranks stop
    at the same step."""
    if trainer is None or trainer.accelerator.num_processes == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=trainer.accelerator.device)
    return bool(trainer.accelerator.reduce(value, reduction="sum").item() > 0)
