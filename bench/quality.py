"""Quality benchmark: does one `tunelab train` with no knob set learn the task?

For each of TuneLab's own small tasks (``bench/tasks.py``: 3- and 5-label
classification, JSON extraction with an optional field, an autumn-mood style goal, and
two written after the defaults were chosen: 3-way review sentiment and long shop listings
in a house format) it does what a new user does, through the product's own path in a
fresh home:

1. import the training file with the data doctor (rows are held back by the split rule);
2. take the configuration TuneLab chooses with no knob set (``Service.run_spec``: the
   defaults of ``backend/training/defaults.py``) and score the base on the held-out rows
   (the plan card's baseline);
3. train it as a background job (the training worker, early stopping, the automatic
   proof on the held-out rows);
4. score base and adapter on the task's *unseen* rows — other templates, other items,
   cities and subjects — with plain transformers + peft, greedy: exact match (parsed
   JSON for extraction) for the base zero-shot, the base with 6 training examples in the
   prompt, and the adapter; for the judged tasks the bench's judge (autumn: 2+ autumn
   words and on the request's subject; listings: the house format with the facts given)
   for the base, the base asked for the style, and the adapter.

Every share carries its row count and a 95% Wilson interval. Writes
``bench/results/quality.json`` (``--out`` to change) with the CPU and its flags, since
training seconds only compare on the same machine.

    python bench/quality.py [--tasks triage topics orders autumn reviews listings] [--base default]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import tasks  # noqa: E402  (bench/tasks.py)
from bench.machine import cpu, write_results  # noqa: E402

TARGETS = {"classification": 0.95, "extraction": 0.75, "style": 0.80}
FEW_SHOT = 6


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def fresh_service(base: str, prefix: str):
    """A studio service on a new, empty home that shares the model cache, where ``base`` is
    provisioned once."""
    from backend.bases.resolve import resolve_base
    from backend.settings import Settings
    from backend.studio.service import Service

    shared = Settings()
    resolve_base(base, shared)
    return Service(Settings(home=Path(tempfile.mkdtemp(prefix=prefix)), models_dir=shared.paths.models))


def import_task(name: str, service, base: str, workdir: Path) -> tuple:
    """Task ``name``'s training file imported as a person would, and the run TuneLab plans for
    it with no knob set: ``(task, imported, spec, plan)``."""
    task = tasks.build(name)
    data = write_jsonl(workdir / f"{name}.jsonl", task["train"])
    imported = service.import_data([data], base=base, goal=task["goal"])
    spec, plan = service.run_spec(name, imported.folder, base=base, goal=task["goal"])
    return task, imported, spec, plan


def answer_tokens(task: dict) -> int:
    """New tokens a scored answer may take: a style answer is a few sentences; a task whose
    answers are longer (the listings) says how many its own take."""
    return task.get("answer_tokens") or (96 if task["kind"] == "style" else 48)


def unseen_rows(task: dict, system_prompt: str | None) -> list[dict]:
    """The task's unseen rows behind the run's system prompt, as the adapter is asked them."""
    from backend.proof.scores import with_system

    return [with_system({"messages": r["messages"]}, system_prompt) for r in task["unseen"]]


def judgements(task: dict, answers: list[str]) -> list[dict]:
    """The bench's judge of a judged task (autumn mood, listing format) on each answer to
    the task's unseen requests; each verdict has ``ok`` and the parts it is made of."""
    return [tasks.judge(task, r, a) for r, a in zip(task["unseen"], answers)]


def matches(task: dict, answers: list[str]) -> list[bool]:
    """Each answer against its unseen row's reference (exact match; parsed JSON for extraction)."""
    from backend.proof.scores import answers_match

    return [answers_match(a, r["messages"][-1]["content"], task["kind"]) for r, a in zip(task["unseen"], answers)]


def paired_vs(adapter: list[bool], base: list[bool], against: str) -> dict:
    """The adapter against the stronger base on the same unseen rows (right or not, per row):
    the product's paired test (:func:`backend.proof.intervals.paired`), which its verdict uses."""
    from backend.proof.intervals import paired

    return {"against": against, **paired(adapter, base)}


def score_unseen(task: dict, folder: Path, ref, system_prompt: str | None, train_rows: list[dict]) -> dict:
    """Base (zero- and few-shot) and adapter on the unseen rows, plain peft greedy."""
    import torch
    from peft import PeftModel

    from backend.bases.load import load_model, load_tokenizer
    from backend.proof.intervals import scored
    from backend.proof.on_model import hf_generator
    from backend.proof.scores import best_base, field_match, few_shot_prompt, pick_shots, with_system

    tokenizer = load_tokenizer(ref, plain_template=True)
    model = load_model(ref, dtype=torch.float32)
    model.eval()
    peft_model = PeftModel.from_pretrained(model, str(folder))
    peft_model.eval()
    kind, unseen = task["kind"], task["unseen"]
    tokens = answer_tokens(task)
    base_gen = hf_generator(peft_model, tokenizer, use_adapter=False, max_new_tokens=tokens)
    adapter_gen = hf_generator(peft_model, tokenizer, use_adapter=True, max_new_tokens=tokens)
    rows = unseen_rows(task, system_prompt)
    prompts = [r["messages"][:-1] for r in rows]

    def first(answers):
        return [a[0] for a in answers]

    if kind == "style":
        style_prompt = system_prompt or f"Write with this style: {task['goal']}."
        outputs = {"base": first(base_gen([[r["messages"][0]] for r in unseen])),
                   "prompted": first(base_gen([with_system({"messages": r["messages"]}, style_prompt)["messages"][:-1]
                                               for r in unseen])),
                   "adapter": first(adapter_gen(prompts))}
        judged = {name: judgements(task, outs) for name, outs in outputs.items()}
        parts = [k for k, v in judged["adapter"][0].items() if isinstance(v, bool)]  # ok, mood, on_task / format, facts
        return {"rows": len(unseen),
                **{name: {part: scored([j[part] for j in js]) for part in parts} for name, js in judged.items()},
                "paired_vs_base": paired_vs([j["ok"] for j in judged["adapter"]],
                                            [j["ok"] for j in judged["prompted"]], "prompted"),
                "examples": [{"prompt": r["messages"][0]["content"], "adapter": o, "judge": j}
                             for r, o, j in list(zip(unseen, outputs["adapter"], judged["adapter"]))[:8]]}
    shots = pick_shots(train_rows, FEW_SHOT, 0, kind)
    references = [r["messages"][-1]["content"] for r in rows]
    outputs = {"base_zero_shot": first(base_gen(prompts)),
               "base_few_shot": first(base_gen([few_shot_prompt(r, shots) for r in rows])),
               "adapter": first(adapter_gen(prompts))}
    result = {"rows": len(unseen), "k": len(shots)}
    right = {name: matches(task, outs) for name, outs in outputs.items()}
    for name, outs in outputs.items():
        result[name] = scored(right[name])
        if kind == "extraction":
            result[name]["per_field"] = field_match(outs, references)
    stronger = best_base({name: result[name] for name in ("base_zero_shot", "base_few_shot")})[0]
    result["paired_vs_base"] = paired_vs(right["adapter"], right[stronger], stronger)
    result["misses"] = [{"input": r["messages"][-2]["content"], "want": ref_, "got": o}
                        for r, ref_, o, ok in zip(rows, references, outputs["adapter"], right["adapter"]) if not ok][:8]
    return result


def run_task(name: str, service, base: str) -> dict:
    task, imported, spec, plan = import_task(name, service, base, Path(tempfile.mkdtemp(prefix=f"quality-{name}-")))
    started = time.perf_counter()
    baseline = service.baseline(imported.folder, plan, base=base)
    baseline_s = time.perf_counter() - started
    job = service.train(spec, imported.folder, data_hash=imported.report.content_hash)
    started = time.perf_counter()
    service.runner.run_pending()
    wall = time.perf_counter() - started
    progress = service.progress(job)
    events = service.store.events(job)
    scoring = [e.at for e in events if e.kind == "proof"]  # the adapter's weights are final: it is served from here
    ready_s = round((scoring[0] - next(e.at for e in events if e.kind == "attempt")).total_seconds(), 1) if scoring else None
    if progress["status"] != "done":
        return {"task": name, "status": progress["status"], "error": progress.get("error")}
    meta = service.adapter_meta(name)
    metrics, proof = meta.metrics, meta.proof or {}
    from backend.proof.intervals import describe  # noqa: F401  (light)

    unseen = score_unseen(task, Path(service.adapter(name)["path"]), service.resolve_base(base),
                          spec.train.system_prompt, [{"messages": m} for m in _rows(imported.folder / "train.jsonl")])
    score = unseen["adapter"]["ok"] if plan.kind == "style" else unseen["adapter"]
    target = TARGETS["classification" if plan.kind == "sentiment" else plan.kind]
    return {
        "task": name, "goal": task["goal"], "kind": plan.kind, "examples": len(task["train"]),
        "train_rows": len(imported.report.train), "held_out_rows": len(imported.report.eval),
        "unseen_rows": len(task["unseen"]),
        "default_config": {"r": spec.lora.r, "alpha": spec.lora.alpha, "learning_rate": spec.train.learning_rate,
                           "batch_size": spec.train.batch_size, "epochs_ceiling": spec.train.epochs,
                           "time_budget_s": spec.train.time_budget_s, "system_prompt": spec.train.system_prompt,
                           "why": plan.defaults_why},
        "training": {"train_seconds": metrics.get("train_seconds"), "steps": metrics.get("steps"),
                     "epochs_trained": metrics.get("epochs_trained"), "stopping": metrics.get("stopping"),
                     "job_wall_seconds_with_proof": round(wall, 1), "servable_after_s": ready_s,
                     "precision": metrics.get("precision")},
        "eval_loss": {"held_out_base": ((proof.get("eval") or {}).get("base") or {}).get("loss"),
                      "held_out_adapter": ((proof.get("eval") or {}).get("adapter") or {}).get("loss")},
        "baseline_on_held_out": {k: v for k, v in (baseline or {}).items() if k in ("k", "base_zero_shot",
                                                                                    "base_few_shot")},
        "baseline_seconds": round(baseline_s, 1),
        "proof_on_held_out": {"exact_match": {k: v for k, v in (proof.get("exact_match") or {}).items()
                                              if k in ("base_zero_shot", "base_few_shot", "adapter")},
                              "style": {k: (v or {}).get("both") for k, v in (proof.get("style") or {}).items()
                                        if k in ("base", "prompted", "adapter")},
                              "verdict": proof.get("verdict"), "divergence": proof.get("divergence"),
                              "forgetting": {k: v for k, v in (proof.get("forgetting") or {}).items()
                                             if k in ("changed", "total")}},
        "unseen": unseen,
        "target": target, "meets_target": score["score"] >= target,
    }


def _rows(path: Path) -> list[list[dict]]:
    from backend.data.normalized import read_rows

    return read_rows(path)


def _figure(part: dict | None) -> str:
    if not part:
        return "—"
    lo, hi = part["ci95"]
    return f"{part['correct']}/{part['total']} ({part['score']:.0%}, {lo:.0%}–{hi:.0%})"


def _paired(test: dict | None) -> str:
    """``only the adapter 14, only the base 0, p = 0.00012``, or — for a run without one."""
    if not test:
        return "—"
    return f"only the adapter {test['only_first']}, only the base {test['only_second']}, p = {test['p_value']:.2g}"


def summary_table(report: dict) -> str:
    """The markdown table docs/training.md shows (unseen rows; 95% Wilson intervals)."""
    lines = ["| task | rows (train / held out / unseen) | config chosen | trained | base zero-shot | "
             "base few-shot or asked for the style | adapter | paired vs the stronger base | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in report["tasks"]:
        if "unseen" not in t:
            lines.append(f"| {t['task']} | — | — | {t.get('status')}: {t.get('error')} | | | | | |")
            continue
        c, tr, u = t["default_config"], t["training"], t["unseen"]
        config = f"r{c['r']} α{c['alpha']}, lr {c['learning_rate']:g}, batch {c['batch_size']}, ≤{c['epochs_ceiling']:g} ep"
        trained = (f"{tr['train_seconds']:.0f} s, {tr['epochs_trained']:.1f} ep ({tr['stopping']['stopped_because']})"
                   if tr.get("stopping") else f"{tr['train_seconds']:.0f} s")
        if t["kind"] == "style":
            cells = [_figure(u["base"]["ok"]), _figure(u["prompted"]["ok"]), _figure(u["adapter"]["ok"])]
        else:
            cells = [_figure(u["base_zero_shot"]), _figure(u["base_few_shot"]), _figure(u["adapter"])]
        mark = "met" if t["meets_target"] else "missed"
        cells.append(_paired(u.get("paired_vs_base")))
        lines.append(f"| {t['task']} ({t['kind']}) | {t['train_rows']} / {t['held_out_rows']} / {t['unseen_rows']} | "
                     f"{config} | {trained} | {' | '.join(cells)} | ≥{t['target']:.0%}: {mark} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(tasks.TASKS), choices=tasks.TASKS)
    parser.add_argument("--base", default="default")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = parser.parse_args()

    service = fresh_service(args.base, "tunelab-quality-")
    results = []
    for name in args.tasks:
        print(f"== {name}", flush=True)
        result = run_task(name, service, args.base)
        print(json.dumps({k: result.get(k) for k in ("task", "meets_target", "training")}, default=str), flush=True)
        results.append(result)
    report = {"benchmark": "quality", "machine": cpu(), "base": args.base,
              "date": time.strftime("%Y-%m-%d"), "tasks": results}
    write_results(args.out, report, echo=False)
    print(summary_table(report))


if __name__ == "__main__":
    main()
