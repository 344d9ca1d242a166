"""The arena: every stored vote turned into a Bradley–Terry ranking of the base and every
adapter, with a 95% interval per model, and the pair whose next vote would tell the most.

Pure (no numpy, no store): it is handed rating rows (``store.RatingRow``-like objects with
``id``, ``comparison``, ``model``, ``score``, ``best``) and returns plain dicts; the service
gathers the rows (:meth:`backend.studio.service.Service.arena`), the page, the CLI and the
assistant show them.

How votes become games (:func:`games`), within one comparison (one prompt, several answers
shown together; a model's latest rating in it counts):

* an answer picked "Best" beats every other answer of that comparison not picked best;
* otherwise 👍 beats 👎;
* anything else (both 👍, both 👎, one unrated) is a tie and is left out.

The model (:func:`fit`): P(i beats j) = p_i / (p_i + p_j), fitted by Hunter's MM
(Zermelo) iterations. A small prior — every model has ``prior`` won and ``prior`` lost
games against a virtual opponent of strength 1 — keeps a model that never lost (or never
won) finite and pulls models with few votes toward the middle. A score is ln p, centred
so the models' mean is 0: a difference of 1 means odds of e ≈ 2.7 to 1.

Intervals (:func:`ranking`): the fit is repeated on ``resamples`` bootstrap resamples of
the comparisons (a comparison's games stay together), with a fixed seed, so the same
votes give the same table; ``ci95`` spans both the 2.5th–97.5th percentile of each score
and the Laplace approximation's ±1.96 sd (the bootstrap alone is a point when the votes
all agree), and ``p_best`` the share of resamples in which the model ranks first. How sure the leader is
better than another (``sure_leader_better``, which decides "clear") is the more doubtful
of the bootstrap's share and the Laplace approximation's Φ(difference / sd): the bootstrap
alone is certain after three unanimous votes, the curvature of the fit is not.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from backend.studio.ratings import latest_votes
from backend.words import counted

PRIOR = 0.5  # virtual games won and lost against a strength-1 opponent, per model
RESAMPLES = 200
SEED = 0
CONFIDENT = 0.95  # the winner is "clear" when it ranks first in this share of resamples


@dataclass(frozen=True)
class Game:
    """One pairwise outcome: ``winner`` beat ``loser`` in comparison ``comparison``."""

    winner: str
    loser: str
    comparison: str


def games(rows) -> list[Game]:
    """The pairwise outcomes of rating rows (the rule is in the module's docstring)."""
    found: list[Game] = []
    for comparison, by_model in latest_votes(rows).items():
        models = sorted(by_model)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                ra, rb = by_model[a], by_model[b]
                if bool(ra.best) != bool(rb.best):
                    winner, loser = (a, b) if ra.best else (b, a)
                elif ra.score * rb.score < 0:  # one 👍, the other 👎
                    winner, loser = (a, b) if ra.score > 0 else (b, a)
                else:
                    continue
                found.append(Game(winner, loser, comparison))
    return found


def fit(models: Iterable[str], outcomes: Iterable[Game], *, prior: float = PRIOR, iterations: int = 2000,
        tolerance: float = 1e-10, raw: bool = False, start: dict[str, float] | None = None,
        method: str = "auto") -> dict[str, float]:
    """Bradley–Terry scores (ln strength, mean 0) of ``models`` from ``outcomes``.

    ``prior`` 0 is the plain maximum-likelihood fit (finite only when every model has won
    and lost within a connected set of games); a model without games scores 0 under a prior.
    ``raw``: ln strengths against the prior's opponent, not centred. ``start``: raw ln
    strengths to start from (a bootstrap resample starts from the full fit). ``method``:
    "mm" (Hunter's MM, Zermelo's iterations), "newton" (Newton's method on the penalized
    log-likelihood, a few steps instead of hundreds; needs a prior), "auto": newton under a
    prior, else mm. Both reach the same maximum.
    """
    names = sorted(set(models) | {g.winner for g in outcomes} | {g.loser for g in outcomes})
    if not names:
        return {}
    wins: dict[str, float] = defaultdict(float)
    played: dict[tuple[str, str], float] = defaultdict(float)
    for g in outcomes:
        wins[g.winner] += 1.0
        pair = (g.winner, g.loser) if g.winner < g.loser else (g.loser, g.winner)
        played[pair] += 1.0
    opponents: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (a, b), n in played.items():
        opponents[a].append((b, n))
        opponents[b].append((a, n))
    if method == "newton" or (method == "auto" and prior > 0):
        logs = _newton(names, wins, played, prior, start or {}, tolerance)
        if raw:
            return logs
        centre = sum(logs.values()) / len(logs)
        return {k: v - centre for k, v in logs.items()}
    strength = {name: math.exp((start or {}).get(name, 0.0)) for name in names}
    for _ in range(iterations):
        change = 0.0
        for name in names:
            p = strength[name]
            denominator = sum(n / (p + strength[other]) for other, n in opponents[name])
            denominator += 2.0 * prior / (p + 1.0)
            numerator = wins[name] + prior
            if denominator <= 0 or numerator <= 0:
                continue  # no games and no prior: left where it is
            new = numerator / denominator
            change = max(change, abs(math.log(new) - math.log(p)))
            strength[name] = new
        if prior == 0:  # without the anchor the scale floats: pin the geometric mean
            shift = math.exp(sum(math.log(v) for v in strength.values()) / len(names))
            strength = {k: v / shift for k, v in strength.items()}
        if change < tolerance:
            break
    logs = {k: math.log(v) for k, v in strength.items()}
    if raw:
        return logs
    centre = sum(logs.values()) / len(logs)
    return {k: v - centre for k, v in logs.items()}


def _newton(names: list[str], wins: dict, played: dict, prior: float, start: dict, tolerance: float,
            steps: int = 100) -> dict[str, float]:
    """Raw ln strengths maximizing the penalized log-likelihood by Newton's method (each
    step at most 2 per score, so a far start cannot overshoot)."""
    if prior <= 0:
        raise ValueError("Newton's method needs a prior > 0 to fix the scale; use method='mm'.")
    theta = {n: start.get(n, 0.0) for n in names}
    index = {n: i for i, n in enumerate(names)}
    for _ in range(steps):
        grad = [wins.get(n, 0.0) + prior * (1 - 2 * _sigmoid(theta[n])) for n in names]
        for (a, b), n in played.items():
            p = _sigmoid(theta[a] - theta[b])
            grad[index[a]] -= n * p
            grad[index[b]] -= n * (1 - p)
        inverse = _inverse(_curvature(index, played, theta, prior))
        step = [sum(inverse[i][k] * grad[k] for k in range(len(names))) for i in range(len(names))]
        largest = max(abs(v) for v in step)
        scale = 1.0 if largest <= 2.0 else 2.0 / largest
        for n, i in index.items():
            theta[n] += scale * step[i]
        if largest < tolerance:
            break
    return theta


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def covariance(names: list[str], outcomes: list[Game], raw: dict[str, float], prior: float) -> list[list[float]]:
    """The Laplace approximation: the inverse of the penalized log-likelihood's curvature at
    the fit (``raw``: ln strengths against the prior's strength-1 opponent)."""
    played: dict[tuple[str, str], float] = defaultdict(float)
    for g in outcomes:
        played[(g.winner, g.loser)] += 1.0
    return _inverse(_curvature({n: i for i, n in enumerate(names)}, played, raw, max(prior, 1e-6)))


def _curvature(index: dict[str, int], played: dict[tuple[str, str], float], theta: dict[str, float],
               prior: float) -> list[list[float]]:
    """Minus the Hessian of the penalized log-likelihood at ``theta``: ``played`` counts the
    games of each pair (either order: p(1-p) is symmetric), the prior adds 2·prior·q(1-q)."""
    h = [[0.0] * len(index) for _ in index]
    for (a, b), n in played.items():
        i, j = index[a], index[b]
        p = _sigmoid(theta[a] - theta[b])
        w = n * p * (1 - p)
        h[i][i] += w
        h[j][j] += w
        h[i][j] -= w
        h[j][i] -= w
    for name, i in index.items():
        q = _sigmoid(theta[name])
        h[i][i] += 2 * prior * q * (1 - q)
    return h


def _inverse(m: list[list[float]]) -> list[list[float]]:
    """Gauss–Jordan inverse of a small symmetric positive definite matrix."""
    size = len(m)
    a = [row[:] + [1.0 if i == j else 0.0 for j in range(size)] for i, row in enumerate(m)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        scale = a[col][col]
        a[col] = [v / scale for v in a[col]]
        for r in range(size):
            if r != col and a[r][col]:
                factor = a[r][col]
                a[r] = [v - factor * c for v, c in zip(a[r], a[col])]
    return [row[size:] for row in a]


def sure_better(a: str, b: str, names: list[str], cov: list[list[float]], scores: dict[str, float]) -> float:
    """P(a's strength is above b's) under the Laplace approximation: Φ(difference / its sd)."""
    i, j = names.index(a), names.index(b)
    var = max(cov[i][i] + cov[j][j] - 2 * cov[i][j], 1e-12)
    return 0.5 * (1 + math.erf((scores[a] - scores[b]) / math.sqrt(2 * var)))


def win_probability(score_a: float, score_b: float) -> float:
    """P(a beats b) under Bradley–Terry."""
    return 1.0 / (1.0 + math.exp(score_b - score_a))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    at = q * (len(ordered) - 1)
    low = int(math.floor(at))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def ranking(rows, models: Iterable[str] = (), *, prior: float = PRIOR, resamples: int = RESAMPLES,
            seed: int = SEED) -> dict:
    """The arena's table from rating rows: every model of ``models`` and of the rows.

    Returns ``{"rows": [...], "games", "comparisons", "votes", "leader", "clear", "summary",
    "next_pair"}``; each row has ``name, rank, score, ci95, votes, wins, losses, p_best`` and
    ``p_leader_wins`` (the chance, under the fit, that the leader beats it; None for the
    leader), and ``sure_leader_better`` (the share of resamples where the leader scores above it).
    """
    rows = list(rows)
    outcomes = games(rows)
    names = sorted(set(models) | {r.model for r in rows})
    if not names:
        return {"rows": [], "games": 0, "comparisons": 0, "votes": 0, "leader": None, "clear": False,
                "summary": "No models and no votes yet.", "next_pair": None}
    scores = fit(names, outcomes, prior=prior)
    raw = fit(names, outcomes, prior=prior, raw=True)
    cov = covariance(names, outcomes, raw, prior)
    by_comparison: dict[str, list[Game]] = defaultdict(list)
    for g in outcomes:
        by_comparison[g.comparison].append(g)
    keys = sorted(by_comparison)
    rng = random.Random(seed)
    samples: list[dict[str, float]] = []
    if keys:
        for _ in range(resamples):
            drawn = [g for _ in keys for g in by_comparison[keys[rng.randrange(len(keys))]]]
            samples.append(fit(names, drawn, prior=prior, tolerance=1e-6, start=raw))
    else:
        samples = [scores]
    votes = defaultdict(int)
    for row in rows:
        votes[row.model] += 1
    wins, losses = defaultdict(int), defaultdict(int)
    for g in outcomes:
        wins[g.winner] += 1
        losses[g.loser] += 1
    order = sorted(names, key=lambda n: (-scores[n], n))
    leader = order[0]
    firsts = defaultdict(int)
    for sample in samples:
        firsts[max(names, key=lambda n: (sample[n], n == leader))] += 1
    size = len(names)
    total = sum(sum(row) for row in cov) / size ** 2
    table = []
    for rank, name in enumerate(order, 1):
        spread = [s[name] for s in samples]
        i = names.index(name)
        sd = math.sqrt(max(cov[i][i] - 2 * sum(cov[i]) / size + total, 0.0))  # of the centred score
        lo = min(_percentile(spread, 0.025), scores[name] - 1.96 * sd)
        hi = max(_percentile(spread, 0.975), scores[name] + 1.96 * sd)
        # how sure the leader is better: the more doubtful of the bootstrap (which is overconfident
        # when a few votes all agree) and the Laplace approximation (which is not)
        above = min(sum(1 for s in samples if s[leader] > s[name]) / len(samples),
                    sure_better(leader, name, names, cov, scores)) if name != leader else 1.0
        table.append({
            "name": name, "rank": rank, "score": round(scores[name], 4),
            "ci95": [round(lo, 4), round(hi, 4)],
            "votes": votes[name], "wins": wins[name], "losses": losses[name],
            "p_best": round(firsts[name] / len(samples), 4),
            "p_leader_wins": None if name == leader else round(win_probability(scores[leader], scores[name]), 4),
            "sure_leader_better": None if name == leader else round(above, 4),
        })
    others = [r for r in table[1:]]
    clear = bool(outcomes) and len(table) > 1 and all(r["sure_leader_better"] >= CONFIDENT for r in others)
    result = {"rows": table, "games": len(outcomes), "comparisons": len(keys), "votes": len(rows),
              "leader": leader if outcomes else None, "clear": clear}
    result["next_pair"] = next_pair(table) if len(table) > 1 else None
    result["summary"] = summary(result)
    return result


def next_pair(table: list[dict]) -> list[str] | None:
    """The two models whose next game would most shrink the doubt about the winner: the
    leader and the challenger it is least surely better than (fewer votes break a tie)."""
    if len(table) < 2:
        return None
    leader = table[0]
    challenger = min(table[1:], key=lambda r: (r["sure_leader_better"], r["votes"], r["rank"]))
    return [leader["name"], challenger["name"]]


def summary(result: dict) -> str:
    """One sentence: who leads and how sure, e.g. ``news-r16 beats the others with 95%
    confidence after 14 votes.``"""
    table = result["rows"]
    if not result["games"]:
        if result["votes"]:
            return (f"{counted(result['votes'], 'vote')}, but no pair decided yet: rate one answer 👍 and another 👎 "
                    "in the same comparison, or pick a best one.")
        return "No votes yet: compare answers and rate them (👍/👎 or Best) to rank the models."
    leader = table[0]
    if len(table) == 1:
        return f"{leader['name']} is the only model rated."
    if result["clear"]:
        return (f"{leader['name']} beats the others with {CONFIDENT:.0%} confidence after "
                f"{result['votes']} votes.")
    pair = result["next_pair"]
    challenger = next(r for r in table if r["name"] == pair[1])
    return (f"{leader['name']} leads after {result['votes']} votes, but not clearly yet: it scores above "
            f"{challenger['name']} in {challenger['sure_leader_better']:.0%} of resamples. "
            f"More votes on {pair[0]} vs {pair[1]} would tell the most.")


def table_lines(result: dict) -> list[str]:
    """The ranking as text lines (CLI, assistant)."""
    lines = []
    for row in result["rows"]:
        lo, hi = row["ci95"]
        versus = "" if row["p_leader_wins"] is None else f", leader wins {row['p_leader_wins']:.0%}"
        lines.append(f"{row['rank']}. {row['name']}: {row['score']:+.2f} (95% CI {lo:+.2f} to {hi:+.2f}), "
                     f"{row['votes']} votes, {row['wins']}W/{row['losses']}L{versus}")
    return lines
