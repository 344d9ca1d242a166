"""The `tunelab` command driven through typer's CliRunner against a temporary home."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from backend.cli import app
from tests.builders import add_finished_adapter, exact_match_proof

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_data_check_good_file_exits_zero_with_stats(home, tiny_llama, tmp_path):
    data = tmp_path / "wine.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"wine {i} ruby"}, {"role": "assistant", "content": "red"}]}
            for i in range(12)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    result = _run("data", "check", data, "--base", tiny_llama)
    assert result.exit_code == 0, result.output
    assert "Examples: 12" in result.output


def test_data_check_bad_file_exits_one_naming_line_and_field(home, tiny_llama, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}) + "\n"
        + "{not json\n"
        + json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n"
    )
    result = _run("data", "check", data, "--base", tiny_llama)
    assert result.exit_code == 1, result.output
    assert "line 2" in result.output and "line 3" in result.output
    assert "robot" in result.output


def test_data_check_json_output(home, tiny_llama, tmp_path):
    data = tmp_path / "pairs.csv"
    data.write_text("input,output\n" + "\n".join(f"text {i},label{i % 2}" for i in range(10)))
    result = _run("data", "check", data, "--base", tiny_llama, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["stats"]["examples"] == 10 and report["formats"]


def test_bad_base_is_a_readable_error_not_a_traceback(home, tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text("{}\n")
    result = _run("data", "check", data, "--base", tmp_path / "missing.gguf")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_adapters_show_unknown_lists_known(home):
    result = _run("adapters", "show", "nope")
    assert result.exit_code == 2
    assert "No adapter named 'nope'" in result.output and "none yet" in result.output


def test_empty_lists_say_how_to_train_a_first_adapter_on_a_shipped_sample(home):
    """A new home has no adapters and no jobs: each list says so and gives a command that
    trains one, on a sample file that exists, instead of an empty table."""
    from pathlib import Path

    for command, nothing in (("adapters", "No adapters yet."), ("jobs", "No training jobs yet.")):
        result = _run(command, "list")
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert said.startswith(nothing) and "┏" not in result.output  # no empty table
        data = said.split("--data ", 1)[1].split(" --name ")[0]
        assert Path(data).is_file() and said.endswith("--name wine")


def test_bases_list_shows_default(home):
    result = _run("bases", "list")
    assert result.exit_code == 0 and "SmolLM2-135M-Instruct" in result.output


@pytest.mark.slow
def test_pull_default_prints_folder_last_and_is_idempotent(home):
    first = _run("bases", "pull-default")
    assert first.exit_code == 0, first.output
    folder = first.output.strip().splitlines()[-1]
    second = _run("bases", "pull-default")
    assert second.output.strip() == folder


def test_inspect_prints_weight_points_and_lora_cost(home, tiny_llama):
    result = _run("inspect", tiny_llama, "--rank", "4")
    assert result.exit_code == 0, result.output
    assert "self_attn.q_proj" in result.output and "mlp.down_proj" in result.output
    # all-linear r4 on 2 layers: q(64+64)+k(64+32)+v(64+32)+o(64+64)+gate(64+128)+up(64+128)+down(128+64)
    assert f"{4 * 2 * (128 + 96 + 96 + 128 + 192 + 192 + 192):,}" in result.output


def test_inspect_json(home, tiny_gpt2):
    result = _run("inspect", tiny_gpt2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["num_layers"] == 2 and any("c_attn" in str(m) for m in report["module_kinds"])


def _wine_file(tmp_path, n=12):
    data = tmp_path / "wine.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"{'ruby cherry' if i % 2 else 'straw citrus'} {i}"},
                          {"role": "assistant", "content": "red" if i % 2 else "white"}]} for i in range(n)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return data


def test_train_end_to_end_writes_the_adapter_and_lists_it(home, tiny_llama, tmp_path):
    result = _run("train", "--data", _wine_file(tmp_path), "--base", tiny_llama, "--name", "wine",
                  "--epochs", "1", "--batch-size", "4", "--max-length", "128", "--goal", "wine colour")
    assert result.exit_code == 0, result.output
    assert "done" in result.output and "wine" in result.output
    folder = home / "adapters" / "wine"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                        "tunelab.json"]
    meta = json.loads((folder / "tunelab.json").read_text())
    assert meta["goal"] == "wine colour" and meta["hyperparameters"]["train"]["epochs"] == 1.0
    # defaults chosen from the data where no knob was set; the plan's system prompt lists the labels
    train = meta["hyperparameters"]["train"]
    assert train["early_stopping"] and train["learning_rate"] == 5e-4 and meta["hyperparameters"]["lora"]["r"] == 16
    assert "white" in train["system_prompt"] and "red" in train["system_prompt"]
    # the base was scored before training and the adapter after, on the same 3 held-out rows
    assert "Before training, the base gets" in result.output and "suggestion:" in result.output
    em = meta["proof"]["exact_match"]
    assert {k: em[k]["total"] for k in ("base_zero_shot", "base_few_shot", "adapter")} == dict.fromkeys(
        ("base_zero_shot", "base_few_shot", "adapter"), 3)
    assert all(len(em[k]["ci95"]) == 2 for k in ("base_zero_shot", "base_few_shot", "adapter"))
    assert meta["proof"]["verdict"]["suggestion"] in ("too_few_rows", "changed_nothing")  # 3 rows decide nothing
    listing = _run("adapters", "list")
    assert "wine" in listing.output and "done" in listing.output
    marked = _run("adapters", "mark", "wine", "success")
    assert marked.exit_code == 0
    assert json.loads(_run("adapters", "show", "wine").output)["verdict"] == "success"
    again = _run("train", "--data", _wine_file(tmp_path), "--base", tiny_llama, "--name", "wine")
    assert again.exit_code == 2 and "already exists" in again.output


def test_train_with_bad_data_imports_nothing(home, tiny_llama, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = _run("train", "--data", data, "--base", tiny_llama, "--name", "bad")
    assert result.exit_code == 2
    assert "line 1" in result.output
    uploads = home / "datasets" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert not (home / "adapters" / "bad").exists()


def _held_out_file(tmp_path, n=5):
    data = tmp_path / "held.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"garnet plum {i}"}, {"role": "assistant", "content": "red"}]}
            for i in range(n)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return data


def test_data_check_with_an_evaluation_file_says_it_judges(home, tiny_llama, tmp_path):
    result = _run("data", "check", _wine_file(tmp_path), "--eval-data", _held_out_file(tmp_path),
                  "--base", tiny_llama, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["stats"]["train"], report["stats"]["eval"]) == (12, 5)
    assert report["stats"]["split"]["note"] == "from your evaluation file held.jsonl"
    plain = _run("data", "check", _wine_file(tmp_path), "--base", tiny_llama)
    assert "Judged on 3 rows held back from the training file: they share its phrasings" in plain.output


def test_train_with_an_evaluation_file_queues_a_run_judged_on_it(home, tiny_llama, tmp_path):
    result = _run("train", "--data", _wine_file(tmp_path), "--eval-data", _held_out_file(tmp_path),
                  "--base", tiny_llama, "--name", "wine", "--detach")
    assert result.exit_code == 0, result.output
    assert "Judged on 5 rows from your evaluation file held.jsonl" in result.output
    [folder] = (home / "datasets" / "uploads").iterdir()
    assert len((folder / "train.jsonl").read_text().splitlines()) == 12
    assert "garnet plum 4" in (folder / "eval.jsonl").read_text()


def test_train_with_a_bad_evaluation_file_imports_and_queues_nothing(home, tiny_llama, tmp_path):
    bad = tmp_path / "held.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n')
    result = _run("train", "--data", _wine_file(tmp_path), "--eval-data", bad, "--base", tiny_llama,
                  "--name", "wine", "--detach")
    assert result.exit_code == 2
    assert "held.jsonl" in result.output and "line 1" in result.output and "line 2" in result.output
    assert "nothing was imported" in result.output and "Queued" not in result.output
    uploads = home / "datasets" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    missing = _run("train", "--data", _wine_file(tmp_path), "--eval-data", tmp_path / "nope.jsonl",
                   "--base", tiny_llama, "--name", "wine", "--detach")
    assert missing.exit_code == 2 and "nope.jsonl" in missing.output and "does not exist" in missing.output
    assert _run("jobs", "list").output.startswith("No training jobs yet.")  # nothing queued


def test_train_with_invalid_knob_names_the_setting(home, tiny_llama, tmp_path):
    result = _run("train", "--data", _wine_file(tmp_path), "--base", tiny_llama, "--name", "x", "--lr", "5")
    assert result.exit_code == 2 and "learning_rate" in result.output


def test_jobs_list_and_cancel_say_what_the_runner_did(settings):
    from backend.studio.service import Service

    service = Service(settings)
    job = service.store.add_job("queued-run", {"spec": {"name": "queued-run"}, "train_file": "/none.jsonl"}).id
    service.store.upsert_adapter("queued-run", base="default", status="queued", job_id=job)
    service.close()
    listed = _run("jobs", "list")
    assert listed.exit_code == 0, listed.output
    assert "queued-run" in listed.output and "queued" in listed.output
    cancelled = _run("jobs", "cancel", job)
    assert cancelled.exit_code == 0 and f"Job {job} was cancelled before it started." in cancelled.output
    again = _run("jobs", "cancel", job)
    assert again.exit_code == 2 and "already cancelled" in again.output and "Traceback" not in again.output
    unknown = _run("jobs", "cancel", 99)
    assert unknown.exit_code == 2 and "No job 99" in unknown.output


def test_adapters_list_shows_held_out_scores_and_marks_each_sweeps_recommended_adapter(settings, monkeypatch):
    from backend import cli
    from backend.studio.service import Service

    monkeypatch.setattr(cli.console, "width", 160)  # a wide terminal: one line per row
    service = Service(settings)
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(27), size=2_000_000)
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29, ci=[0.83, 0.99]),
                         size=4_000_000, train_seconds=41)
    add_finished_adapter(service, "news-bare", sweep="news")
    add_finished_adapter(service, "wine", proof=exact_match_proof(5, 10, base_few_shot=6, suggestion="no_better"))
    service.store.upsert_adapter("later", base="default", status="queued")
    service.mark("news-r8", "fail")
    service.close()

    result = _run("adapters", "list")
    assert result.exit_code == 0, result.output
    table, _, below = result.output.partition("★ = recommended in its sweep")
    stars = [line for line in table.splitlines() if "★" in line]
    assert len(stars) == 2 and "news-r16" in stars[0] and "wine" in stars[1]  # one per sweep, best first
    assert table.index("news-r16") < table.index("news-r8") < table.index("news-bare") < table.index("later")
    assert "29/30" in stars[0] and "97%" in table and "beats" in stars[0] and "41 s" in stars[0]
    assert "fail" in table and "queued" in table and "not measured" in table
    assert below.strip().splitlines() == [
        "★ sweep news: news-r16 is best: 29/30 vs base 13/30 few-shot — highest held-out exact match of 2 runs "
        "(next: news-r8 27/30).",
        "★ sweep wine: wine is best: 5/10 vs base 6/10 few-shot — the only run of its sweep, measured by held-out "
        "exact match; but its proof says it does no better than the base.",
    ]


def test_a_table_with_other_column_names_is_read_by_the_columns_given_on_the_command_line(home, tiny_llama,
                                                                                          tmp_path):
    from tests.builders import write_support_emails

    emails = write_support_emails(tmp_path / "in")
    refused = _run("data", "check", emails, "--base", tiny_llama)
    assert refused.exit_code == 1 and "--input-column / --output-column" in refused.output  # the CLI's words
    assert "Import with these columns" not in refused.output
    checked = _run("data", "check", emails, "--base", tiny_llama, "--input-column", "email", "--output-column", "label")
    assert checked.exit_code == 0, checked.output
    assert "48 usable examples, 0 errors" in checked.output and "Labels: billing 16 · bug 16 · other 16" in checked.output
    trained = _run("train", "--data", emails, "--input-column", "email", "--output-column", "label",
                   "--base", tiny_llama, "--name", "emails", "--detach", "--goal", "write in a calm tone")
    assert trained.exit_code == 0, trained.output
    [folder] = (home / "datasets" / "uploads").iterdir()
    assert '"content": "billing"' in (folder / "train.jsonl").read_text() + (folder / "eval.jsonl").read_text()
