"""The proof on a real model: the weight change read from the adapter's files, the answer
loss of base and adapter, and generation for the scores of :mod:`backend.proof.scores`.

:func:`baseline_scores` scores the base on an import's held-out rows before training
(the plan card's baseline) and caches its answers (:class:`Baselines`);
:func:`evaluate_adapter` loads the base once on CPU, puts the adapter on top (switched
off for "base"), takes the base's side from that cache (or computes it), computes every
piece of proof and stores it in ``tunelab.json``. The training worker calls it after
every run; the service for ``tunelab evaluate`` and the page. Imports torch,
transformers and peft at its top: callers reach it lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import GenerationConfig

from backend.adapter_folder import WEIGHTS_FILE, AdapterMeta, LoraConfigView, base_module_name, update_meta
from backend.atomic import replace_file
from backend.bases.inspect import model_structure
from backend.bases.load import load_model, load_tokenizer
from backend.bases.module_kinds import LAYER_PATH
from backend.bases.resolve import BaseRef, resolve_base
from backend.data.normalized import answer_of, prompt_of
from backend.errors import AdapterMismatch, DataError
from backend.proof.change_checks import GENERAL_PROMPTS, changed_nothing, divergence, forgetting
from backend.proof.intervals import paired
from backend.proof.scores import (CHECKABLE_TASKS, CLASSIFY_TASKS, SHOWN_CHARS, TASKS, Generator, Messages,
                                  best_base, finite, judged_by, load_rows, score_adapter, score_base,
                                  self_consistency, suggest_verdict, with_system)
from backend.proof.style_judge import judge_answers, style_markers
from backend.settings import Settings



# --- 1. weight change ---------------------------------------------------------------------------


def lora_factors(adapter_folder: Path) -> dict[str, dict[str, Any]]:
    """Module name -> {"A", "B", "scale", "r", "alpha"} from the adapter's files (fp32 tensors)."""
    folder = Path(adapter_folder)
    config = LoraConfigView.of(folder)
    weights_file = folder / WEIGHTS_FILE
    if not weights_file.is_file():
        raise AdapterMismatch(f"Adapter {str(folder)!r} has no {WEIGHTS_FILE} (only .bin?).",
                              fix="Re-save it with peft's save_pretrained (safetensors is the default).")
    tensors = load_file(str(weights_file))
    factors: dict[str, dict[str, Any]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0]
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            continue
        name = base_module_name(module)
        r = int(a.shape[0])
        factors[name] = {"A": a.float(), "B": b.float(), "r": r, "alpha": float(config.alpha_of(name)),
                         "scale": config.scaling_of(name, r)}
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
    factors = lora_factors(adapter_folder)
    if layer_prefix is None or module_kinds is None:
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


# --- wiring to a real model ------------------------------------------------------------------------


def hf_generator(model, tokenizer, *, use_adapter: bool, max_new_tokens: int, batch_size: int = 8) -> Generator:
    """A :data:`Generator` over a (peft) model: batched, left-padded, greedy or seeded sampling.

    ``use_adapter=False`` runs the same model with the adapter switched off (the base).
    """
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


def _resolve_base(adapter_folder: Path, base_ref, settings: Settings) -> BaseRef:
    if isinstance(base_ref, BaseRef):
        return base_ref
    if base_ref:
        return resolve_base(str(base_ref), settings, provision=False)
    base = AdapterMeta.of(adapter_folder).base
    spec = (base.where if base else None) or LoraConfigView.of(adapter_folder).base_model_name_or_path
    if not spec:
        raise AdapterMismatch(f"Adapter {str(adapter_folder)!r} does not say which base it was trained on.",
                              fix="Name the base (tunelab evaluate ADAPTER --base BASE).")
    return resolve_base(str(spec), settings, provision=False)


def _answer_budget(tokenizer, rows: list[dict], extra: int, cap: int) -> int:
    longest = max(len(tokenizer(answer_of(r["messages"]), add_special_tokens=False)["input_ids"]) for r in rows)
    return min(cap, longest + extra)


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


class Baselines:
    """The base's scores on an import's held-out rows, computed once per base, system prompt
    and task and kept in ``cache_file`` (the import's ``baseline.json``), so the plan card's
    baseline and every adapter's proof use the same rows, prompts and base answers."""

    def __init__(self, cache_file: Path | None):
        self.cache_file = Path(cache_file) if cache_file else None
        self.entries: dict = {}
        if self.cache_file and self.cache_file.is_file():
            try:
                self.entries = json.loads(self.cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict) -> None:
        self.entries[key] = value
        if self.cache_file:
            replace_file(self.cache_file, json.dumps(finite(self.entries), ensure_ascii=False))


def _style_prompt(system_prompt: str | None, goal: str) -> str:
    return system_prompt or f"Write with this style: {goal.strip().rstrip('.') or 'the style of the examples'}."


def _baseline(model, tokenizer, ref: BaseRef, rows: list[dict], train: list[dict], task: str, *,
              system_prompt: str | None, goal: str, k: int, seed: int, cache: Baselines,
              batch_size: int) -> dict:
    """The base's side of the proof, from the cache or computed (and cached) now."""
    key = _key(base=ref.spec, task=task, system=system_prompt, goal=goal if task not in CHECKABLE_TASKS else "",
               k=k, seed=seed, rows=[r["messages"] for r in rows], shots=[r["messages"] for r in train][:200])
    cached = cache.get(key)
    if cached is not None:
        return cached
    if task in CHECKABLE_TASKS:
        budget = _answer_budget(tokenizer, rows, 8, 256)
        gen = hf_generator(model, tokenizer, use_adapter=False, max_new_tokens=budget, batch_size=batch_size)
        result = score_base(rows, train, gen, task, k=k, seed=seed, system_prompt=system_prompt)
        result["max_new_tokens"] = budget
    else:
        budget = _answer_budget(tokenizer, rows, 16, 160)
        gen = hf_generator(model, tokenizer, use_adapter=False, max_new_tokens=budget, batch_size=batch_size)
        plain = [prompt_of(r["messages"]) for r in rows]
        prompted_with = _style_prompt(system_prompt, goal)
        prompted = [prompt_of(with_system(r, prompted_with)["messages"]) for r in rows]
        result = {"max_new_tokens": budget, "prompted_with": prompted_with,
                  "outputs": {"base": [a[0] for a in gen(plain, n=1, temperature=0.0, seed=seed)],
                              "prompted": [a[0] for a in gen(prompted, n=1, temperature=0.0, seed=seed)]}}
    result["base"] = ref.spec
    cache.put(key, finite(result))
    return result


def baseline_scores(base_ref: BaseRef, eval_rows, train_rows, task: str, *, settings: Settings,
                    system_prompt: str | None = None, goal: str = "", k: int = 6, seed: int = 0,
                    cache_file: Path | None = None, batch_size: int = 8) -> dict[str, Any]:
    """The base scored on the held-out rows before any training (the plan card's baseline):
    zero-shot and k-shot exact match for checkable tasks, the base's and the prompting
    baseline's answers for a style goal. Cached in ``cache_file``."""
    rows, train = load_rows(eval_rows, "eval"), load_rows(train_rows, "train")
    if not rows:
        raise DataError("There are no held-out rows to score the base on.",
                        fix="Import more examples (5+) or drop in an evaluation file.")
    tokenizer = load_tokenizer(base_ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
    model = load_model(base_ref, dtype=torch.float32, trust_remote_code=settings.trust_remote_code)
    model.eval()
    result = _baseline(model, tokenizer, base_ref, rows, train, task, system_prompt=system_prompt, goal=goal, k=k,
                       seed=seed, cache=Baselines(cache_file), batch_size=batch_size)
    return {name: ({k: v for k, v in value.items() if k != "per_row"} if isinstance(value, dict) else value)
            for name, value in result.items() if name != "outputs"}


def _style_proof(model, tokenizer, rows, train, base: dict, *, system_prompt: str | None, seed: int,
                 batch_size: int) -> tuple[dict, list[str], list[str]]:
    prompts_text = [str(prompt_of(r["messages"])[-1]["content"]) for r in rows]
    markers = style_markers([answer_of(r["messages"]) for r in (train or rows)],
                            [str(prompt_of(r["messages"])[-1]["content"]) for r in (train or rows)])
    gen = hf_generator(model, tokenizer, use_adapter=True, max_new_tokens=base["max_new_tokens"], batch_size=batch_size)
    adapter_out = [a[0] for a in gen([prompt_of(with_system(r, system_prompt)["messages"]) for r in rows],
                                     n=1, temperature=0.0, seed=seed)]
    judged = {name: judge_answers(outputs, prompts_text, markers)
              for name, outputs in (("base", base["outputs"]["base"]), ("prompted", base["outputs"]["prompted"]),
                                    ("adapter", adapter_out))}
    shown = [{"prompt": p[:SHOWN_CHARS], "base": b[:SHOWN_CHARS], "prompted": pr[:SHOWN_CHARS],
              "adapter": a[:SHOWN_CHARS], "adapter_markers": v["markers"], "adapter_ok": v["both"],
              "prompted_ok": pv["both"]}
             for p, b, pr, a, v, pv in zip(prompts_text, base["outputs"]["base"], base["outputs"]["prompted"],
                                           adapter_out, judged["adapter"]["per_row"], judged["prompted"]["per_row"])]
    style = {"markers": markers, "prompted_with": base["prompted_with"], "rows": shown,
             **{name: {k: v for k, v in figures.items() if k != "per_row"} for name, figures in judged.items()}}
    # like for like: the same messages went to the base and to the adapter
    same_messages = base["outputs"]["prompted"] if system_prompt else base["outputs"]["base"]
    return style, same_messages, adapter_out


def evaluate_adapter(adapter_folder: Path | str, base_ref=None, eval_rows=None, train_rows=None,
                     task: str = "style", n_samples: int = 5, seed: int = 0, *, k_shot: int = 6,
                     temperature: float = 0.7, max_length: int | None = 1024, system_prompt: str | None = None,
                     goal: str = "", judged: dict | None = None, baseline_cache: Path | None = None,
                     forgetting_check: bool = True, batch_size: int = 8, settings: Settings,
                     store: bool = True) -> dict[str, Any]:
    """Every piece of proof for one adapter; stored in its ``tunelab.json`` as ``"proof"``.

    ``eval_rows`` / ``train_rows``: normalized rows or paths to eval.jsonl / train.jsonl.
    ``system_prompt``: the one the adapter was trained with (None: read from its
    ``tunelab.json``); every prompt, base's and adapter's, goes behind it as in training.
    ``task`` decides what runs: loss, weight change, the probe divergence and the
    forgetting check always; exact match (base zero-shot and k-shot, adapter zero-shot,
    each with a 95% interval) for classification, sentiment and extraction; generated
    answers judged for the style (:mod:`backend.proof.style_judge`) beside the base and
    the prompting baseline for every other task; self-consistency for classification and
    sentiment with ``n_samples`` ≥ 2. The base's side comes from ``baseline_cache`` when
    it was scored before training. ``judged``: where the rows come from (the import's
    ``judged_by``).
    """
    if task not in TASKS:
        raise DataError(f"Unknown task {task!r}.", fix=f"Use one of: {', '.join(TASKS)}.")
    started = time.perf_counter()
    folder = Path(adapter_folder)
    LoraConfigView.of(folder)  # a clear error for a folder that is not a LoRA adapter
    rows = load_rows(eval_rows, "eval")
    if not rows:
        raise DataError("There are no held-out rows to evaluate on.",
                        fix="Import data with an eval split (5+ examples) or drop in an evaluation file.")
    train = load_rows(train_rows, "train")
    meta = AdapterMeta.of(folder)
    if system_prompt is None:
        system_prompt = meta.system_prompt
    goal = goal or meta.goal
    ref = _resolve_base(folder, base_ref, settings)
    tokenizer = load_tokenizer(ref, plain_template=True, trust_remote_code=settings.trust_remote_code)
    model = load_model(ref, dtype=torch.float32, trust_remote_code=settings.trust_remote_code)
    model.eval()
    delta = delta_w_heatmap(folder, model)
    try:
        peft_model = PeftModel.from_pretrained(model, str(folder))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise AdapterMismatch(f"Adapter {folder.name!r} does not fit base {ref.spec!r}: {exc}",
                              fix="Evaluate the adapter against the base it was trained on.") from exc
    peft_model.eval()
    trained_rows = [with_system(r, system_prompt) for r in rows]
    with peft_model.disable_adapter():
        base_loss = answer_loss(peft_model, tokenizer, trained_rows, max_length)
    adapter_loss = answer_loss(peft_model, tokenizer, trained_rows, max_length)
    base = _baseline(peft_model, tokenizer, ref, rows, train, task, system_prompt=system_prompt, goal=goal,
                     k=k_shot, seed=seed, cache=Baselines(baseline_cache), batch_size=batch_size)
    result: dict[str, Any] = {
        "adapter": folder.name, "base": ref.to_dict(), "task": task, "seed": seed, "system_prompt": system_prompt,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "judged_by": judged or judged_by(len(rows), "split"),
        "delta_w": delta,
        "eval": {"base": base_loss, "adapter": adapter_loss,
                 "loss_change": adapter_loss["loss"] - base_loss["loss"],
                 "perplexity_ratio": (adapter_loss["perplexity"] / base_loss["perplexity"]
                                      if base_loss["perplexity"] not in (0, float("inf")) else None)},
        "exact_match": None, "style": None, "self_consistency": None,
    }
    if task in CHECKABLE_TASKS:
        adapter_gen = hf_generator(peft_model, tokenizer, use_adapter=True, max_new_tokens=base["max_new_tokens"],
                                   batch_size=batch_size)
        result["exact_match"], adapter_out = score_adapter(rows, base, adapter_gen, task, seed=seed,
                                                           system_prompt=system_prompt)
        same_messages = base["outputs"]["base_zero_shot"]
        if task in CLASSIFY_TASKS and n_samples >= 2:
            samples = adapter_gen([prompt_of(r["messages"]) for r in trained_rows], n=n_samples,
                                  temperature=temperature, seed=seed)
            result["self_consistency"] = dict(self_consistency(samples, [answer_of(r["messages"]) for r in rows]),
                                              n_samples=n_samples, temperature=temperature)
    else:
        result["style"], same_messages, adapter_out = _style_proof(peft_model, tokenizer, rows, train, base,
                                                                   system_prompt=system_prompt, seed=seed,
                                                                   batch_size=batch_size)
    result["divergence"] = divergence(same_messages, adapter_out)
    if forgetting_check:
        general = [([{"role": "system", "content": system_prompt}] if system_prompt else [])
                   + [{"role": "user", "content": p}] for p in GENERAL_PROMPTS]
        answers = {use: [a[0] for a in hf_generator(peft_model, tokenizer, use_adapter=use, max_new_tokens=48,
                                                    batch_size=len(general))(general)]
                   for use in (False, True)}
        result["forgetting"] = forgetting(answers[False], answers[True])
    result["changed_nothing"] = changed_nothing(delta["max"], result["divergence"])
    result["verdict"] = verdict_of(result)
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result = finite(result)  # strict JSON: NaN / infinity become None
    if store:
        update_meta(folder, proof=result)
    return result


def same_rows(rows: list[dict] | None, base_key: str) -> dict | None:
    """The paired outcomes of the adapter (``adapter_ok``) and the base (``base_key``) on a
    proof's rows; None when the rows do not carry both (a proof stored before they did)."""
    if not rows or any("adapter_ok" not in row or base_key not in row for row in rows):
        return None
    return paired([bool(row["adapter_ok"]) for row in rows], [bool(row[base_key]) for row in rows])


def verdict_of(proof: dict) -> dict[str, str]:
    """The suggestion for a proof: exact match against the stronger base figure, or for a
    style goal the share judged on-style and on-task against the prompting baseline."""
    nothing = bool((proof.get("changed_nothing") or {}).get("flag"))
    em = proof.get("exact_match")
    if em:
        name, figure = best_base(em) or (None, None)
        label = {"base_few_shot": f"the base {em.get('k')}-shot", "base_zero_shot": "the base zero-shot"}.get(name, "")
        return suggest_verdict(em.get("adapter"), figure, changed_nothing=nothing, base_label=label,
                               same_rows=same_rows(em.get("rows"), f"{name}_ok"))
    style = proof.get("style")
    if style:
        return suggest_verdict((style.get("adapter") or {}).get("both"), (style.get("prompted") or {}).get("both"),
                               changed_nothing=nothing, base_label="the base asked for the style",
                               what="on-style and on-task", same_rows=same_rows(style.get("rows"), "prompted_ok"))
    return suggest_verdict(None, None, changed_nothing=nothing)
