"""The sweep's leaderboard from known records: the order, the tie-break, rows without a
score, and the words each row and the recommendation are shown with."""

from __future__ import annotations

from backend.studio.leaderboard import Record, best_line, by_sweep, leaderboard, rank_sweep, sweep_summary
from tests.builders import add_finished_adapter, exact_match_proof


def _part(correct: int, total: int, ci=None) -> dict:
    return {"correct": correct, "total": total, "score": correct / total, "ci95": ci}


def _em(correct: int, total: int = 30, *, ci=None, base_few=(13, 30), suggestion="beats_base") -> dict:
    return {"task": "classification",
            "exact_match": {"k": 6, "base_zero_shot": _part(4, total), "base_few_shot": _part(*base_few),
                            "adapter": _part(correct, total, ci)},
            "verdict": {"suggestion": suggestion, "text": "..."}}


def _rec(name, proof=None, *, sweep="news", size=1_000_000, seconds=60.0, eval_loss=None) -> Record:
    metrics = {"train_seconds": seconds} if seconds is not None else {}
    if eval_loss is not None:
        metrics["eval_loss"] = eval_loss
    return Record(name=name, sweep=sweep, proof=proof, metrics=metrics, size_bytes=size)


def test_the_best_exact_match_leads_and_is_recommended_with_its_interval_and_base():
    rows = rank_sweep([_rec("news-r4", _em(20)), _rec("news-r16", _em(29, ci=[0.83, 0.99]), size=4_000_000),
                       _rec("news-r8", _em(27))])
    assert [r["name"] for r in rows] == ["news-r16", "news-r8", "news-r4"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    best = rows[0]
    assert best["recommended"] and not any(r["recommended"] for r in rows[1:])
    assert best["score_text"] == "29/30 (97%, 95% CI 83–99%)"
    assert best["base_text"] == "base 13/30 few-shot"
    assert best["why"] == "highest held-out exact match of 3 runs (next: news-r8 27/30)"
    assert best["verdict"] == "beats_base" and best["size_text"] == "4.0 MB" and best["train_text"] == "1m 00s"
    assert best_line(rows) == ("news-r16 is best: 29/30 vs base 13/30 few-shot — highest held-out exact match "
                               "of 3 runs (next: news-r8 27/30).")


def test_a_tie_goes_to_the_smaller_adapter_then_the_faster_one_then_the_name():
    rows = rank_sweep([_rec("big", _em(29), size=8_000_000, seconds=10), _rec("small", _em(29), size=2_000_000,
                                                                              seconds=90)])
    assert [r["name"] for r in rows] == ["small", "big"]
    assert rows[0]["why"] == "ties big at 29/30; smaller adapter (2.0 MB vs 8.0 MB)"

    rows = rank_sweep([_rec("slow", _em(29), seconds=90), _rec("fast", _em(29), seconds=30)])
    assert [r["name"] for r in rows] == ["fast", "slow"]
    assert rows[0]["why"] == "ties slow at 29/30; same size, faster to train (30 s vs 1m 30s)"

    rows = rank_sweep([_rec("b", _em(29)), _rec("a", _em(29))])
    assert [r["name"] for r in rows] == ["a", "b"] and rows[0]["why"].endswith("first by name")


def test_a_higher_share_beats_a_smaller_faster_adapter_and_ties_are_equal_counts_only():
    rows = rank_sweep([_rec("tiny", _em(28), size=1, seconds=1), _rec("huge", _em(29), size=10**9, seconds=999)])
    assert rows[0]["name"] == "huge" and "highest" in rows[0]["why"]


def test_rows_without_a_score_are_listed_last_and_never_recommended():
    rows = rank_sweep([_rec("bare", None, size=1, seconds=1), _rec("scored", _em(10))])
    assert [r["name"] for r in rows] == ["scored", "bare"]
    assert rows[1]["score_text"] == "not measured yet" and not rows[1]["recommended"]
    assert rows[0]["why"] == "the only run of 2 with a held-out exact match"

    alone = rank_sweep([_rec("bare", {"task": "chat"}, seconds=None, size=None)])
    assert len(alone) == 1 and not alone[0]["recommended"] and alone[0]["why"] == ""
    assert alone[0]["train_text"] == "?" and alone[0]["size_text"] == "?" and alone[0]["verdict"] is None
    assert best_line(alone) is None
    assert "none with a measured score" in sweep_summary("news", alone)
    assert "nothing to rank" in sweep_summary("news", [])


def test_an_exact_match_outranks_an_eval_loss_only_row_and_loss_ranks_lowest_first():
    rows = rank_sweep([_rec("loss-only", None, eval_loss=0.01), _rec("checked", _em(3))])
    assert [r["name"] for r in rows] == ["checked", "loss-only"]

    rows = rank_sweep([_rec("hi", {"eval": {"base": {"loss": 2.5}, "adapter": {"loss": 1.5}}}),
                       _rec("lo", {"eval": {"base": {"loss": 2.5}, "adapter": {"loss": 1.2}}})])
    assert [r["name"] for r in rows] == ["lo", "hi"]
    assert rows[0]["score_text"] == "eval loss 1.200" and rows[0]["base_text"] == "base loss 2.500"
    assert rows[0]["why"] == "lowest eval loss of 2 runs (next: hi eval loss 1.500)"
    # losses equal to 3 decimals tie: the smaller adapter wins
    rows = rank_sweep([_rec("x", None, eval_loss=1.23401, size=5), _rec("y", None, eval_loss=1.23449, size=3)])
    assert rows[0]["name"] == "y" and rows[0]["why"].startswith("ties x at eval loss 1.234")


def test_style_ranks_by_the_share_in_style_and_on_task_against_the_prompted_base():
    def style(both):
        return {"task": "style", "style": {"base": {"both": _part(1, 20)}, "prompted": {"both": _part(5, 20)},
                                           "adapter": {"both": _part(both, 20, [0.48, 0.85])}}}

    rows = rank_sweep([_rec("s1", style(9)), _rec("s2", style(14))])
    assert rows[0]["name"] == "s2" and rows[0]["score_text"] == "14/20 (70%, 95% CI 48–85%) style+on task"
    assert rows[0]["base_text"] == "prompted base 5/20"
    assert best_line(rows).startswith("s2 is best: 14/20 in style and on task vs prompted base 5/20 — ")


def test_a_single_run_sweep_is_recommended_and_a_no_better_proof_is_said():
    rows = rank_sweep([_rec("solo", _em(14, base_few=(13, 30), suggestion="no_better"))])
    assert rows[0]["recommended"]
    assert rows[0]["why"] == ("the only run of its sweep, measured by held-out exact match; "
                              "but its proof says it does no better than the base")
    assert sweep_summary("solo", rows) == ("Sweep solo is over. solo is best: 14/30 vs base 13/30 few-shot — the only "
                                           "run of its sweep, measured by held-out exact match; but its proof says "
                                           "it does no better than the base.")


def test_old_or_broken_proofs_do_not_break_the_board():
    old = {"exact_match": {"base_few_shot": _part(2, 10), "adapter_zero_shot": _part(8, 10)}}
    broken = {"exact_match": {"adapter": {"correct": "x", "total": 0}}, "eval": "nope", "verdict": "yes"}
    rows = rank_sweep([_rec("old", old), _rec("broken", broken), _rec("zero", _em(0, 1))])
    assert [r["name"] for r in rows] == ["old", "zero", "broken"]
    assert rows[0]["score_text"] == "8/10 (80%)" and rows[0]["base_text"] == "base 2/10 few-shot"
    assert rows[2]["measure"] is None and rows[2]["verdict"] is None


def test_the_board_groups_by_sweep_and_a_lone_adapter_is_its_own_sweep():
    rows = leaderboard([_rec("a-r4", _em(10), sweep="a"), _rec("lone", _em(5), sweep=None),
                        _rec("a-r8", _em(12), sweep="a")])
    groups = by_sweep(rows)
    assert list(groups) == ["a", "lone"]
    assert [r["name"] for r in groups["a"]] == ["a-r8", "a-r4"] and groups["lone"][0]["recommended"]
    assert sum(r["recommended"] for r in rows) == 2


# --- the service gathers the records from the store and the adapters' folders -----------------------


def test_the_service_ranks_finished_adapters_per_sweep_from_their_tunelab_json(service):
    add_finished_adapter(service, "news-r8", sweep="news", proof=exact_match_proof(27), size=2_000_000)
    add_finished_adapter(service, "news-r16", sweep="news", proof=exact_match_proof(29, ci=[0.83, 0.99]),
                         size=4_000_000)
    add_finished_adapter(service, "news-lr", sweep="news", proof=None)
    add_finished_adapter(service, "wine", proof=exact_match_proof(9, 10, base_few_shot=5))
    service.store.upsert_adapter("news-queued", base="default", status="queued")  # not finished: not ranked
    (service.paths.adapters / "news-lr" / "tunelab.json").write_text("{broken")  # listed, without a score

    rows = service.leaderboard()
    assert [(r["sweep"], r["name"]) for r in rows] == [("news", "news-r16"), ("news", "news-r8"),
                                                       ("news", "news-lr"), ("wine", "wine")]
    best = rows[0]
    assert best["recommended"] and best["score_text"] == "29/30 (97%, 95% CI 83–99%)"
    assert best["size_bytes"] == 4_000_000 and best["train_seconds"] == 60.0
    assert rows[2]["score_text"] == "not measured yet" and not rows[2]["recommended"]
    assert rows[3]["recommended"] and rows[3]["why"] == "the only run of its sweep, measured by held-out exact match"
    assert [r["name"] for r in service.leaderboard("news")] == ["news-r16", "news-r8", "news-lr"]
    assert service.leaderboard("nothing") == []
