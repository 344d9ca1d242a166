"""An equalizer grid rebuilt from any LoRA adapter's files (no grid stored by TuneLab).

Ranks come from the shapes of ``lora_A`` in ``adapter_model.safetensors``; alphas from
``adapter_config.json``'s ``lora_alpha`` / ``alpha_pattern``, resolved with peft's own
``get_pattern_key``. The columns and rows are the base's (from the inspector, when the
base's config.json is on this machine, or as the caller names them), so kinds and
layers the adapter leaves off show as 0; as a last resort the grid holds the adapted
kinds up to the last layer that has weights.

Needs safetensors and peft throughout; :func:`backend.bases.equalizer.grid_from_adapter`
reaches it only when an adapter holds no stored grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft.utils.other import get_pattern_key
from safetensors import safe_open

from backend.adapter_folder import WEIGHTS_FILE, AdapterMeta, LoraConfigView, base_module_name
from backend.bases.inspect import inspect_base
from backend.bases.module_kinds import LAYER_PATH
from backend.errors import AdapterMismatch, TuneLabError



def adapter_module_ranks(adapter_folder: Path) -> dict[str, int]:
    """Full module name -> rank, read from the shapes of ``lora_A`` in the weights file."""
    weights = Path(adapter_folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise AdapterMismatch(f"Adapter {str(adapter_folder)!r} has no {WEIGHTS_FILE}.",
                              fix="Re-export or re-train the adapter.")
    ranks: dict[str, int] = {}
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():
            if ".lora_A." not in key:
                continue
            module = base_module_name(key.split(".lora_A.")[0])
            ranks[module] = int(fh.get_slice(key).get_shape()[0])
    return ranks


def tables_from_files(folder: Path, config: LoraConfigView, meta: AdapterMeta, *,
                      modules: list[str] | None = None, layers: int | None = None) -> dict[str, Any]:
    """The grid's fields (``layers``, ``modules``, ``rank``, ``alpha``) as the adapter's files hold them."""
    ranks = adapter_module_ranks(folder)
    by_prefix: dict[str, dict[tuple[int, str], tuple[int, int]]] = {}
    default_alpha = int(config.lora_alpha or config.r or 8)
    for module, rank in ranks.items():
        match = LAYER_PATH.match(module)
        if match:
            alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), default_alpha)
            by_prefix.setdefault(match["prefix"], {})[(int(match["index"]), match["kind"])] = (rank, int(alpha))
    if not by_prefix:
        raise AdapterMismatch(f"Adapter {str(folder)!r} adapts no module inside a layer stack "
                              f"({', '.join(sorted(ranks)[:5]) or 'no LoRA weights'}), so it has no equalizer grid.")
    cells = by_prefix[max(by_prefix, key=lambda p: len(by_prefix[p]))]  # the grid shows one stack
    report = None if (modules and layers) else _base_report(config, meta)
    kinds = list(modules or (report and [k["name"] for k in report["module_kinds"]]) or [])
    for _, kind in sorted(cells):
        if kind not in kinds:
            kinds.append(kind)
    count = layers or (report and report["num_layers"]) or (max(i for i, _ in cells) + 1)
    return {
        "layers": count,
        "modules": kinds,
        "rank": [[cells.get((i, m), (0, default_alpha))[0] for m in kinds] for i in range(count)],
        "alpha": [[cells.get((i, m), (0, default_alpha))[1] for m in kinds] for i in range(count)],
    }


def _base_report(config: LoraConfigView, meta: AdapterMeta) -> dict | None:
    """The inspector's report of the adapter's base, when its config.json is on this machine."""
    candidates = [meta.base.where if meta.base else None, config.base_model_name_or_path]
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").is_file():
            try:
                return inspect_base(str(candidate))
            except TuneLabError:
                continue
    return None
