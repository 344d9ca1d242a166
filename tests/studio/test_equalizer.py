"""The equalizer as the studio works it: table rows read back into a grid (every bad cell
named), edits by layers × kinds, presets, and a plan that trains with the grid — down to
the LoraSpec, the peft model built from it, and the queued runs' specs."""

from __future__ import annotations

import json
import re

import pytest

from backend.bases.equalizer import Grid, compile_grid
from backend.bases.inspect import inspect_base
from backend.errors import ConfigError
from backend.studio.equalizer import (adapter_config_view, apply_cells, compile_and_cost, grid_for_base, grid_from_rows,
                                      parse_layers, plan_with_grid, preset_grid)
from backend.studio.plan_form import edit_plan
from backend.training.plan import make_plan


@pytest.fixture(scope="module")
def report(tiny_llama):
    return inspect_base(str(tiny_llama))


def _tables(grid: Grid) -> tuple[list[str], list[list], list[list]]:
    """The grid as the page's two tables: headers, then rows that start with the layer number."""
    return (["layer", *grid.modules], [[i, *row] for i, row in enumerate(grid.rank)],
            [[i, *row] for i, row in enumerate(grid.alpha)])


def _cell(table: list[list], module_headers: list[str], layer: int, module: str, value) -> None:
    table[layer][module_headers.index(module)] = value


def test_table_edits_compile_to_the_cells_shown(report, tiny_llama):
    grid = Grid.from_report(report, preset="all-linear", r=8, alpha=16)
    headers, ranks, alphas = _tables(grid)
    assert headers[1:] == [k["name"] for k in report["module_kinds"]]
    assert [row[0] for row in ranks] == list(range(report["num_layers"]))
    # the person edits: layer 1 q_proj rank 4 / alpha 32 (as Gradio sends it: floats and strings),
    # layer 0 down_proj off
    _cell(ranks, headers, 1, "self_attn.q_proj", 4.0)
    _cell(alphas, headers, 1, "self_attn.q_proj", "32")
    _cell(ranks, headers, 0, "mlp.down_proj", 0)
    edited = grid_from_rows(ranks, alphas, grid.modules)
    assert edited.rank[1][grid.modules.index("self_attn.q_proj")] == 4
    assert edited.alpha[1][grid.modules.index("self_attn.q_proj")] == 32

    spec = compile_grid(edited, report["module_paths"])
    prefix = report["layer_prefix"]
    assert (spec.r, spec.alpha) == (8, 16)
    assert spec.rank_pattern == {f"^{prefix}.1.self_attn.q_proj": 4}
    assert spec.alpha_pattern == {f"^{prefix}.1.self_attn.q_proj": 32}
    assert spec.exclude_modules == [f"{prefix}.0.mlp.down_proj"]
    view = adapter_config_view(spec)
    assert view["target_modules"] == grid.modules and view["lora_alpha"] == 16

    # peft builds exactly the edited cells
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(**spec.to_peft_kwargs()))
    built = {name.removeprefix("base_model.model."): module.lora_A["default"].out_features
             for name, module in peft_model.named_modules() if hasattr(module, "lora_A") and "default" in module.lora_A}
    expected = {f"{prefix}.{i}.{m}": r for i, m, r, _ in edited.on_cells()}
    assert built == expected


def test_bad_cells_are_named_together(report):
    grid = Grid.from_report(report)
    headers, ranks, alphas = _tables(grid)
    _cell(ranks, headers, 0, "self_attn.k_proj", -2)
    _cell(ranks, headers, 1, "mlp.up_proj", 2.5)
    _cell(alphas, headers, 1, "self_attn.v_proj", "lots")
    with pytest.raises(ConfigError) as caught:
        grid_from_rows(ranks, alphas, grid.modules)
    text = str(caught.value)
    assert "layer 0, self_attn.k_proj: rank -2 is negative" in text
    assert "layer 1, mlp.up_proj: rank 2.5 is not a whole number" in text
    assert "layer 1, self_attn.v_proj: alpha 'lots' is not a whole number" in text


def test_row_column_and_global_controls(report):
    grid = Grid.from_report(report, preset="off")
    layers = grid.layers
    assert parse_layers("", layers) == list(range(layers))
    assert parse_layers("1, 0-0", layers) == [0, 1]
    with pytest.raises(ConfigError, match="outside"):
        parse_layers(f"0-{layers}", layers)
    with pytest.raises(ConfigError, match="not a layer number"):
        parse_layers("first", layers)

    column = apply_cells(grid, "", ["self_attn.v_proj"], 16, 32)  # a column
    assert [c[:3] for c in column.on_cells()] == [(i, "self_attn.v_proj", 16) for i in range(layers)]
    row = apply_cells(column, "1", None, 4, None)  # a row, alpha untouched
    assert all(row.rank[1][j] == 4 for j in range(len(grid.modules)))
    assert row.alpha[1][grid.modules.index("self_attn.v_proj")] == 32
    assert row.rank[0][grid.modules.index("self_attn.q_proj")] == 0
    everything = apply_cells(row, "", ["(all kinds)"], 2, 4)  # global
    assert {(r, a) for _, _, r, a in everything.on_cells()} == {(2, 4)}
    assert len(everything.on_cells()) == layers * len(grid.modules)
    with pytest.raises(ConfigError, match="whole number"):
        apply_cells(grid, "", None, -1, None)


def test_attention_preset_compiles_to_attention_modules_only(report):
    grid = Grid.from_report(report, preset="attention")
    spec = compile_grid(grid, report["module_paths"])
    groups = {k["name"]: k["group"] for k in report["module_kinds"]}
    assert spec.target_modules and all(groups[m] == "attention" for m in spec.target_modules)
    assert {m for m, g in groups.items() if g == "attention"} == set(spec.target_modules)
    cost = inspect_base(report["base"]["path"], lora=spec)["lora"]
    assert 0 < cost["trainable_params"] < inspect_base(report["base"]["path"])["lora"]["trainable_params"]


def test_use_grid_reaches_the_queued_run(service, report, tiny_llama, tmp_path):
    """The page's "use this grid": the plan compiles from the grid, keeps it, drops rank
    variations, and each queued run's spec carries the grid."""
    grid = Grid.from_report(report, preset="top-half", r=4, alpha=8)
    plan = make_plan("classify wine reviews as red or white", n_examples=40, name="eq-wine", max_runs=3)
    plan = plan_with_grid(plan, grid, report["module_paths"])
    assert plan.equalizer == grid.model_dump() and plan.lora == compile_grid(grid, report["module_paths"],
                                                                             dropout=plan.lora.dropout)
    assert not any((c.variation() or {}).get("r") for c in plan.sweep)
    assert edit_plan(plan, rank=plan.lora.r).equalizer == grid.model_dump()  # the form echoes the rank: kept
    assert edit_plan(plan, rank=16).equalizer is None  # a new uniform rank replaces the grid
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "x"},
                                                                {"role": "assistant", "content": "red"}]}) + "\n")
    job_ids = service.train_plan(plan, data, base=str(tiny_llama))
    specs = [service.store.get_job(i).request["spec"] for i in job_ids]
    assert specs and all(s["equalizer"] == grid.model_dump() for s in specs)
    assert all(s["lora"]["exclude_modules"] == plan.lora.exclude_modules for s in specs)
    assert not any(re.search(r"-r\d+$", s["name"]) for s in specs)


def test_a_base_grid_compiles_and_costs_through_the_service(service, tiny_llama):
    base = str(tiny_llama)
    grid, module_paths = grid_for_base(service, base, preset="attention", r=4, alpha=8)
    view, cost = compile_and_cost(service, base, grid, module_paths)
    assert view["r"] == 4 and all("attn" in m for m in view["target_modules"])
    assert f"**{len(grid.on_cells())} of {grid.layers * len(grid.modules)} cells on**" in cost
    kept = preset_grid(service, base, "mlp", grid.layers, grid.modules, 2, 4)
    assert kept.modules == grid.modules and {r for _, m, r, _ in kept.on_cells()} == {2}
    assert all("mlp" in m for _, m, _, _ in kept.on_cells())
