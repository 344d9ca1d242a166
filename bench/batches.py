"""Batches benchmark: what a CPU run's way of batching costs in time and buys in held-out loss.

TuneLab's CPU recipe pads each batch to its longest row, so it groups examples of similar
length (``LengthBatchSampler``: ~4% padding on these rows instead of ~58%); plain TRL and
the GPU recipe draw batches at random. Grouping makes each step train on examples that are
alike in length, which in real data goes with the task or the label. This measures both
sides on bench/train.py's rows (the default base, 160 training rows of five task kinds,
32 held out; r 8, rate 2e-4, batch 8), each variant once per seed:

* ``length``: the CPU recipe as it is, one epoch;
* ``random``: the same recipe with random batches (``length_grouped`` off), one epoch;
* ``padding_free``: random batches as one packed row each, every example attended on its
  own (the GPU recipe's layout and ``packed_sdpa`` attention, with the CPU machinery);
* ``length_at_random_time``: the CPU recipe trained for as many epochs as fit the time
  ``random`` took with the same seed: the comparison at equal training time.

Reports per variant and seed the training seconds (evaluation excluded) and the held-out
answer loss (bench/train.py's ``answer_eval_loss``), their means with 95% intervals, and
each variant's loss and time relative to ``length`` paired by seed. Writes
bench/results/batches.json.

    python bench/batches.py [--seeds 42,1] [--variants length random padding_free length_at_random_time]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from backend.hparams import LoraSpec, RunSpec, TrainSpec  # noqa: E402
from backend.proof.intervals import mean_interval  # noqa: E402
from bench.machine import describe, load_average, write_results  # noqa: E402
from bench.train import (_rerun_with_training_env, _seeds, adapter_eval_loss, prepare,  # noqa: E402
                         tokenize_rows, write_jsonl)

RESULTS = ROOT / "bench" / "results" / "batches.json"
VARIANTS = ("length", "random", "padding_free", "length_at_random_time")


def variant_recipe(recipe, variant: str):
    """The CPU recipe a variant trains with (the run's own recipe for ``length``)."""
    from backend.training import packed_attention

    if variant == "random":
        return dataclasses.replace(recipe, length_grouped=False)
    if variant == "padding_free":
        return dataclasses.replace(recipe, length_grouped=False, padding_free=True, attention=packed_attention.NAME)
    return recipe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="default")
    parser.add_argument("--rows", type=int, default=192, help="synthetic rows (1/6 held out)")
    parser.add_argument("--seeds", type=_seeds, default=[42, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    _rerun_with_training_env(argv)

    from backend.hardware.threads import set_cpu_threads
    from backend.training.recipe import recipe_for_run
    from backend.training.run import train_adapter

    load_start = load_average()
    setup = prepare(args.base, args.rows)
    native_build, ref, train_rows, eval_rows = setup.native_build, setup.ref, setup.train_rows, setup.eval_rows
    eval_tok = tokenize_rows(setup.tokenizer, eval_rows)
    set_cpu_threads("cpu")
    work = Path(tempfile.mkdtemp(prefix="tunelab-bench-batches-"))
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    try:
        train_file = write_jsonl(train_rows, work / "train.jsonl")

        def train(variant: str, seed: int, epochs: float) -> dict:
            spec = RunSpec(name=f"{variant.replace('_', '-')}-{seed}", base=args.base,
                           lora=LoraSpec(r=8, alpha=16, target_modules="all-linear"),
                           train=TrainSpec(epochs=epochs, batch_size=8, learning_rate=2e-4, eval_fraction=0.0,
                                           seed=seed))
            recipe = variant_recipe(recipe_for_run(spec, ref), variant)
            print(f"{variant}, seed {seed}, {epochs:.2f} epochs ...", flush=True)
            try:
                meta = train_adapter(spec, base_ref=ref, train_file=train_file, eval_file=None,
                                     out_dir=work / "adapters" / spec.name, work_dir=work / spec.name,
                                     native_build=native_build, recipe=recipe)
            except Exception as exc:  # a variant that cannot run here is recorded; the others still run
                return {"seed": seed, "epochs": epochs, "error": f"{type(exc).__name__}: {exc}"[:500]}
            return {"seed": seed, "epochs": epochs, "train_seconds": meta["metrics"]["train_seconds"],
                    "eval_loss": adapter_eval_loss(ref, work / "adapters" / spec.name, eval_tok)}

        for seed in args.seeds:
            for variant in args.variants:
                if variant == "length_at_random_time":
                    timed = {v: next((r for r in runs[v] if r["seed"] == seed and "error" not in r), None)
                             for v in ("length", "random")}
                    if None in timed.values():
                        runs[variant].append({"seed": seed, "error": "needs the length and random runs of this seed"})
                        continue
                    epochs = round(timed["random"]["train_seconds"] / timed["length"]["train_seconds"], 2)
                    runs[variant].append(train(variant, seed, epochs))
                else:
                    runs[variant].append(train(variant, seed, 1.0))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference = {r["seed"]: r for r in runs.get("length", []) if "error" not in r}
    summary = {}
    for variant, done in runs.items():
        ok = [r for r in done if "error" not in r]
        if not ok:
            summary[variant] = {"error": done[0]["error"] if done else "not run"}
            continue
        figure = {"eval_loss": mean_interval([r["eval_loss"] for r in ok]),
                  "train_seconds": mean_interval([r["train_seconds"] for r in ok])}
        paired = [r for r in ok if r["seed"] in reference]
        if paired:
            figure["eval_loss_over_length"] = mean_interval(
                [r["eval_loss"] / reference[r["seed"]]["eval_loss"] for r in paired])
            figure["seconds_over_length"] = mean_interval(
                [r["train_seconds"] / reference[r["seed"]]["train_seconds"] for r in paired])
        summary[variant] = figure
    result = {
        "summary": summary,
        "runs": runs,
        "means": "eval_loss: held-out answer loss (fp32, answer tokens only) after training; train_seconds: "
                 "training time, evaluation excluded; *_over_length: the variant over `length` with the same "
                 "seed, mean and 95% Student-t interval over the seeds",
        "settings": {"base": ref.name, "train_rows": len(train_rows), "eval_rows": len(eval_rows),
                     "lora": "all-linear r8 alpha16", "batch_size": 8, "learning_rate": 2e-4, "seeds": args.seeds},
        "machine": describe(load_start),
    }
    return write_results(args.out, result)


if __name__ == "__main__":
    main()
