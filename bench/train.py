"""Training benchmark: TuneLab's training path against plain TRL ``SFTTrainer``.

Same base (the default, SmolLM2-135M-Instruct, provisioned through
``backend.bases.resolve.resolve_base``), same LoRA config (all-linear, r 8, alpha 16), same
deterministic synthetic instruction data with varied prompt and answer lengths, same
epochs, batch size and learning rate. The baseline keeps every other TRL default
(gradient checkpointing on, bf16 autocast, random batches padded to their longest row,
the fused LM head over every position) except ``use_cpu=True``, which a machine without
CUDA needs. The learning rate is set to ours for both, so that the eval-loss comparison
measures the training path and not TRL's 2e-5 default.

Each trainer runs once per seed (``--seeds``, default 42,1,2: the seed moves LoRA's
initialization, the dropout and the batch order; on the AMX Xeon TRL's own eval loss
moved by 0.6% across three seeds, so one seed's ratio is good to about that). Reports
answer tokens per second for both over all their runs (training time, evaluation
excluded), the ratio ``speedup``, both mean final eval losses (computed the same way for
both: fp32, answer tokens only) and ``eval_loss_ratio``, the mean over seeds of ours /
baseline with its 95% interval, and the model FLOP/s of our run (4 x parameters x
processed tokens / s: a LoRA step needs no weight gradients for the frozen base) as
``peak_fraction`` of this machine's matmul peak, measured in the same run with a timed
large matmul in fp32 and bf16. Writes bench/results/train.json.

An entry point, like the training worker: it builds the settings and hands the run what
it needs (the ``native_kernels`` setting and the native build cache).

    python bench/train.py [--base default] [--rows 192] [--epochs 1] [--seeds 42,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

# light modules only up here: torch and the training run are imported in main(), after
# the re-run with the training job's malloc environment (read by glibc at process start)
from backend.bases.resolve import resolve_base  # noqa: E402
from backend.hparams import LoraSpec, RunSpec, TrainSpec  # noqa: E402
from backend.proof.intervals import mean_interval  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.training.cpu import native  # noqa: E402
from backend.training.cpu.memory import hugepage_malloc_env  # noqa: E402
from backend.training.cpu.native import NativeBuild  # noqa: E402
from backend.training.progress import TOKENS_PER_S_MEANS, tokens_per_s  # noqa: E402
from bench.machine import describe, load_average, write_results  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "train.json"

# --- a deterministic, realistic instruction dataset ---------------------------------------------

SUBJECTS = ["the river", "our team", "the old library", "a small bakery", "the city council", "the night train",
            "my neighbour", "the mountain village", "the new phone", "the museum", "the harbour", "the garden"]
VERBS = ["opened", "changed", "surprised", "welcomed", "closed", "improved", "delayed", "repaired", "visited",
         "announced", "celebrated", "lost"]
OBJECTS = ["its doors early", "the schedule", "every visitor", "a quiet corner", "the main road", "the budget",
           "an old friend", "the harvest festival", "a broken window", "the winter plan", "a new menu",
           "the last ferry"]
DETAILS = ["after a long week of rain", "to everyone's relief", "without any warning", "just before noon",
           "for the first time in years", "despite the cold wind", "as the sun went down", "with a lot of noise"]
PRODUCTS = ["kettle", "backpack", "desk lamp", "bicycle", "headphones", "rain jacket", "coffee grinder", "tent"]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "grey", "orange"]
POSITIVE = ["I loved it", "works perfectly", "great value", "arrived quickly", "the quality is excellent",
            "would buy again", "my kids adore it", "exceeded my expectations"]
NEGATIVE = ["it broke after a day", "waste of money", "arrived late", "the quality is poor",
            "would not recommend", "customer service ignored me", "smaller than described", "it stopped working"]
TASKS = ["make bread", "plant tomatoes", "repair a flat tyre", "write a cover letter", "clean a camera lens",
         "prepare for an interview", "set up a tent", "brew green tea"]
STEPS = ["gather everything you need", "read the instructions twice", "prepare a clean work area",
         "start with the simplest part", "check your progress", "take a short break", "fix any small mistakes",
         "ask someone to review it", "finish the last details", "clean up afterwards", "write down what you learned",
         "plan the next attempt"]


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(DETAILS)}."


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """``n`` normalized rows from five task kinds; prompts of ~15-250 tokens, answers of
    ~1-200 tokens, answers a function of the prompt (so a model can learn them)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # summarize: long prompt, one-sentence answer
            sentences = [_sentence(rng) for _ in range(rng.randint(2, 14))]
            prompt = "Summarize the following note in one sentence.\n\n" + " ".join(sentences)
            answer = f"In short: {sentences[0][0].lower()}{sentences[0][1:-1]}, among {len(sentences)} events."
        elif kind == 1:  # sentiment: medium prompt, one-word answer
            good = rng.random() < 0.5
            bank = POSITIVE if good else NEGATIVE
            review = ". ".join(rng.choice(bank).capitalize() for _ in range(rng.randint(1, 6))) + "."
            prompt = f"Classify the sentiment of this {rng.choice(PRODUCTS)} review as positive or negative.\n\n{review}"
            answer = "positive" if good else "negative"
        elif kind == 2:  # extraction: medium prompt, JSON answer
            product, colour = rng.choice(PRODUCTS), rng.choice(COLOURS)
            weight, price = rng.randint(1, 20), rng.randint(5, 400)
            filler = " ".join(_sentence(rng) for _ in range(rng.randint(0, 4)))
            prompt = (f"Extract the product specs as JSON with keys product, colour, weight_kg, price_usd.\n\n"
                      f"{filler} The {colour} {product} weighs {weight} kg and costs {price} dollars.").strip()
            answer = json.dumps({"product": product, "colour": colour, "weight_kg": weight, "price_usd": price})
        elif kind == 3:  # steps: short prompt, long list answer
            task, count = rng.choice(TASKS), rng.randint(3, 12)
            prompt = f"List {count} steps to {task}."
            answer = "\n".join(f"{k + 1}. {s.capitalize()}." for k, s in enumerate(rng.sample(STEPS, count)))
        else:  # story: short prompt, long prose answer
            count = rng.randint(2, 10)
            subject = rng.choice(SUBJECTS)
            prompt = f"Write a short story about {subject} in {count} sentences."
            answer = " ".join(f"{subject.capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)} "
                              f"{rng.choice(DETAILS)}." for _ in range(count))
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]})
    return rows


def prepare(base: str, n_rows: int) -> SimpleNamespace:
    """What a training benchmark starts from: the native build the settings say, the
    resolved base and its tokenizer, and :func:`make_rows`' ``n_rows`` split into training
    rows and the held-out sixth (at least 8)."""
    from backend.bases.load import load_tokenizer

    settings = Settings()
    ref = resolve_base(base, settings)
    rows = make_rows(n_rows)
    n_eval = max(8, n_rows // 6)
    return SimpleNamespace(native_build=NativeBuild.from_settings(settings), ref=ref, tokenizer=load_tokenizer(ref),
                           train_rows=rows[n_eval:], eval_rows=rows[:n_eval])


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- measurements --------------------------------------------------------------------------------


def matmul_peak(dtype_name: str, n: int = 2048, seconds: float = 3.0) -> float:
    """FLOP/s of a large square matmul in ``dtype_name``, best of repeated timings."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def tokenize_rows(tokenizer, rows: list[dict]) -> list[tuple[list[int], int]]:
    """(ids, prompt length) per row, the way TRL tokenizes conversational prompt/completion."""
    out = []
    for row in rows:
        messages = row["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        common = 0
        while common < min(len(prompt), len(full)) and prompt[common] == full[common]:
            common += 1
        out.append((list(full), common))
    return out


def answer_eval_loss(model, tokenized: list[tuple[list[int], int]]) -> float:
    """Token-mean loss over answer tokens, fp32, one row at a time (no padding effects)."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        for ids, prompt_len in tokenized:
            x = torch.tensor([ids])
            labels = x.clone()
            labels[:, :prompt_len] = -100
            n = int((labels[:, 1:] != -100).sum())
            if n == 0:
                continue
            total += float(model(input_ids=x, labels=labels).loss) * n
            count += n
    return total / count


def adapter_eval_loss(ref, folder: Path, tokenized: list[tuple[list[int], int]]) -> float:
    """:func:`answer_eval_loss` of the adapter in ``folder`` on the base ``ref``, through plain peft."""
    from peft import PeftModel

    from backend.bases.load import load_model

    return answer_eval_loss(PeftModel.from_pretrained(load_model(ref), folder), tokenized)


def plain_sft_config(*, work, device="cpu", epochs=1.0, batch_size, learning_rate, seed=42, max_length=None):
    """The baseline's ``SFTConfig``: TRL's defaults (bf16 autocast, gradient checkpointing,
    random batches padded to their longest row, ...) except the fields a comparison must
    set: where it writes, use_cpu where there is no CUDA, the epochs, batch and rate (ours,
    so that losses compare fairly), the seed and, where given, the length."""
    from trl import SFTConfig

    length = {"max_length": max_length} if max_length else {}
    return SFTConfig(output_dir=str(work / "baseline"), num_train_epochs=epochs, use_cpu=device != "cuda",
                     per_device_train_batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                     report_to="none", disable_tqdm=True, save_strategy="no", **length)


def plain_sft(model, tokenizer, rows, lora_config, *, work, device="cpu", epochs=1.0, batch_size, learning_rate,
              seed=42, max_length=None):
    """The baseline of every training benchmark (this one and bench/gpu.py): plain TRL
    SFTTrainer + peft with :func:`plain_sft_config`. Returns the trainer, TRL's train
    output and the seconds it trained."""
    from datasets import Dataset
    from trl import SFTTrainer

    from backend.data.normalized import to_prompt_completion

    dataset = Dataset.from_list([to_prompt_completion(r["messages"]) for r in rows])
    args = plain_sft_config(work=work, device=device, epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate, seed=seed, max_length=max_length)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config)
    started = time.perf_counter()
    result = trainer.train()
    return trainer, result, time.perf_counter() - started


def run_baseline(ref, tokenizer, train_rows, lora_kwargs, *, epochs, batch_size, learning_rate, seed, work):
    """Plain TRL SFTTrainer, its defaults except use_cpu (needed here) and the rate."""
    from peft import LoraConfig

    from backend.bases.load import load_model

    trainer, _, seconds = plain_sft(load_model(ref), tokenizer, train_rows, LoraConfig(**lora_kwargs), work=work,
                                    epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    args = trainer.args
    settings = {"gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
                "logging_steps": args.logging_steps, "max_length": args.max_length,
                "train_sampling_strategy": args.train_sampling_strategy, "padding_free": args.padding_free,
                "note": "plain TRL SFTTrainer with its defaults, except use_cpu=True (no CUDA here) and "
                        "learning_rate set to ours so that the eval losses compare fairly"}
    return trainer.model, seconds, settings


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="default", help="base to train (default: the provisioned default)")
    parser.add_argument("--rows", type=int, default=192, help="synthetic rows (1/6 held out for eval)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--compare-fp32", action="store_true",
                        help="also train ours in fp32, to check that bf16 does not hurt eval loss")
    parser.add_argument("--seeds", type=_seeds, default=[42, 1, 2],
                        help="comma-separated seeds; each trains ours and the baseline once (default 42,1,2), so "
                             "the eval-loss ratio carries an interval")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    _rerun_with_training_env(argv)

    import peft
    import torch
    import transformers
    import trl

    from backend.hardware.device import resolve_precision
    from backend.hardware.threads import set_cpu_threads
    from backend.training.run import train_adapter

    load_start = load_average()
    setup = prepare(args.base, args.rows)
    native_build, ref, tokenizer = setup.native_build, setup.ref, setup.tokenizer
    train_rows, eval_rows = setup.train_rows, setup.eval_rows
    train_tok, eval_tok = tokenize_rows(tokenizer, train_rows), tokenize_rows(tokenizer, eval_rows)
    answer_tokens = sum(len(ids) - p for ids, p in train_tok) * args.epochs
    all_tokens = sum(len(ids) for ids, _ in train_tok) * args.epochs
    lora = LoraSpec(r=8, alpha=16, target_modules="all-linear")
    spec = RunSpec(name="bench-ours", base=args.base, lora=lora,
                   train=TrainSpec(epochs=args.epochs, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, eval_fraction=0.0))
    precision = resolve_precision(spec.train.precision, "cpu")
    set_cpu_threads("cpu")

    peaks = {"fp32": matmul_peak("fp32"), "bf16": matmul_peak("bf16")}
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-train-"))
    try:
        train_file = write_jsonl(train_rows, work / "train.jsonl")
        eval_file = write_jsonl(eval_rows, work / "eval.jsonl")
        ours_runs = []
        for seed in args.seeds:
            seeded = spec.model_copy(update={"name": f"bench-ours-{seed}",
                                             "train": spec.train.model_copy(update={"seed": seed})})
            print(f"ours, seed {seed}: {len(train_rows)} rows, {precision} ...", flush=True)
            meta = train_adapter(seeded, base_ref=ref, train_file=train_file, eval_file=eval_file,
                                 out_dir=work / "adapters" / seeded.name, work_dir=work / f"run-{seed}",
                                 native_build=native_build)
            m = meta["metrics"]
            # train_seconds: evaluation excluded, like the baseline (which never evaluates)
            ours_runs.append({"seed": seed, "train_seconds": m["train_seconds"], "wall_seconds_incl_eval":
                              m["runtime_s"], "tokens_per_s_as_the_page_shows": m["tokens_per_s"],
                              "trainer_eval_loss": m["eval_loss"],
                              "eval_loss": adapter_eval_loss(ref, work / "adapters" / seeded.name, eval_tok)})
        native_status = native.status()  # loaded (and from where) or why not: the C kernels or the torch fallback
        lib = native.kernels()
        native_status["lora_products"] = bool(lib is not None and lib.tl_lora_vectorized())
        fp32 = None
        if args.compare_fp32 and precision != "fp32":
            print(f"ours in fp32, seed {args.seeds[0]} ...", flush=True)
            spec32 = spec.model_copy(update={"name": "bench-fp32", "train": spec.train.model_copy(
                update={"precision": "fp32", "seed": args.seeds[0]})})
            meta32 = train_adapter(spec32, base_ref=ref, train_file=train_file, eval_file=eval_file,
                                   out_dir=work / "adapters" / spec32.name, work_dir=work / "run32",
                                   native_build=native_build)
            fp32 = {"seed": args.seeds[0],
                    "answer_tokens_per_s": tokens_per_s(answer_tokens, meta32["metrics"]["train_seconds"]),
                    "eval_loss": adapter_eval_loss(ref, work / "adapters" / spec32.name, eval_tok)}
            fp32["eval_loss_ratio_bf16_over_fp32"] = ours_runs[0]["eval_loss"] / fp32["eval_loss"]

        base_runs = []
        for seed in args.seeds:
            print(f"baseline, seed {seed}: plain TRL SFTTrainer ...", flush=True)
            base_model, base_seconds, base_settings = run_baseline(
                ref, tokenizer, train_rows, lora.to_peft_kwargs(), epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=seed, work=work)
            base_runs.append({"seed": seed, "train_seconds": base_seconds,
                              "eval_loss": answer_eval_loss(base_model, eval_tok)})
            params = sum(p.numel() for p in base_model.parameters())
            del base_model
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # the one tokens/s of TuneLab (backend.training.progress.tokens_per_s), of answer tokens and of all tokens,
    # over every seed's run; eval losses paired by seed (same seed, same held-out rows)
    runs = len(args.seeds)
    ours_seconds = sum(r["train_seconds"] for r in ours_runs)
    base_seconds = sum(r["train_seconds"] for r in base_runs)
    ours_tps = tokens_per_s(answer_tokens * runs, ours_seconds)
    base_tps = tokens_per_s(answer_tokens * runs, base_seconds)
    ours_flops = 4 * params * all_tokens * runs / ours_seconds
    ours_eval = mean_interval([r["eval_loss"] for r in ours_runs])
    base_eval = mean_interval([r["eval_loss"] for r in base_runs])
    ratio = mean_interval([o["eval_loss"] / b["eval_loss"] for o, b in zip(ours_runs, base_runs)])
    lengths = [len(ids) for ids, _ in train_tok]
    answers = [len(ids) - p for ids, p in train_tok]
    result = {
        "speedup": ours_tps / base_tps,
        "eval_loss_ratio": ratio["mean"],
        "eval_loss_ratio_ci95": ratio["ci95"],
        "eval_loss_ratio_means": "the mean over seeds of ours / baseline eval loss, each pair trained with the same "
                                 "seed and scored on the same held-out rows, with its 95% Student-t interval over the "
                                 f"{runs} seeds (none from one seed)",
        "seeds": args.seeds,
        "peak_fraction": ours_flops / peaks[precision if precision in peaks else "fp32"],
        "ours": {"answer_tokens_per_s": ours_tps, "tokens_per_s": tokens_per_s(all_tokens * runs, ours_seconds),
                 "tokens_per_s_means": TOKENS_PER_S_MEANS, "train_seconds": ours_seconds,
                 "eval_loss": ours_eval["mean"], "eval_loss_ci95": ours_eval["ci95"], "per_seed": ours_runs,
                 "precision": precision, "model_flops": ours_flops,
                 "path": "bf16 frozen base weights + fp32 LoRA under bf16 autocast, LM head on answer positions "
                         "only (decoder called directly), length-grouped batches, backend.training.cpu: LoRA "
                         "projection as one autograd function (native AVX-512 rank-r products with the dropout "
                         "mask hashed once and kept as bits; else torch's products with the hashed mask "
                         "recomputed from a seed, or sparse drop positions), blocked LM-head loss with a oneDNN-packed "
                         "head and one-pass softmax gradient, fused SiLU-mul, RMSNorm and grouped causal "
                         "attention kernels, huge-page malloc keeping freed memory"
                         if precision == "bf16" else "fp32, LM head on answer positions only, fast LoRA dropout, "
                                                     "length-grouped batches",
                 "native_kernels": native_status},
        "baseline": {"answer_tokens_per_s": base_tps, "tokens_per_s": tokens_per_s(all_tokens * runs, base_seconds),
                     "train_seconds": base_seconds, "eval_loss": base_eval["mean"],
                     "eval_loss_ci95": base_eval["ci95"], "per_seed": base_runs, "settings": base_settings},
        "ours_fp32": fp32,
        "peak_flops": peaks,
        "settings": {"base": ref.name, "parameters": params, "lora": "all-linear r8 alpha16 dropout0.05",
                     "epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                     "train_rows": len(train_rows), "eval_rows": len(eval_rows),
                     "train_tokens": all_tokens, "answer_tokens": answer_tokens, "runs_each": runs,
                     "row_tokens_min_mean_max": [min(lengths), sum(lengths) / len(lengths), max(lengths)],
                     "answer_tokens_min_mean_max": [min(answers), sum(answers) / len(answers), max(answers)],
                     "flops_formula": "4 x parameters x processed (prompt+answer) tokens / s"},
        "machine": {**describe(load_start), "bf16_units": precision == "bf16",
                    "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                 "trl": trl.__version__, "peft": peft.__version__}},
        "targets": {"speedup": ">= 1.8", "eval_loss_ratio": "<= 1.02", "peak_fraction": ">= 0.5"},
    }
    return write_results(args.out, result)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give whole numbers separated by commas, "
                                         "e.g. --seeds 42,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give at least one seed, each once, e.g. --seeds 42,1,2")
    return seeds


def _rerun_with_training_env(argv: list[str] | None) -> None:
    """Run in the allocator environment the job runner gives its training worker
    (``backend.training.cpu.memory.hugepage_malloc_env``: read by glibc at process start), so
    both trainers measured here run as a real training job would."""
    env = hugepage_malloc_env(dict(os.environ))
    if env != dict(os.environ) and argv is None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


if __name__ == "__main__":
    main()
