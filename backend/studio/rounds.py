"""Ratings that train: the arena's table, a rating given without the page, the ratings as
preference pairs, and the preference round trained from them (issue 18).

Functions of a :class:`~backend.studio.service.Service` (the one door stays the door: they
use its store, its names and its job runner), called alike by the page, the CLI
(``tunelab ratings ...``, ``tunelab train --method dpo``) and the assistant. The ranking
rule is :mod:`backend.studio.arena`'s, the pairing rule :func:`backend.studio.ratings.preference_pairs`'s,
the round :mod:`backend.training.dpo`'s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

from pydantic import ValidationError

from backend import adapter_folder as adapter_files
from backend.data.normalized import EVAL_FILE, read_rows
from backend.data.preference import MIN_PAIRS, PAIRS_FILE, read_preference_files, write_pairs
from backend.errors import AdapterNotFound, ConfigError, DataError, TuneLabError
from backend.hparams import RunSpec, TrainSpec
from backend.names import adapter_path, validate_name
from backend.studio import arena
from backend.studio.plan_form import validation_message
from backend.studio.ratings import BASE, preference_pairs, trl_row, votes_needed
from backend.words import counted

SCORES = {"up": 1, "down": -1, "+1": 1, "-1": -1, "1": 1, "👍": 1, "👎": -1}
# a round's knobs where the spec leaves them: short, and a LoRA-sized step (TRL's 1e-6 is for
# full fine-tuning); no held-out rows, so no early stopping
ROUND_DEFAULTS = {"epochs": 3.0, "learning_rate": 5e-5, "batch_size": 4, "early_stopping": False, "beta": 0.1}


def table(service) -> dict:
    """The arena over the base and every finished adapter, from every stored vote."""
    return arena.ranking(service.store.ratings(), [BASE, *service.adapter_names(status="done")])


def add_rating(service, model: str, prompt: str, output: str, score: str | int, *, best: bool = False,
               comparison: str | None = None) -> dict:
    """Store one rating as the page does. Ratings given with the same ``comparison`` were
    shown together (so 👍 on one and 👎 on another is a game in the arena)."""
    known = service.adapter_names()
    if model != BASE and model not in known:
        raise AdapterNotFound(model, known)
    value = SCORES.get(str(score).strip().lower())
    if value is None:
        raise TuneLabError(f"Score {score!r} is not up or down.", fix="Use --score up (👍) or --score down (👎).")
    if not prompt.strip() or not output.strip():
        empty = "prompt" if not prompt.strip() else "output"
        raise TuneLabError(f"The {empty} is empty.", fix="Give the prompt asked and the answer the model gave.")
    row = service.store.add_rating(comparison=comparison or f"cli-{uuid.uuid4().hex[:8]}", model=model,
                                   prompt=prompt, output=output, score=value, best=bool(best), blind=False)
    return {"id": row.id, "comparison": row.comparison, "model": model, "score": value, "best": bool(best)}


def pairs(service) -> list[dict]:
    """Every preference pair the stored ratings make (system prompts as Compare asked them)."""
    return preference_pairs(service.store.ratings(), system_of=service.shared_system_prompt)


def export_preference(service, dest: str | Path | None = None) -> dict:
    """Write the ratings' pairs in TRL's preference format (JSON lines) to ``dest`` (default:
    a new file under the home's uploads); returns its path, the pair count and rating ids."""
    found = pairs(service)
    if dest is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        dest = service.paths.uploads / "preference" / f"ratings-{stamp}.jsonl"
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(json.dumps(trl_row(p), ensure_ascii=False) + "\n" for p in found), encoding="utf-8")
    return {"path": str(dest), "pairs": len(found), "rating_ids": sorted({i for p in found for i in p["rating_ids"]})}


def start_round(service, parent: str, name: str, data: list[str | Path] | None = None, *,
                train: dict | None = None) -> int:
    """Queue a preference round continuing from adapter ``parent`` as adapter ``name``, on the
    pairs of ``data`` (preference files) or, without, on the pairs of the stored ratings.
    Refuses with fewer than :data:`MIN_PAIRS` pairs, saying how many more votes are needed."""
    validate_name(name)
    row = service.store.get_adapter(parent)
    folder = adapter_path(service.paths.adapters, parent)
    if row is None or row.status != "done" or not adapter_files.is_complete(folder):
        raise AdapterNotFound(parent, service.adapter_names(status="done"))
    if data:
        report = read_preference_files(list(data))
        if report.errors:
            raise DataError(f"The preference {'file has' if len(data) == 1 else 'files have'} "
                            f"{counted(len(report.errors), 'problem')}; nothing was queued.",
                            report, fix="Fix the lines named above, or leave them out.")
        found = report.pairs
        if len(found) < MIN_PAIRS:
            raise DataError(f"{counted(len(found), 'preference pair')} in the files; a round needs at least {MIN_PAIRS}.",
                            fix=f"Add {MIN_PAIRS - len(found)} more pairs (or rate more answers and export them).")
    else:
        found = [_normalized(trl_row(p)) for p in pairs(service)]
        if len(found) < MIN_PAIRS:
            raise TuneLabError(votes_needed(len(found)), fix="Compare and rate more answers, then try again.")
    digest = hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()
    pairs_file = write_pairs(found, service.paths.uploads / f"preference-{digest[:12]}" / PAIRS_FILE)
    meta = adapter_files.AdapterMeta.of(folder)
    knobs = {**ROUND_DEFAULTS, "system_prompt": meta.system_prompt, **(train or {})}
    try:
        spec = RunSpec(name=name, base=row.base, goal=row.goal or meta.goal, method="dpo", parent=parent,
                       train=TrainSpec(**knobs))
    except ValidationError as exc:
        raise ConfigError(f"Invalid option for the round: {validation_message(exc)}.",
                          fix="See `tunelab train --help` for each option's range.") from None
    parent_job = service.store.get_job(row.job_id) if row.job_id else None
    sweep = (parent_job.sweep if parent_job is not None else None) or parent  # ranked beside its parent
    return service.runner.submit(spec, pairs_file, None, data_hash=f"sha256:{digest}", sweep=sweep)


def _normalized(row: dict) -> dict:
    """A TRL row from :func:`trl_row` in the normalized (conversational) shape the round reads."""
    if isinstance(row["prompt"], str):
        row = {**row, "prompt": [{"role": "user", "content": row["prompt"]}],
               "chosen": [{"role": "assistant", "content": row["chosen"]}],
               "rejected": [{"role": "assistant", "content": row["rejected"]}]}
    return row


def round_line(meta: adapter_files.AdapterMeta) -> str | None:
    """``a preference round from news-r8 on 12 pairs (24 ratings)`` for an adapter made by one."""
    extra = meta.model_extra or {}
    preference = extra.get("preference")
    if meta.hyperparameters.get("method") != "dpo" or not isinstance(preference, dict):
        return None
    return (f"a preference round from {extra.get('parent')} on {preference.get('pairs')} pairs "
            f"({len(preference.get('rating_ids') or [])} ratings)")


# --- what to show next -------------------------------------------------------------------------


def candidate_prompts(state) -> list[str]:
    """Prompts to compare on: the plan's probe prompts, then the held-out rows' prompts."""
    prompts = list(state.plan.probe_prompts) if getattr(state, "plan", None) else []
    folder = getattr(state, "data_dir", None)
    if folder and (Path(folder) / EVAL_FILE).is_file():
        for messages in read_rows(Path(folder) / EVAL_FILE):
            users = [m["content"] for m in messages if m.get("role") == "user"]
            if users:
                prompts.append(users[-1])
    return list(dict.fromkeys(p for p in prompts if p.strip()))


def next_comparison(service, state) -> dict | None:
    """The comparison whose votes would tell the most: the arena's ``next_pair`` (the leader and
    the challenger it is least surely ahead of) on the candidate prompt they were rated on
    least. None when fewer than two models can be compared or there is no prompt."""
    result = table(service)
    served = set(service.adapter_names(status="done"))
    pair = result["next_pair"]
    prompts = candidate_prompts(state)
    if not pair or not prompts or not any(m in served for m in pair):
        return None
    rated = {}
    for row in service.store.ratings():
        if row.model in pair:
            rated[row.prompt] = rated.get(row.prompt, 0) + 1
    prompt = min(prompts, key=lambda p: (rated.get(p, 0), prompts.index(p)))
    why = ("the winner is already clear; more votes only confirm it" if result["clear"]
           else f"the vote that most shrinks the doubt about the winner is {pair[0]} vs {pair[1]}")
    return {"adapters": [m for m in pair if m != BASE], "pair": pair, "prompt": prompt, "why": why,
            "summary": result["summary"]}


# --- in the assistant's words -------------------------------------------------------------------


def ranking_reply(service) -> str:
    """The arena's table and its one-sentence verdict, as the assistant says it."""
    result = table(service)
    if not result["rows"]:
        return result["summary"]
    return ("Ranking from all your votes (Bradley–Terry; score with its 95% interval):\n"
            + "\n".join(f"- {line}" for line in arena.table_lines(result)) + f"\n\n{result['summary']}")


def round_parent(service, text: str = "") -> str | None:
    """The adapter a round starts from: one named in ``text``, else the arena's best adapter."""
    done = service.adapter_names(status="done")
    named = [n for n in done if n in text.lower()]
    if named:
        return max(named, key=len)
    ranked = [r["name"] for r in table(service)["rows"] if r["name"] != BASE]
    return ranked[0] if ranked else None


def free_name(service, parent: str) -> str:
    taken = set(service.adapter_names())
    stem = f"{parent}-dpo"[:60]
    return next(f"{stem}{i if i > 1 else ''}" for i in range(1, 1000) if f"{stem}{i if i > 1 else ''}" not in taken)


def train_from_ratings(service, text: str = "", name: str | None = None) -> tuple[bool, str]:
    """"Train from my ratings": a round from the best-rated (or named) adapter on the pairs the
    stored votes make; (started, what to say)."""
    parent = round_parent(service, text)
    if parent is None:
        return False, "There is no finished adapter to improve yet: train one, compare it and rate the answers."
    name = name or free_name(service, parent)
    try:
        job = start_round(service, parent, name)
    except TuneLabError as exc:
        return False, str(exc)
    count = len(pairs(service))
    return True, (f"Queued job {job}: a preference round **{name}** from **{parent}** on {count} pairs from your "
                  f"ratings (DPO; the reference is {parent} as it is now). When it finishes it is loaded next to "
                  f"{parent}; compare the two and rate again.")
