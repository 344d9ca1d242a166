"""The service layer with the real endpoint and job runner: a finished run is served at
once, a deleted adapter is unloaded, strength/blend adapters are served like any other,
blind comparisons hide and shuffle, export writes a loadable PEFT folder, and the proof
runs on the adapter's own held-out split."""

from __future__ import annotations

import json

import pytest

from backend.errors import AdapterNotFound, TuneLabError
from backend.hparams import LoraSpec, RunSpec, TrainSpec


@pytest.fixture()
def trained(served, tiny_llama, tmp_path):
    """One adapter trained through the runner from data imported by the data doctor."""
    data = tmp_path / "wine.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"{'ruby cherry' if i % 2 else 'straw citrus'} {i}"},
                          {"role": "assistant", "content": "red" if i % 2 else "white"}]} for i in range(12)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    imported = served.import_data([data], base=str(tiny_llama), max_length=64)
    spec = RunSpec(name="wine", base=str(tiny_llama), goal="classify wine as red or white",
                   lora=LoraSpec(r=4, alpha=8), train=TrainSpec(epochs=2, batch_size=4, max_length=64))
    job = served.train(spec, imported.folder, data_hash=imported.report.content_hash)
    assert served.runner.run_pending() == [job]
    assert served.progress(job)["status"] == "done"
    return served


def test_finished_run_is_served_and_deleting_unloads_it(trained):
    assert "wine" in trained.models()
    answer = trained.chat("wine", [{"role": "user", "content": "ruby cherry"}], max_tokens=4, temperature=0)
    assert isinstance(answer, str)
    trained.delete_adapter("wine")
    assert "wine" not in trained.models()
    assert not (trained.paths.adapters / "wine").exists()
    with pytest.raises(AdapterNotFound, match="none yet"):
        trained.adapter("wine")


def test_strength_and_blend_are_new_served_adapters(trained):
    half = trained.strength("wine", 0.5)
    assert half == "wine-x0p5"
    blended = trained.blend("wine", half, 0.5, 0.5, new_name="wine-mix")
    served = trained.models()
    assert {"wine", "wine-x0p5", "wine-mix"} <= set(served), trained.adapter("wine-x0p5")["error"]
    assert trained.adapter("wine-mix")["status"] == "done"
    assert blended == "wine-mix"
    with pytest.raises(AdapterNotFound):
        trained.strength("nope", 1.0)


def test_blind_comparison_hides_names_and_ratings_reach_the_tallies(trained):
    base = trained.models()[0]
    comparison = trained.compare("ruby cherry", [base, "wine"], blind=True, seed=3, max_tokens=4)
    assert [a.label for a in comparison.answers] == ["Answer A", "Answer B"]
    assert {a.model for a in comparison.answers} == {base, "wine"}
    trained.rate(comparison, "wine", best=True)
    trained.rate(comparison, base, score=-1)
    tally = trained.tallies()["wine"]
    assert tally["best"] == 1 and tally["win_rate_vs_base"] == 1.0
    with pytest.raises(TuneLabError, match="not part of comparison"):
        trained.rate(comparison, "other")
    marked = trained.mark("wine", "success")
    assert marked["verdict"] == "success" and marked["meta"]["verdict"] == "success"
    with pytest.raises(TuneLabError, match="success"):
        trained.mark("wine", "great")


def test_export_writes_a_peft_folder_plain_peft_loads(trained, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = trained.export("wine", tmp_path / "export")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), str(out))
    assert "default" in model.peft_config
    with pytest.raises(TuneLabError, match="not empty"):
        trained.export("wine", out)
    merged = trained.export("wine", tmp_path / "merged", merged=True)
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()


def test_evaluate_uses_the_held_out_split_and_stores_the_proof(trained):
    result = trained.evaluate("wine", n_samples=2)
    assert result["eval"]["adapter"]["loss"] > 0 and result["eval"]["base"]["loss"] > 0
    meta = trained.adapter("wine")["meta"]
    assert "proof" in meta


def test_comparison_uses_the_system_prompt_the_adapters_were_trained_with(trained):
    from backend import adapter_folder as adapter_files

    base = trained.models()[0]
    assert trained.shared_system_prompt([base, "wine"]) is None  # trained without one
    folder = trained.paths.adapters / "wine"
    meta = adapter_files.read_meta(folder)
    meta["hyperparameters"]["train"]["system_prompt"] = "Answer red or white."
    adapter_files.write_meta(folder, meta)
    assert trained.shared_system_prompt([base, "wine"]) == "Answer red or white."
    trained.strength("wine", 1.0, new_name="wine-copy")
    other = adapter_files.read_meta(trained.paths.adapters / "wine-copy")
    other.setdefault("hyperparameters", {}).setdefault("train", {})["system_prompt"] = "Something else."
    adapter_files.write_meta(trained.paths.adapters / "wine-copy", other)
    assert trained.shared_system_prompt(["wine", "wine-copy"]) is None  # they disagree: none is imposed


def test_sync_endpoint_loads_finished_adapters_it_does_not_serve(trained):
    trained.client.unload_adapter("wine")  # as if trained by the CLI with no endpoint up
    assert "wine" not in trained.models()
    assert trained.sync_endpoint() == ["wine"]
    assert "wine" in trained.models()
    assert trained.sync_endpoint() == []  # nothing left to load
