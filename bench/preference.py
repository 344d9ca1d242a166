"""Preference benchmark: does a round trained from a person's votes move the adapter toward
what that person prefers, on prompts nobody voted on?

Through the product's own paths, in a fresh home, on the default base:

1. train a parent adapter (``tunelab train``'s defaults but 2 epochs, as a background job) on colour
   questions whose answers only half follow a format: half are one word ("Red."), half a
   sentence ("The colour of a cherry is red, ...");
2. serve base and parent on the real endpoint and collect votes through the arena's path
   (``Service.compare`` then ``Service.rate``) from a simulated rater with a fixed
   preference written here: an answer of one or two words is 👍, anything longer 👎;
   each voting prompt is compared twice, sampled (temperature 0.8, two seeds), so the
   same prompt gets answers of both kinds;
3. run the preference round from those ratings (``rounds.start_round``: the pairs the
   votes make, DPO from the parent, through the job runner), hot-loaded into the endpoint;
4. answer held-out colour questions (objects nobody trained or voted on) greedily with
   the base, the parent and the round, and report the share that follows the preferred
   format, each with a 95% Wilson interval; and the arena's ranking from the votes.

Writes ``bench/results/preference.json`` (``--out``) with the CPU and its flags.

    python bench/preference.py [--lr 2e-4] [--epochs 3] [--beta 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from quality import cpu_line  # noqa: E402  (bench/quality.py)

COLOURS = {
    "white": ["snow", "milk", "a cloud", "salt", "sugar", "a swan", "chalk", "rice", "cotton", "a pearl"],
    "green": ["grass", "a leaf", "a lime", "a frog", "an emerald", "a cucumber", "moss", "a pea", "broccoli", "jade"],
    "blue": ["the sky", "the ocean", "a sapphire", "a blueberry", "denim", "a bluebird", "cornflowers"],
    "red": ["blood", "a cherry", "a ruby", "a tomato", "a strawberry", "a fire truck", "a ladybug", "a brick"],
    "yellow": ["a banana", "a lemon", "the sun", "corn", "butter", "a canary", "a dandelion", "an egg yolk"],
    "black": ["coal", "a crow", "ink", "tar", "a raven", "licorice", "a panther"],
    "orange": ["an orange", "a carrot", "a pumpkin", "a tangerine", "an apricot", "a goldfish"],
    "brown": ["chocolate", "coffee", "soil", "tree bark", "a walnut", "a bear"],
}
ITEMS = [(thing, colour) for colour, things in COLOURS.items() for thing in things]  # 62


def question(thing: str) -> str:
    return f"What colour is {thing}?"


def follows_format(answer: str) -> bool:
    """The simulated rater's fixed preference: one or two words, nothing more."""
    words = re.findall(r"[A-Za-z']+", answer)
    return 1 <= len(words) <= 2


def split_items() -> tuple[list, list, list]:
    """Every third item held out (nobody trains or votes on it); the rest train and vote."""
    held = ITEMS[2::3]
    rest = [item for i, item in enumerate(ITEMS) if i % 3 != 2]
    return rest[::2] + rest[1::4], rest, held  # train (~31), vote (all 41 not held out), held-out (~21)


def sft_rows(items) -> list[dict]:
    rows = []
    for i, (thing, colour) in enumerate(items):
        answer = f"{colour.capitalize()}." if i % 2 == 0 else \
            f"The colour of {thing} is {colour}, which is what most people would say when they see it."
        rows.append({"messages": [{"role": "user", "content": question(thing)},
                                  {"role": "assistant", "content": answer}]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="default")
    parser.add_argument("--lr", type=float, default=2e-4, help="the round's learning rate")
    parser.add_argument("--epochs", type=float, default=2.0, help="the round's epochs")
    parser.add_argument("--parent-epochs", type=float, default=2.0, help="the parent's (SFT) epochs")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "preference.json")
    parser.add_argument("--home", type=Path, default=None, help="go on in the home of an earlier run: its parent "
                        "and its votes are kept (each phase runs only when its result is missing)")
    args = parser.parse_args()

    from backend.bases.resolve import resolve_base
    from backend.proof.intervals import scored
    from backend.serving.auth import api_token
    from backend.serving.http.app import create_app, start_in_thread
    from backend.settings import Settings
    from backend.studio import rounds
    from backend.studio.service import Service

    shared = Settings()
    ref = resolve_base(args.base, shared)
    home = args.home or Path(tempfile.mkdtemp(prefix="tunelab-preference-"))
    settings = Settings(home=home, models_dir=shared.paths.models)
    train_items, vote_items, held_items = split_items()
    timings = {}

    # 1. the parent adapter, trained as a user would
    started = time.perf_counter()
    data = home / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sft_rows(train_items)), encoding="utf-8")
    plain = Service(settings)
    done_before = "colours" in plain.adapter_names(status="done")
    imported = plain.import_data([data], base=args.base, goal="say the colour")
    spec, _ = plain.run_spec("colours", imported.folder, base=args.base, goal="say the colour",
                             train={"epochs": args.parent_epochs})
    if not done_before:
        job = plain.train(spec, imported.folder, data_hash=imported.report.content_hash)
        plain.runner.run_pending()
        status = plain.progress(job)
        if status["status"] != "done":
            raise SystemExit(f"parent training {status['status']}: {status.get('error')}")
    plain.close()
    timings["parent_s"] = round(time.perf_counter() - started, 1)

    # 2. votes through the arena's path, on the real endpoint
    app = create_app(settings=settings, base=ref.path, token=api_token(settings))
    url, stop = start_in_thread(app, port=0)
    service = Service(settings.model_copy(update={"server_url": url}))
    try:
        service.sync_endpoint()
        base_name = service.models()[0]
        started = time.perf_counter()
        voted_before = bool(service.store.ratings())
        for thing, _ in ([] if voted_before else vote_items):
            for seed in (1, 2):
                comparison = service.compare(question(thing), [base_name, "colours"], max_tokens=24, seed=seed,
                                             temperature=0.8)
                for answer in comparison.answers:
                    service.rate(comparison, answer.model, score=1 if follows_format(answer.text) else -1)
        timings["votes_s"] = round(time.perf_counter() - started, 1)
        shown = [{"model": r.model, "follows": r.score > 0} for r in service.store.ratings()]
        board = rounds.table(service)
        pairs = rounds.pairs(service)

        # 3. the round, from the ratings
        started = time.perf_counter()
        if "colours-dpo" not in service.adapter_names(status="done"):
            job = rounds.start_round(service, "colours", "colours-dpo",
                                     train={"learning_rate": args.lr, "epochs": args.epochs, "beta": args.beta})
            service.runner.run_pending()
            status = service.progress(job)
            if status["status"] != "done":
                raise SystemExit(f"round {status['status']}: {status.get('error')}")
        timings["round_s"] = round(time.perf_counter() - started, 1)
        meta = service.adapter_meta("colours-dpo")

        # 4. held-out prompts, greedy
        started = time.perf_counter()
        outputs = {name: [] for name in ("base", "colours", "colours-dpo")}
        for thing, _ in held_items:
            comparison = service.compare(question(thing), [base_name, "colours", "colours-dpo"], max_tokens=24)
            for answer in comparison.answers:
                outputs["base" if answer.model == base_name else answer.model].append(answer.text)
        timings["held_out_s"] = round(time.perf_counter() - started, 1)
    finally:
        service.close()
        stop()

    held_out = {name: scored([follows_format(t) for t in texts]) for name, texts in outputs.items()}
    report = {
        "benchmark": "preference", "machine": cpu_line(), "base": args.base, "date": time.strftime("%Y-%m-%d"),
        "preference": "an answer of one or two words (the SFT data shows it in half its rows)",
        "items": {"train": len(train_items), "vote_prompts": len(vote_items), "held_out": len(held_items)},
        "votes": {"ratings": board["votes"], "games": board["games"], "pairs": len(pairs),
                  "shown_following": {m: scored([s["follows"] for s in shown if s["model"] == m])
                                      for m in sorted({s["model"] for s in shown})},
                  "arena": [{k: r[k] for k in ("name", "score", "ci95", "votes", "wins", "losses")}
                            for r in board["rows"]], "arena_summary": board["summary"]},
        "round": {**{k: meta.train.get(k) for k in ("learning_rate", "epochs", "beta", "batch_size")},
                  "pairs": (meta.model_extra or {}).get("preference", {}).get("pairs"),
                  "first_loss": meta.metrics.get("first_loss"), "last_loss": meta.metrics.get("train_loss"),
                  "reward_accuracy": meta.metrics.get("reward_accuracy"), "steps": meta.metrics.get("steps")},
        "held_out_follows_format": held_out,
        "examples": [{"prompt": question(thing), **{name: outputs[name][i] for name in outputs}}
                     for i, (thing, _) in enumerate(held_items[:6])],
        "timings_s": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    for name, figure in held_out.items():
        lo, hi = figure["ci95"]
        print(f"{name:12s} {figure['correct']}/{figure['total']} follow the format (95% CI {lo:.0%}-{hi:.0%})")


if __name__ == "__main__":
    main()
