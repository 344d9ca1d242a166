"""The Equalizer tab and the shape / proof section of the Adapters tab.

Unit level: the panel's pure functions turn table edits into a Grid and a LoraSpec whose
patterns (and the peft model built from it) match the edited cells, name bad cells,
and render the proof. Service level: "use this grid" reaches the queued run's spec.
Browser: the Equalizer tab's "attention only" preset shows attention targets only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backend.bases.equalizer import Grid, compile_grid
from backend.errors import ConfigError
from backend.bases.inspect import inspect_base
from ui.equalizer_panel import adapter_config_view, apply_cells, grid_from_tables, grid_tables, parse_layers
from ui.shape_panel import NO_PROOF, proof_heatmap, proof_markdown

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def report(tiny_llama):
    return inspect_base(str(tiny_llama))


def _cell(table: list[list], module_headers: list[str], layer: int, module: str, value) -> None:
    table[layer][module_headers.index(module)] = value


def test_table_edits_compile_to_the_cells_shown(report, tiny_llama):
    grid = Grid.from_report(report, preset="all-linear", r=8, alpha=16)
    headers, ranks, alphas = grid_tables(grid)
    assert headers[1:] == [k["name"] for k in report["module_kinds"]]
    assert [row[0] for row in ranks] == list(range(report["num_layers"]))
    # the person edits: layer 1 q_proj rank 4 / alpha 32 (as Gradio sends it: floats and strings),
    # layer 0 down_proj off
    _cell(ranks, headers, 1, "self_attn.q_proj", 4.0)
    _cell(alphas, headers, 1, "self_attn.q_proj", "32")
    _cell(ranks, headers, 0, "mlp.down_proj", 0)
    edited = grid_from_tables(ranks, alphas, grid.modules)
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
    headers, ranks, alphas = grid_tables(grid)
    _cell(ranks, headers, 0, "self_attn.k_proj", -2)
    _cell(ranks, headers, 1, "mlp.up_proj", 2.5)
    _cell(alphas, headers, 1, "self_attn.v_proj", "lots")
    with pytest.raises(ConfigError) as caught:
        grid_from_tables(ranks, alphas, grid.modules)
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


def test_proof_renders_base_vs_adapter_and_the_delta_w_heatmap():
    assert proof_markdown(None) == NO_PROOF and proof_heatmap(None) == ""
    proof = {"adapter": "wine", "task": "classification", "created_at": "2026-01-01T00:00:00Z", "elapsed_s": 3.2,
             "eval": {"base": {"loss": 2.5, "perplexity": 12.18, "rows": 6, "tokens": 18},
                      "adapter": {"loss": 0.75, "perplexity": 2.117, "rows": 6, "tokens": 18}, "loss_change": -1.75},
             "exact_match": {"k": 4, "base_few_shot": {"correct": 2, "total": 6, "score": 2 / 6},
                             "adapter_zero_shot": {"correct": 5, "total": 6, "score": 5 / 6}},
             "self_consistency": {"mean": 0.9, "n_samples": 5, "temperature": 0.8},
             "delta_w": {"layers": ["0", "1"], "modules": ["self_attn.q_proj", "mlp.up_proj"],
                         "values": [[0.02, None], [0.004, None]], "max": 0.02, "mean": 0.012, "modules_adapted": 2}}
    text = proof_markdown(proof)
    assert "| eval loss | 2.5000 | 0.7500 |" in text
    assert "| exact match | 2/6 (33%) with 4-shot prompts | 5/6 (83%) zero-shot |" in text
    assert "90% of 5 samples agree" in text and "1.7500 lower" in text
    heat = proof_heatmap(proof)
    assert heat.count("<tr><th>") == 1 + 2 and heat.count("tl-none") == 2 and ">0.02<" in heat


def test_use_grid_reaches_the_queued_run(settings, tiny_llama, tmp_path):
    """The plan's grid is saved in each queued run's spec; rank variations are dropped."""
    from backend.studio.session import edit_plan
    from backend.training.plan import make_plan
    from backend.studio.service import Service

    report = inspect_base(str(tiny_llama))
    grid = Grid.from_report(report, preset="top-half", r=4, alpha=8)
    plan = make_plan("classify wine reviews as red or white", n_examples=40, name="eq-wine", max_runs=3)
    plan = plan.model_copy(update={"lora": compile_grid(grid, report["module_paths"]), "equalizer": grid.model_dump()})
    assert edit_plan(plan, rank=plan.lora.r).equalizer == grid.model_dump()  # the form echoes the rank: kept
    assert edit_plan(plan, rank=16).equalizer is None  # a new uniform rank replaces the grid
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "x"},
                                                                {"role": "assistant", "content": "red"}]}) + "\n")
    service = Service(settings)
    try:
        job_ids = service.train_plan(plan, data, base=str(tiny_llama))
        specs = [service.store.get_job(i).request["spec"] for i in job_ids]
    finally:
        service.close()
    assert specs and all(s["equalizer"] == grid.model_dump() for s in specs)
    assert all(s["lora"]["exclude_modules"] == plan.lora.exclude_modules for s in specs)
    assert not any(re.search(r"-r\d+$", s["name"]) for s in specs)


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")
def test_equalizer_tab_attention_preset_in_the_browser(settings, tiny_llama):
    from playwright.sync_api import sync_playwright

    from backend.up import start
    from tests.builders import CHROMIUM_ARGS

    running = start(settings, port=0, server_port=0, base=str(tiny_llama), run_jobs=False)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.set_default_timeout(30_000)
            page.goto(running.page_url, wait_until="load")
            page.get_by_role("tab", name="Equalizer", exact=True).click()
            page.wait_for_selector("#eq-ranks table")
            page.wait_for_function("document.querySelector('#eq-compiled')?.innerText.includes('target_modules')")
            page.click("#eq-preset-attention")
            page.wait_for_function("!document.querySelector('#eq-compiled').innerText.includes('mlp.')")
            compiled = page.inner_text("#eq-compiled")
            page.screenshot(path=str(ARTIFACTS / "eq-attention.png"), full_page=True)
            browser.close()
    finally:
        running.stop()
    for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
        assert module in compiled
    for module in ("gate_proj", "up_proj", "down_proj"):
        assert module not in compiled
