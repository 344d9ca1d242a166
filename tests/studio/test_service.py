"""The service layer with the real endpoint and job runner: a finished run is served at
once, a deleted adapter is unloaded, strength/blend adapters are served like any other,
blind comparisons hide and shuffle, export writes a loadable PEFT folder, the proof
runs on the adapter's own held-out split, and a cancel says what the runner did.

One adapter is trained per module (``trained``); a test that changes an adapter works
on its own copy (``wine_copy``)."""

from __future__ import annotations

import pytest

from backend import adapter_folder as adapter_files
from backend.errors import AdapterNotFound, JobError, TuneLabError
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.studio.describe import describe_cancel


def test_a_finished_run_is_served_at_once(trained):
    assert "wine" in trained.models()  # hot-loaded by the runner the moment its weights were final
    job = trained.store.get_adapter("wine").job_id
    kinds = [e["kind"] for e in trained.runner.events(job)]
    assert kinds[-3:] == ["proof", "served", "done"]  # loaded while it was scored, not after
    assert trained.progress(job)["served"] is True
    answer = trained.chat("wine", [{"role": "user", "content": "ruby cherry"}], max_tokens=4, temperature=0)
    assert isinstance(answer, str)
    assert trained.adapter_names(status="done")[0] == "wine"


def test_deleting_an_adapter_unloads_it(trained, wine_copy):
    assert wine_copy in trained.models()
    trained.delete_adapter(wine_copy)
    assert wine_copy not in trained.models()
    assert not (trained.paths.adapters / wine_copy).exists()
    with pytest.raises(AdapterNotFound, match=f"No adapter named '{wine_copy}'"):
        trained.adapter(wine_copy)


def test_an_adapter_a_job_still_works_on_is_not_deleted(trained, wine_copy):
    """Deleting an adapter while a job still trains (or scores) it is refused with the job
    named, and nothing is lost; once the job is over it can be deleted."""
    job = trained.store.add_job(wine_copy, {"spec": {"name": wine_copy}, "train_file": "/none.jsonl"}).id
    with pytest.raises(JobError, match=f"Adapter {wine_copy} cannot be deleted now: job {job} is still queued"):
        trained.delete_adapter(wine_copy)
    assert wine_copy in trained.models() and (trained.paths.adapters / wine_copy).is_dir()
    trained.cancel(job)
    trained.delete_adapter(wine_copy)
    assert wine_copy not in trained.adapter_names()


def test_strength_and_blend_are_new_served_adapters(trained, wine_copy):
    half = trained.strength(wine_copy, 0.5)
    assert half == f"{wine_copy}-x0p5"
    blended = trained.blend(wine_copy, half, 0.5, 0.5, new_name=f"{wine_copy}-mix")
    served = trained.models()
    assert {wine_copy, half, blended} <= set(served), trained.adapter(half)["error"]
    assert trained.adapter(blended)["status"] == "done"
    assert trained.adapter_meta(half).kind == "strength"
    assert blended == f"{wine_copy}-mix"
    with pytest.raises(AdapterNotFound):
        trained.strength("nope", 1.0)


def test_blind_comparison_hides_names_and_ratings_reach_the_tallies(trained, wine_copy):
    base = trained.models()[0]
    comparison = trained.compare("ruby cherry", [base, wine_copy], blind=True, seed=3, max_tokens=4)
    assert [a.label for a in comparison.answers] == ["Answer A", "Answer B"]
    assert {a.model for a in comparison.answers} == {base, wine_copy}
    trained.rate(comparison, wine_copy, best=True)
    trained.rate(comparison, base, score=-1)
    tally = trained.tallies()[wine_copy]
    assert tally["best"] == 1 and tally["win_rate_vs_base"] == 1.0
    with pytest.raises(TuneLabError, match="not part of comparison"):
        trained.rate(comparison, "other")
    marked = trained.mark(wine_copy, "success")
    assert marked["verdict"] == "success" and marked["meta"]["verdict"] == "success"
    with pytest.raises(TuneLabError, match="success"):
        trained.mark(wine_copy, "great")


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


def test_evaluate_uses_the_held_out_split_and_stores_the_proof(trained, wine_copy):
    automatic = trained.adapter_meta("wine").proof  # the worker proved the run when it finished
    assert automatic["judged_by"]["rows"] == 3 and "share its phrasings" in automatic["judged_by"]["note"]
    result = trained.evaluate(wine_copy, n_samples=2)
    assert result["eval"]["adapter"]["loss"] > 0 and result["eval"]["base"]["loss"] > 0
    assert trained.adapter(wine_copy)["meta"]["proof"] == result
    assert trained.adapter_meta(wine_copy).proof == result
    # the goal names a classification: every exact-match figure has its count, rows and interval,
    # and the base's side is the very one the worker's proof used (cached beside the import)
    em = result["exact_match"]
    for name in ("base_zero_shot", "base_few_shot", "adapter"):
        assert set(em[name]) == {"correct", "total", "score", "ci95"} and em[name]["total"] == 3
    assert em["base_few_shot"] == automatic["exact_match"]["base_few_shot"]
    assert result["verdict"]["suggestion"] in ("too_few_rows", "changed_nothing")


def test_comparison_uses_the_system_prompt_the_adapters_were_trained_with(trained, wine_copy):
    base = trained.models()[0]
    assert trained.shared_system_prompt([base, wine_copy]) is None  # trained without one
    folder = trained.paths.adapters / wine_copy
    meta = adapter_files.read_meta(folder)
    meta["hyperparameters"]["train"]["system_prompt"] = "Answer red or white."
    adapter_files.write_meta(folder, meta)
    assert trained.shared_system_prompt([base, wine_copy]) == "Answer red or white."
    other = trained.strength(wine_copy, 1.0, new_name=f"{wine_copy}-copy")
    other_meta = adapter_files.read_meta(trained.paths.adapters / other)
    other_meta.setdefault("hyperparameters", {}).setdefault("train", {})["system_prompt"] = "Something else."
    adapter_files.write_meta(trained.paths.adapters / other, other_meta)
    assert trained.shared_system_prompt([wine_copy, other]) is None  # they disagree: none is imposed


def test_sync_endpoint_loads_finished_adapters_it_does_not_serve(trained, wine_copy):
    trained.client.unload_adapter(wine_copy)  # as if trained by the CLI with no endpoint up
    assert wine_copy not in trained.models()
    assert trained.sync_endpoint() == [wine_copy]
    assert wine_copy in trained.models()
    assert trained.sync_endpoint() == []  # nothing left to load


def test_cancel_returns_what_the_runner_did(trained):
    """A queued run is cancelled at once and the answer says so (not "stopping"); a run that
    is over, or a job that does not exist, is an error that says so."""
    finished = trained.store.get_adapter("wine").job_id
    with pytest.raises(JobError, match=f"Job {finished} \\(wine\\) is already done"):
        trained.cancel(finished)
    with pytest.raises(JobError, match="No job 999"):
        trained.cancel(999)
    queued = trained.store.add_job("never-run", {"spec": {"name": "never-run"}, "train_file": "/none.jsonl"}).id
    trained.store.upsert_adapter("never-run", base="default", status="queued", job_id=queued)
    answer = trained.cancel(queued)
    assert answer == "cancelled" and trained.progress(queued)["status"] == "cancelled"
    assert describe_cancel(queued, answer) == f"Job {queued} was cancelled before it started."


def test_an_adapter_the_endpoint_could_not_load_keeps_saying_so_after_its_proof(settings, tiny_llama, tmp_path,
                                                                               closed_url):
    """The endpoint is down when the run's weights are final: the adapter is done, its row
    says it was not loaded (the proof that ends the job later does not wipe that), no
    "served" event is recorded, and the adapter is still proved."""
    from backend.studio.service import Service
    from tests.builders import write_color_data

    service = Service(settings.model_copy(update={"server_url": closed_url, "default_base": str(tiny_llama)}))
    try:
        imported = service.import_data([write_color_data(tmp_path / "in")], base=str(tiny_llama), max_length=64)
        assert imported.report.stats["eval"] > 0  # so the worker proves it after training
        spec = RunSpec(name="offline", base=str(tiny_llama), goal="say the color",
                       lora=LoraSpec(r=4, alpha=8), train=TrainSpec(epochs=1, batch_size=4, max_length=64))
        job = service.train(spec, imported.folder, data_hash=imported.report.content_hash)
        assert service.runner.run_pending() == [job]
        row = service.store.get_adapter("offline")
        assert row.status == "done" and row.error.startswith("Trained, but not loaded into the endpoint")
        assert "served" not in [e["kind"] for e in service.runner.events(job)]
        assert service.progress(job)["served"] is False
        assert adapter_files.read_meta(service.paths.adapters / "offline").get("proof")
    finally:
        service.close()
