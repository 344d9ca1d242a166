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

The scoring functions are pure and take the generations as data or as callables, so
they can be checked against known answers; :func:`evaluate_adapter` wires them to a
real model (the base loaded once on CPU, the adapter on top, switched off for "base").
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from backend.data.normalized import answer_of, check_rows, prompt_of, read_rows
from backend.errors import AdapterMismatch, DataError

CLASSIFY_TASKS = {"classification", "sentiment"}
EXTRACT_TASKS = {"extraction"}
TASKS = ("style", "generation", "chat", "classification", "sentiment", "extraction")
_PEFT_PREFIX = "base_model.model."
_SHOWN_CHARS = 200

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


# --- 1. weight change ---------------------------------------------------------------------------


def lora_factors(adapter_folder: Path) -> dict[str, dict[str, Any]]:
    """Module name -> {"A", "B", "scale", "r", "alpha"} from the adapter's files (fp32 tensors)."""
    from peft.utils.other import get_pattern_key
    from safetensors.torch import load_file

    from backend.adapter_folder import WEIGHTS_FILE, read_peft_config

    folder = Path(adapter_folder)
    config = read_peft_config(folder)
    weights_file = folder / WEIGHTS_FILE
    if not weights_file.is_file():
        raise AdapterMismatch(f"Adapter {str(folder)!r} has no {WEIGHTS_FILE} (only .bin?).",
                              fix="Re-save it with peft's save_pretrained (safetensors is the default).")
    tensors = load_file(str(weights_file))
    alpha_pattern = config.get("alpha_pattern") or {}
    default_alpha = float(config.get("lora_alpha") or config.get("r") or 8)
    factors: dict[str, dict[str, Any]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            continue
        name = module[len(_PEFT_PREFIX):] if module.startswith(_PEFT_PREFIX) else module
        r = int(a.shape[0])
        alpha = float(alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), name), default_alpha))
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        factors[name] = {"A": a.float(), "B": b.float(), "r": r, "alpha": alpha, "scale": scale}
    return factors


def delta_norm(a, b, scale: float) -> float:
    """‖scale · B · A‖_F without forming the out × in matrix: ‖BA‖² = Σ (AAᵀ) ⊙ (BᵀB)."""
    a64, b64 = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
    squared = ((a64 @ a64.T) * (b64.T @ b64)).sum().clamp_min(0.0)
    return abs(scale) * math.sqrt(float(squared))


def delta_w_heatmap(adapter_folder: Path, base_model, layer_prefix: str | None = None,
                    module_kinds: list[str] | None = None) -> dict[str, Any]:
    """‖ΔW‖_F / ‖W‖_F per layer × module kind, as heatmap data.

    ``base_model``: the base loaded (any device/dtype; only weight norms are read). Rows
    are the base's layers, columns its adaptable module kinds (from the inspector, or
    ``module_kinds``); cells the adapter does not touch are None. Adapted modules outside
    the layer stack are listed under ``outside``.
    """
    from backend.bases.inspect import LAYER_PATH

    factors = lora_factors(adapter_folder)
    if layer_prefix is None or module_kinds is None:
        from backend.bases.inspect import model_structure

        structure = model_structure(base_model)
        layer_prefix = layer_prefix or structure["layer_prefix"]
        module_kinds = module_kinds or [k["name"] for k in structure["module_kinds"]]
    num_layers = len(base_model.get_submodule(layer_prefix))
    kinds = list(module_kinds)
    relative = [[None] * len(kinds) for _ in range(num_layers)]
    absolute = [[None] * len(kinds) for _ in range(num_layers)]
    outside: dict[str, float] = {}
    for name, f in factors.items():
        try:
            weight = base_model.get_submodule(name).weight
        except AttributeError as exc:
            raise AdapterMismatch(f"Adapter {str(adapter_folder)!r} adapts {name!r}, which the base lacks.",
                                  fix="Evaluate the adapter against the base it was trained on.") from exc
        change = delta_norm(f["A"], f["B"], f["scale"])
        base_norm = float(weight.detach().double().norm())
        rel = change / base_norm if base_norm > 0 else 0.0
        match = LAYER_PATH.match(name)
        if match and match["prefix"] == layer_prefix and match["kind"] in kinds:
            i, j = int(match["index"]), kinds.index(match["kind"])
            relative[i][j], absolute[i][j] = rel, change
        else:
            outside[name] = rel
    shown = [v for row in relative for v in row if v is not None] + list(outside.values())
    return {"layers": [str(i) for i in range(num_layers)], "modules": kinds, "values": relative,
            "absolute": absolute, "outside": outside,
            "max": max(shown) if shown else 0.0, "mean": sum(shown) / len(shown) if shown else 0.0,
            "modules_adapted": len(factors)}


# --- 2. eval loss -------------------------------------------------------------------------------


def encode_row(tokenizer, messages: Messages, max_length: int | None = None) -> tuple[list[int], int]:
    """Token ids of the whole conversation and how many of them are prompt.

    The prompt is the chat template of all messages but the last with the generation
    prompt added — exactly what a served request sees — so the rest is the answer.
    """
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    common = 0
    for x, y in zip(prompt_ids, full_ids):
        if x != y:
            break
        common += 1
    if max_length and len(full_ids) > max_length:  # keep the answer, cut the prompt's start
        cut = len(full_ids) - max_length
        full_ids, common = full_ids[cut:], max(0, common - cut)
    return full_ids, common


def answer_loss(model, tokenizer, rows: list[dict], max_length: int | None = None) -> dict[str, Any]:
    """Mean cross-entropy over all answer tokens of ``rows`` (token-weighted) and its exp."""
    import torch

    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for row in rows:
            ids, n_prompt = encode_row(tokenizer, row["messages"], max_length)
            if len(ids) - n_prompt < 1 or len(ids) < 2:
                continue
            input_ids = torch.tensor([ids], device=device)
            labels = input_ids.clone()
            labels[0, :n_prompt] = -100
            logits = model(input_ids=input_ids).logits[0, :-1].float()
            target = labels[0, 1:]
            loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
            total += float(loss)
            tokens += int((target != -100).sum())
    mean = total / tokens if tokens else float("nan")
    return {"loss": mean, "perplexity": math.exp(mean) if tokens and mean < 700 else float("inf"),
            "tokens": tokens, "rows": len(rows)}


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
    rows = [{"reference": ref[:_SHOWN_CHARS], "base": b[:_SHOWN_CHARS], "adapter": a[:_SHOWN_CHARS],
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


# --- wiring to a real model ------------------------------------------------------------------------


def hf_generator(model, tokenizer, *, use_adapter: bool, max_new_tokens: int, batch_size: int = 8) -> Generator:
    """A :data:`Generator` over a (peft) model: batched, left-padded, greedy or seeded sampling.

    ``use_adapter=False`` runs the same model with the adapter switched off (the base).
    """
    import contextlib

    import torch
    from transformers import GenerationConfig

    def generate(prompts: list[Messages], *, n: int = 1, temperature: float = 0.0, seed: int = 0) -> list[list[str]]:
        if temperature > 0:
            torch.manual_seed(seed)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=temperature > 0, num_return_sequences=n,
            temperature=temperature if temperature > 0 else None, top_p=1.0 if temperature > 0 else None,
            top_k=0 if temperature > 0 else None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=model.config.eos_token_id or tokenizer.eos_token_id,
        )
        off = model.disable_adapter() if (not use_adapter and hasattr(model, "disable_adapter")) else contextlib.nullcontext()
        results: list[list[str]] = []
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            with off, torch.no_grad():
                for start in range(0, len(prompts), batch_size):
                    batch = prompts[start:start + batch_size]
                    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch]
                    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                    out = model.generate(**enc, generation_config=config)
                    new = out[:, enc["input_ids"].shape[1]:]
                    decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
                    for i in range(len(batch)):
                        results.append([d.strip() for d in decoded[i * n:(i + 1) * n]])
        finally:
            tokenizer.padding_side = side
        return results

    return generate


def _resolve_base(adapter_folder: Path, base_ref, settings):
    from backend.bases.resolve import BaseRef, resolve_base

    if isinstance(base_ref, BaseRef):
        return base_ref
    if base_ref:
        return resolve_base(str(base_ref), settings, provision=False)
    from backend.adapter_folder import AdapterMeta, LoraConfigView

    base = AdapterMeta.of(adapter_folder).base
    spec = (base.where if base else None) or LoraConfigView.of(adapter_folder).base_model_name_or_path
    if not spec:
        raise AdapterMismatch(f"Adapter {str(adapter_folder)!r} does not say which base it was trained on.",
                              fix="Name the base (tunelab evaluate ADAPTER --base BASE).")
    return resolve_base(str(spec), settings, provision=False)


def evaluate_adapter(adapter_folder: Path | str, base_ref=None, eval_rows=None, train_rows=None,
                     task: str = "style", n_samples: int = 5, seed: int = 0, *, k_shot: int = 4,
                     temperature: float = 0.7, max_length: int | None = 1024, max_new_tokens: int | None = None,
                     batch_size: int = 8, settings=None, store: bool = True) -> dict[str, Any]:
    """Every piece of proof for one adapter; stored in its ``tunelab.json`` as ``"proof"``.

    ``eval_rows`` / ``train_rows``: normalized rows or paths to eval.jsonl / train.jsonl.
    ``task`` decides what runs: loss and weight change always; exact match for
    classification, sentiment and extraction (few-shot needs ``train_rows``; without them
    the base runs zero-shot too, k = 0); self-consistency for classification and
    sentiment with ``n_samples`` ≥ 2.
    """
    import torch

    from backend.adapter_folder import update_meta
    from backend.bases.load import load_model, load_tokenizer

    if task not in TASKS:
        raise DataError(f"Unknown task {task!r}.", fix=f"Use one of: {', '.join(TASKS)}.")
    started = time.perf_counter()
    if settings is None:
        from backend.settings import Settings

        settings = Settings()
    folder = Path(adapter_folder)
    from backend.adapter_folder import read_peft_config

    read_peft_config(folder)  # a clear error for a folder that is not a LoRA adapter
    rows = load_rows(eval_rows, "eval")
    if not rows:
        raise DataError("There are no held-out rows to evaluate on.",
                        fix="Import data with an eval split (eval fraction > 0) or pass eval rows.")
    train = load_rows(train_rows, "train")
    ref = _resolve_base(folder, base_ref, settings)
    tokenizer = load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
    model = load_model(ref, dtype=torch.float32, trust_remote_code=settings.trust_remote_code)
    model.eval()
    delta = delta_w_heatmap(folder, model)

    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(folder))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise AdapterMismatch(f"Adapter {folder.name!r} does not fit base {ref.spec!r}: {exc}",
                              fix="Evaluate the adapter against the base it was trained on.") from exc
    peft_model.eval()
    with peft_model.disable_adapter():
        base_loss = answer_loss(peft_model, tokenizer, rows, max_length)
    adapter_loss = answer_loss(peft_model, tokenizer, rows, max_length)
    result: dict[str, Any] = {
        "adapter": folder.name, "base": ref.to_dict(), "task": task, "seed": seed,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "delta_w": delta,
        "eval": {"base": base_loss, "adapter": adapter_loss,
                 "loss_change": adapter_loss["loss"] - base_loss["loss"],
                 "perplexity_ratio": (adapter_loss["perplexity"] / base_loss["perplexity"]
                                      if base_loss["perplexity"] not in (0, float("inf")) else None)},
        "exact_match": None, "self_consistency": None,
    }
    if task in CLASSIFY_TASKS | EXTRACT_TASKS:
        if max_new_tokens is None:
            longest = max(len(tokenizer(answer_of(r["messages"]), add_special_tokens=False)["input_ids"]) for r in rows)
            max_new_tokens = min(256, longest + 8)
        base_gen = hf_generator(peft_model, tokenizer, use_adapter=False, max_new_tokens=max_new_tokens,
                                batch_size=batch_size)
        adapter_gen = hf_generator(peft_model, tokenizer, use_adapter=True, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size)
        result["exact_match"] = compare_exact_match(rows, train, base_gen, adapter_gen, task, k=k_shot, seed=seed)
        if task in CLASSIFY_TASKS and n_samples >= 2:
            samples = adapter_gen([prompt_of(r["messages"]) for r in rows], n=n_samples, temperature=temperature, seed=seed)
            result["self_consistency"] = dict(self_consistency(samples, [answer_of(r["messages"]) for r in rows]),
                                              n_samples=n_samples, temperature=temperature)
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result = _finite(result)  # strict JSON: NaN / infinity become None
    if store:
        update_meta(folder, proof=result)
    return result


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --- text -----------------------------------------------------------------------------------------------


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_text(result: dict) -> str:
    """The proof as text for ``tunelab evaluate ADAPTER``."""
    ev, dw = result["eval"], result["delta_w"]
    lines = [
        f"Adapter {result['adapter']} on {result['base'].get('name', '?')} — task {result['task']}",
        f"Eval loss     base {_fmt(ev['base']['loss'])} (ppl {_fmt(ev['base']['perplexity'], 2)})  ->  "
        f"adapter {_fmt(ev['adapter']['loss'])} (ppl {_fmt(ev['adapter']['perplexity'], 2)})  "
        f"on {ev['adapter']['rows']} held-out rows, {ev['adapter']['tokens']} answer tokens",
        f"Weight change ‖ΔW‖/‖W‖ max {_fmt(dw['max'])}, mean {_fmt(dw['mean'])} over {dw['modules_adapted']} modules",
    ]
    strongest = sorted(((v, f"layer {i} {m}") for i, row in enumerate(dw["values"])
                        for m, v in zip(dw["modules"], row) if v is not None), reverse=True)[:3]
    if strongest:
        lines.append("  strongest: " + ", ".join(f"{where} {_fmt(v)}" for v, where in strongest))
    em = result.get("exact_match")
    if em:
        b, a = em["base_few_shot"], em["adapter_zero_shot"]
        lines.append(f"Exact match   base {em['k']}-shot {b['correct']}/{b['total']} ({b['score']:.0%})  vs  "
                     f"adapter 0-shot {a['correct']}/{a['total']} ({a['score']:.0%})")
    sc = result.get("self_consistency")
    if sc:
        lines.append(f"Consistency   {sc['mean']:.0%} of {sc['n_samples']} samples agree with the majority "
                     f"(temperature {sc['temperature']})")
    lines.append(f"(evaluated in {result['elapsed_s']} s)")
    return "\n".join(lines)


def latest_proof(adapter_folder: Path) -> dict | None:
    """The proof stored in ``tunelab.json``, if any."""
    from backend.adapter_folder import read_meta

    return read_meta(Path(adapter_folder)).get("proof")


def iter_cells(heat: dict) -> Iterable[tuple[str, str, float | None]]:
    """(layer, module, value) triples of heatmap data, for tables and long-format plots."""
    for layer, row in zip(heat["layers"], heat["values"]):
        for module, value in zip(heat["modules"], row):
            yield layer, module, value
