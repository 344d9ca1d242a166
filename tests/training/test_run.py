"""One LoRA run (backend/training/run.py) in-process, on the tiny Llama: trained once for
the module and looked at by several tests; the real default base only under ``-m slow``.
Runs through the job runner live in test_jobs.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from backend.adapter_folder import ADAPTER_FILES, read_meta
from backend.bases.resolve import resolve_base
from backend.hparams import RunSpec
from backend.training.checkpoints import last_checkpoint
from backend.training.run import AdapterExists, TrainingCancelled, train_adapter
from tests.builders import folder_ref, make_earlier_adapter, snapshot, tiny_spec, write_color_data


@pytest.fixture(scope="module")
def trained(tiny_llama, native_build, tmp_path_factory):
    """One finished run: its adapter folder, returned metadata and progress reports."""
    root = tmp_path_factory.mktemp("run")
    data = write_color_data(root / "data")
    out = root / "adapters" / "colors"
    progress = []
    meta = train_adapter(tiny_spec("colors", tiny_llama, epochs=2), base_ref=folder_ref(tiny_llama),
                         train_file=data, eval_file=None, out_dir=out, work_dir=root / "work",
                         on_progress=progress.append, data_hash="sha256:abc", native_build=native_build)
    return SimpleNamespace(out=out, meta=meta, progress=progress, root=root)


# --- a finished run ------------------------------------------------------------------------------


def test_a_run_writes_exactly_the_adapter_folder(trained):
    assert sorted(p.name for p in trained.out.iterdir()) == sorted(ADAPTER_FILES)
    assert [p.name for p in trained.out.parent.iterdir()] == ["colors"]  # no temp folder left
    assert read_meta(trained.out) == trained.meta


def test_tunelab_json_records_the_run(trained, tiny_llama):
    meta = trained.meta
    assert (meta["name"], meta["goal"], meta["status"], meta["verdict"]) == ("colors", "say the color", "done", None)
    assert meta["base"] == {"spec": str(tiny_llama), "name": tiny_llama.name, "kind": "folder"}
    assert meta["data_hash"] == "sha256:abc" and meta["hyperparameters"]["train"]["epochs"] == 2
    metrics = meta["metrics"]
    assert metrics["device"] == "cpu" and metrics["precision"] in ("bf16", "fp32")  # 'auto': the CPU decides
    assert metrics["answer_tokens"] > 0 and metrics["tokens_per_s"] > 0 and metrics["eval_loss"] is not None
    assert metrics["resumed_from_step"] == 0 and metrics["examples"] + metrics["eval_examples"] == 16
    steps = [h["step"] for h in meta["loss_history"] if h["loss"] is not None]
    assert steps == list(range(1, metrics["steps"] + 1))


def test_progress_is_reported_from_the_start_to_every_step(trained):
    first, *rest = trained.progress
    steps = trained.meta["metrics"]["steps"]
    assert first["step"] == 0 and first["resumed_from"] == 0 and first["total_steps"] == steps
    losses = [p for p in rest if p["loss"] is not None]
    assert [p["step"] for p in losses] == list(range(1, steps + 1))
    assert all(p["total_steps"] == steps and p["tokens_per_s"] > 0 and p["eta_s"] >= 0 for p in losses)
    assert any(p["eval_loss"] is not None for p in rest)


def test_the_checkpoints_stay_in_the_work_dir_for_a_resume(trained):
    assert list((trained.root / "work" / "checkpoints").glob("checkpoint-*"))


def test_a_short_run_has_no_warmup_step_at_rate_zero(trained):
    import json

    # 6 steps at the default 3% warmup: 0.18 of a step, rounded down to none (transformers
    # would round it up to one step at rate 0, which learns nothing)
    last = last_checkpoint(trained.root / "work")
    rates = [log["learning_rate"] for log in json.loads((last / "trainer_state.json").read_text())["log_history"]
             if "learning_rate" in log]
    assert trained.meta["hyperparameters"]["train"]["warmup_ratio"] == 0.03 and len(rates) >= 2
    assert rates[0] == pytest.approx(trained.meta["hyperparameters"]["train"]["learning_rate"])
    assert rates == sorted(rates, reverse=True)  # straight into the linear decay


# --- runs that do not finish ---------------------------------------------------------------------


def test_cancel_writes_nothing(tiny_llama, settings, tmp_path):
    data = write_color_data(tmp_path / "data")
    out = settings.paths.ensure().adapters / "stopped"
    seen = []
    with pytest.raises(TrainingCancelled, match="cancelled at step 1"):
        train_adapter(tiny_spec("stopped", tiny_llama, epochs=20), base_ref=folder_ref(tiny_llama),
                      train_file=data, eval_file=None, out_dir=out, work_dir=tmp_path / "work",
                      on_progress=seen.append, should_stop=lambda: True)
    assert not out.exists()
    assert [p.name for p in settings.paths.adapters.iterdir()] == []  # no temp folder left either
    assert seen and seen[0]["step"] == 0 and seen[0]["total_steps"] > 1


def test_existing_adapter_refused_up_front(tiny_llama, settings, tmp_path):
    earlier = make_earlier_adapter(settings, tiny_llama, "taken")
    before = snapshot(earlier)
    with pytest.raises(AdapterExists, match="'taken' already exists"):
        train_adapter(tiny_spec("taken", tiny_llama), base_ref=folder_ref(tiny_llama),
                      train_file=write_color_data(tmp_path), eval_file=None, out_dir=earlier,
                      work_dir=tmp_path / "work")
    assert snapshot(earlier) == before
    assert sorted(before) == sorted(ADAPTER_FILES)


@pytest.mark.slow
def test_real_default_base_trains_a_few_steps(settings, tmp_path):
    """The real provisioning path (downloads/converts SmolLM2 once into the home)."""
    from peft import PeftModel

    from backend.bases.load import load_model

    ref = resolve_base("default", settings)
    data = write_color_data(tmp_path / "data", n=8)
    out = settings.paths.ensure().adapters / "smol"
    spec = RunSpec(name="smol", train={"epochs": 1, "batch_size": 4, "max_length": 64, "eval_fraction": 0})
    steps = []
    meta = train_adapter(spec, base_ref=ref, train_file=data, eval_file=None, out_dir=out,
                         work_dir=tmp_path / "work", on_progress=steps.append)
    assert sorted(p.name for p in out.iterdir()) == sorted(ADAPTER_FILES)
    assert meta["metrics"]["steps"] == 2 and meta["base"]["name"] == "SmolLM2-135M-Instruct"
    assert read_meta(out)["status"] == "done"
    assert PeftModel.from_pretrained(load_model(ref), out) is not None
    assert [s["step"] for s in steps if s.get("loss") is not None] == [1, 2]


def test_early_stopping_judges_each_epoch_stops_and_writes_the_best_weights(tiny_llama, native_build, tmp_path):
    """A rate far too high for the tiny model: the held-out loss stops falling, the run
    stops long before its 30-epoch ceiling, and the loss recorded is the best judged
    (restoring the best weights is checked in test_early_stop.py)."""
    data = write_color_data(tmp_path / "data")
    spec = tiny_spec("early", tiny_llama, epochs=30, learning_rate=5e-2, patience=1)
    meta = train_adapter(spec, base_ref=folder_ref(tiny_llama), train_file=data, eval_file=None,
                         out_dir=tmp_path / "adapters" / "early", work_dir=tmp_path / "work", native_build=native_build)
    metrics, stopping = meta["metrics"], meta["metrics"]["stopping"]
    per_epoch = -(-metrics["examples"] // 4)
    assert stopping["stopped_because"] == "the held-out loss stopped falling"
    assert metrics["steps"] < 30 * per_epoch and metrics["epochs_trained"] < 30
    evals = [(h["step"], h["eval_loss"]) for h in meta["loss_history"] if h["eval_loss"] is not None]
    assert [s for s, _ in evals][:2] == [per_epoch, 2 * per_epoch]  # once an epoch
    best_step, best = min(evals, key=lambda e: e[1])
    assert (stopping["best_step"], stopping["best_eval_loss"], metrics["eval_loss"]) == (best_step, best, best)


def test_a_run_whose_held_out_loss_settles_stops_there(tiny_llama, native_build, tmp_path):
    """``settled_loss`` set above any loss the tiny model can have: the first evaluation
    (one epoch) stops the run, said so in tunelab.json; without it the run goes on."""
    data = write_color_data(tmp_path / "data")
    spec = tiny_spec("settled", tiny_llama, epochs=4, settled_loss=9.0)
    meta = train_adapter(spec, base_ref=folder_ref(tiny_llama), train_file=data, eval_file=None,
                         out_dir=tmp_path / "adapters" / "settled", work_dir=tmp_path / "work",
                         native_build=native_build)
    metrics, stopping = meta["metrics"], meta["metrics"]["stopping"]
    per_epoch = -(-metrics["examples"] // 4)
    assert stopping["stopped_because"].startswith("the held-out answers were learned")
    assert stopping["settled_loss"] == 9.0 and metrics["steps"] == per_epoch == stopping["best_step"]
    assert meta["hyperparameters"]["train"]["settled_loss"] == 9.0


def test_answers_cut_off_by_max_length_are_a_clear_error(tiny_llama, native_build, tmp_path):
    from backend.errors import DataError

    data = write_color_data(tmp_path / "data")
    spec = tiny_spec("cut", tiny_llama, max_length=16, system_prompt="A long system prompt " * 10)
    with pytest.raises(DataError, match="max_length 16"):
        train_adapter(spec, base_ref=folder_ref(tiny_llama), train_file=data, eval_file=None,
                      out_dir=tmp_path / "adapters" / "cut", work_dir=tmp_path / "work", native_build=native_build)
    assert not (tmp_path / "adapters" / "cut").exists()
