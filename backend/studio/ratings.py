"""Ratings: what people thought of each answer, and the tallies shown beside the
success / fail buttons. People decide; this module only counts.

Win rate against base: within each comparison that showed the base and an adapter,
the adapter "wins" when it was picked best, or rated 👍 while the base was not, and
"loses" in the mirror case; ties count half.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

BASE = "base"


@dataclass
class Tally:
    model: str
    ratings: int = 0
    up: int = 0
    down: int = 0
    best: int = 0
    comparisons_with_base: int = 0
    wins_vs_base: float = 0.0

    @property
    def win_rate_vs_base(self) -> float | None:
        if not self.comparisons_with_base:
            return None
        return self.wins_vs_base / self.comparisons_with_base

    def to_dict(self) -> dict:
        data = asdict(self)
        data["win_rate_vs_base"] = self.win_rate_vs_base
        return data


def _points(row) -> float:
    return (2.0 if row.best else 0.0) + float(row.score)


def tallies(rows) -> dict[str, Tally]:
    """Per-model tallies from rating rows (store.RatingRow-like objects)."""
    out: dict[str, Tally] = {}
    by_comparison: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        tally = out.setdefault(row.model, Tally(model=row.model))
        tally.ratings += 1
        tally.up += row.score > 0
        tally.down += row.score < 0
        tally.best += bool(row.best)
        by_comparison[row.comparison][row.model] = by_comparison[row.comparison].get(row.model, 0.0) + _points(row)
    for models in by_comparison.values():
        if BASE not in models:
            continue
        base_points = models[BASE]
        for model, points in models.items():
            if model == BASE:
                continue
            tally = out[model]
            tally.comparisons_with_base += 1
            tally.wins_vs_base += 1.0 if points > base_points else 0.5 if points == base_points else 0.0
    return out
