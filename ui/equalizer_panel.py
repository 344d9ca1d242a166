"""Equalizer tab: a layers × module-kinds grid of LoRA rank (0 = off) and alpha for the
session's base, what it compiles to (the adapter_config.json peft will write), and
"use this grid for training".

The grid lives in two editable tables (ranks, alphas); every action first reads the
tables back into a :class:`backend.bases.equalizer.Grid` (:func:`grid_from_tables`, which
names each bad cell), applies the change, and shows the compiled result. The panel's
own ``gr.State`` holds the base, its module paths and the last good grid; the plan it
writes to is the session's (``ctx.state``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import gradio as gr

from backend.studio.session import AssistantTools
from backend.bases.equalizer import Grid, compile_grid, grid_from_adapter
from backend.errors import ConfigError, TuneLabError
from backend.hparams import LoraSpec
from backend.bases.inspect import human_bytes, human_count

from .common import Ctx, edge, esc, heatmap_html

ALL_KINDS = "(all kinds)"
PRESET_BUTTONS = (("Attention only", "attention"), ("MLP only", "mlp"), ("Top half", "top-half"),
                  ("All-linear", "all-linear"))


# --- pure functions (tested without a browser) --------------------------------------------------------


def grid_tables(grid: Grid) -> tuple[list[str], list[list], list[list]]:
    """Headers and the rank and alpha tables (first column: the layer number)."""
    headers = ["layer", *grid.modules]
    ranks = [[i, *row] for i, row in enumerate(grid.rank)]
    alphas = [[i, *row] for i, row in enumerate(grid.alpha)]
    return headers, ranks, alphas


def _rows(table: Any) -> list[list]:
    """A Dataframe's value as rows, whether Gradio hands over a list, a dict or a DataFrame."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        return table.values.tolist()
    if isinstance(table, dict):
        return list(table.get("data") or [])
    return [list(row) for row in table]


def _cell_int(value: Any) -> int | None:
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


def grid_from_tables(rank_table: Any, alpha_table: Any, modules: list[str]) -> Grid:
    """The grid the two tables show; every bad cell is named in one :class:`ConfigError`."""
    tables = {"rank": _rows(rank_table), "alpha": _rows(alpha_table)}
    problems: list[str] = []
    values: dict[str, list[list[int]]] = {}
    layers = len(tables["rank"])
    if layers == 0:
        raise ConfigError("The equalizer grid is empty.", fix="Pick a base and open the Equalizer tab again.")
    for what, rows in tables.items():
        if len(rows) != layers:
            problems.append(f"the {what} table has {len(rows)} rows, the rank table {layers}")
        parsed = []
        for i, row in enumerate(rows):
            cells = list(row)[1:]  # column 0 is the layer number
            if len(cells) != len(modules):
                problems.append(f"{what} row {i} has {len(cells)} cells, expected {len(modules)}")
            out = []
            for module, value in zip(modules, cells):
                number = _cell_int(value)
                low, high = (0, 1024) if what == "rank" else (1, 4096)
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
                          f"{' …' if len(problems) > 12 else ''}.",
                          fix="Ranks are whole numbers 0 (off) to 1024; alphas whole numbers 1 to 4096.")
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
    for what, value, low, high in (("rank", rank, 0, 1024), ("alpha", alpha, 1, 4096)):
        if value is None or value == "":
            continue
        number = _cell_int(value)
        if number is None or not low <= number <= high:
            raise ConfigError(f"{what.capitalize()} {value!r} is not a whole number in {low}..{high}.",
                              fix="Ranks are 0 (off) to 1024, alphas 1 to 4096.")
        values[what] = number
    if not values:
        raise ConfigError("Give a rank or an alpha to set.", fix="Fill in rank (0 = off) and/or alpha.")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    kinds = [k for k in kinds if k != ALL_KINDS] or list(grid.modules)
    rows = parse_layers(layers_text, grid.layers)
    for layer in rows:
        for kind in kinds:
            grid = grid.set_cell(layer, kind, rank=values.get("rank"), alpha=values.get("alpha"))
    return grid


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


# --- the tab ------------------------------------------------------------------------------------------


def build(ctx: Ctx, tab: gr.Tab | None = None) -> None:
    eq = gr.State(None)  # {"base", "module_paths", "grid"}: this tab's base and its last good grid
    gr.Markdown("Each cell is one module kind in one layer: its LoRA **rank** (0 = off) and **alpha** "
                "(the update is scaled by alpha / rank). Edit the tables, pick a preset, or set rank and "
                "alpha on some layers × kinds (blank layers = every row; presets use this rank and alpha).",
                elem_id="eq-help")
    with gr.Row():
        presets = [gr.Button(label, elem_id=f"eq-preset-{key}", size="sm") for label, key in PRESET_BUTTONS]
    with gr.Row():
        layers_pick = gr.Textbox(label="Layers", placeholder="blank = all, or 0-3, 7", elem_id="eq-layers", scale=2)
        kinds_pick = gr.Dropdown([ALL_KINDS], value=[ALL_KINDS], multiselect=True, label="Module kinds",
                                 elem_id="eq-kinds", scale=3)
        set_rank = gr.Number(8, label="rank (0 = off)", precision=0, elem_id="eq-set-rank", scale=1, min_width=90)
        set_alpha = gr.Number(16, label="alpha", precision=0, elem_id="eq-set-alpha", scale=1, min_width=90)
        set_btn = gr.Button("Set cells", elem_id="eq-set", scale=1)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            ranks = gr.Dataframe(label="Rank per layer × module kind", interactive=True, type="array",
                                 static_columns=[0], elem_id="eq-ranks")
            alphas = gr.Dataframe(label="Alpha per layer × module kind", interactive=True, type="array",
                                  static_columns=[0], elem_id="eq-alphas")
        with gr.Column(scale=2):
            cost = gr.Markdown(elem_id="eq-cost")
            compiled = gr.Code(language="json", label="Compiles to (adapter_config.json)", elem_id="eq-compiled")
            heat = gr.HTML(elem_id="eq-heatmap")
    with gr.Row():
        use = gr.Button("Use this grid for training", variant="primary", elem_id="eq-use", scale=2)
        reload_base = gr.Button("Start over from the base", elem_id="eq-reload", scale=1)
    with gr.Row():
        source = gr.Dropdown([], label="Adapter", elem_id="eq-source", scale=3)
        load = gr.Button("Load grid from adapter", elem_id="eq-load", scale=1)
    note = gr.Markdown(elem_id="eq-note")

    shown = [eq, ranks, alphas, kinds_pick, cost, compiled, heat]

    def show(base: str, module_paths: list[str], grid: Grid) -> list:
        """Every output for ``grid``; a grid that does not compile still shows, with why."""
        headers, rank_rows, alpha_rows = grid_tables(grid)
        datatype = ["number"] * len(headers)
        try:
            spec = compile_grid(grid, module_paths)
            report = ctx.service().inspect(base, lora=spec)
            cost_text = cost_markdown(grid, report["lora"])
            config = json.dumps(adapter_config_view(spec), indent=2)
        except TuneLabError as exc:
            cost_text, config = f"⚠️ {esc(exc)}", ""
        return [{"base": base, "module_paths": module_paths, "grid": grid.model_dump()},
                gr.Dataframe(value=rank_rows, headers=headers, datatype=datatype),
                gr.Dataframe(value=alpha_rows, headers=headers, datatype=datatype),
                gr.Dropdown(choices=[ALL_KINDS, *grid.modules]), cost_text, config,
                heatmap_html(grid.heatmap("rank"), "rank per layer × module (0 = off)", elem_id="eq-heatmap-table")]

    def base_spec(state) -> str:
        return AssistantTools(ctx.service(), state).train_base()

    def from_base(state, preset: str = "all-linear", r: int = 8, alpha: int = 16) -> list:
        base = base_spec(state)
        report = ctx.service().inspect(base)
        grid = Grid.from_report(report, preset=preset, r=r, alpha=alpha)
        return show(base, report["module_paths"], grid)

    def current(eq_value, rank_table, alpha_table) -> Grid:
        if not eq_value:
            raise ConfigError("The equalizer has no grid yet.", fix="Open the Equalizer tab with a base chosen.")
        return grid_from_tables(rank_table, alpha_table, eq_value["grid"]["modules"])

    def on_open(state, eq_value):
        if eq_value and eq_value["base"] == base_spec(state):
            return [gr.skip()] * len(shown)
        return from_base(state)

    def on_preset(key):
        def run(state, eq_value, r, alpha):
            base = base_spec(state)
            if eq_value and eq_value["base"] == base:  # keep the grid's columns (e.g. loaded from an adapter)
                modules = eq_value["grid"]["modules"]
                report = ctx.service().inspect(base)
                groups = {k["name"]: k["group"] for k in report["module_kinds"]}
                grid = Grid.preset(key, eq_value["grid"]["layers"], modules, int(r or 8), int(alpha or 16),
                                   groups=groups)
                return show(base, eq_value["module_paths"], grid)
            return from_base(state, key, int(r or 8), int(alpha or 16))

        run.__name__ = f"preset_{key.replace('-', '_')}"
        return run

    def on_edit(eq_value, rank_table, alpha_table):
        grid = current(eq_value, rank_table, alpha_table)
        out = show(eq_value["base"], eq_value["module_paths"], grid)
        return [out[0], *out[4:]]

    def on_set(eq_value, rank_table, alpha_table, layers_text, kinds, r, alpha):
        grid = apply_cells(current(eq_value, rank_table, alpha_table), layers_text, kinds, r, alpha)  # checks eq first
        return show(eq_value["base"], eq_value["module_paths"], grid)

    def on_load(state, eq_value, name):
        if not name:
            raise gr.Error("Pick an adapter to load its grid from.")
        service = ctx.service()
        folder = service.adapter(name).get("path")
        if not folder:
            raise gr.Error(f"Adapter {name!r} has no folder on disk (it may still be training).")
        base = base_spec(state)
        report = service.inspect(base)
        grid = grid_from_adapter(folder, modules=[k["name"] for k in report["module_kinds"]],
                                 layers=report["num_layers"])
        gr.Info(f"Loaded the grid of {name}: {len(grid.on_cells())} cells on.")
        return show(base, report["module_paths"], grid)

    def on_use(state, eq_value, rank_table, alpha_table):
        grid = current(eq_value, rank_table, alpha_table)
        if state.plan is None:
            raise gr.Error("There is no plan yet: set a goal in the Plan tab (or tell the assistant), "
                           "then use the grid.")
        if eq_value["base"] != base_spec(state):
            raise gr.Error(f"This grid is for {eq_value['base']}, but the session now trains on "
                           f"{base_spec(state)}. Press 'Start over from the base' first.")
        spec = compile_grid(grid, eq_value["module_paths"], dropout=state.plan.lora.dropout)
        sweep = [c for c in state.plan.sweep if not (c.variation() or {}).get("r")]  # ranks come from the grid
        state.plan = state.plan.model_copy(update={"lora": spec, "equalizer": grid.model_dump(), "sweep": sweep})
        state.plan_edited = True
        return state, (f"✅ The plan now trains with this grid: {len(grid.on_cells())} cells on, "
                       f"target_modules {esc(', '.join(spec.target_modules))}. Start it in the **Plan** tab.")

    def render(state) -> list:
        return [gr.Dropdown(choices=[r.name for r in ctx.service().store.list_adapters(status="done")])]

    ctx.on_refresh(render, [source])
    grid_in = [eq, ranks, alphas]
    if tab is not None:
        tab.select(edge(on_open), [ctx.state, eq], shown)
    reload_base.click(edge(from_base), [ctx.state], shown)
    for button, (_, key) in zip(presets, PRESET_BUTTONS):
        button.click(edge(on_preset(key)), [ctx.state, eq, set_rank, set_alpha], shown)
    edited = [eq, cost, compiled, heat]  # not the tables themselves: the person is typing in them
    ranks.input(edge(on_edit), grid_in, edited)
    alphas.input(edge(on_edit), grid_in, edited)
    set_btn.click(edge(on_set), [*grid_in, layers_pick, kinds_pick, set_rank, set_alpha], shown)
    load.click(edge(on_load), [ctx.state, eq, source], shown)
    ctx.refresh_after(use.click(edge(on_use), [ctx.state, *grid_in], [ctx.state, note]))
