"""The inspector: a base model's "weight points" — where a LoRA adapter can act.

Everything here works from the base's ``config.json`` and its module tree built on
PyTorch's ``meta`` device (shapes without storage), so even a 7B model is inspected
without its weights and without downloading anything beyond the config.

The report is plain JSON-able data: the page draws it as a layers × module-kinds
heatmap and the CLI prints it (:mod:`backend.bases.inspect_views`), its memory figures
come from :mod:`backend.bases.memory`, and the equalizer takes its module kinds and
module paths (vocabulary: :mod:`backend.bases.module_kinds`).

This module needs torch, transformers and peft throughout and imports them at its top;
light callers (the studio service) import it where an inspection is asked for.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
from peft.utils.other import get_pattern_key
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
from transformers.pytorch_utils import Conv1D

from backend.bases.inspect_views import public, render_text
from backend.bases.load import context_length, load_config, sliding_window
from backend.bases.memory import memory_estimates
from backend.bases.module_kinds import LAYER_PATH, module_group
from backend.bases.resolve import BaseRef, folder_base, resolve_base
from backend.errors import BaseModelError, ConfigError
from backend.hparams import LoraSpec
from backend.settings import Settings

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SAFETENSORS_HEADER_BYTES_PER_TENSOR = 160  # the JSON header entry per tensor, roughly


# --- loading the skeleton -------------------------------------------------------------------


def load_inspect_config(ref_or_config, settings: Settings | None = None, trust_remote_code: bool | None = None):
    """A transformers config from a config object, a BaseRef, a folder / config.json path,
    or any base spec TuneLab understands ('default', a hub id, a converted .gguf; these
    need ``settings``, which say where models are kept).

    Returns ``(config, base_info)`` where ``base_info`` is a JSON-able description or None.
    """
    if isinstance(ref_or_config, PretrainedConfig):
        return ref_or_config, None
    if isinstance(ref_or_config, dict):
        data = dict(ref_or_config)
        model_type = data.pop("model_type", None)
        if not model_type:
            raise BaseModelError("The config given has no 'model_type'.",
                                 fix="Pass a Hugging Face config.json (it names its model_type).")
        return AutoConfig.for_model(model_type, **data), None
    if trust_remote_code is None:
        trust_remote_code = bool(settings.trust_remote_code) if settings is not None else False
    if isinstance(ref_or_config, BaseRef):
        ref = ref_or_config
    else:
        spec = str(ref_or_config)
        path = Path(spec).expanduser()
        if path.is_file() and path.name.endswith(".json"):
            spec = str(path.parent)
        ref = _resolve(spec, settings)
    return load_config(ref, trust_remote_code=trust_remote_code), ref.to_dict()


def _resolve(spec: str, settings: Settings | None) -> BaseRef:
    if settings is not None:
        return resolve_base(spec, settings, provision=False)
    if Path(spec).expanduser().is_dir():
        return folder_base(spec)
    raise ConfigError(
        f"Base {spec!r} is not a local folder, and finding 'default', a converted .gguf or a hub id "
        "needs TuneLab's settings (where models are kept).",
        fix="Pass settings= (the studio service does), or give the folder that holds config.json.",
    )


def meta_model(config, trust_remote_code: bool = False):
    """The model's module tree on the meta device: every shape, no storage, no weights."""
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError) as exc:
        raise BaseModelError(
            f"Cannot build a causal language model from config of type "
            f"{getattr(config, 'model_type', '?')!r}: {exc}",
            fix="TuneLab inspects and trains decoder-only (causal LM) models; pick one such base.",
        ) from exc


# --- module shapes ---------------------------------------------------------------------------


def _linear_shape(module) -> tuple[str, int, int] | None:
    """(type name, in features, out features) for modules LoRA adapts as matrices."""
    if isinstance(module, torch.nn.Linear):
        return "Linear", module.in_features, module.out_features
    if isinstance(module, Conv1D):  # GPT-2 style: weight is stored (in, out), transposed
        rows, cols = module.weight.shape
        return "Conv1D", int(rows), int(cols)
    return None


def _own_params(module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _dtype_name(config) -> str | None:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else None


# --- the report -------------------------------------------------------------------------------


def inspect_base(ref_or_config, lora: LoraSpec | None = None, batch_size: int = 8, seq_len: int = 512,
                 *, settings: Settings | None = None, gradient_checkpointing: bool = False) -> dict[str, Any]:
    """Weight points of a base, and what a LoRA configuration on it costs.

    ``ref_or_config``: a BaseRef, a base spec ('default', a folder, a hub id), a path to a
    folder holding only ``config.json``, a config object or a config dict (specs other than
    a folder need ``settings``). ``lora``: the configuration to cost (default: TuneLab's
    default :class:`LoraSpec`).
    """
    started = time.perf_counter()
    trust = bool(settings.trust_remote_code) if settings is not None else False
    config, base_info = load_inspect_config(ref_or_config, settings=settings)
    model = meta_model(config, trust_remote_code=trust)
    structure = model_structure(model)
    lora_is_default = lora is None
    spec = lora or LoraSpec()
    lora_report = lora_cost(model, structure, spec)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = _first_int(text_config, "hidden_size", "n_embd", "d_model")
    report = {
        "base": base_info,
        "architecture": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "num_layers": structure["num_layers"],
        "hidden_size": hidden,
        "intermediate_size": _first_int(text_config, "intermediate_size", "n_inner", "ffn_dim"),
        "num_attention_heads": _first_int(text_config, "num_attention_heads", "n_head"),
        "num_key_value_heads": _first_int(text_config, "num_key_value_heads", "num_attention_heads", "n_head"),
        "vocab_size": _first_int(text_config, "vocab_size"),
        "context_length": context_length(text_config),
        "sliding_window": sliding_window(text_config),
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "dtype": _dtype_name(config),
        "total_params": structure["total_params"],
        "layer_prefix": structure["layer_prefix"],
        "module_kinds": structure["module_kinds"],
        "cells": structure["cells"],
        "module_paths": structure["module_paths"],
        "other_targetable": structure["other_targetable"],
        "all_linear": structure["all_linear"],
        "lora": dict(lora_report, is_default=lora_is_default),
    }
    report["memory"] = memory_estimates(report, batch_size=batch_size, seq_len=seq_len,
                                        gradient_checkpointing=gradient_checkpointing)
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report


def _first_int(config, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _all_linear_names(model) -> set[str]:
    """The module names peft's ``target_modules='all-linear'`` resolves to, by peft itself."""
    config = LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM")
    return set(_maybe_include_all_linear_layers(config, model).target_modules)


def model_structure(model) -> dict[str, Any]:
    """Layer stack, module kinds, per-cell shapes and the all-linear set of a (meta) model."""
    linears: dict[str, tuple[str, int, int, int]] = {}
    others: list[dict] = []
    for name, module in model.named_modules():
        shape = _linear_shape(module)
        if shape is not None:
            linears[name] = (*shape, _own_params(module))
        elif isinstance(module, torch.nn.Embedding):
            others.append({"name": name, "type": "Embedding", "in_features": module.num_embeddings,
                           "out_features": module.embedding_dim, "params": _own_params(module)})
    if not linears:
        raise BaseModelError(f"{type(model).__name__} has no linear modules LoRA could adapt.")

    by_prefix: Counter[str] = Counter()
    for name in linears:
        match = LAYER_PATH.match(name)
        if match:
            by_prefix[match["prefix"]] += 1
    if not by_prefix:
        raise BaseModelError(f"{type(model).__name__} has no stack of numbered layers "
                             "(such as model.layers.N) holding linear modules.")
    prefix = by_prefix.most_common(1)[0][0]
    num_layers = len(model.get_submodule(prefix))

    kinds: list[str] = []
    cell_of: dict[tuple[int, str], str] = {}
    for name in linears:
        match = LAYER_PATH.match(name)
        if match and match["prefix"] == prefix:
            if match["kind"] not in kinds:
                kinds.append(match["kind"])
            cell_of[(int(match["index"]), match["kind"])] = name

    all_linear = _all_linear_names(model)
    cells = [[linears[cell_of[(i, k)]][3] if (i, k) in cell_of else None for k in kinds]
             for i in range(num_layers)]
    module_kinds = []
    for kind in kinds:
        present = [cell_of[(i, kind)] for i in range(num_layers) if (i, kind) in cell_of]
        type_name, fan_in, fan_out, params = linears[present[0]]
        module_kinds.append({
            "name": kind, "short": kind.split(".")[-1], "group": module_group(kind), "type": type_name,
            "in_features": fan_in, "out_features": fan_out, "params_per_layer": params,
            "layers": len(present), "total_params": sum(linears[p][3] for p in present),
            "in_all_linear": all(p in all_linear for p in present),
        })
    in_grid = set(cell_of.values())
    for name, (type_name, fan_in, fan_out, params) in linears.items():
        if name not in in_grid:
            others.append({"name": name, "type": type_name, "in_features": fan_in,
                           "out_features": fan_out, "params": params})
    for row in others:
        row["in_all_linear"] = row["name"] in all_linear
    excluded = sorted(name for name in linears if name not in all_linear)
    return {
        "num_layers": num_layers,
        "layer_prefix": prefix,
        "module_kinds": module_kinds,
        "cells": cells,
        "module_paths": list(linears),
        "other_targetable": others,
        "all_linear": {
            "kinds": [k["name"] for k in module_kinds if k["in_all_linear"]],
            "modules": len(all_linear),
            "outside_layers": sorted(all_linear - in_grid),
            "excluded": excluded,
        },
        "total_params": sum(p.numel() for p in model.parameters()),  # tied weights counted once
        "_linears": linears,
        "_cell_of": cell_of,
    }


# --- LoRA cost -----------------------------------------------------------------------------------


def resolve_lora_targets(model, spec: LoraSpec) -> dict[str, dict]:
    """Which modules ``spec`` adapts and with which rank and alpha, by peft's own rules.

    Uses peft's ``_maybe_include_all_linear_layers``, ``check_target_module_exists`` and
    ``get_pattern_key``, so what is counted here is exactly what ``get_peft_model`` wraps.
    Raises :class:`ConfigError` naming target names that match no adaptable module.
    """
    config = LoraConfig(**spec.to_peft_kwargs())
    config = _maybe_include_all_linear_layers(config, model)
    targets: dict[str, dict] = {}
    for name, module in model.named_modules():
        if not name:
            continue
        found = check_target_module_exists(config, name)
        if not found or type(found).__name__ == "_ExcludedModule":
            continue
        shape = _linear_shape(module)
        if shape is None and isinstance(module, torch.nn.Embedding):
            shape = ("Embedding", module.num_embeddings, module.embedding_dim)
        if shape is None:
            continue
        rank = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha)
        _, fan_in, fan_out = shape
        targets[name] = {"type": shape[0], "in_features": fan_in, "out_features": fan_out,
                         "r": int(rank), "alpha": int(alpha), "params": int(rank) * (fan_in + fan_out)}
    if not targets:
        wanted = spec.target_modules if isinstance(spec.target_modules, str) else ", ".join(spec.target_modules)
        raise ConfigError(
            f"LoRA target_modules ({wanted}) match no adaptable module of {type(model).__name__}.",
            fix="Use 'all-linear' or module kinds this base has (see `tunelab inspect BASE`).",
        )
    return targets


def lora_cost(model, structure: dict, spec: LoraSpec) -> dict[str, Any]:
    """Trainable parameters and adapter size of ``spec`` on ``model``.

    * trainable = Σ over adapted modules of r·(in + out)  (A is r×in, B is out×r; bias='none')
    * adapter bytes = trainable · bytes per value + ≈160 B of safetensors header per tensor
      (peft saves adapter weights in fp32 by default, even for a bf16 base).
    """
    targets = resolve_lora_targets(model, spec)
    kinds = [k["name"] for k in structure["module_kinds"]]
    cell_of = structure["_cell_of"]
    ranks = [[0] * len(kinds) for _ in range(structure["num_layers"])]
    alphas = [[0] * len(kinds) for _ in range(structure["num_layers"])]
    params = [[0] * len(kinds) for _ in range(structure["num_layers"])]
    for (layer, kind), name in cell_of.items():
        if name in targets:
            col = kinds.index(kind)
            ranks[layer][col] = targets[name]["r"]
            alphas[layer][col] = targets[name]["alpha"]
            params[layer][col] = targets[name]["params"]
    trainable = sum(t["params"] for t in targets.values())
    header = SAFETENSORS_HEADER_BYTES_PER_TENSOR * 2 * len(targets)
    outside = sorted(set(targets) - set(cell_of.values()))
    return {
        "spec": spec.model_dump(),
        "targeted_modules": len(targets),
        "outside_layers": outside,
        "trainable_params": trainable,
        "trainable_percent": round(100.0 * trainable / max(structure["total_params"], 1), 4),
        "adapter_bytes": {dtype: trainable * size + header for dtype, size in DTYPE_BYTES.items()
                          if dtype != "fp16"},
        "ranks": ranks,
        "alphas": alphas,
        "params": params,
    }


def inspect_command_output(base: str, *, rank: int | None = None, alpha: int | None = None,
                           target: list[str] | None = None, batch_size: int = 8, seq_len: int = 512,
                           as_json: bool = False, settings: Settings | None = None) -> str:
    """What ``tunelab inspect BASE [--rank R] [--alpha A] [--target M ...] [--json]`` prints.

    Without ``--rank`` the TuneLab default LoRA is costed; alpha defaults to 2·rank.
    """
    lora = None
    if rank is not None or alpha is not None or target:
        r = rank or LoraSpec().r
        lora = LoraSpec(r=r, alpha=alpha or 2 * r, target_modules=target or "all-linear")
    report = public(inspect_base(base, lora, batch_size=batch_size, seq_len=seq_len, settings=settings))
    if as_json:
        return json.dumps(report, indent=2)
    return render_text(report)
