"""The arena's Bradley–Terry ranking against hand-computed values and simulated raters."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from backend.studio.arena import Game, fit, games, ranking, win_probability

_ids = iter(range(1, 10**9))


def vote(comparison: str, model: str, score: int = 0, best: bool = False):
    return SimpleNamespace(id=next(_ids), comparison=comparison, model=model, score=score, best=best,
                           prompt="p", output=f"{model} answer", blind=False)


def played(wins: dict[tuple[str, str], int]) -> list[Game]:
    return [Game(w, l, f"{w}-{l}-{i}") for (w, l), n in wins.items() for i in range(n)]


def test_two_models_without_prior_is_the_log_odds():
    scores = fit(["a", "b"], played({("a", "b"): 3, ("b", "a"): 1}), prior=0)
    assert scores["a"] - scores["b"] == pytest.approx(math.log(3), abs=1e-6)
    assert scores["a"] + scores["b"] == pytest.approx(0, abs=1e-9)


def test_three_models_recover_exact_strengths_four_two_one():
    # wins chosen so the likelihood equations hold exactly at p = (4, 2, 1)
    outcomes = played({("a", "b"): 4, ("b", "a"): 2, ("a", "c"): 4, ("c", "a"): 1, ("b", "c"): 2, ("c", "b"): 1})
    scores = fit(["a", "b", "c"], outcomes, prior=0)
    assert scores["a"] - scores["b"] == pytest.approx(math.log(2), abs=1e-6)
    assert scores["b"] - scores["c"] == pytest.approx(math.log(2), abs=1e-6)


def test_a_chain_of_games_factorizes():
    scores = fit(["a", "b", "c"], played({("a", "b"): 2, ("b", "a"): 1, ("b", "c"): 3, ("c", "b"): 1}), prior=0)
    assert scores["a"] - scores["b"] == pytest.approx(math.log(2), abs=1e-6)
    assert scores["b"] - scores["c"] == pytest.approx(math.log(3), abs=1e-6)


def test_the_prior_keeps_an_unbeaten_model_finite_and_shrinks_toward_zero():
    outcomes = played({("a", "b"): 5})
    with_prior = fit(["a", "b"], outcomes, prior=0.5)
    assert math.isfinite(with_prior["a"]) and with_prior["a"] > with_prior["b"]
    stronger_prior = fit(["a", "b"], outcomes, prior=5)
    assert 0 < stronger_prior["a"] - stronger_prior["b"] < with_prior["a"] - with_prior["b"]
    assert fit(["a", "b", "idle"], outcomes)["idle"] == pytest.approx(0, abs=0.2)


def test_votes_become_games_best_beats_all_and_up_beats_down():
    rows = [vote("c1", "base", 1), vote("c1", "x", 1, best=True), vote("c1", "y", -1),
            vote("c2", "base", 1), vote("c2", "x", 1),  # both up: a tie, left out
            vote("c3", "base", -1), vote("c3", "y", 1),
            vote("c4", "x", -1), vote("c4", "x", 1), vote("c4", "y", -1)]  # the latest vote of x counts
    found = sorted((g.winner, g.loser, g.comparison) for g in games(rows))
    assert found == [("base", "y", "c1"), ("x", "base", "c1"), ("x", "y", "c1"), ("x", "y", "c4"),
                     ("y", "base", "c3")]


def test_simulated_rater_recovers_known_order_and_intervals_cover_truth():
    truth = {"base": 0.0, "weak": -1.0, "good": 1.0, "best": 2.0}
    rng = random.Random(7)
    rows = []
    names = sorted(truth)
    for c in range(400):
        a, b = rng.sample(names, 2)
        a_wins = rng.random() < win_probability(truth[a], truth[b])
        rows += [vote(f"s{c}", a, 1 if a_wins else -1), vote(f"s{c}", b, -1 if a_wins else 1)]
    result = ranking(rows, names, resamples=100)
    order = [r["name"] for r in result["rows"]]
    assert order == ["best", "good", "base", "weak"]
    centre = sum(truth.values()) / len(truth)
    for row in result["rows"]:
        lo, hi = row["ci95"]
        assert lo <= row["score"] <= hi
        assert lo - 0.1 <= truth[row["name"]] - centre <= hi + 0.1, row
    assert result["clear"] and result["leader"] == "best"
    assert "beats the others with 95% confidence after 800 votes" in result["summary"]


def test_few_votes_are_not_clear_and_name_the_next_pair():
    rows = [vote("c1", "x", 1), vote("c1", "base", -1), vote("c2", "y", 1), vote("c2", "base", -1)]
    result = ranking(rows, ["base", "x", "y", "z"])
    assert not result["clear"]
    by_name = {r["name"]: r for r in result["rows"]}
    assert by_name["z"]["votes"] == 0 and by_name["z"]["rank"] == 3  # unrated: between winners and loser
    assert by_name["base"]["rank"] == 4 and by_name["base"]["losses"] == 2
    assert result["next_pair"][0] == result["leader"]
    assert "not clearly yet" in result["summary"]
    again = ranking(rows, ["base", "x", "y", "z"])
    assert again["rows"] == result["rows"]  # fixed seed: the same votes give the same table


def test_no_votes():
    result = ranking([], ["base"])
    assert result["rows"][0]["name"] == "base" and result["rows"][0]["votes"] == 0
    assert result["games"] == 0 and "No votes yet" in result["summary"]


def test_preference_pairs_from_votes():
    from backend.studio.ratings import preference_pairs, trl_row, votes_needed

    rows = [vote("c1", "base", -1), vote("c1", "x", 1, best=True), vote("c1", "y", 0),
            vote("c2", "x", 1), vote("c2", "y", 1),                      # both up: no pair
            vote("c3", "y", -1)]                                        # same prompt, other comparison
    for r in rows:
        r.output = f"{r.model} said {r.comparison}"
    rows.append(vote("c4", "x", 1))
    rows.append(vote("c4", "base", -1))
    rows[-1].output = rows[-2].output = "identical"  # the same text both sides: left out
    pairs = preference_pairs(rows, system_of=lambda models: "Be brief." if "y" in models else None)
    got = sorted((p["chosen_model"], p["rejected_model"], p["system"]) for p in pairs)
    # c1 (system: y shown): x>base (up vs down), x>y (best beats unrated); c2 and c3 share the prompt "p"
    # and the system prompt: x (c1), x, y (c2) up vs base (c1), y (c3) down
    assert ("x", "base", "Be brief.") in got and ("x", "y", "Be brief.") in got
    assert ("y", "y", "Be brief.") in got  # y's answer in c2 voted up, its answer in c3 voted down
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    ids = {r.id for r in rows}
    assert all(set(p["rating_ids"]) <= ids for p in pairs)
    row = trl_row(pairs[0])
    assert row["prompt"][0] == {"role": "system", "content": "Be brief."} and row["chosen"][0]["role"] == "assistant"
    plain = trl_row({**pairs[0], "system": None})
    assert isinstance(plain["prompt"], str) and isinstance(plain["chosen"], str)
    assert "needs at least 8, so 5 more" in votes_needed(3)


def test_a_few_unanimous_votes_are_not_yet_clear_and_keep_a_real_interval():
    def unanimous(n):
        return [vote(f"u{n}-{i}", m, s) for i in range(n) for m, s in (("x", 1), ("base", -1))]

    few, many = ranking(unanimous(3), ["base", "x"]), ranking(unanimous(14), ["base", "x"])
    assert not few["clear"] and many["clear"]  # the bootstrap alone would call 3 of 3 certain
    lo, hi = few["rows"][0]["ci95"]
    assert hi - lo > 1.0  # not the bootstrap's single point
    assert many["rows"][1]["sure_leader_better"] > few["rows"][1]["sure_leader_better"]


def test_newton_and_mm_reach_the_same_maximum():
    rng = random.Random(3)
    names = ["base", "a", "b", "c", "never-rated"]
    outcomes = [Game(*rng.sample(names[:4], 2), f"c{i}") for i in range(60)] + played({("a", "b"): 4})
    by_mm = fit(names, outcomes, prior=0.5, method="mm", iterations=20000, tolerance=1e-13)
    by_newton = fit(names, outcomes, prior=0.5, method="newton", tolerance=1e-12)
    for name in names:
        assert by_newton[name] == pytest.approx(by_mm[name], abs=1e-6)
