"""How a run trains on the device it is given: every per-device choice, in one place.

:func:`choose_recipe` is a pure function of three inputs: the device's facts
(:class:`DeviceFacts`: CPU or CUDA, its name, its memory, whether it has bf16, whether
FlashAttention-2 is installed), the run's :class:`~backend.hparams.RunSpec`, and the
inspector's report of the base (:func:`backend.bases.inspect.inspect_base`, whose
memory arithmetic is :func:`backend.bases.memory.memory_estimates`). Tests hand it a
described H100 on a machine without one; a run hands it :func:`describe_device` and
applies what it says (:mod:`backend.training.run`).

On a CPU (what the CPU path always did):
  precision by the CPU's bf16 units; eager attention in bf16; padded, length-grouped
  batches (:class:`backend.training.trainer.LengthBatchSampler`); the CPU machinery
  on (the kernels of :mod:`backend.training.cpu.tuning`, the
  native build, the allocator, torch's threads, ``use_cpu``); gradient checkpointing as
  the spec says.
On CUDA:
  bf16 where the GPU has it, else fp16 (the trainer's loss scaling); padding-free batches
  (TRL ``padding_free``: one flattened row with ``position_ids``, no pad tokens), drawn at
  random like plain TRL's (:class:`backend.training.trainer.ShuffledSampler`), attended
  with FlashAttention-2 where ``flash_attn`` is installed, else with
  :mod:`backend.training.packed_attention` (each example on its own, no T × T mask); none of
  the CPU machinery; gradient checkpointing only when the memory estimate of the base,
  the LoRA ranks, the batch and the length at the spec's batch does not fit the GPU's
  memory (less :data:`HEADROOM`, and less what is already held on the GPU when the run
  starts: the serving engine of ``tunelab up`` on the same card). If it still does not
  fit, the batch per step is halved (gradient accumulation keeps the examples per
  optimizer step), and if batch 1 does not fit what is free of the card the run is
  refused, naming what ``--quantize 4bit`` would need.
``--quantize 4bit|8bit`` (QLoRA, bitsandbytes) needs CUDA and is refused elsewhere.

Several processes (``--processes N``): DDP, each rank holding the whole base, wherever the
run fits one device; FSDP (FSDP2 through accelerate's plugin: each decoder layer's weights,
the LoRA weights, their gradients and AdamW's moments sharded over the ranks) when even
batch 1 with gradient checkpointing does not fit one GPU in bf16. accelerate runs FSDP on
GPUs only (its CPU ranks are plain DDP over gloo), so CPU ranks always use DDP.

A preference round (``spec.method`` dpo or kto) is sized for what TRL runs: padded rows (its
padding-free preference batches need FlashAttention), and for DPO both answers of each pair
in one forward pass, so twice the rows of its batch (:data:`ROWS_PER_EXAMPLE`; KTO's KL
partner and every reference pass run without gradients, so they keep no activations).
TRL's fused LM head scores the answers in tiles, like the supervised path's blocked head.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import asdict, dataclass, field

from backend.bases.inspect import inspect_base
from backend.bases.memory import memory_estimates
from backend.errors import ConfigError, TuneLabError
from backend.hardware.device import resolve_precision
from backend.hparams import RunSpec
from backend.training import packed_attention

GIB = 1024**3
HEADROOM = 0.85  # share of the GPU's memory an estimate may take: the CUDA context, kernels, fragmentation
# bytes per quantized weight: NF4 = 4 bits + one fp8 absmax per 64 weights (double quantization)
# and a tiny second level; int8 = 1 byte + a scale per row
QUANT_BYTES = {"4bit": 4.127 / 8, "8bit": 1.0}
QUANTIZE_NEEDS_CUDA = ("--quantize {q} (QLoRA through bitsandbytes) needs a CUDA GPU; this machine has none "
                       "(device: {device}).")
# rows each example puts through the model with gradients: DPO's chosen and rejected answers
ROWS_PER_EXAMPLE = {"sft": 1, "dpo": 2, "kto": 1}
QUANTIZE_FIX = "Train without --quantize here (LoRA on the unquantized base), or run on a machine with a CUDA GPU."


@dataclass(frozen=True)
class DeviceFacts:
    """What a run needs to know of the device it trains on (a plain description)."""

    kind: str  # "cpu" or "cuda"
    name: str = ""
    total_memory: int = 0  # bytes of GPU memory (CUDA); 0 when unknown (CPU)
    bf16: bool = False  # CUDA: the GPU computes in bf16; CPU: it has bf16 units
    flash_attn: bool = False  # the flash_attn package is importable
    count: int = 1  # visible GPUs
    in_use: int = 0  # bytes of GPU memory already held when the facts were read (e.g. a serving engine)

    def label(self) -> str:
        memory = f", {self.total_memory / GIB:.0f} GiB" if self.total_memory else ""
        held = f", {self.in_use / GIB:.1f} GiB of it in use" if self.in_use >= GIB else ""
        return f"{self.name or self.kind}{memory}{held}"

    def budget(self) -> int:
        """The bytes a run's estimate may take: :data:`HEADROOM` of the GPU's memory, less
        what is already held on it (the serving engine of ``tunelab up`` on the same GPU)."""
        return max(0, int(self.total_memory * HEADROOM) - self.in_use)


@dataclass(frozen=True)
class Recipe:
    """The choices a run applies; ``why`` says each one's reason (kept in ``tunelab.json``)."""

    device: str
    precision: str  # bf16 | fp16 | fp32
    attention: str | None  # flash_attention_2 | sdpa | eager | None (the model's own)
    padding_free: bool
    gradient_checkpointing: bool
    per_device_batch: int
    accumulation: int
    cpu_machinery: bool  # CPU kernels, native build, allocator, threads, use_cpu
    quantize: str | None
    processes: int
    strategy: str = "single"  # single | ddp | fsdp: how several processes share the work
    memory_estimate: int | None = None  # bytes, for the choices made (CUDA)
    memory_budget: int | None = None
    # padded batches of examples of similar length (less padding) rather than random draws
    # (backend.training.trainer.LengthBatchSampler / ShuffledSampler; docs/training.md#batches)
    length_grouped: bool = False
    why: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        return asdict(self)


def describe_device(kind: str | None = None) -> DeviceFacts:
    """This machine's facts (CUDA device 0 where a GPU is visible)."""
    import torch  # heavy: only when a run asks

    from backend.hardware.device import cpu_has_bf16

    kind = kind or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind != "cuda":
        return DeviceFacts(kind="cpu", name="CPU", bf16=cpu_has_bf16())
    props = torch.cuda.get_device_properties(0)
    # this process's own GPU (a rank's LOCAL_RANK): asking another would open a context there
    mine = int(os.environ.get("LOCAL_RANK", "0"))
    free, total = torch.cuda.mem_get_info(mine if mine < torch.cuda.device_count() else 0)
    return DeviceFacts(kind="cuda", name=props.name, total_memory=int(props.total_memory),
                       bf16=bool(torch.cuda.is_bf16_supported()),
                       flash_attn=importlib.util.find_spec("flash_attn") is not None,
                       count=torch.cuda.device_count(), in_use=max(0, int(total - free)))


def check_quantize(quantize: str | None, facts: DeviceFacts) -> None:
    """Refuse ``--quantize`` where there is no CUDA GPU."""
    if quantize and facts.kind != "cuda":
        raise ConfigError(QUANTIZE_NEEDS_CUDA.format(q=quantize, device=facts.label()), fix=QUANTIZE_FIX)


# --- memory ---------------------------------------------------------------------------------------


def quantized_base_bytes(report: dict, quantize: str) -> int:
    """The frozen base's bytes with its decoder linears quantized: the embeddings and the
    LM head stay bf16 (bitsandbytes leaves them; :mod:`backend.training.quantize` keeps
    them bf16), norms are a rounding error."""
    vocab, hidden = report.get("vocab_size") or 0, report.get("hidden_size") or 0
    embed = vocab * hidden * (1 if report.get("tie_word_embeddings") else 2)
    linears = max(0, report["total_params"] - embed)
    return int(linears * QUANT_BYTES[quantize] + embed * 2)


def training_bytes(report: dict, *, batch: int, seq_len: int, checkpointing: bool, precision: str,
                   quantize: str | None = None, packed: bool = False) -> int:
    """The inspector's estimate of a run's peak memory (bytes) at ``batch`` × ``seq_len``;
    ``packed``: padding-free rows under SDPA (a block mask over the step's tokens)."""
    dtype = "fp32" if precision == "fp32" else "bf16"
    parts = memory_estimates(report, batch_size=batch, seq_len=seq_len, gradient_checkpointing=checkpointing,
                             packed=packed)["training"][dtype]
    total = parts["total"]
    if quantize:
        total += quantized_base_bytes(report, quantize) - parts["base"]
    return int(total)


def fsdp_training_bytes(report: dict, *, batch: int, seq_len: int, checkpointing: bool, precision: str,
                        processes: int, packed: bool = False) -> int:
    """:func:`training_bytes` of one FSDP rank: the base, the LoRA weights, their gradients
    and AdamW's moments sharded ``processes`` ways; the activations whole (each rank its own
    examples); two decoder layers' weights gathered whole at a time (the one computing and the
    one prefetched); TRL's own loss over every position's logits (bf16, their fp32 copy and
    log-probabilities: the blocked head cannot reach a sharded head weight)."""
    dtype = "fp32" if precision == "fp32" else "bf16"
    parts = memory_estimates(report, batch_size=batch, seq_len=seq_len, gradient_checkpointing=checkpointing,
                             packed=packed)["training"][dtype]
    states = parts["base"] + parts["lora"] + parts["grads"] + parts["optimizer"]
    layer = parts["base"] / max(1, report["num_layers"] or 1)
    logits = batch * seq_len * (report.get("vocab_size") or 0) * 10
    return int(parts["total"] - parts["head"] - states + states / processes + 2 * layer + logits)


def batch_one(spec: RunSpec) -> str:
    """'batch 1', and for DPO how many rows that is (a pair's two answers)."""
    rows = ROWS_PER_EXAMPLE[spec.method]
    return "batch 1" + (f" ({rows} rows: a pair's chosen and rejected answers)" if rows > 1 else "")


def quantize_offer(facts: DeviceFacts, spec: RunSpec, report: dict) -> str | None:
    """What to say when the base does not fit this GPU in bf16 even at batch 1 with
    gradient checkpointing: '... --quantize 4bit would need ~X GiB' (None when it fits,
    or on a CPU, where quantizing is not offered)."""
    if facts.kind != "cuda" or not facts.total_memory:
        return None
    seq, rows = spec.train.max_length, ROWS_PER_EXAMPLE[spec.method]
    bf16 = training_bytes(report, batch=rows, seq_len=seq, checkpointing=True, precision="bf16")
    if bf16 <= facts.budget():
        return None
    q4 = training_bytes(report, batch=rows, seq_len=seq, checkpointing=True, precision="bf16", quantize="4bit")
    q8 = training_bytes(report, batch=rows, seq_len=seq, checkpointing=True, precision="bf16", quantize="8bit")
    return (f"the base does not fit in bf16 on {facts.label()} "
            f"(~{bf16 / GIB:.1f} GiB at {batch_one(spec)} × {seq} tokens): "
            f"--quantize 4bit would need ~{q4 / GIB:.1f} GiB (8bit ~{q8 / GIB:.1f} GiB)")


# --- the recipe -----------------------------------------------------------------------------------


def choose_recipe(facts: DeviceFacts, spec: RunSpec, report: dict | None = None) -> Recipe:
    """Every per-device choice of a run (see the module's docstring). ``report``: the
    inspector's report of the base with the spec's LoRA (needed on CUDA to size the batch
    and checkpointing; without it the spec's batch is kept and checkpointing stays as asked)."""
    t = spec.train
    check_quantize(t.quantize, facts)
    processes = t.processes
    per_device = max(1, math.ceil(t.batch_size / processes))
    why = {"batch": f"{per_device} examples per step per process × {processes} process(es) "
                    f"(batch {t.batch_size} per optimizer step)"}
    if facts.kind != "cuda":
        precision = resolve_precision(t.precision, "cpu", bf16=facts.bf16)
        why.update(precision=f"{precision}: " + ("the CPU has bf16 units" if facts.bf16 else "no bf16 units on this CPU")
                   if t.precision == "auto" else f"{precision}: asked",
                   attention="eager in CPU bf16 (faster than SDPA at these lengths)" if precision == "bf16"
                   else "the model's default",
                   batches="padded, examples of similar length together",
                   machinery="CPU kernels, native build, allocator and threads on")
        strategy = "ddp" if processes > 1 else "single"
        if processes > 1:
            why["strategy"] = "DDP over gloo: every rank holds the whole base (accelerate shards with FSDP on GPUs only)"
        return Recipe(device="cpu", precision=precision, attention="eager" if precision == "bf16" else None,
                      padding_free=False, gradient_checkpointing=t.gradient_checkpointing,
                      per_device_batch=per_device, accumulation=1, cpu_machinery=True, quantize=None,
                      processes=processes, strategy=strategy, length_grouped=True, why=why)

    if processes > facts.count:
        raise ConfigError(f"--processes {processes} asks for one GPU per process; {facts.count} visible.",
                          fix=f"Use --processes {facts.count} or fewer (or set CUDA_VISIBLE_DEVICES).")
    precision = resolve_precision(t.precision, "cuda", bf16=facts.bf16)
    if precision == "fp32" and t.quantize:
        raise ConfigError("--quantize trains in bf16 (or fp16) compute; precision 'fp32' was asked.",
                          fix="Leave precision at 'auto' with --quantize.")
    padding_free, rows = spec.method == "sft", ROWS_PER_EXAMPLE[spec.method]
    # packed_sdpa attends each example causally over its whole length: not for a base whose layers
    # attend within a window (transformers' own mask keeps the window), nor one the inspector could not read
    window = (report or {}).get("sliding_window")
    attention = ("flash_attention_2" if facts.flash_attn and precision in ("bf16", "fp16")
                 else packed_attention.NAME if padding_free and report is not None and not window else "sdpa")
    packed = padding_free and attention == "sdpa"  # a T × T block mask over the step's tokens (never chosen now)
    why.update(precision=f"{precision}: " + ("the GPU computes in bf16" if precision == "bf16" else
                                             "no bf16 on this GPU: fp16 with loss scaling" if precision == "fp16"
                                             else "asked"),
               attention=attention + {
                   "flash_attention_2": ": flash_attn is installed",
                   packed_attention.NAME: ": flash_attn is not installed; each example of a padding-free row "
                                          "attended on its own (PyTorch's varlen flash kernel, else one SDPA "
                                          "call per example), no T × T mask",
               }.get(attention, ": PyTorch's fused attention (flash_attn is not installed)"
                     + (f"; the base attends within a {window}-token window, which transformers' mask keeps"
                        if window and padding_free else "")),
               batches="padding-free, drawn at random: each step's examples as one row with position ids, "
                       "no pad tokens" if padding_free
               else "padded: TRL's preference batches (its padding-free ones need FlashAttention)"
               + (", each pair's chosen and rejected answers together: 2 rows per example" if rows == 2 else ""),
               machinery="off (CPU only)")
    checkpointing, accumulation, estimate, budget = t.gradient_checkpointing, 1, None, None
    strategy = "ddp" if processes > 1 else "single"
    if processes > 1:
        why["strategy"] = "DDP: every GPU holds the whole base" + ("" if report is not None and facts.total_memory
                                                                  else " (no memory estimate to call for FSDP)")
    if processes > 1 and report is not None and facts.total_memory and not t.quantize:
        alone = training_bytes(report, batch=rows, seq_len=t.max_length, checkpointing=True, precision=precision,
                               packed=packed)
        if alone > facts.budget():  # the bf16 base + training state need more than one GPU
            strategy = "fsdp"
            why["strategy"] = (f"FSDP: ~{alone / GIB:.1f} GiB at {batch_one(spec)} × {t.max_length} tokens does not "
                               f"fit one {facts.label()}; the base and the training state are sharded over "
                               f"{processes} GPUs")
    if report is not None and facts.total_memory:
        budget = facts.budget()
        seq = t.max_length

        def need(batch: int, ckpt: bool) -> int:
            if strategy == "fsdp":
                return fsdp_training_bytes(report, batch=batch * rows, seq_len=seq, checkpointing=ckpt,
                                           precision=precision, processes=processes, packed=packed)
            return training_bytes(report, batch=batch * rows, seq_len=seq, checkpointing=ckpt, precision=precision,
                                  quantize=t.quantize, packed=packed)

        estimate = need(per_device, checkpointing)
        if estimate <= budget:
            why["checkpointing"] = ("on: asked" if checkpointing else
                                    f"off: ~{estimate / GIB:.1f} GiB estimated fits {budget / GIB:.1f} GiB")
        else:
            checkpointing = True
            batch = per_device
            while batch > 1 and need(batch, True) > budget:
                batch = max(1, batch // 2)
            estimate = need(batch, True)
            if estimate > facts.total_memory - facts.in_use:
                offer = quantize_offer(facts, spec, report)
                raise ConfigError(
                    f"Training {spec.base!r} does not fit {facts.label()}: ~{estimate / GIB:.1f} GiB estimated at "
                    f"{batch_one(spec)} × {seq} tokens with gradient checkpointing"
                    + (f" in {t.quantize}" if t.quantize else "") + ".",
                    fix=(offer[0].upper() + offer[1:] + "." if offer and not t.quantize
                         else "Lower --max-length, use a smaller base, or a GPU with more memory."))
            accumulation = math.ceil(per_device / batch)
            why["checkpointing"] = (f"on: ~{need(per_device, False) / GIB:.1f} GiB estimated without it exceeds "
                                    f"{budget / GIB:.1f} GiB")
            if batch < per_device:
                why["batch"] = (f"{batch} examples per step × {accumulation} accumulated × {processes} process(es): "
                                f"{per_device} per step would need ~{need(per_device, True) / GIB:.1f} GiB")
            per_device = batch
    elif not checkpointing:
        why["checkpointing"] = "off: no memory estimate to call for it"
    if t.quantize:
        why["quantize"] = f"{t.quantize}: bitsandbytes {'NF4 + double quantization' if t.quantize == '4bit' else 'int8'}, " \
                          "bf16 compute; the adapter serves on the unquantized base"
    return Recipe(device="cuda", precision=precision, attention=attention, padding_free=padding_free,
                  gradient_checkpointing=checkpointing, per_device_batch=per_device, accumulation=accumulation,
                  cpu_machinery=False, quantize=t.quantize, processes=processes, strategy=strategy,
                  memory_estimate=estimate,
                  memory_budget=budget, why=why)


def recipe_for_run(spec: RunSpec, base_ref) -> Recipe:
    """The recipe for ``spec`` on this machine: its facts, and on CUDA the inspector's report
    of the base with the spec's LoRA (read from the config on the meta device, no weights)."""
    facts = describe_device()
    report = None
    if facts.kind == "cuda":
        try:
            report = inspect_base(base_ref, lora=spec.lora, batch_size=spec.train.batch_size,
                                  seq_len=spec.train.max_length)
        except (TuneLabError, ValueError, OSError):  # a base the inspector cannot read: the spec's batch, as asked
            report = None
    return choose_recipe(facts, spec, report)
