"""GPU benchmark (issue 19): training and serving on CUDA, each figure a ratio against a
baseline measured in the same run, on bases built from config with random weights in
the shapes of real models (throughput does not depend on the weights' values; no hub).

Measured (one run, planned for under 6 minutes on one H100; each base is built once, and
the parts run in :func:`run_order`'s order: 1B training, serving on the 1B, 8B training,
QLoRA of the 8B):

* ``peak``: the GPU's bf16 matmul FLOP/s (8192³ products), the denominator of every MFU.
* ``train.<shape>``: TuneLab's training path (``backend.training.run.train_adapter``, the
  per-device recipe) against plain TRL ``SFTTrainer`` + peft at its defaults on the same
  rows, LoRA and steps: answer tokens/s, model FLOP/s over the peak (MFU, 4 x params x
  tokens/s: a LoRA step needs no weight gradients of the frozen base), peak memory, the
  final train loss of both (equal loss: the speed-up counts only if ours is no worse).
* ``qlora_8b``: peak memory of TuneLab's 4-bit QLoRA run (``--quantize 4bit``: NF4,
  double quantization, bf16 compute) of the 8B shape at batch 4 x 1024 tokens, beside the
  inspector's estimate for it.
* ``serve``: the embedded engine on the 1B shape: decode tokens/s at batch 1/8/32 with
  0/4/16 adapters (the overhead of LoRA against the base alone, same batch), the p50 of
  an adapter swap while 8 clients stream, and the time from "go" to the first answer of a
  freshly loaded adapter.

Targets (issue 19, on one H100 or H200, the card named beside each figure): training MFU
>= 0.45 for the 8B-shape bf16 LoRA; >= 1.6x the baseline's tokens/s at equal loss; LoRA
serving overhead <= 15% at batch 32 with 16 adapters; 8B QLoRA peak memory <= 12 GiB.

``--dry-run`` prints the plan and the memory estimates (backend/bases/memory.py) and
needs no GPU; ``--smoke`` runs every measurement on tiny shapes on whatever device there
is (CPU here: tests/test_bench_gpu.py checks that the script works end to end without a
GPU; its figures mean nothing). Results: bench/results/gpu.json (``--out``).

    python bench/gpu.py [--dry-run | --smoke] [--only train,serve,qlora] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backend.hparams import LoraSpec, RunSpec, TrainSpec  # noqa: E402
from bench.machine import cpu, write_results  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gpu.json"
GIB = 1024**3
LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu", rms_norm_eps=1e-5,
             rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=False)
# the shapes of Llama-3.2-1B and Llama-3.1-8B (vocabulary included: its logits are a real cost)
SHAPES = {
    "1b": dict(LLAMA, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(LLAMA, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256),
    "smoke": dict(LLAMA, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=512),
}
TARGETS = {"train_mfu_8b": 0.45, "train_speedup": 1.6, "serve_lora_overhead_b32_16": 0.15,
           "qlora_8b_peak_gib": 12.0}


def plan(smoke: bool) -> dict:
    """What each part runs: shapes, rows, lengths, steps."""
    if smoke:
        return {"train": {"smoke": dict(rows=24, seq_len=64, batch=4, rank=8)},
                "qlora": dict(shape="smoke", batch=2, seq_len=64), "serve": dict(shape="smoke", batches=[1, 4],
                                                                                 adapters=[0, 2], tokens=8)}
    return {"train": {"1b": dict(rows=512, seq_len=1024, batch=8, rank=16),
                      "8b": dict(rows=128, seq_len=1024, batch=4, rank=16)},
            "qlora": dict(shape="8b", batch=4, seq_len=1024),
            "serve": dict(shape="1b", batches=[1, 8, 32], adapters=[0, 4, 16], tokens=64)}


def estimates(the_plan: dict) -> dict:
    """The inspector's memory estimates for every training shape in the plan, as the recipe
    makes them on a GPU (backend/training/recipe.py: padding-free rows attended example by
    example, no T × T mask; the LM head a block of rows at a time): bf16 with and without
    checkpointing, and 4-bit QLoRA."""
    from backend.bases.inspect import inspect_base
    from backend.training.recipe import training_bytes

    out = {}
    for shape, p in the_plan["train"].items():
        report = inspect_base(dict(SHAPES[shape]), LoraSpec(r=p["rank"], alpha=2 * p["rank"]),
                              batch_size=p["batch"], seq_len=p["seq_len"])
        memory = report["memory"]["training"]["bf16"]

        def total(checkpointing: bool, quantize: str | None = None) -> float:
            return round(training_bytes(report, batch=p["batch"], seq_len=p["seq_len"], checkpointing=checkpointing,
                                        precision="bf16", quantize=quantize) / GIB, 1)

        out[shape] = {"params": report["total_params"], "batch": p["batch"], "seq_len": p["seq_len"],
                      "bf16_total_gib": total(False), "bf16_base_gib": round(memory["base"] / GIB, 1),
                      "activations_gib": round(memory["activations"] / GIB, 1),
                      "head_gib": round(memory["head"] / GIB, 2),
                      "bf16_checkpointed_total_gib": total(True),
                      # the QLoRA run is measured with checkpointing on (measure_qlora): the case
                      # the 12 GiB target is about, a GPU too small for the bf16 base
                      "qlora_4bit_total_gib": total(True, "4bit")}
    return out


# --- building bases -------------------------------------------------------------------------------


def build_base(shape: str, folder: Path, device: str) -> Path:
    """A Llama of ``shape`` with random weights (bf16 on a GPU, made in bf16: an 8B is never
    held in fp32), and a small tokenizer with a chat template (its ids are a subset of the
    model's vocabulary), saved to ``folder``. Built once per shape and run (:class:`Bases`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny_model import CHATML_TEMPLATE, build_tokenizer

    config = LlamaConfig(**{k: v for k, v in SHAPES[shape].items() if k != "model_type"})
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder)
    del model
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


class Bases:
    """The run's bases, each shape built at its first use and deleted after its last, so that
    parts sharing a shape (training and serving the 1B, training and QLoRA of the 8B) share
    one build: an 8B takes ~16 GB of disk and most of a minute to write."""

    def __init__(self, work: Path, device: str, uses: list[str]):
        self.work, self.device, self.left = work, device, list(uses)
        self.built: dict[str, Path] = {}

    def get(self, shape: str) -> Path:
        if shape not in self.built:
            self.built[shape] = build_base(shape, self.work / f"base-{shape}", self.device)
        return self.built[shape]

    def done_with(self, shape: str) -> None:
        if shape in self.left:
            self.left.remove(shape)
        if shape not in self.left and shape in self.built:
            shutil.rmtree(self.built.pop(shape), ignore_errors=True)


def make_loras(base: Path, folder: Path, n: int) -> list[Path]:
    """``n`` LoRA adapters (r 16, random non-zero B) for ``base``, made on one loaded copy of
    it (the base is loaded once, not once per adapter)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.builders import make_lora

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    return [make_lora(base, folder / f"l{i}", seed=i, r=16, alpha=32, scale=0.02, model=model) for i in range(n)]


def rows_for(n: int, seq_len: int) -> list[dict]:
    """Chat rows whose prompt + answer fill about ``seq_len`` tokens of the small tokenizer."""
    from bench.train import make_rows

    rows = make_rows(n)
    words = max(4, seq_len // 6)  # the corpus tokenizer spends about 2-3 tokens a word
    for row in rows:
        user, answer = row["messages"][-2], row["messages"][-1]
        user["content"] = " ".join((user["content"] + " ") .split() * 8)[: words * 4]
        answer["content"] = " ".join((answer["content"] + " ").split() * 8)[: words * 4]
    return rows


# --- measurements ---------------------------------------------------------------------------------


def matmul_peak(device: str, seconds: float = 3.0) -> float:
    import torch

    if device != "cuda":
        from bench.train import matmul_peak as cpu_peak
        return cpu_peak("bf16", n=512, seconds=1.0)
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 10 * 2 * n**3 / (time.perf_counter() - start))
    return best


def _peak_memory_reset(device: str) -> int:
    """Free what earlier parts left (a trainer and its model are freed only by the cycle
    collector) and start counting the peak; returns the bytes still allocated, which the
    peak is then measured above."""
    import gc

    import torch

    gc.collect()
    if device != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _peak_memory_gib(device: str, before: int = 0) -> float | None:
    """The peak allocated since :func:`_peak_memory_reset`, above what was allocated then."""
    import torch

    return round((torch.cuda.max_memory_allocated() - before) / GIB, 2) if device == "cuda" else None


def train_ours(base: Path, rows: list[dict], p: dict, work: Path, device: str, quantize: str | None = None,
               checkpointing: bool = False) -> dict:
    """TuneLab's own run on ``rows``: the device's recipe (checkpointing as the recipe decides
    unless ``checkpointing`` asks for it), no evaluation and, like the baseline, no
    checkpoint written during the measured steps."""
    from backend.bases.resolve import resolve_base
    from backend.settings import Settings
    from backend.training.run import train_adapter
    from bench.train import write_jsonl

    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=work / "home")
    ref = resolve_base(str(base), settings)
    spec = RunSpec(name="bench-gpu-ours", base=str(base), lora=LoraSpec(r=p["rank"], alpha=2 * p["rank"]),
                   train=TrainSpec(epochs=1, batch_size=p["batch"], learning_rate=2e-4, eval_fraction=0.0,
                                   max_length=p["seq_len"], early_stopping=False, quantize=quantize,
                                   gradient_checkpointing=checkpointing,
                                   save_steps=len(rows) + 1))  # no checkpoint inside the timed steps
    train_file = write_jsonl(rows, work / "train.jsonl")
    before = _peak_memory_reset(device)
    meta = train_adapter(spec, base_ref=ref, train_file=train_file, eval_file=None,
                         out_dir=work / "adapters" / spec.name, work_dir=work / "run-ours")
    m = meta["metrics"]
    # the mean loss over the run, as the baseline's TrainOutput.training_loss is (not the last step's)
    return {"seconds": m["train_seconds"], "final_loss": m.get("train_loss_mean"),
            "peak_memory_gib": _peak_memory_gib(device, before),
            "recipe": meta.get("hyperparameters", {}).get("recipe") or m.get("recipe")}


def train_baseline(base: Path, rows: list[dict], p: dict, work: Path, device: str) -> dict:
    """Plain TRL SFTTrainer + peft at its defaults (bench/train.py's baseline, on this shape)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.train import plain_sft

    before = _peak_memory_reset(device)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    lora = LoraConfig(r=p["rank"], lora_alpha=2 * p["rank"], target_modules="all-linear", task_type="CAUSAL_LM")
    trainer, result, seconds = plain_sft(model, AutoTokenizer.from_pretrained(base), rows, lora, work=work,
                                         device=device, batch_size=p["batch"], learning_rate=2e-4,
                                         max_length=p["seq_len"])
    args = trainer.args
    out = {"seconds": seconds, "final_loss": result.training_loss, "peak_memory_gib": _peak_memory_gib(device, before),
           "settings": {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
                        "padding_free": args.padding_free}}
    del trainer, model
    return out


def measure_training(shape: str, p: dict, work: Path, device: str, peak: float, base: Path) -> dict:
    from transformers import AutoTokenizer

    from bench.train import tokenize_rows

    rows = rows_for(p["rows"], p["seq_len"])
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokens = sum(len(ids) for ids, _ in tokenize_rows(tokenizer, rows))
    answer_tokens = sum(len(ids) - prompt for ids, prompt in tokenize_rows(tokenizer, rows))
    params = estimates({"train": {shape: p}})[shape]["params"]
    ours = train_ours(base, rows, p, work / "ours", device)
    baseline = train_baseline(base, rows, p, work / "baseline", device)
    for run in (ours, baseline):
        run["tokens_per_s"] = round(tokens / run["seconds"], 1)
        run["answer_tokens_per_s"] = round(answer_tokens / run["seconds"], 1)
        run["mfu"] = round(4 * params * tokens / run["seconds"] / peak, 3)
    return {"rows": len(rows), "tokens": tokens, "params": params,
            "mfu_means": ("4 x every parameter (the input embedding included) x tokens/s, over the bf16 matmul "
                          "peak measured in this run (peak_bf16_flops), not the card's data-sheet figure"),
            "ours": ours, "baseline": baseline,
            "speedup": round(baseline["seconds"] / ours["seconds"], 2),
            "loss_ratio": (round(ours["final_loss"] / baseline["final_loss"], 3)
                           if ours["final_loss"] and baseline["final_loss"] else None)}


def measure_qlora(p: dict, work: Path, device: str, bases: Bases) -> dict:
    """Peak memory of TuneLab's own QLoRA run (``--quantize 4bit``: NF4, double quantization,
    bf16 compute, the LM head a block of rows at a time) of the 8B shape at batch 4 x 1024,
    against the inspector's estimate for it."""
    if device != "cuda":
        return {"skipped": "4-bit QLoRA needs CUDA (bitsandbytes)"}
    base = bases.get(p["shape"])
    rows = rows_for(4 * p["batch"], p["seq_len"])  # four steps
    # checkpointing on: on an 80 GB card the recipe would leave it off (~46 GiB fits), but the
    # 12 GiB target is the run on a card too small for that, the one QLoRA is for
    run = train_ours(base, rows, dict(p, rank=16), work / "qlora", device, quantize="4bit", checkpointing=True)
    recipe = run["recipe"] or {}
    out = {"batch": p["batch"], "seq_len": p["seq_len"], "peak_memory_gib": run["peak_memory_gib"],
           "estimate_gib": estimates({"train": {p["shape"]: dict(p, rank=16)}})[p["shape"]]["qlora_4bit_total_gib"],
           "recipe_estimate_gib": (round(recipe["memory_estimate"] / GIB, 1) if recipe.get("memory_estimate")
                                   else None),
           "checkpointing": recipe.get("gradient_checkpointing"),
           "seconds": round(run["seconds"], 2), "recipe": recipe}
    return out


def measure_serving(p: dict, work: Path, device: str, base: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.serving.engine import Engine
    from backend.serving.requests import SamplingParams

    loras = make_loras(base, work / "loras", max(p["adapters"]))
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    engine = Engine(model, tokenizer, base_name="bench", base_path=str(base), max_batch=max(p["batches"]),
                    batch_window_s=0.05, prepack=False).start()
    greedy = SamplingParams(max_tokens=p["tokens"], temperature=0, ignore_eos=True)
    prompt = engine.encode_chat([{"role": "user", "content": "Tell me about the autumn leaves in the old garden"}])
    out: dict = {"decode_tokens_per_s": {}, "lora_overhead": {}}
    try:
        started = time.perf_counter()
        engine.load_adapter("first", loras[0])
        engine.generate(prompt, "first", max_tokens=1, temperature=0)
        out["go_to_first_adapter_answer_s"] = round(time.perf_counter() - started, 3)
        for i, path in enumerate(loras):
            engine.load_adapter(f"l{i}", path)
        for batch in p["batches"]:
            for n_adapters in p["adapters"]:
                names = [None] * batch if n_adapters == 0 else [f"l{i % n_adapters}" for i in range(batch)]
                engine.generate(prompt, names[0], max_tokens=2, temperature=0)  # warm
                started = time.perf_counter()
                handles = [engine.submit(prompt, name, greedy) for name in names]
                tokens = sum(len(h.result().token_ids) for h in handles)
                out["decode_tokens_per_s"][f"b{batch}_a{n_adapters}"] = round(tokens / (time.perf_counter() - started), 1)
            base_rate = out["decode_tokens_per_s"][f"b{batch}_a0"]
            for n_adapters in p["adapters"][1:]:
                rate = out["decode_tokens_per_s"][f"b{batch}_a{n_adapters}"]
                out["lora_overhead"][f"b{batch}_a{n_adapters}"] = round(base_rate / rate - 1, 3)
        out["parity"] = serving_parity(engine, base, loras, prompt, dtype, device)
        swaps, stop = [], threading.Event()

        def clients():
            while not stop.is_set():
                [h.result() for h in [engine.submit(prompt, "l0", greedy) for _ in range(8)]]

        load = threading.Thread(target=clients, daemon=True)
        load.start()
        for i in range(10):
            started = time.perf_counter()
            engine.load_adapter("swapped", loras[i % len(loras)], inplace=True)
            swaps.append(time.perf_counter() - started)
        stop.set()
        load.join(120)
        out["swap_p50_under_load_s"] = round(statistics.median(swaps), 4)
    finally:
        engine.stop()
    return out


def serving_parity(engine, base: Path, loras: list[Path], prompt: list[int], dtype, device: str,
                   tokens: int = 16) -> dict:
    """Correctness before speed: one mixed batch (the base and three adapters) answered by
    the engine, each answer read through plain peft on the same device and dtype (the base
    loaded once, each adapter on it by name). In fp32 every token is the reference's greedy
    choice; in bf16, within bf16's rounding of its best logit (a batch and one row take
    different kernels; tests.builders.greedy_gaps)."""
    import torch

    from backend.serving.requests import SamplingParams
    from tests.builders import answering_as, bf16_tie, greedy_gaps, picked_tokens, plain_peft_by_name

    names = [None, *[f"l{i}" for i in range(min(3, len(loras)))]]
    greedy = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    handles = [engine.submit(prompt, name, greedy) for name in names]
    reference = plain_peft_by_name(base, {name: loras[int(name[1:])] for name in names[1:]}, dtype, device)
    worst, within = 0.0, True
    for name, handle in zip(names, handles):
        picked = picked_tokens(handle)
        with answering_as(reference, name):
            gaps, scale = greedy_gaps(reference, prompt, picked)
        allowed = bf16_tie(scale) if dtype == torch.bfloat16 else 1e-4 * max(1.0, scale)
        worst, within = max(worst, max(gaps)), within and max(gaps) <= allowed
    return {"rows": len(names), "tokens_each": tokens, "max_gap": round(worst, 5),
            "rule": "bf16_tie: 5% of the logits' scale" if dtype == torch.bfloat16 else "1e-4 of the logits' scale",
            "equal_to_plain_peft": within}


def run_order(the_plan: dict, parts: set[str]) -> list[tuple[str, str]]:
    """The parts to run as (part, shape), in the order that builds each base once and
    measures the cheap targets first: each training shape, then the serving and QLoRA
    parts on the same shape right after it (serving first: a QLoRA load quantizes the 8B
    and is the slowest part), then any of them whose shape was not trained."""
    steps: list[tuple[str, str]] = []
    extra = [(part, the_plan[part]["shape"]) for part in ("serve", "qlora") if part in parts]
    for shape in (the_plan["train"] if "train" in parts else []):
        steps.append(("train", shape))
        steps += [step for step in extra if step[1] == shape]
    return steps + [step for step in extra if step not in steps]


def machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device, **cpu()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                    gpus_visible=torch.cuda.device_count())
    return info


def verdicts(results: dict) -> dict:
    out = {}
    trained = {shape: t for shape, t in results.get("train", {}).items() if "error" not in t}
    train8 = trained.get("8b")
    if train8:
        out["train_mfu_8b"] = {"value": train8["ours"]["mfu"], "target": ">= 0.45",
                               "met": train8["ours"]["mfu"] >= TARGETS["train_mfu_8b"]}
    for shape, train in trained.items():
        equal_loss = train["loss_ratio"] is None or train["loss_ratio"] <= 1.02
        out[f"train_speedup_{shape}"] = {"value": train["speedup"], "loss_ratio": train["loss_ratio"],
                                         "target": ">= 1.6 at equal loss",
                                         "met": train["speedup"] >= TARGETS["train_speedup"] and equal_loss}
    overhead = results.get("serve", {}).get("lora_overhead", {}).get("b32_a16")
    if overhead is not None:  # counts only where the answers equal plain peft's
        equal = results["serve"].get("parity", {}).get("equal_to_plain_peft", False)
        out["serve_lora_overhead_b32_16"] = {"value": overhead, "target": "<= 0.15, answers equal to plain peft",
                                             "answers_equal": equal,
                                             "met": overhead <= TARGETS["serve_lora_overhead_b32_16"] and equal}
    peak = results.get("qlora", {}).get("peak_memory_gib")
    if peak is not None:
        out["qlora_8b_peak_gib"] = {"value": peak, "target": "<= 12", "met": peak <= TARGETS["qlora_8b_peak_gib"]}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the memory estimates; run nothing")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on any device: checks the script, not speed")
    parser.add_argument("--only", default="train,qlora,serve", help="comma-separated parts to run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    the_plan = plan(args.smoke)
    if args.dry_run:
        report = {"plan": the_plan, "memory_estimates": estimates(the_plan), "targets": TARGETS}
        print(json.dumps(report, indent=2))
        return report

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda" and not args.smoke:
        raise SystemExit("bench/gpu.py measures a CUDA GPU and this machine has none: use --dry-run "
                         "(plan and memory estimates) or --smoke (the script on tiny shapes).")
    parts = set(args.only.split(","))
    results: dict = {"machine": machine(device), "plan": the_plan, "memory_estimates": estimates(the_plan)}
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-gpu-"))

    def save() -> None:  # after every part: a run cut short (the device call's limit) still returns figures
        results["verdicts"] = verdicts(results)
        results["seconds"] = round(time.perf_counter() - started, 1)
        write_results(args.out, results, echo=False)

    def attempt(where: dict, key: str, measure) -> None:  # one part failing leaves the others measured
        try:
            where[key] = measure()
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the next part runs
            traceback.print_exc()
            where[key] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        save()

    steps = run_order(the_plan, parts)
    bases = Bases(work, device, [shape for _, shape in steps])
    if "train" in parts:
        results["train"] = {}
    try:
        results["peak_bf16_flops"] = matmul_peak(device)
        print(f"bf16 matmul peak: {results['peak_bf16_flops'] / 1e12:.0f} TFLOP/s", flush=True)
        for part, shape in steps:
            print(f"{part} {shape} ...", flush=True)
            if part == "train":
                attempt(results["train"], shape, lambda: measure_training(
                    shape, the_plan["train"][shape], work / f"train-{shape}", device, results["peak_bf16_flops"],
                    bases.get(shape)))
            elif part == "serve":
                attempt(results, "serve", lambda: measure_serving(the_plan["serve"], work / "serve", device,
                                                                  bases.get(shape)))
            else:
                attempt(results, "qlora", lambda: measure_qlora(the_plan["qlora"], work / "qlora", device, bases))
            bases.done_with(shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save()
    print(json.dumps(results.get("verdicts"), indent=2))
    return results


if __name__ == "__main__":
    main()
