"""Equalizer tab: a layers × module-kinds grid of LoRA rank (0 = off) and alpha for the
session's base, what it compiles to (the adapter_config.json peft will write), and
"use this grid for training".

The grid lives in two editable tables (ranks, alphas); every action first reads the
tables back into a grid (:func:`grid_from_tables`, which names each bad cell), applies
the change through :mod:`backend.studio.equalizer`, and shows the compiled result. The
panel's own ``gr.State`` holds the base, its module paths and the last good grid; the
plan it writes to is the session's (``ctx.state``).
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from backend.errors import ConfigError, TuneLabError
from backend.studio.equalizer import (ALL_KINDS, adapter_grid, apply_cells, compile_and_cost, grid_for_base,
                                      grid_from_rows, plan_with_grid, preset_grid)
from backend.studio.tools import AssistantTools

from .common import Ctx, edge, esc, heatmap_html

PRESET_BUTTONS = (("Attention only", "attention"), ("MLP only", "mlp"), ("Top half", "top-half"),
                  ("All-linear", "all-linear"))


# --- the grid as two tables (tested without a browser) ---------------------------------------------------


def grid_tables(grid) -> tuple[list[str], list[list], list[list]]:
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


def grid_from_tables(rank_table: Any, alpha_table: Any, modules: list[str]):
    """The grid the two tables show; every bad cell is named in one :class:`ConfigError`."""
    return grid_from_rows(_rows(rank_table), _rows(alpha_table), modules)


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

    def show(base: str, module_paths: list[str], grid) -> list:
        """Every output for ``grid``; a grid that does not compile still shows, with why."""
        headers, rank_rows, alpha_rows = grid_tables(grid)
        datatype = ["number"] * len(headers)
        try:
            view, cost_text = compile_and_cost(ctx.service(), base, grid, module_paths)
            config = json.dumps(view, indent=2)
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
        grid, module_paths = grid_for_base(ctx.service(), base, preset, r, alpha)
        return show(base, module_paths, grid)

    def current(eq_value, rank_table, alpha_table):
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
                grid = preset_grid(ctx.service(), base, key, eq_value["grid"]["layers"], eq_value["grid"]["modules"],
                                   int(r or 8), int(alpha or 16))
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
        base = base_spec(state)
        grid, module_paths = adapter_grid(ctx.service(), name, base)
        gr.Info(f"Loaded the grid of {name}: {len(grid.on_cells())} cells on.")
        return show(base, module_paths, grid)

    def on_use(state, eq_value, rank_table, alpha_table):
        grid = current(eq_value, rank_table, alpha_table)
        if state.plan is None:
            raise gr.Error("There is no plan yet: set a goal in the Plan tab (or tell the assistant), "
                           "then use the grid.")
        if eq_value["base"] != base_spec(state):
            raise gr.Error(f"This grid is for {eq_value['base']}, but the session now trains on "
                           f"{base_spec(state)}. Press 'Start over from the base' first.")
        state.plan = plan_with_grid(state.plan, grid, eq_value["module_paths"])
        state.plan_edited = True
        return state, (f"✅ The plan now trains with this grid: {len(grid.on_cells())} cells on, "
                       f"target_modules {esc(', '.join(state.plan.lora.target_modules))}. "
                       "Start it in the **Plan** tab.")

    def render(state) -> list:
        return [gr.Dropdown(choices=ctx.service().adapter_names(status="done"))]

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
