"""The equalizer grid: setters, presets, compiling to peft, and reading the grid back
from a trained adapter's files cell by cell."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from backend.adapter_folder import update_meta
from backend.bases.adapter_grid import adapter_module_ranks
from backend.bases.equalizer import Grid, compile_grid, grid_from_adapter
from backend.bases.inspect import inspect_base
from backend.errors import ConfigError
from tests.tiny_model import make_tiny_llama


@pytest.fixture(scope="module")
def llama12(tmp_path_factory) -> Path:
    """12 layers, so that a key for layer 1 could be confused with layer 11."""
    return make_tiny_llama(tmp_path_factory.mktemp("llama12") / "model", layers=12, hidden=32)


def _train_one_step(model):
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()


def _saved_cells(folder: Path, grid: Grid, prefix: str) -> tuple[list[list[int]], list[list[int]]]:
    """Ranks (lora_A shapes) and alphas (adapter_config, peft's own key lookup) per cell."""
    from peft.utils.other import get_pattern_key

    config = json.loads((folder / "adapter_config.json").read_text())
    ranks = adapter_module_ranks(folder)
    rank_table, alpha_table = [], []
    for i in range(grid.layers):
        rank_row, alpha_row = [], []
        for module in grid.modules:
            name = f"{prefix}.{i}.{module}"
            rank_row.append(ranks.get(name, 0))
            key = get_pattern_key(config["alpha_pattern"].keys(), name)
            rank_key = get_pattern_key(config["rank_pattern"].keys(), name)
            assert config["rank_pattern"].get(rank_key, config["r"]) == ranks.get(name, config["rank_pattern"].get(rank_key, config["r"]))
            alpha_row.append(config["alpha_pattern"].get(key, config["lora_alpha"]) if name in ranks else 0)
        rank_table.append(rank_row)
        alpha_table.append(alpha_row)
    return rank_table, alpha_table


def test_grid_compiles_to_an_adapter_whose_files_equal_the_grid(llama12, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    report = inspect_base(str(llama12))
    grid = (Grid.from_report(report, "all-linear", r=8, alpha=16)
            .set_row(5, rank=0)                          # a whole layer off
            .set_column("k_proj", rank=0)                # a whole kind off
            .set_cell(1, "q_proj", rank=4, alpha=8)      # layer 1 vs layer 11: keys must not collide
            .set_cell(11, "q_proj", rank=2)
            .set_cell(3, "mlp.down_proj", alpha=32)
            .set_cell(10, "mlp.up_proj", rank=16, alpha=4))
    spec = compile_grid(grid, report["module_paths"])
    assert spec.r == 8 and spec.alpha == 16
    assert "self_attn.k_proj" not in spec.target_modules
    assert "model.layers.5.self_attn.q_proj" in spec.exclude_modules

    model = AutoModelForCausalLM.from_pretrained(llama12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # peft warns about pattern keys that match nothing
        peft_model = get_peft_model(model, LoraConfig(**spec.to_peft_kwargs()))
    _train_one_step(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")

    ranks, alphas = _saved_cells(tmp_path / "adapter", grid, report["layer_prefix"])
    assert ranks == grid.rank
    assert alphas == grid.heatmap("alpha")["values"]
    assert ranks[5] == [0] * len(grid.modules)
    assert ranks[1][0] == 4 and ranks[11][0] == 2 and ranks[10][5] == 16

    rebuilt = grid_from_adapter(tmp_path / "adapter", modules=grid.modules)
    assert rebuilt.layers == 12  # from the base's config.json, via base_model_name_or_path
    assert rebuilt.rank == grid.rank
    assert rebuilt.heatmap("alpha") == grid.heatmap("alpha")


def test_grid_stored_in_tunelab_json_is_reloaded_as_is(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    report = inspect_base(str(tiny_llama))
    grid = Grid.from_report(report, "attention", r=4, alpha=8).set_cell(0, "v_proj", alpha=3)
    spec = compile_grid(grid, report["module_paths"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(**spec.to_peft_kwargs()))
    model.save_pretrained(tmp_path / "a")
    # without tunelab.json: rebuilt from the files, columns from the base's inspector report
    rebuilt = grid_from_adapter(tmp_path / "a")
    assert rebuilt.modules == grid.modules
    assert rebuilt.rank == grid.rank and rebuilt.heatmap("alpha") == grid.heatmap("alpha")
    assert rebuilt.alpha[0][2] == 3
    # base not on this machine: the adapted kinds up to the last adapted layer
    config_file = tmp_path / "a" / "adapter_config.json"
    config_file.write_text(json.dumps(dict(json.loads(config_file.read_text()), base_model_name_or_path="org/gone")))
    bare = grid_from_adapter(tmp_path / "a")
    assert bare.layers == 2 and sorted(bare.modules) == sorted(grid.modules[:4])
    assert all(r == 4 for row in bare.rank for r in row)
    update_meta(tmp_path / "a", hyperparameters={"equalizer": grid.to_dict()})
    assert grid_from_adapter(tmp_path / "a") == grid

    # a stored grid is read, and a grid compiled, without loading a model library
    code = ("import sys, json; from backend.bases.equalizer import Grid, compile_grid, grid_from_adapter; "
            f"grid = grid_from_adapter({str(tmp_path / 'a')!r}); "
            f"compile_grid(grid, {report['module_paths']!r}); "
            "print(json.dumps([grid.rank, sorted(m for m in ('torch', 'transformers', 'peft', 'safetensors') "
            "if m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [grid.rank, []]


def test_presets_on_gpt2_keep_attn_and_mlp_c_proj_apart(tiny_gpt2):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    report = inspect_base(str(tiny_gpt2))
    mlp = Grid.from_report(report, "mlp", r=2, alpha=4)
    assert mlp.rank == [[0, 0, 2, 2], [0, 0, 2, 2]]
    spec = compile_grid(mlp, report["module_paths"])
    assert sorted(spec.target_modules) == ["mlp.c_fc", "mlp.c_proj"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fan_in_fan_out auto-set for Conv1D
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gpt2), LoraConfig(**spec.to_peft_kwargs()))
    assert sorted(model.base_model.targeted_module_names) == [
        "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
        "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]
    assert Grid.from_report(report, "attention").rank == [[8, 8, 0, 0], [8, 8, 0, 0]]
    assert Grid.from_report(report, "top-half").rank == [[0, 0, 0, 0], [8, 8, 8, 8]]
    assert Grid.from_report(report, "all-linear").rank == [[8] * 4] * 2


def test_setters_return_new_grids_and_validate():
    grid = Grid.filled(3, ["self_attn.q_proj", "mlp.up_proj"], r=8, alpha=16)
    changed = grid.set_column("up_proj", rank=4).set_row(0, alpha=2).set_all(alpha=None)
    assert grid.rank == [[8, 8]] * 3  # unchanged
    assert changed.rank == [[8, 4]] * 3
    assert changed.alpha[0] == [2, 2] and changed.alpha[1] == [16, 16]
    assert changed.set_all(rank=0).on_cells() == []
    with pytest.raises(ConfigError, match="not a column"):
        grid.set_column("o_proj", rank=1)
    with pytest.raises(ConfigError, match="outside the grid"):
        grid.set_row(3, rank=1)
    with pytest.raises(ValueError, match="3 rows × 2 columns"):
        Grid(layers=3, modules=["a", "b"], rank=[[1, 1]], alpha=[[1, 1]] * 3)
    with pytest.raises(ValueError, match="between 0"):
        Grid(layers=1, modules=["a"], rank=[[-1]], alpha=[[1]])
    assert Grid.model_validate(json.loads(json.dumps(changed.to_dict()))) == changed


def test_compile_errors_are_clear(tiny_llama):
    report = inspect_base(str(tiny_llama))
    off = Grid.from_report(report, "off")
    with pytest.raises(ConfigError, match="Every cell"):
        compile_grid(off, report["module_paths"])
    alien = Grid.filled(2, ["attn.c_attn"])
    with pytest.raises(ConfigError, match="occurs in the base"):
        compile_grid(alien, report["module_paths"])
    too_tall = Grid.filled(4, ["self_attn.q_proj"])
    with pytest.raises(ConfigError, match="layer 2 self_attn.q_proj"):
        compile_grid(too_tall, report["module_paths"])
    with pytest.raises(ConfigError, match="Unknown equalizer preset"):
        Grid.from_report(report, "loud")
