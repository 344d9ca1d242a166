"""The studio's one wording of runs and proofs, shared by the assistant, the page and the CLI."""

from __future__ import annotations

from backend.adapter_folder import AdapterMeta
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.studio.describe import describe_job, progress_details, proof_lines, spec_line


def test_a_run_being_scored_says_so():
    scoring = {"job_id": 3, "adapter": "news", "status": "running", "phase": "scoring", "step": 40, "total_steps": 60}
    assert "scoring the adapter on the held-out rows" in describe_job(scoring)
    assert any("scoring" in part for part in progress_details(scoring))
    training = dict(scoring, phase="training", eta_s=75)
    assert "scoring" not in describe_job(training) and "1m 15s left" in progress_details(training)
    assert "served" not in describe_job(scoring) and "served" not in " ".join(progress_details(scoring))
    served = dict(scoring, served=True)  # the endpoint already serves it while it is scored
    assert "scoring the adapter on the held-out rows (already served: try it)" in describe_job(served)
    assert "served: try it in Compare or Chat" in progress_details(served)


def test_spec_line_says_what_the_run_will_do():
    spec = RunSpec(name="x", lora=LoraSpec(r=16, alpha=32),
                   train=TrainSpec(epochs=7, learning_rate=5e-4, batch_size=4, time_budget_s=600, system_prompt="Hi."))
    assert spec_line(spec) == ("LoRA r16 alpha 32, lr 0.0005, batch 4, up to 7 epochs, stopping when the held-out "
                               "loss stops falling (patience 2), at most 10 min of training, system prompt 'Hi.'")
    settled = spec.model_copy(update={"train": spec.train.model_copy(update={"settled_loss": 0.005})})
    assert "stops falling (patience 2) or reaches 0.005, at most" in spec_line(settled)


def test_proof_lines_give_the_figures_the_warning_and_the_suggestion():
    figure = {"correct": 29, "total": 30, "score": 29 / 30, "ci95": [0.8333, 0.9941]}
    base = {"correct": 13, "total": 30, "score": 13 / 30, "ci95": [0.27, 0.61]}
    proof = {"exact_match": {"k": 6, "base_zero_shot": base, "base_few_shot": base, "adapter": figure},
             "judged_by": {"rows": 30, "note": "from a separate evaluation file"},
             "changed_nothing": {"flag": False}, "forgetting": {"changed": 2, "total": 12},
             "verdict": {"suggestion": "beats_base", "text": "Beats the base."}}
    lines = proof_lines(AdapterMeta(proof=proof))
    assert lines[0] == ("exact match: base zero-shot 13/30 (43%, 95% CI 27%–61%); base 6-shot 13/30 (43%, 95% CI "
                        "27%–61%); adapter 29/30 (97%, 95% CI 83%–99%)")
    assert "judged on 30 rows from a separate evaluation file" in lines
    assert lines[-1] == "suggestion: Beats the base." and "2/12 everyday prompts" in lines[-2]
    nothing = dict(proof, changed_nothing={"flag": True, "reasons": ["B is zero"], "causes": ["lr too low"]})
    assert any(line.startswith("WARNING: it changed nothing measurable (B is zero)") for line in proof_lines(
        AdapterMeta(proof=nothing)))
    assert proof_lines(AdapterMeta.model_validate({"proof_error": "OOM"})) == ["proof failed: OOM"]
    assert proof_lines(AdapterMeta()) == []
