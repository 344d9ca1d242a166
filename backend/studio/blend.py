"""Strength and blending, written as new ordinary PEFT LoRA folders any server can load.

A LoRA module adds ``ΔW = s · B @ A`` (``s = alpha / r``, or ``alpha / sqrt(r)`` with
rsLoRA). Both knobs are exact:

* **strength** — "adapter X at strength t" scales every ``lora_B`` by ``t``, so
  ``ΔW' = t · ΔW``.
* **blend** — "a·X + b·Y" concatenates ranks: ``A' = [A_x; A_y]``,
  ``B' = [a·s_x·B_x, b·s_y·B_y]`` with the new module's scaling set to exactly 1
  (``lora_alpha = r``, per module through ``rank_pattern``/``alpha_pattern``), so
  ``ΔW' = a·ΔW_x + b·ΔW_y``. A module that only one adapter targets keeps its own
  rank (the other contributes zero). This is peft's ``add_weighted_adapter(...,
  combination_type="cat")``, done on files, without loading a model.

The result is ``adapter_config.json`` + ``adapter_model.safetensors`` + ``tunelab.json``
(kind, sources, weights), written to a temporary folder and renamed into place.
Imports torch at its top: the service reaches it lazily (:mod:`backend.studio.weights`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from backend.adapter_folder import (CONFIG_FILE, WEIGHTS_FILE, LoraConfigView, base_key, base_module_name, read_meta,
                                    read_peft_config, write_meta)
from backend.atomic import staged_folder
from backend.errors import AdapterMismatch, ConfigError

MAX_STRENGTH = 2.0
_KEY = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")


def scale_adapter(src: Path, dst: Path, strength: float, *, overwrite: bool = False) -> Path:
    """Write ``src`` at ``strength`` (0..2) to ``dst``: every ``lora_B`` times ``strength``."""
    if not isinstance(strength, (int, float)) or not 0.0 <= float(strength) <= MAX_STRENGTH:
        raise ConfigError(f"Strength {strength!r} is out of range.",
                          fix=f"Pick a strength between 0 and {MAX_STRENGTH} (1 = the adapter as trained).")
    src = Path(src)
    config = read_peft_config(src)
    view = LoraConfigView.model_validate(config)
    _check_linear(src, view)
    tensors = _load(src)
    scaled = {key: (t * float(strength) if _kind(key).endswith("B") else t.clone()) for key, t in tensors.items()}
    meta = {"kind": "strength", "strength": float(strength), "sources": [_source(src, float(strength))],
            "weights": [float(strength)], "base": view.base_model_name_or_path, "status": "ready"}
    return _write(Path(dst), config, scaled, meta, overwrite)


def blend_adapters(a: Path, b: Path, dst: Path, wa: float, wb: float, *, overwrite: bool = False) -> Path:
    """Write ``wa·A + wb·B`` (exact, by concatenating ranks) as a new adapter at ``dst``."""
    a, b = Path(a), Path(b)
    config_a, config_b = read_peft_config(a), read_peft_config(b)
    view_a, view_b = LoraConfigView.model_validate(config_a), LoraConfigView.model_validate(config_b)
    problems = []
    for path, view in ((a, view_a), (b, view_b)):
        problems += _linear_problems(path, view)
    base_a, base_b = view_a.base_model_name_or_path, view_b.base_model_name_or_path
    if base_a and base_b and base_key(base_a) != base_key(base_b):
        problems.append(f"{a.name} was trained for {base_a!r} and {b.name} for {base_b!r}")
    for key, value in (("wa", wa), ("wb", wb)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"weight {key}={value!r} is not a number")
    tensors_a, tensors_b = _load(a), _load(b)
    modules_a, modules_b = _modules(tensors_a), _modules(tensors_b)
    for module in sorted(set(modules_a) & set(modules_b)):
        (a_A, a_B), (b_A, b_B) = modules_a[module], modules_b[module]
        if a_A.shape[1:] != b_A.shape[1:] or a_B.shape[0] != b_B.shape[0]:
            problems.append(f"module {module} has shape {tuple(a_B.shape[:1]) + tuple(a_A.shape[1:])} in "
                            f"{a.name} and {tuple(b_B.shape[:1]) + tuple(b_A.shape[1:])} in {b.name}")
    if problems:
        raise AdapterMismatch("Cannot blend these adapters: " + "; ".join(problems) + ".",
                              fix="Blend LoRA adapters trained for the same base model.")

    blended, ranks = {}, {}
    for module in sorted(set(modules_a) | set(modules_b)):
        parts_A, parts_B = [], []
        for modules, view, weight in ((modules_a, view_a, wa), (modules_b, view_b, wb)):
            if module not in modules:
                continue
            A, B = modules[module]
            scaling = view.scaling_of(base_module_name(module), A.shape[0])
            parts_A.append(A.float())
            parts_B.append(B.float() * (float(weight) * scaling))
        dtype = (modules_a.get(module) or modules_b.get(module))[0].dtype
        names = _key_names(tensors_a if module in modules_a else tensors_b, module)
        blended[names[0]] = torch.cat(parts_A, dim=0).to(dtype).contiguous()
        blended[names[1]] = torch.cat(parts_B, dim=1).to(dtype).contiguous()
        ranks[base_module_name(module)] = blended[names[0]].shape[0]

    config = _blend_config(config_a, config_b, ranks)
    meta = {"kind": "blend", "sources": [_source(a, float(wa)), _source(b, float(wb))],
            "weights": [float(wa), float(wb)], "base": base_a or base_b, "status": "ready"}
    return _write(Path(dst), config, blended, meta, overwrite)


# --- helpers -------------------------------------------------------------------------------------


def _linear_problems(path: Path, config: LoraConfigView) -> list[str]:
    problems = []
    if config.use_dora:
        problems.append(f"{path.name} is a DoRA adapter (its magnitude vector does not add linearly)")
    if config.modules_to_save:
        problems.append(f"{path.name} trains whole modules ({', '.join(config.modules_to_save)}), "
                        "which cannot be scaled or added exactly")
    if config.lora_bias:
        problems.append(f"{path.name} trains a LoRA bias")
    return problems


def _check_linear(path: Path, config: LoraConfigView) -> None:
    problems = _linear_problems(path, config)
    if problems:
        raise AdapterMismatch(f"Cannot rescale {path}: " + "; ".join(problems) + ".",
                              fix="Strength and blending work on plain LoRA adapters.")


def _load(path: Path) -> dict:
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise AdapterMismatch(f"Adapter {str(path)!r} has no {WEIGHTS_FILE}.",
                              fix="Blending reads safetensors weights; re-save the adapter with peft.")
    return load_file(str(weights))


def _kind(key: str) -> str:
    match = _KEY.match(key)
    if not match:
        raise AdapterMismatch(f"Unexpected tensor {key!r} in a LoRA adapter.",
                              fix="Strength and blending work on plain LoRA adapters.")
    return match["kind"]


def _modules(tensors: dict) -> dict[str, tuple]:
    """module -> (A, B), with the tensors oriented so that ΔW = B @ A."""
    found: dict[str, dict] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if not match:
            raise AdapterMismatch(f"Unexpected tensor {key!r} in a LoRA adapter.")
        found.setdefault(match["module"], {})[match["kind"][-1]] = tensor
    return {module: (parts["A"], parts["B"]) for module, parts in found.items() if {"A", "B"} <= set(parts)}


def _key_names(tensors: dict, module: str) -> tuple[str, str]:
    a = next(k for k in tensors if k.startswith(module + ".") and _kind(k).endswith("A"))
    b = next(k for k in tensors if k.startswith(module + ".") and _kind(k).endswith("B"))
    return a, b


def _blend_config(config_a: dict, config_b: dict, ranks: dict[str, int]) -> dict:
    """A LoRA config whose scaling is exactly 1 for every module (alpha = r)."""
    common = Counter(ranks.values()).most_common(1)[0][0]
    config = dict(config_a)
    for key in ("layers_to_transform", "layers_pattern", "exclude_modules", "modules_to_save",
                "trainable_token_indices", "eva_config", "corda_config", "loftq_config", "megatron_config"):
        config.pop(key, None)
    config.update(
        r=common, lora_alpha=common, use_rslora=False, use_dora=False,
        target_modules=sorted(ranks),
        rank_pattern={re.escape(m): r for m, r in ranks.items() if r != common},
        alpha_pattern={re.escape(m): r for m, r in ranks.items() if r != common},
        lora_dropout=0.0, init_lora_weights=True, inference_mode=True,
        base_model_name_or_path=config_a.get("base_model_name_or_path") or config_b.get("base_model_name_or_path"),
    )
    return config


def _source(path: Path, weight: float) -> dict:
    meta = read_meta(path)
    return {"path": str(path.resolve()), "name": path.name, "weight": weight,
            "kind": meta.get("kind"), "base": meta.get("base")}


def _write(dst: Path, config: dict, tensors: dict, meta: dict, overwrite: bool) -> Path:
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} already exists.", fix="Pick another name, or allow overwriting.")
    with staged_folder(dst) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_meta(tmp, meta)
    return dst
