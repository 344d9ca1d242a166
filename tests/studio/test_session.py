"""The session's tools against a temporary home: importing examples (and refusing a bad
upload without losing the data in place), and every tool from goal to export with the
real service, data doctor, job runner and serving endpoint (the tiny Llama as base)."""

from __future__ import annotations

from pathlib import Path

from backend.studio.assistant.rules import RuleAssistant
from backend.studio.session import BASE_CHOICE, SessionState
from backend.studio.tools import AssistantTools
from tests.builders import WINES, write_bad, write_wines


def test_add_examples_imports_and_renders_a_preview_with_the_chat_template(service, state, tmp_path):
    tools = AssistantTools(service, state)
    tools.set_goal("classify wine as red or white")
    result = tools.add_examples([str(write_wines(tmp_path / "in"))])
    assert result.ok, result.text
    assert state.n_examples == len(WINES) and Path(state.data_dir, "train.jsonl").is_file()
    assert state.data_files == ["wine.jsonl"] and state.data_hash
    assert len(state.data_preview) == 3 and "<|im_start|>user" in state.data_preview[0]
    assert "Deep ruby colour" in state.data_preview[0]
    # the plan is re-made for the data: defaults for 9 training rows, probes from the held-out rows,
    # the base scored on them before training
    assert "chosen for 9 training examples" in result.text and "3 held-out rows will judge" in result.text
    assert state.plan.train.batch_size == 4 and state.plan.train.early_stopping
    held_out = {m[-2]["content"] for m in service.data_facts(state.data_dir).held_out}
    assert set(state.plan.probe_prompts) <= held_out and state.plan.probe_prompts
    baseline = state.plan.baseline
    assert baseline["base_zero_shot"]["total"] == 3 and "Before training, the base gets" in result.text
    assert "3 rows held back" in state.plan.render_markdown()


def test_a_bad_upload_reports_lines_and_keeps_the_previous_data(service, state, tmp_path):
    tools = AssistantTools(service, state)
    assert tools.add_examples([str(write_wines(tmp_path / "in"))]).ok
    before = (state.data_dir, state.n_examples, state.data_hash)
    result = tools.add_examples([str(write_bad(tmp_path / "bad"))])
    assert not result.ok
    assert "bad.jsonl" in result.text and "line 2" in result.text
    assert "previous data (12 examples) is still in place" in result.text
    assert (state.data_dir, state.n_examples, state.data_hash) == before


def test_every_tool_from_goal_to_export_with_the_real_endpoint_and_runner(served, tmp_path):
    state = SessionState()  # base "": the settings' default, the base the endpoint serves
    tools = AssistantTools(served, state)
    assistant = RuleAssistant(tools)
    assert assistant.respond("classify wine as red or white with 1 run").ok
    assert assistant.respond("", files=[str(write_wines(tmp_path / "in"))]).ok

    reply = assistant.respond("go")
    assert reply.ok and state.job_ids == [1] and state.adapter_names == ["wine"]
    assert "Queued 1 run: wine (job 1)" in reply.text
    assert served.runner.run_pending() == [1]  # the background runner's work, run here
    status = assistant.respond("status")
    assert "job 1 wine: done" in status.text and "loss" in status.text
    assert served.models() == ["model", "wine"]  # hot-loaded the moment it finished

    # A second "go" trains under a free name instead of clashing with "wine".
    assert assistant.respond("go").ok and state.adapter_names == ["wine", "wine-2"]
    cancelled = tools.cancel_training()  # queued -> cancelled before it starts, and it says so
    assert cancelled.ok and f"Job {state.job_ids[-1]} was cancelled before it started" in cancelled.text
    assert "stopping" not in cancelled.text
    assert served.progress(state.job_ids[-1])["status"] == "cancelled"
    assert not tools.cancel_training().ok  # nothing left to cancel, and it says so
    finished = tools.cancel_training(1)  # a finished run is not "asked to stop": it says it is done
    assert not finished.ok and "already done" in finished.text

    reply = assistant.respond('compare "Pale straw, crisp, green apple and citrus."')
    assert reply.ok, reply.text
    compared = state.comparison
    assert [a.model for a in compared.answers] == ["model", "wine"] and not compared.blind
    assert "**Base**:" in reply.text and "**wine**:" in reply.text
    assert assistant.respond("wine 👍").ok
    assert assistant.respond("base 👎").ok
    tally = served.tallies()["wine"]
    assert (tally["up"], tally["comparisons_with_base"], tally["win_rate_vs_base"]) == (1, 1, 1.0)
    rows = served.store.ratings()
    assert {(r.model, r.score, r.prompt) for r in rows} == {
        ("wine", 1, compared.prompt), ("base", -1, compared.prompt)}
    assert all(r.output == a.text for r in rows for a in compared.answers if (a.model == "wine") == (r.model == "wine"))

    blind = tools.compare(None, ["wine"], blind=True)  # default prompt: the plan's first probe
    assert blind.ok and state.comparison.prompt == state.plan.probe_prompts[0]
    assert {a.label for a in state.comparison.answers} == {"Answer A", "Answer B"} and not state.revealed
    assert "- **Answer A**:" in blind.text and "- **Answer B**:" in blind.text
    assert "- **Base**:" not in blind.text and "- **wine**:" not in blind.text  # names hidden until rated
    assert tools.rate("A", score=1, best=True).ok and state.revealed

    reply = assistant.respond("mark wine success")
    assert reply.ok and "Marked wine as success" in reply.text and "win rate vs base" in reply.text
    assert served.adapter("wine")["verdict"] == "success"

    assert assistant.respond("use wine").ok and state.chat_model == "wine"
    assert not tools.use_adapter("wine-2").ok  # cancelled: not ready to chat with
    assert assistant.respond("use base").ok and state.chat_model == BASE_CHOICE
    assert served.chat("wine", [{"role": "user", "content": "hi"}], max_tokens=4) is not None

    dest = served.settings.home / "export"  # the page and the assistant export only inside the home
    reply = assistant.respond(f"export wine to {dest}")
    assert reply.ok and (dest / "adapter_config.json").is_file() and (dest / "tunelab.json").is_file()
    assert not tools.export("wine", str(dest)).ok  # not empty any more: refused, not overwritten
    assert "wine: done" in tools.list_adapters().text
