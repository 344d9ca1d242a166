"""Proof of learning: what an adapter changed, and whether that shows on held-out data.

Four pieces of evidence, each computed the same way for every adapter and stored in
``tunelab.json`` under ``"proof"``:

1. **Weight change** per layer × module kind: ‖ΔW‖_F / ‖W‖_F with ΔW = scale · B · A,
   scale = alpha / r (alpha / √r for rsLoRA). A fresh adapter (B = 0) is all zeros.
2. **Eval loss and perplexity** of the base and of base + adapter on the held-out rows,
   counted on the answer tokens only (the last, assistant, message), like training.
3. **Exact match** (classification, sentiment, extraction): the *base* asked plainly
   (zero-shot) and with k examples from the training split as previous turns (few-shot),
   against the *adapter* asked plainly, greedy, on the same rows, every prompt behind the
   system prompt the adapter was trained with. Labels compare after normalising case,
   whitespace and trailing punctuation; extraction compares parsed JSON when both sides
   parse (and reports each field's match too), else the whitespace-normalised strings.
   Every figure carries its row count and a 95% Wilson interval, and the verdict
   (:func:`suggest_verdict`) only says "beats the base" when the paired test on the same
   rows does (the exact sign test on the rows only one of the two got right, p < 0.05).
4. **Self-consistency** (classification, sentiment): N seeded samples (temperature 0.7)
   per row from the adapter; confidence = share that agree with the majority answer.
5. **Style** (every other goal): generated answers judged
   (:mod:`backend.proof.style_judge`), and the checks of :mod:`backend.proof.change_checks`
   (divergence, "changed nothing", forgetting).

This module holds the scoring (3 and 4) and the verdict, which take the generations as
data or as callables so they can be checked against known answers, and the proof's text.
It imports no torch: :mod:`backend.proof.on_model` computes the rest on a real model and
wires everything together in :func:`~backend.proof.on_model.evaluate_adapter`.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from backend.data.doctor import SPLIT_NOTE, saved_report
from backend.data.normalized import answer_of, behind_system, check_rows, prompt_of, read_rows
from backend.proof.intervals import describe, scored, wilson

CLASSIFY_TASKS = {"classification", "sentiment"}
EXTRACT_TASKS = {"extraction"}
CHECKABLE_TASKS = CLASSIFY_TASKS | EXTRACT_TASKS  # answers that can be right or wrong
TASKS = ("style", "generation", "summarization", "chat", "classification", "sentiment", "extraction")
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


BASELINE_FILE = "baseline.json"  # in an import's folder: the base's scores on its held-out rows


def judged_by(rows: int, source: str = "split", note: str | None = None) -> dict[str, Any]:
    """Where the rows that judge an adapter come from, said beside every figure."""
    return {"rows": rows, "source": source,
            "note": note or (SPLIT_NOTE if source == "split" else "from a separate evaluation file")}


def judged_from_import(folder: Path) -> dict[str, Any] | None:
    """:func:`judged_by` from an import's report (its held-out rows and where they come from)."""
    stats = saved_report(folder).get("stats")
    split = stats.get("split") if isinstance(stats, dict) else None
    rows = split.get("eval_rows") if isinstance(split, dict) else None
    if rows is None:
        return None
    return judged_by(rows, split.get("eval_source", "split"), split.get("note"))


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
    return dict(scored(hits), per_row=hits)


def field_match(predictions: Sequence[str], references: Sequence[str]) -> dict[str, dict]:
    """Extraction, field by field: for each key of the reference objects, the rows whose
    prediction parses to an object holding that key with the same value."""
    refs = [_parse_json(r) for r in references]
    keys = sorted({k for ok, ref in refs if ok and isinstance(ref, dict) for k in ref})
    preds = [_parse_json(p) for p in predictions]
    fields = {}
    for key in keys:
        hits = [ok_p and isinstance(pred, dict) and key in pred and pred[key] == ref[key]
                for (ok_p, pred), (ok_r, ref) in zip(preds, refs) if ok_r and isinstance(ref, dict) and key in ref]
        fields[key] = scored(hits)
    return fields


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


def with_system(row: dict, system_prompt: str | None) -> dict:
    """The row as training saw it: ``system_prompt`` first when the row has no system turn
    (:func:`backend.data.normalized.behind_system`, training's rule)."""
    return {"messages": behind_system(row["messages"], system_prompt)}


def score_base(eval_rows: list[dict], train_rows: list[dict], generate_base: Generator, task: str, *,
               k: int = 6, seed: int = 0, system_prompt: str | None = None) -> dict[str, Any]:
    """The base on the held-out rows before any training: asked plainly (zero-shot) and with
    k training examples as earlier turns (few-shot), greedy, behind ``system_prompt``."""
    rows = [with_system(r, system_prompt) for r in eval_rows]
    shots = pick_shots(train_rows, k, seed, task)
    references = [answer_of(row["messages"]) for row in rows]
    zero = [a[0] for a in generate_base([prompt_of(row["messages"]) for row in rows], n=1, temperature=0.0, seed=seed)]
    few = zero if not shots else [a[0] for a in generate_base([few_shot_prompt(row, shots) for row in rows],
                                                              n=1, temperature=0.0, seed=seed)]
    result = {"k": len(shots), "base_zero_shot": exact_match(zero, references, task),
              "base_few_shot": exact_match(few, references, task),
              "outputs": {"base_zero_shot": zero, "base_few_shot": few}}
    if task in EXTRACT_TASKS:
        result["per_field"] = {"base_zero_shot": field_match(zero, references),
                               "base_few_shot": field_match(few, references)}
    return result


def score_adapter(eval_rows: list[dict], baseline: dict, generate_adapter: Generator, task: str, *,
                  seed: int = 0, system_prompt: str | None = None) -> dict[str, Any]:
    """The adapter on the baseline's rows with the baseline's zero-shot prompts; the three
    figures side by side (each with its row count and 95% interval) and the rows."""
    rows = [with_system(r, system_prompt) for r in eval_rows]
    references = [answer_of(row["messages"]) for row in rows]
    out = [a[0] for a in generate_adapter([prompt_of(row["messages"]) for row in rows], n=1, temperature=0.0,
                                          seed=seed)]
    adapter = exact_match(out, references, task)
    zero, few = baseline["outputs"]["base_zero_shot"], baseline["outputs"]["base_few_shot"]
    per_row = {name: baseline[name]["per_row"] for name in ("base_zero_shot", "base_few_shot")}
    shown = [{"reference": ref[:SHOWN_CHARS], "base_zero_shot": z[:SHOWN_CHARS], "base_few_shot": f[:SHOWN_CHARS],
              "adapter": a[:SHOWN_CHARS], "base_zero_shot_ok": zo, "base_few_shot_ok": fo, "adapter_ok": ao}
             for ref, z, f, a, zo, fo, ao in zip(references, zero, few, out, per_row["base_zero_shot"],
                                                 per_row["base_few_shot"], adapter["per_row"])]
    result = {"k": baseline["k"],
              "base_zero_shot": _figure(baseline["base_zero_shot"]),
              "base_few_shot": _figure(baseline["base_few_shot"]),
              "adapter": _figure(adapter), "rows": shown}
    if task in EXTRACT_TASKS:
        result["per_field"] = dict(baseline.get("per_field") or {}, adapter=field_match(out, references))
    return result, out


def _figure(score: dict) -> dict:
    return {k: v for k, v in score.items() if k != "per_row"}


def compare_exact_match(eval_rows: list[dict], train_rows: list[dict], generate_base: Generator,
                        generate_adapter: Generator, task: str, k: int = 6, seed: int = 0,
                        system_prompt: str | None = None) -> dict[str, Any]:
    """Base zero-shot and few-shot (k training examples in the prompt) vs the adapter
    zero-shot, greedy, same rows: :func:`score_base` then :func:`score_adapter`."""
    baseline = score_base(eval_rows, train_rows, generate_base, task, k=k, seed=seed, system_prompt=system_prompt)
    result, _ = score_adapter(eval_rows, baseline, generate_adapter, task, seed=seed, system_prompt=system_prompt)
    return result


# --- the verdict ---------------------------------------------------------------------------------

TOO_FEW_ROWS = 20  # below this many held-out rows a percentage looks more decisive than it is
SIGNIFICANCE = 0.05  # two-sided: the paired test's p below this, and the adapter ahead, is "beats the base"
VERDICTS = ("beats_base", "no_better", "too_few_rows", "changed_nothing", "unchecked")


def best_base(figures: dict) -> tuple[str, dict] | None:
    """The stronger of the base's figures (few-shot on a tie): what the adapter must beat."""
    options = [(name, figures[name]) for name in ("base_few_shot", "base_zero_shot") if figures.get(name)]
    return max(options, key=lambda item: item[1]["correct"]) if options else None


def suggest_verdict(adapter: dict | None, base: dict | None, *, changed_nothing: bool = False,
                    base_label: str = "the base", what: str = "right",
                    same_rows: dict | None = None) -> dict[str, str]:
    """The suggestion shown beside the success / fail buttons; the person decides.

    "beats the base" only when the adapter gets more rows right and the paired test says so:
    ``same_rows`` is :func:`backend.proof.intervals.paired` of the adapter's and the base's
    per-row outcomes on the same rows, and the exact sign test on the rows only one of them
    got right must have p < :data:`SIGNIFICANCE` (the rows both or neither got say nothing
    about which is better). A proof stored without per-row outcomes falls back to the
    adapter's interval lying wholly above the base's, which asks for more. Below
    :data:`TOO_FEW_ROWS` rows, "too few held-out rows to tell" instead of a percentage.
    """
    if changed_nothing:
        return {"suggestion": "changed_nothing",
                "text": "The adapter changed nothing measurable: its answers equal the base's. See the likely causes."}
    if not adapter or not base:
        return {"suggestion": "unchecked", "text": "No answers were scored; compare outputs by hand."}
    if adapter["total"] < TOO_FEW_ROWS:
        return {"suggestion": "too_few_rows",
                "text": f"Too few held-out rows to tell ({adapter['total']}; {TOO_FEW_ROWS}+ are needed): "
                        f"adapter {adapter['correct']}/{adapter['total']} vs {base_label} "
                        f"{base['correct']}/{base['total']}. Add rows or an evaluation file."}
    versus = f"adapter {describe(adapter)} {what} vs {base_label} {describe(base)}"
    if same_rows is not None:
        ahead, behind, p = same_rows["only_first"], same_rows["only_second"], same_rows["p_value"]
        where = (f"{base_label} and the adapter were {what} on the same rows" if ahead + behind == 0 else
                 f"of the {ahead + behind} rows only one of them got {what}, the adapter got {ahead} and "
                 f"{base_label} {behind} (paired sign test p = {p:.2g})")
        if ahead > behind and p < SIGNIFICANCE:
            return {"suggestion": "beats_base", "text": f"Beats the base: {versus}; {where}."}
        return {"suggestion": "no_better", "text": f"No better than the base (not clearly, on the same rows): "
                                                  f"{versus}; {where}."}
    a_lo, _ = adapter.get("ci95") or wilson(adapter["correct"], adapter["total"])
    _, b_hi = base.get("ci95") or wilson(base["correct"], base["total"])
    if a_lo > b_hi:
        return {"suggestion": "beats_base", "text": f"Beats the base: {versus}."}
    return {"suggestion": "no_better", "text": f"No better than the base (the intervals overlap or it is lower): {versus}."}


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
    judged = result.get("judged_by") or {}
    lines = [
        f"Adapter {result['adapter']} on {result['base'].get('name', '?')} — task {result['task']}",
        f"Judged on   {judged.get('rows', ev['adapter']['rows'])} rows {judged.get('note', '')}".rstrip(),
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
        lines.append("Exact match (95% Wilson intervals)")
        for name, label in (("base_zero_shot", "base zero-shot"), ("base_few_shot", f"base {em['k']}-shot"),
                            ("adapter", "adapter")):
            if em.get(name):
                lines.append(f"  {label:<15} {describe(em[name])}")
        for field, figure in ((em.get("per_field") or {}).get("adapter") or {}).items():
            lines.append(f"  field {field!r:<10} adapter {describe(figure)}")
    style = result.get("style")
    if style:
        lines.append(f"Style (2+ of {len(style['markers'])} style words from the data, and on the request's subject)")
        for name, label in (("base", "base"), ("prompted", "base asked for it"), ("adapter", "adapter")):
            figures = style.get(name) or {}
            if figures:
                lines.append(f"  {label:<18} style {describe(figures['style'])}; on task {describe(figures['on_task'])}; "
                             f"both {describe(figures['both'])}")
    div = result.get("divergence")
    if div:
        lines.append(f"Changed       {div['changed']}/{div['total']} held-out answers differ from the base's "
                     f"(mean change {div['mean_change']:.0%})")
    forgot = result.get("forgetting")
    if forgot:
        lines.append(f"Forgetting    {forgot['changed']}/{forgot['total']} everyday prompts answered differently "
                     "than the base")
    nothing = result.get("changed_nothing") or {}
    if nothing.get("flag"):
        lines.append("WARNING: the adapter changed nothing measurable: " + "; ".join(nothing["reasons"]) + ".")
        lines.extend(f"  likely cause: {cause}" for cause in nothing["causes"])
    sc = result.get("self_consistency")
    if sc:
        lines.append(f"Consistency   {sc['mean']:.0%} of {sc['n_samples']} samples agree with the majority "
                     f"(temperature {sc['temperature']})")
    verdict = result.get("verdict")
    if verdict:
        lines.append(f"Suggestion    {verdict['text']}")
    lines.append(f"(evaluated in {result['elapsed_s']} s)")
    return "\n".join(lines)
