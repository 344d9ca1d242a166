"""`tunelab ratings ...` and `tunelab train --method dpo` through typer's CliRunner on a fresh home."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from backend.cli import app
from backend.settings import Settings
from backend.studio.service import Service
from tests.builders import add_finished_adapter

runner = CliRunner()


def rate(*args: str):
    return runner.invoke(app, ["ratings", "add", *args])


def test_add_then_leaderboard_json_and_table(home):
    service = Service(Settings())
    add_finished_adapter(service, "news-r8")
    for i in range(4):
        assert rate("news-r8", "--prompt", f"q{i}", "--output", f"good {i}", "--score", "up",
                    "--comparison", f"c{i}").exit_code == 0
        result = rate("base", "--prompt", f"q{i}", "--output", f"bad {i}", "--score", "down", "--comparison", f"c{i}")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["score"] == -1
    result = runner.invoke(app, ["ratings", "leaderboard", "--json"])
    assert result.exit_code == 0, result.output
    board = json.loads(result.output)
    rows = {r["name"]: r for r in board["rows"]}
    assert set(rows) == {"base", "news-r8"}
    assert rows["news-r8"]["rank"] == 1 and rows["news-r8"]["votes"] == 4 and rows["base"]["votes"] == 4
    lo, hi = rows["news-r8"]["ci95"]
    assert lo <= rows["news-r8"]["score"] <= hi and rows["news-r8"]["score"] > rows["base"]["score"]
    table = runner.invoke(app, ["ratings", "leaderboard"])
    assert table.exit_code == 0 and "news-r8" in table.output and "95% CI" in table.output


def test_bad_ratings_are_refused_cleanly(home):
    result = rate("base", "--prompt", "q", "--output", "a", "--score", "meh")
    assert result.exit_code == 2 and "Error:" in result.output and "not up or down" in result.output
    result = rate("ghost", "--prompt", "q", "--output", "a", "--score", "up")
    assert result.exit_code == 2 and "No adapter named 'ghost'" in result.output


def test_export_writes_trl_pairs(home, tmp_path):
    service = Service(Settings())
    add_finished_adapter(service, "a1")
    rate("a1", "--prompt", "q", "--output", "yes", "--score", "up", "--comparison", "c")
    rate("base", "--prompt", "q", "--output", "no", "--score", "down", "--comparison", "c")
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["ratings", "export", "--format", "preference", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [("q", "yes", "no")]
    assert "a round needs at least 8, so 7 more" in result.output


def test_train_dpo_refuses_too_few_pairs_and_a_missing_from(home, tmp_path, tiny_llama):
    service = Service(Settings())
    add_finished_adapter(service, "a1")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "yes", "rejected": "no"}) + "\n")
    result = runner.invoke(app, ["train", "--data", str(pairs), "--method", "dpo", "--from", "a1", "--name", "a1-dpo"])
    assert result.exit_code == 2 and "1 preference pair " in result.output and "7 more" in result.output
    result = runner.invoke(app, ["train", "--data", str(pairs), "--method", "dpo", "--name", "a1-dpo"])
    assert result.exit_code == 2 and "--method dpo, kto or auto --from ADAPTER" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "same", "rejected": "same"}) + "\n")
    result = runner.invoke(app, ["train", "--data", str(bad), "--method", "dpo", "--from", "a1", "--name", "x"])
    assert result.exit_code == 2 and "same text" in result.output and "line 1" in result.output


def test_train_dpo_queues_a_round_from_a_pairs_file(home, tmp_path):
    service = Service(Settings())
    add_finished_adapter(service, "a1")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n"
                             for i in range(8)))
    result = runner.invoke(app, ["train", "--data", str(pairs), "--method", "dpo", "--from", "a1", "--name", "a1-dpo",
                                 "--lr", "1e-4", "--detach"])
    assert result.exit_code == 0, result.output
    job = service.store.list_jobs()[-1]
    spec = job.request["spec"]
    assert (spec["method"], spec["parent"], spec["train"]["learning_rate"]) == ("dpo", "a1", 1e-4)
    assert spec["train"]["early_stopping"] is False
    assert job.sweep == "a1"  # ranked in its parent's sweep on the Adapters leaderboard
    lines = open(job.request["train_file"]).read().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["prompt"] == [{"role": "user", "content": "q0"}]


def test_data_check_reads_a_preference_file_line_by_line(home, tmp_path):
    good = tmp_path / "pairs.jsonl"
    good.write_text(json.dumps({"prompt": "q", "chosen": "yes", "rejected": "no"}) + "\n")
    result = runner.invoke(app, ["data", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "1 preference pair ready." in result.output and "7 more" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "yes"}) + "\n"
                   + json.dumps({"prompt": "q", "chosen": "", "rejected": "no"}) + "\n")
    result = runner.invoke(app, ["data", "check", str(bad), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [(p["line"], p["code"], p["field"]) for p in report["problems"]] == [
        (1, "missing_field", "rejected"), (2, "empty_text", "chosen")]


def test_export_unpaired_writes_one_trl_row_per_vote(home, tmp_path):
    service = Service(Settings())
    add_finished_adapter(service, "a1")
    rate("a1", "--prompt", "q", "--output", "yes", "--score", "up", "--comparison", "c")
    rate("a1", "--prompt", "r", "--output", "no", "--score", "down", "--comparison", "d")
    out = tmp_path / "votes.jsonl"
    result = runner.invoke(app, ["ratings", "export", "--format", "unpaired", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"prompt": "q", "completion": "yes", "label": True, "rating_ids": [1]},
                    {"prompt": "r", "completion": "no", "label": False, "rating_ids": [2]}]
    assert "2 votes (1 👍, 1 👎) from 2 ratings" in result.output and "so 14 more" in result.output
    result = runner.invoke(app, ["data", "check", str(out)])
    assert result.exit_code == 0 and "2 unpaired votes (1 👍, 1 👎) ready." in result.output
    result = runner.invoke(app, ["ratings", "export", "--format", "kto"])
    assert result.exit_code == 2 and "--format unpaired" in result.output


def test_train_kto_from_a_votes_file_and_auto_from_the_stored_ratings(home, tmp_path):
    service = Service(Settings())
    add_finished_adapter(service, "a1")
    votes = tmp_path / "votes.jsonl"
    votes.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"answer {i}", "label": i % 3 != 0}) + "\n"
                             for i in range(16)))
    result = runner.invoke(app, ["train", "--data", str(votes), "--method", "kto", "--from", "a1", "--name", "a1-kto",
                                 "--beta", "0.2", "--undesirable-weight", "2", "--detach"])
    assert result.exit_code == 0, result.output
    assert "KTO on 16 single votes (10 👍, 6 👎), as asked." in " ".join(result.output.split())  # rich wraps
    spec = service.store.list_jobs()[-1].request["spec"]
    assert (spec["method"], spec["parent"], spec["train"]["beta"], spec["train"]["undesirable_weight"]) == (
        "kto", "a1", 0.2, 2.0)

    for i in range(3):  # no --data: the stored ratings, which make 3 pairs and 6 single votes
        rate("a1", "--prompt", f"p{i}", "--output", f"good {i}", "--score", "up", "--comparison", f"c{i}")
        rate("base", "--prompt", f"p{i}", "--output", f"bad {i}", "--score", "down", "--comparison", f"c{i}")
    result = runner.invoke(app, ["train", "--method", "auto", "--from", "a1", "--name", "a1-auto", "--detach"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "3 preference pairs" in said and "6 single votes (3 👍, 3 👎)" in said
    result = runner.invoke(app, ["train", "--method", "sft", "--name", "x"])
    assert result.exit_code == 2 and "--data is missing" in result.output
