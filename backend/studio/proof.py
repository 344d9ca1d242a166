"""Proof of learning: what an adapter changed, and whether that shows on held-out data.

Four pieces of evidence, each computed the same way for every adapter and stored in
``tunelab.json`` under ``"proof"``:

1. **Weight change** per layer × module kind: ‖ΔW‖_F / ‖W‖_F with ΔW = scale · B · A,
   scale = alpha / r (alpha / √r for rsLoRA). A fresh adapter (B = 0) is all zeros.
2. **Eval loss and perplexity** of the base and of base + adapter on the held-out rows,
   counted on the answer tokens only (the last, assistant, message), like training.
3. **Exact match** (classification, sentiment, extraction): the *base* prompted with k
   examples from the training split as previous turns (few-shot) against the *adapter*
   with none (zero-shot), greedy, on the same rows. Labels compare after normalising
   case, whitespace and trailing punctuation; extraction compares parsed JSON when both
   sides parse, else the whitespace-normalised strings.
4. **Self-consistency** (classification, sentiment): N seeded samples (temperature 0.7)
   per row from the adapter; confidence = share that agree with the majority answer.

This module holds the scoring (3 and 4), which takes the generations as data or as
callables so it can be checked against known answers, and the proof's text. It imports
no torch: :mod:`backend.studio.proof_model` computes 1 and 2 on a real model and wires
everything together in :func:`~backend.studio.proof_model.evaluate_adapter`.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from backend.data.normalized import answer_of, check_rows, prompt_of, read_rows

CLASSIFY_TASKS = {"classification", "sentiment"}
EXTRACT_TASKS = {"extraction"}
TASKS = ("style", "generation", "chat", "classification", "sentiment", "extraction")
SHOWN_CHARS = 200  # of each answer kept in the stored proof

Messages = list[dict]
# prompts (one message list each), n answers per prompt, temperature (0 = greedy), seed
Generator = Callable[..., list[list[str]]]


# --- rows ------------------------------------------------------------------------------------


def load_rows(rows_or_path: Sequence[dict] | str | Path | None, what: str = "eval") -> list[dict]:
    """Rows ``{"messages": [...]}`` from a list or a normalized ``.jsonl`` file (the data
    doctor's one reader), every problem reported at once."""
    if rows_or_path is None:
        return []
    if isinstance(rows_or_path, (str, Path)):
        return [{"messages": m} for m in read_rows(rows_or_path)]
    return [{"messages": m} for m in check_rows(list(rows_or_path), f"{what} rows")]


# --- 3. exact match ---------------------------------------------------------------------------------


def normalize_label(text: str) -> str:
    """Case, surrounding whitespace/quotes and trailing punctuation do not count."""
    text = re.sub(r"\s+", " ", str(text)).strip().lower()
    return text.strip("\"'`").rstrip(".!?;:,").strip()


def _parse_json(text: str):
    text = str(text).strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fenced:
        text = fenced.group(1)
    try:
        return True, json.loads(text)
    except ValueError:
        pass
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = max(text.rfind("}"), text.rfind("]"))
        if end > start:
            try:
                return True, json.loads(text[start:end + 1])
            except ValueError:
                pass
    return False, None


def answers_match(prediction: str, reference: str, task: str) -> bool:
    if task in EXTRACT_TASKS:
        ok_pred, pred = _parse_json(prediction)
        ok_ref, ref = _parse_json(reference)
        if ok_pred and ok_ref:
            return pred == ref
        return re.sub(r"\s+", " ", str(prediction)).strip() == re.sub(r"\s+", " ", str(reference)).strip()
    if task in CLASSIFY_TASKS:
        return normalize_label(prediction) == normalize_label(reference)
    return str(prediction).strip() == str(reference).strip()


def exact_match(predictions: Sequence[str], references: Sequence[str], task: str) -> dict[str, Any]:
    hits = [answers_match(p, r, task) for p, r in zip(predictions, references, strict=True)]
    return {"score": sum(hits) / len(hits) if hits else 0.0, "correct": sum(hits), "total": len(hits),
            "per_row": hits}


def pick_shots(train_rows: list[dict], k: int, seed: int = 0, task: str = "classification") -> list[dict]:
    """k seeded examples from the training split; for labels, one per label first (round-robin)."""
    if k <= 0 or not train_rows:
        return []
    order = list(train_rows)
    random.Random(seed).shuffle(order)
    if task not in CLASSIFY_TASKS:
        return order[:k]
    by_label: dict[str, list[dict]] = {}
    for row in order:
        by_label.setdefault(normalize_label(answer_of(row["messages"])), []).append(row)
    picked: list[dict] = []
    while len(picked) < min(k, len(order)):
        for rows in by_label.values():
            if rows and len(picked) < k:
                picked.append(rows.pop(0))
    return picked


def few_shot_prompt(row: dict, shots: list[dict]) -> Messages:
    """The row's system turns, then each shot's turns as earlier conversation, then the row."""
    prompt = prompt_of(row["messages"])
    system = [m for m in prompt if m.get("role") == "system"]
    turns: Messages = []
    for shot in shots:
        turns.extend(m for m in shot["messages"] if m.get("role") != "system")
    return system + turns + [m for m in prompt if m.get("role") != "system"]


def compare_exact_match(eval_rows: list[dict], train_rows: list[dict], generate_base: Generator,
                        generate_adapter: Generator, task: str, k: int = 4, seed: int = 0) -> dict[str, Any]:
    """Base few-shot (k training examples in the prompt) vs adapter zero-shot, greedy, same rows."""
    shots = pick_shots(train_rows, k, seed, task)
    references = [answer_of(row["messages"]) for row in eval_rows]
    base_out = [answers[0] for answers in generate_base([few_shot_prompt(row, shots) for row in eval_rows],
                                                        n=1, temperature=0.0, seed=seed)]
    adapter_out = [answers[0] for answers in generate_adapter([prompt_of(row["messages"]) for row in eval_rows],
                                                              n=1, temperature=0.0, seed=seed)]
    base_score, adapter_score = exact_match(base_out, references, task), exact_match(adapter_out, references, task)
    rows = [{"reference": ref[:SHOWN_CHARS], "base": b[:SHOWN_CHARS], "adapter": a[:SHOWN_CHARS],
             "base_ok": bo, "adapter_ok": ao}
            for ref, b, a, bo, ao in zip(references, base_out, adapter_out, base_score.pop("per_row"),
                                         adapter_score.pop("per_row"))]
    return {"k": len(shots), "base_few_shot": base_score, "adapter_zero_shot": adapter_score, "rows": rows}


# --- 4. self-consistency -----------------------------------------------------------------------------


def self_consistency(samples: Sequence[Sequence[str]], references: Sequence[str] | None = None) -> dict[str, Any]:
    """Per row: the majority answer (normalised) and the share of samples that agree with it."""
    per_row = []
    for i, answers in enumerate(samples):
        labels = [normalize_label(a) for a in answers]
        if not labels:
            per_row.append({"majority": None, "agreement": 0.0, "samples": 0})
            continue
        majority, count = Counter(labels).most_common(1)[0]
        entry = {"majority": majority, "agreement": count / len(labels), "samples": len(labels)}
        if references is not None:
            entry["majority_correct"] = majority == normalize_label(references[i])
        per_row.append(entry)
    mean = sum(r["agreement"] for r in per_row) / len(per_row) if per_row else 0.0
    return {"mean": mean, "per_row": per_row}


def finite(value):
    """``value`` as strict JSON allows it: NaN and infinities become None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


# --- text -----------------------------------------------------------------------------------------------


def number(value, digits: int = 4) -> str:
    """A proof figure as shown (the CLI's text and the page's table): fixed digits, n/a for none."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def share(part: dict) -> str:
    """An exact-match score as shown: ``7/12 (58%)``."""
    return f"{part['correct']}/{part['total']} ({part['score']:.0%})"


def render_text(result: dict) -> str:
    """The proof as text for ``tunelab evaluate ADAPTER``."""
    ev, dw = result["eval"], result["delta_w"]
    lines = [
        f"Adapter {result['adapter']} on {result['base'].get('name', '?')} — task {result['task']}",
        f"Eval loss     base {number(ev['base']['loss'])} (ppl {number(ev['base']['perplexity'], 2)})  ->  "
        f"adapter {number(ev['adapter']['loss'])} (ppl {number(ev['adapter']['perplexity'], 2)})  "
        f"on {ev['adapter']['rows']} held-out rows, {ev['adapter']['tokens']} answer tokens",
        f"Weight change ‖ΔW‖/‖W‖ max {number(dw['max'])}, mean {number(dw['mean'])} over {dw['modules_adapted']} modules",
    ]
    strongest = sorted(((v, f"layer {i} {m}") for i, row in enumerate(dw["values"])
                        for m, v in zip(dw["modules"], row) if v is not None), reverse=True)[:3]
    if strongest:
        lines.append("  strongest: " + ", ".join(f"{where} {number(v)}" for v, where in strongest))
    em = result.get("exact_match")
    if em:
        b, a = em["base_few_shot"], em["adapter_zero_shot"]
        lines.append(f"Exact match   base {em['k']}-shot {share(b)}  vs  adapter 0-shot {share(a)}")
    sc = result.get("self_consistency")
    if sc:
        lines.append(f"Consistency   {sc['mean']:.0%} of {sc['n_samples']} samples agree with the majority "
                     f"(temperature {sc['temperature']})")
    lines.append(f"(evaluated in {result['elapsed_s']} s)")
    return "\n".join(lines)
