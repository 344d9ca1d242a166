"""The Train tab's cancel says what the job runner did: a queued run is cancelled at
once, a running one is stopping, a finished or unknown one is an error saying so —
never "stopping" for a run that was not running."""

from __future__ import annotations

import gradio as gr
import pytest

from ui.common import edge
from tests.builders import add_finished_adapter, exact_match_proof
from ui.train_panel import board_html, cancel_note, runs_html


def _job(service, name: str, status: str = "queued") -> int:
    job = service.store.add_job(name, {"spec": {"name": name}, "train_file": "/none.jsonl"}).id
    service.store.upsert_adapter(name, base="default", status=status, job_id=job)
    if status != "queued":
        service.store.update_job(job, status=status, pid=None)
    return job


def test_cancelling_a_queued_run_says_it_was_cancelled_not_stopping(service):
    job = _job(service, "queued-run")
    note = cancel_note(service, job)
    assert note.startswith(f"Job {job} was cancelled before it started.") and "stopping" not in note
    assert service.progress(job)["status"] == "cancelled"


def test_cancelling_a_running_run_says_it_is_stopping(service):
    job = _job(service, "busy-run", status="running")
    assert cancel_note(service, job).startswith(f"Job {job} is stopping")
    assert service.progress(job)["cancel_requested"]


@pytest.mark.parametrize("status", ["done", "failed", "cancelled"])
def test_cancelling_a_run_that_is_over_shows_the_error_on_the_page(service, status):
    job = _job(service, f"over-{status}", status=status)
    with pytest.raises(gr.Error, match=f"already {status}; there is nothing to cancel"):
        edge(cancel_note)(service, job)
    with pytest.raises(gr.Error, match="No job 404"):
        edge(cancel_note)(service, 404)


def test_runs_show_progress_losses_and_errors():
    rows = [{"job_id": 1, "adapter": "wine", "status": "running", "step": 3, "total_steps": 10, "loss": 1.23456,
             "eval_loss": None, "tokens_per_s": 99.6, "eta_s": 75, "error": None},
            {"job_id": 2, "adapter": "bad", "status": "failed", "step": 0, "total_steps": 0, "error": "<boom>"}]
    html = runs_html(rows)
    assert "step 3/10 · loss 1.235 · 100 tokens/s · 1m 15s left" in html
    assert "&lt;boom&gt;" in html and html.index("job 2") < html.index("job 1")  # newest first


# --- the leaderboard of the sweep, once its runs are over --------------------------------------------


def _sweep(service) -> list[int]:
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(27), size=2_000_000)
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29, ci=[0.83, 0.99]),
                         size=4_000_000)
    add_finished_adapter(service, "older", sweep="older", proof=exact_match_proof(3))
    return [service.store.get_adapter(n).job_id for n in ("news-r8", "news-r16")]


def test_the_board_ranks_the_sessions_sweep_once_its_runs_are_over(service):
    mine = _sweep(service)
    service.store.update_job(mine[0], status="running")
    waiting = board_html(service, service.jobs(), mine)
    assert "appears here when its runs are all over" in waiting and "<table" not in waiting

    service.store.update_job(mine[0], status="done")
    html = board_html(service, service.jobs(), mine)
    assert "Sweep news" in html and "older" not in html
    assert html.index("news-r16") < html.index("news-r8")  # best first
    best = html[html.index("<tr class='tl-best'"):]
    assert best.startswith("<tr class='tl-best' data-adapter='news-r16' data-recommended='true'><td>★</td>")
    assert "29/30 (97%, 95% CI 83–99%)" in html and "base 13/30 few-shot" in html and "4.0 MB" in html
    assert html.count("★</td>") == 1
    assert "★ news-r16 is best: 29/30 vs base 13/30 few-shot — highest held-out exact match of 2 runs" in html


def test_after_a_reload_the_board_shows_the_newest_finished_sweep(service):
    _sweep(service)
    html = board_html(service, service.jobs(), [])  # a new session: no runs of its own
    assert "Sweep older" in html and "news-r16" not in html


# --- the device choices: fit in memory, processes ---------------------------------------------------

LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192}


@pytest.fixture()
def planned(service, state):
    from backend.studio.tools import AssistantTools

    AssistantTools(service, state).set_goal("classify wine as red or white")
    return state


def test_without_a_gpu_processes_are_fixed_to_one_and_nothing_is_quantized(service, planned):
    from ui.train_panel import apply_device_choices, fit_control, processes_control

    device = service.train_device(planned.plan, planned.base)  # this machine: a CPU
    assert device["gpus"] == 0 and device["quantize_offer"] is None
    count = processes_control(device, planned.plan)
    assert (count.value, count.interactive) == (1, False) and "no GPU" in count.info
    assert fit_control(device, planned.plan).visible is False
    with pytest.raises(gr.Error, match="between 1 and 1: this machine has no GPU"):
        apply_device_choices(device, planned, "none", 2)
    with pytest.raises(gr.Error, match="fits in bf16 here"):
        apply_device_choices(device, planned, "4bit", 1)
    assert planned.plan.train.quantize is None and planned.plan.train.processes == 1


def test_a_base_too_big_for_the_gpu_is_offered_4bit_and_the_choices_go_on_the_plan(service, planned, tmp_path):
    import json

    from backend.training.recipe import GIB, DeviceFacts
    from ui.train_panel import NO_PLAN, apply_device_choices, fit_control, processes_control

    big = tmp_path / "llama-8b"
    big.mkdir()
    (big / "config.json").write_text(json.dumps(LLAMA_8B))
    two_t4 = DeviceFacts(kind="cuda", name="Tesla T4", total_memory=16 * GIB, bf16=False, count=2)
    device = service.train_device(planned.plan, str(big), facts=two_t4)
    assert device["gpus"] == 2 and device["quantize_offer"].startswith("the base does not fit in bf16 on Tesla T4")
    fit = fit_control(device, planned.plan)
    assert fit.visible is True and "--quantize 4bit would need ~" in fit.info and fit.value == "none"
    count = processes_control(device, planned.plan)
    assert (count.value, count.maximum, count.interactive) == (1, 2, True) and "2 GPUs visible" in count.info
    apply_device_choices(device, planned, "4bit", 2)
    assert (planned.plan.train.quantize, planned.plan.train.processes) == ("4bit", 2)
    assert fit_control(device, planned.plan).value == "4bit"  # the control shows the plan's choice
    with pytest.raises(gr.Error, match="Processes 3 is not between 1 and 2"):
        apply_device_choices(device, planned, "4bit", 3)
    small = service.train_device(planned.plan, planned.base, facts=two_t4)  # the tiny base fits: no offer
    assert small["quantize_offer"] is None and fit_control(small, planned.plan).visible is False
    planned.plan = None
    with pytest.raises(gr.Error, match=NO_PLAN.split(":")[0]):
        apply_device_choices(device, planned, "none", 1)
