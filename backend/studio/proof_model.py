"""The proof on a real model: the weight change read from the adapter's files, the answer
loss of base and adapter, and generation for the scores of :mod:`backend.studio.proof`.

:func:`evaluate_adapter` loads the base once on CPU, puts the adapter on top (switched
off for "base"), computes every piece of proof and stores it in ``tunelab.json``.
Imports torch, transformers and peft at its top: the service reaches it lazily.
"""

from __future__ import annotations

import contextlib
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
from backend.bases.inspect import model_structure
from backend.bases.load import load_model, load_tokenizer
from backend.bases.module_kinds import LAYER_PATH
from backend.bases.resolve import BaseRef, resolve_base
from backend.data.normalized import answer_of, prompt_of
from backend.errors import AdapterMismatch, DataError
from backend.settings import Settings
from backend.studio.proof import (CLASSIFY_TASKS, EXTRACT_TASKS, TASKS, Generator, Messages, compare_exact_match,
                                  finite, load_rows, self_consistency)



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


def evaluate_adapter(adapter_folder: Path | str, base_ref=None, eval_rows=None, train_rows=None,
                     task: str = "style", n_samples: int = 5, seed: int = 0, *, k_shot: int = 4,
                     temperature: float = 0.7, max_length: int | None = 1024, max_new_tokens: int | None = None,
                     batch_size: int = 8, settings: Settings, store: bool = True) -> dict[str, Any]:
    """Every piece of proof for one adapter; stored in its ``tunelab.json`` as ``"proof"``.

    ``eval_rows`` / ``train_rows``: normalized rows or paths to eval.jsonl / train.jsonl.
    ``task`` decides what runs: loss and weight change always; exact match for
    classification, sentiment and extraction (few-shot needs ``train_rows``; without them
    the base runs zero-shot too, k = 0); self-consistency for classification and
    sentiment with ``n_samples`` ≥ 2.
    """
    if task not in TASKS:
        raise DataError(f"Unknown task {task!r}.", fix=f"Use one of: {', '.join(TASKS)}.")
    started = time.perf_counter()
    folder = Path(adapter_folder)
    LoraConfigView.of(folder)  # a clear error for a folder that is not a LoRA adapter
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
    result = finite(result)  # strict JSON: NaN / infinity become None
    if store:
        update_meta(folder, proof=result)
    return result
