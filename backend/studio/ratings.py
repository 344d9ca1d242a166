"""Ratings: what people thought of each answer, and the tallies shown beside the
success / fail buttons. People decide; this module only counts.

Win rate against base: within each comparison that showed the base and an adapter,
the adapter "wins" when it was picked best, or rated 👍 while the base was not, and
"loses" in the mirror case; ties count half.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

from backend.data.preference import MIN_EACH, MIN_PAIRS, MIN_VOTES, more_votes
from backend.words import counted

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


# --- preference pairs ----------------------------------------------------------------------------

def latest_votes(rows) -> dict[str, dict[str, object]]:
    """comparison -> model -> its latest rating row there (a changed vote replaces the first)."""
    out: dict[str, dict[str, object]] = defaultdict(dict)
    for row in sorted(rows, key=lambda r: getattr(r, "id", 0) or 0):
        out[row.comparison][row.model] = row
    return out


def preference_pairs(rows, system_of=lambda models: None) -> list[dict]:
    """Preference pairs from rating rows: for one prompt (and the system prompt it was asked
    behind, ``system_of(models of the comparison)``), every answer voted 👍 or picked best
    against every answer voted 👎, and a best answer against the others of its comparison.
    Each pair: ``prompt, system, chosen, rejected, chosen_model, rejected_model, rating_ids``
    ([chosen's id, rejected's id]); pairs whose two texts are the same are left out."""
    groups: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: {"up": [], "down": [], "beaten": []})
    for by_model in latest_votes(rows).values():
        shown = list(by_model.values())
        system = system_of(sorted(by_model)) or ""
        group = groups[(shown[0].prompt, system)]
        for row in shown:
            if row.best or row.score > 0:
                group["up"].append(row)
            elif row.score < 0:
                group["down"].append(row)
        for winner in (r for r in shown if r.best):
            group["beaten"] += [(winner, r) for r in shown if not r.best and r.score >= 0]
    pairs, seen = [], set()
    for (prompt, system), group in groups.items():
        candidates = [(u, d) for u in group["up"] for d in group["down"]] + group["beaten"]
        for chosen, rejected in candidates:
            key = (prompt, system, chosen.output.strip(), rejected.output.strip())
            if key[2] == key[3] or key in seen:
                continue
            seen.add(key)
            pairs.append({"prompt": prompt, "system": system or None, "chosen": chosen.output,
                          "rejected": rejected.output, "chosen_model": chosen.model,
                          "rejected_model": rejected.model, "rating_ids": [chosen.id, rejected.id]})
    return pairs


def trl_row(pair: dict) -> dict:
    """A pair in TRL's preference format: standard (strings), or conversational (message
    lists) when the prompt was asked behind a system prompt. ``rating_ids`` rides along."""
    if pair.get("system"):
        row = {"prompt": [{"role": "system", "content": pair["system"]}, {"role": "user", "content": pair["prompt"]}],
               "chosen": [{"role": "assistant", "content": pair["chosen"]}],
               "rejected": [{"role": "assistant", "content": pair["rejected"]}]}
    else:
        row = {"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"]}
    row["rating_ids"] = list(pair["rating_ids"])
    return row


def unpaired_votes(rows, system_of=lambda models: None) -> list[dict]:
    """Every answer voted 👍 (or picked Best) or 👎 as a single vote, for a KTO round: per
    prompt, system prompt (as :func:`preference_pairs` finds it) and answer text, the latest
    vote of each comparison. An answer voted both ways is left out (the votes cancel), one
    voted the same way twice is one vote with both rating ids. Each vote: ``prompt, system,
    completion, label`` (True: 👍), ``model, rating_ids``."""
    found: dict[tuple[str, str, str], dict] = {}
    for by_model in latest_votes(rows).values():
        system = system_of(sorted(by_model)) or ""
        for row in by_model.values():
            if not (row.best or row.score) or not row.output.strip():
                continue
            vote = found.setdefault((row.prompt, system, row.output.strip()), {
                "prompt": row.prompt, "system": system or None, "completion": row.output, "labels": set(),
                "model": row.model, "rating_ids": []})
            vote["labels"].add(bool(row.best or row.score > 0))
            vote["rating_ids"].append(row.id)
    return [{**{k: v for k, v in vote.items() if k != "labels"}, "label": vote["labels"].pop(),
             "rating_ids": sorted(vote["rating_ids"])} for vote in found.values() if len(vote["labels"]) == 1]


def trl_unpaired_row(vote: dict) -> dict:
    """A vote in TRL's unpaired preference format (``prompt, completion, label``): standard, or
    conversational when the prompt was asked behind a system prompt. ``rating_ids`` rides along."""
    if vote.get("system"):
        row = {"prompt": [{"role": "system", "content": vote["system"]}, {"role": "user", "content": vote["prompt"]}],
               "completion": [{"role": "assistant", "content": vote["completion"]}]}
    else:
        row = {"prompt": vote["prompt"], "completion": vote["completion"]}
    return {**row, "label": bool(vote["label"]), "rating_ids": list(vote["rating_ids"])}


def votes_needed(pairs: int, minimum: int = MIN_PAIRS) -> str:
    """Why a round cannot start yet, in words: how many pairs are missing and how to get them."""
    missing = max(0, minimum - pairs)
    return (f"{counted(pairs, 'preference pair')} from your ratings; a round needs at least {minimum}, so {missing} more. "
            f"Each prompt with one answer rated 👍 (or picked Best) and another rated 👎 (or beaten by the Best) "
            f"makes a pair: about {counted(missing, 'more such comparison', 'more such comparisons')} would do.")


def single_votes_needed(up: int, down: int) -> str:
    """Why a KTO round cannot start yet: the single votes there are and how many more it needs."""
    return (f"{counted(up + down, 'single vote')} ({up} 👍, {down} 👎) from your ratings; a KTO round needs at least "
            f"{MIN_VOTES}, with at least {MIN_EACH} of each, so {more_votes(up, down)}. Any answer rated 👍 "
            f"(or picked Best) or 👎 counts, on any prompt.")
