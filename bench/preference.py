"""Preference benchmark: does a round trained from a person's votes move the adapter toward
what that person prefers, on questions nobody trained or voted on, without losing the right
answers? And does KTO (single votes) help where DPO (pairs) has too few pairs?

Through the product's own paths, in a fresh home, on the default base (the questions, the
rater and the scoring are bench/preference_tasks.py's):

1. **parent**: an adapter trained as ``tunelab train`` would (its plan's defaults, but 2
   epochs, no time budget and no proof run; as a background job) on colour questions whose
   answers follow the preferred format (one or two words) in one row of three; the others
   answer in a sentence that starts with the right colour;
2. **votes**: the parent answers each voting prompt several times, sampled, through the
   arena's path (``Service.compare`` on the real endpoint, then ``Service.rate``); a
   simulated rater gives 👍 only to an answer that follows the format *and* names the right
   colour, 👎 to anything else;
3. **rounds**, each through ``rounds.start_round`` and the job runner, with the product's
   round defaults (``rounds.ROUND_DEFAULTS``: no knob chosen here):
   - ``dpo``: DPO on the pairs those votes make;
   - ``kto``: KTO on the same votes (skipped, with the reason, while the round has no KTO);
   - the **unpaired** regime: one rated answer for each training prompt (one vote per
     prompt, so no pairs): DPO is refused there (its message is recorded) and ``kto-unpaired``
     trains on those single votes (in a second store, so it sees no other vote);
4. **held out**: colour questions on objects nobody trained or voted on, and a second family
   nobody trained or voted on at all (``What is the opposite of hot?``), answered greedily by
   every arm in one comparison each; per arm the share that follows the format, the share
   that is right and the share the rater would 👍, each with n and a 95% Wilson interval;
   and paired sign tests (the same prompts for every arm) of each round against the parent,
   the parent against the base, and KTO against DPO.

Writes ``bench/results/preference.json`` (``--out``) with the CPU and its flags.

    python bench/preference.py [--quick] [--home DIR]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from preference_tasks import (SHORT_EVERY, Item, compare_arms, rate, score_answers, sft_rows,  # noqa: E402
                              split_items, verdict)
from bench.machine import cpu, write_results  # noqa: E402

PARENT = "colours"
GOAL = "answer short questions"
SAMPLES, TEMPERATURE, MAX_TOKENS = 5, 1.0, 16
ROUNDS = {"dpo": ("colours-dpo", "dpo"), "kto": ("colours-kto", "kto"), "kto_unpaired": ("colours-kto-unpaired", "kto")}


def kto_missing() -> str | None:
    """Why the KTO arms cannot run in this checkout, or None when ``start_round`` takes
    ``method="kto"`` and ``RunSpec.method`` accepts it."""
    from backend.hparams import RunSpec
    from backend.studio import rounds

    if "method" not in inspect.signature(rounds.start_round).parameters:
        return "rounds.start_round takes no method yet (KTO for unpaired votes is not in this checkout)"
    if "kto" not in str(RunSpec.model_fields["method"].annotation):
        return "RunSpec.method does not accept 'kto' yet"
    return None


def run_round(service, name: str, method: str, train: dict | None = None) -> dict:
    """One round from the stored votes through the job runner; its knobs, losses and time, or
    why it did not run (a refusal such as too few pairs is a result, not a crash)."""
    from backend.errors import TuneLabError
    from backend.studio import rounds

    started = time.perf_counter()
    trained_now = name not in service.adapter_names(status="done")
    if trained_now:
        try:
            job = (rounds.start_round(service, PARENT, name, train=train) if method == "dpo"
                   else rounds.start_round(service, PARENT, name, train=train, method=method))
        except TuneLabError as exc:
            return {"ran": False, "method": method, "why": str(exc)}
        service.runner.run_pending()
        status = service.progress(job)
        if status["status"] != "done":
            return {"ran": False, "method": method, "why": f"the round {status['status']}: {status.get('error')}"}
    meta = service.adapter_meta(name)
    extra = meta.model_extra or {}
    losses = [round(h["loss"], 5) for h in meta.loss_history if isinstance(h.get("loss"), (int, float))]
    return {"ran": True, "method": method, "name": name,
            "knobs": {k: meta.train.get(k) for k in ("learning_rate", "epochs", "beta", "batch_size")},
            "trained_on": {k: v for k, v in (extra.get("preference") or {}).items() if k != "rating_ids"},
            "steps": meta.metrics.get("steps"), "first_loss": meta.metrics.get("first_loss"),
            "last_loss": meta.metrics.get("train_loss"), "loss_curve": losses or None,
            **{k: meta.metrics[k] for k in ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "kl")
               if meta.metrics.get(k) is not None},
            "train_s": round(meta.metrics.get("runtime_s") or 0, 1), "wall_s": round(time.perf_counter() - started, 1),
            "trained_now": trained_now}


def train_parent(settings, base: str, train_items: list[Item], vote_items: list[Item], epochs: float) -> dict:
    from backend.data.normalized import TRAIN_FILE, read_rows, split_rows
    from backend.studio.service import Service

    data = settings.home / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sft_rows(train_items)), encoding="utf-8")
    plain = Service(settings)
    try:
        # the import keeps every row in train.jsonl and no eval file goes with the job: no proof
        # run (the bench's own held-out questions are the proof) and no early stopping; the run
        # holds back its usual share of those rows for its eval loss (recorded as eval_rows)
        # (the plan is read from the default split, as the page would make it)
        split = plain.import_data([data], base=base, goal=GOAL)
        # no time budget either (the plan's 10 minutes): on a loaded CPU it would cut the parent
        # short by however busy the machine was, and the parent would differ run to run
        spec, _ = plain.run_spec(PARENT, split.folder, base=base, goal=GOAL,
                                 train={"epochs": epochs, "early_stopping": False, "time_budget_s": None})
        imported = plain.import_data([data], eval_fraction=0.0, base=base, goal=GOAL)
        if PARENT not in plain.adapter_names(status="done"):
            job = plain.runner.submit(spec, imported.folder / TRAIN_FILE, None,
                                      data_hash=imported.report.content_hash)
            plain.runner.run_pending()
            status = plain.progress(job)
            if status["status"] != "done":
                raise SystemExit(f"parent training {status['status']}: {status.get('error')}")
        meta = plain.adapter_meta(PARENT)
        kept, _ = split_rows(read_rows(imported.folder / TRAIN_FILE), eval_fraction=spec.train.eval_fraction,
                             seed=spec.train.seed)  # the rows the run trained on, split as it split them
        trained = {next(m["content"] for m in row if m["role"] == "user") for row in kept}
        return {"vote_prompts_trained": sum(1 for i in vote_items if i.prompt in trained),
                "rows": len(train_items), "short_rows": sum(1 for i in range(len(train_items)) if i % SHORT_EVERY == 0),
                "trained_rows": meta.metrics.get("examples"), "eval_rows": meta.metrics.get("eval_examples"),
                "system_prompt": meta.system_prompt, "epochs": meta.train.get("epochs"),
                "epochs_trained": meta.metrics.get("epochs_trained"), "learning_rate": meta.train.get("learning_rate"),
                "lora_r": (meta.hyperparameters.get("lora") or {}).get("r"), "steps": meta.metrics.get("steps"),
                "last_loss": meta.metrics.get("train_loss"), "train_s": round(meta.metrics.get("runtime_s") or 0, 1),
                "stopping": (meta.metrics.get("stopping") or {}).get("stopped_because")}
    finally:
        plain.close()


def unpaired_service(settings, main):
    """A second home and store that holds the parent and only single votes: a KTO round
    there sees no pair and no other vote. Its adapters are copied back into the main home."""
    from backend.names import adapter_path
    from backend.settings import Settings
    from backend.studio.service import Service

    home = settings.home / "unpaired"
    service = Service(Settings(home=home, models_dir=settings.models_dir))
    target = adapter_path(service.paths.adapters, PARENT)
    if not target.exists():
        shutil.copytree(adapter_path(main.paths.adapters, PARENT), target)
    row = main.store.get_adapter(PARENT)
    service.store.upsert_adapter(PARENT, base=row.base, status="done", goal=row.goal, meta={"copied_from": "main home"})
    return service


def bring_back(unpaired, main, name: str) -> None:
    from backend.names import adapter_path

    source, target = adapter_path(unpaired.paths.adapters, name), adapter_path(main.paths.adapters, name)
    if not target.exists():
        shutil.copytree(source, target)
    row = unpaired.store.get_adapter(name)
    main.store.upsert_adapter(name, base=row.base, status="done", goal=row.goal,
                              meta={"trained_in": str(unpaired.settings.home)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="default")
    parser.add_argument("--parent-epochs", type=float, default=2.0, help="the parent's (SFT) epochs")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="sampled answers rated per voting prompt")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few prompts, rounds of 1 epoch; "
                        "its figures mean nothing and it writes bench/results/preference.quick.json")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--home", type=Path, default=None, help="go on in the home of an earlier run: what it "
                        "finished (parent, votes, rounds) is kept, each phase runs only when its result is missing")
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / "results" / ("preference.quick.json" if args.quick else "preference.json")

    from backend.bases.resolve import resolve_base
    from backend.serving.auth import api_token
    from backend.serving.http.app import create_app, start_in_thread
    from backend.settings import Settings
    from backend.studio import rounds
    from backend.studio.service import Service

    shared = Settings()
    ref = resolve_base(args.base, shared)
    home = args.home or Path(tempfile.mkdtemp(prefix="tunelab-preference-"))
    settings = Settings(home=home, models_dir=shared.paths.models)
    train_items, vote_items, held_items = split_items(args.quick)
    kto_why_not = kto_missing()
    knobs = {"epochs": 1.0} if args.quick else None  # --quick: a smoke test of the path, not a measurement
    timings, sitting = {}, time.perf_counter()
    print(f"home {home}; KTO: {kto_why_not or 'available'}", flush=True)

    earlier = json.loads(out.read_text(encoding="utf-8")) if args.home and out.is_file() else {}
    if earlier.get("home") == str(home):  # the same home: what ran then and is kept now keeps its time
        timings.update(earlier.get("timings_s") or {})
    started = time.perf_counter()
    had_parent = (home / "adapters" / PARENT).is_dir()
    parent = train_parent(settings, args.base, train_items, vote_items, args.parent_epochs)
    if not had_parent:
        timings["parent_s"] = round(time.perf_counter() - started, 1)

    app = create_app(settings=settings, base=ref.path, token=api_token(settings))
    url, stop = start_in_thread(app, port=0)
    service = Service(settings.model_copy(update={"server_url": url}))
    unpaired = unpaired_service(settings, service)
    arms: dict[str, dict] = {}
    try:
        service.sync_endpoint()
        base_name = service.models()[0]

        # 2. votes: sampled answers of the parent, rated. Paired regime (the main store): each
        # voting prompt answered SAMPLES times. Unpaired regime (its own store): every training
        # prompt answered once (seed 1, the same answer where the paired regime asked it too)
        started = time.perf_counter()
        first = {}

        def ask(item: Item, seed: int):
            comparison = service.compare(item.prompt, [PARENT], max_tokens=MAX_TOKENS, seed=seed,
                                         temperature=TEMPERATURE)
            return comparison, rate(comparison.answers[0].text, item)

        if not service.store.ratings():
            for item in vote_items:
                for seed in range(1, args.samples + 1):
                    comparison, score = ask(item, seed)
                    service.rate(comparison, PARENT, score=score)
                    if seed == 1:
                        first[item.prompt] = comparison, score
        if not unpaired.store.ratings():
            for item in train_items:
                comparison, score = first.get(item.prompt) or ask(item, 1)
                unpaired.rate(comparison, PARENT, score=score)
        if first:
            timings["votes_s"] = round(time.perf_counter() - started, 1)
        ratings = service.store.ratings()
        votes = {"prompts": len(vote_items), "samples_per_prompt": args.samples, "temperature": TEMPERATURE,
                 "max_tokens": MAX_TOKENS,
                 "ratings": len(ratings), "up": sum(1 for r in ratings if r.score > 0),
                 "pairs": len(rounds.pairs(service)),
                 "unpaired": {"prompts": len(train_items), "samples_per_prompt": 1,
                              "ratings": len(unpaired.store.ratings()),
                              "up": sum(1 for r in unpaired.store.ratings() if r.score > 0),
                              "pairs": len(rounds.pairs(unpaired))}}
        print(f"votes: {votes}", flush=True)

        # 3. the rounds, with the product's defaults
        arms["dpo"] = run_round(service, *ROUNDS["dpo"], knobs)
        arms["dpo_unpaired"] = run_round(unpaired, "colours-dpo-unpaired", "dpo", knobs)
        for arm in ("kto", "kto_unpaired"):
            if kto_why_not:
                arms[arm] = {"ran": False, "method": "kto", "why": kto_why_not}
                continue
            arms[arm] = run_round(service if arm == "kto" else unpaired, *ROUNDS[arm], knobs)
            if arm == "kto_unpaired" and arms[arm]["ran"]:
                bring_back(unpaired, service, ROUNDS[arm][0])
        for arm, result in arms.items():
            if result.get("trained_now"):
                timings[f"{arm}_s"] = result["wall_s"]
            print(f"{arm}: {json.dumps(result)[:400]}", flush=True)
        service.sync_endpoint()

        # 4. held-out questions, greedy, every arm in one comparison each
        models = {"base": base_name, "parent": PARENT,
                  **{arm: result["name"] for arm, result in arms.items() if result["ran"]}}
        started = time.perf_counter()
        outputs = {arm: [] for arm in models}
        by_model = {model: arm for arm, model in models.items()}
        for item in held_items:
            comparison = service.compare(item.prompt, list(models.values()), max_tokens=MAX_TOKENS)
            for answer in comparison.answers:
                outputs[by_model[answer.model]].append(answer.text)
        timings["held_out_s"] = round(time.perf_counter() - started, 1)
    finally:
        service.close()
        unpaired.close()
        stop()

    timings["this_sitting_s"] = round(time.perf_counter() - sitting, 1)
    held_out = {arm: score_answers(texts, held_items) for arm, texts in outputs.items()}
    tests = {f"{b}_vs_{a}": compare_arms(outputs[a], outputs[b], held_items)
             for a, b in [("base", "parent"), ("parent", "dpo"), ("parent", "kto"), ("parent", "kto_unpaired"),
                          ("dpo", "kto")] if a in outputs and b in outputs}
    report = {
        "benchmark": "preference", "machine": cpu(), "base": args.base, "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick, "home": str(home),
        "preference": "an answer of one or two words that is also right (the rater's 👍); the SFT data shows the "
                      f"format in one row of {SHORT_EVERY}",
        "items": {"train": len(train_items), "vote_prompts": len(vote_items), "held_out": len(held_items),
                  "held_out_by_family": {f: sum(1 for i in held_items if i.family == f)
                                         for f in sorted({i.family for i in held_items})}},
        "parent": parent, "votes": votes,
        "round_rule": "the product's rounds.ROUND_DEFAULTS, nothing chosen for this bench"
                      + (" (--quick: 1 epoch)" if args.quick else ""),
        "round_defaults": dict(rounds.ROUND_DEFAULTS), "rounds": arms,
        "held_out": held_out,
        "verdict": {arm: verdict(tests[f"{arm}_vs_parent"]) for arm in ("dpo", "kto", "kto_unpaired")
                    if f"{arm}_vs_parent" in tests},
        "paired_tests": {"about": "same held-out prompts; only_first / only_second: prompts where only that model "
                                  "succeeds; p_value: exact two-sided sign (McNemar) test", **tests},
        "examples": [{"prompt": item.prompt, "right": list(item.answers), **{arm: outputs[arm][i] for arm in outputs}}
                     for i, item in enumerate(held_items) if i % max(1, len(held_items) // 8) == 0],
        "timings_s": timings,
    }
    write_results(out, report, echo=False)
    for arm, figure in held_out.items():
        line = "  ".join(f"{k} {v['correct']}/{v['total']} ({v['ci95'][0]:.0%}-{v['ci95'][1]:.0%})"
                         for k, v in figure["all"].items())
        print(f"{arm:13s} {line}")


if __name__ == "__main__":
    main()
