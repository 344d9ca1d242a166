"""The equalizer as the page uses it: the grid of the session's base (from a preset or
read back from an adapter), edits by layers × module kinds, what a grid costs and
compiles to, and a plan that trains with it.

The grid itself and its compilation into peft's patterns live in
:mod:`backend.bases.equalizer`; this module works on them through the service, so the
page reaches the equalizer only through the studio.
"""

from __future__ import annotations

import math
import re
from typing import Any

from backend.bases.equalizer import ALPHAS, RANKS, Grid, compile_grid, grid_from_adapter
from backend.bases.inspect_views import human_bytes, human_count
from backend.errors import ConfigError
from backend.hparams import LoraSpec
from backend.training.plan import PlanCard

ALL_KINDS = "(all kinds)"
CELL_RULE = (f"Ranks are whole numbers {RANKS[0]} (off) to {RANKS[1]}; "
             f"alphas whole numbers {ALPHAS[0]} to {ALPHAS[1]}.")


# --- reading and editing cells ------------------------------------------------------------------------


def cell_int(value: Any) -> int | None:
    """An integer cell value, or None when the cell does not hold a whole number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+(\.0*)?", text):
        return int(float(text))
    return None


def grid_from_rows(rank_rows: list[list], alpha_rows: list[list], modules: list[str]) -> Grid:
    """The grid two tables show (column 0 of each row is the layer number); every bad
    cell is named in one :class:`ConfigError`."""
    tables = {"rank": rank_rows, "alpha": alpha_rows}
    problems: list[str] = []
    values: dict[str, list[list[int]]] = {}
    layers = len(rank_rows)
    if layers == 0:
        raise ConfigError("The equalizer grid is empty.", fix="Pick a base and open the Equalizer tab again.")
    for what, rows in tables.items():
        if len(rows) != layers:
            problems.append(f"the {what} table has {len(rows)} rows, the rank table {layers}")
        low, high = RANKS if what == "rank" else ALPHAS
        parsed = []
        for i, row in enumerate(rows):
            cells = list(row)[1:]
            if len(cells) != len(modules):
                problems.append(f"{what} row {i} has {len(cells)} cells, expected {len(modules)}")
            out = []
            for module, value in zip(modules, cells):
                number = cell_int(value)
                if number is None:
                    problems.append(f"layer {i}, {module}: {what} {value!r} is not a whole number")
                elif not low <= number <= high:
                    kind = "negative" if number < 0 else f"outside {low}..{high}"
                    problems.append(f"layer {i}, {module}: {what} {number} is {kind}")
                out.append(number or 0)
            parsed.append(out)
        values[what] = parsed
    if problems:
        raise ConfigError(f"The equalizer has bad cells: {'; '.join(problems[:12])}"
                          f"{' …' if len(problems) > 12 else ''}.", fix=CELL_RULE)
    return Grid(layers=layers, modules=list(modules), rank=values["rank"], alpha=values["alpha"])


def parse_layers(text: str | None, layers: int) -> list[int]:
    """'0-3, 7' -> [0, 1, 2, 3, 7]; blank -> every layer."""
    text = (text or "").strip()
    if not text:
        return list(range(layers))
    chosen: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ConfigError(f"Layers {text!r}: {part!r} is not a layer number or a range like 2-5.",
                              fix=f"Use layer numbers 0..{layers - 1}, e.g. '0-3, 7', or leave it blank for all.")
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high or high >= layers:
            raise ConfigError(f"Layers {text!r}: {part!r} is outside 0..{layers - 1}.",
                              fix=f"This base has {layers} layers, numbered 0..{layers - 1}.")
        chosen.update(range(low, high + 1))
    return sorted(chosen)


def apply_cells(grid: Grid, layers_text: str | None, kinds: list[str] | str | None,
                rank: float | None, alpha: float | None) -> Grid:
    """Set rank and/or alpha on the picked layers × kinds: blank layers = every row, no kind
    (or '(all kinds)') = every column; both blank = the whole grid."""
    values = {}
    for what, value, (low, high) in (("rank", rank, RANKS), ("alpha", alpha, ALPHAS)):
        if value is None or value == "":
            continue
        number = cell_int(value)
        if number is None or not low <= number <= high:
            raise ConfigError(f"{what.capitalize()} {value!r} is not a whole number in {low}..{high}.",
                              fix=CELL_RULE)
        values[what] = number
    if not values:
        raise ConfigError("Give a rank or an alpha to set.", fix="Fill in rank (0 = off) and/or alpha.")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    kinds = [k for k in kinds if k != ALL_KINDS] or list(grid.modules)
    for layer in parse_layers(layers_text, grid.layers):
        for kind in kinds:
            grid = grid.set_cell(layer, kind, rank=values.get("rank"), alpha=values.get("alpha"))
    return grid


# --- grids of a base and of an adapter ------------------------------------------------------------------


def grid_for_base(service, base: str, preset: str = "all-linear", r: int = 8,
                  alpha: int = 16) -> tuple[Grid, list[str]]:
    """A preset grid over every layer and module kind of ``base``, and the base's module paths."""
    report = service.inspect(base)
    return Grid.from_report(report, preset=preset, r=r, alpha=alpha), report["module_paths"]


def preset_grid(service, base: str, preset: str, layers: int, modules: list[str], r: int, alpha: int) -> Grid:
    """A preset over the given columns (e.g. a grid loaded from an adapter keeps its columns)."""
    report = service.inspect(base)
    groups = {k["name"]: k["group"] for k in report["module_kinds"]}
    return Grid.preset(preset, layers, modules, r, alpha, groups=groups)


def adapter_grid(service, name: str, base: str) -> tuple[Grid, list[str]]:
    """The grid an adapter's files hold, laid over the rows and columns of ``base``."""
    folder = service.adapter(name).get("path")
    if not folder:
        raise ConfigError(f"Adapter {name!r} has no folder on disk (it may still be training).",
                          fix="Wait for it to finish, or pick another adapter.")
    report = service.inspect(base)
    grid = grid_from_adapter(folder, modules=[k["name"] for k in report["module_kinds"]],
                             layers=report["num_layers"])
    return grid, report["module_paths"]


# --- what a grid compiles to and costs -------------------------------------------------------------------


def adapter_config_view(spec: LoraSpec) -> dict:
    """The LoRA part of the adapter_config.json peft writes for ``spec``."""
    kwargs = spec.to_peft_kwargs()
    keys = ("r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "exclude_modules", "lora_dropout")
    return {k: kwargs.get(k) for k in keys}


def cost_markdown(grid: Grid, lora_report: dict) -> str:
    on = grid.on_cells()
    total = grid.layers * len(grid.modules)
    size = lora_report.get("adapter_bytes", {}).get("fp32")
    return (f"**{len(on)} of {total} cells on** → {lora_report['targeted_modules']} modules adapted, "
            f"**{human_count(lora_report['trainable_params'])} trainable parameters** "
            f"({lora_report['trainable_percent']:.3f}% of the base)"
            + (f", adapter ≈ {human_bytes(size)} on disk (fp32)" if size else "") + ".")


def compile_and_cost(service, base: str, grid: Grid, module_paths: list[str]) -> tuple[dict, str]:
    """What ``grid`` compiles to (the adapter_config.json view) and what it costs on ``base``."""
    spec = compile_grid(grid, module_paths)
    report = service.inspect(base, lora=spec)
    return adapter_config_view(spec), cost_markdown(grid, report["lora"])


def plan_with_grid(plan: PlanCard, grid: Grid, module_paths: list[str]) -> PlanCard:
    """``plan`` training with ``grid``: its LoRA config compiled from the grid, the grid kept
    with the plan, and the sweep's rank variations dropped (the ranks come from the grid)."""
    spec = compile_grid(grid, module_paths, dropout=plan.lora.dropout)
    sweep = [c for c in plan.sweep if not (c.variation() or {}).get("r")]
    return plan.model_copy(update={"lora": spec, "equalizer": grid.model_dump(), "sweep": sweep})
