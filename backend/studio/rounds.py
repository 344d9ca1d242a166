"""Ratings that train: the arena's table, a rating given without the page, the ratings as
preference pairs and single votes, and the preference round trained from them (issue 18).

Functions of a :class:`~backend.studio.service.Service` (the one door stays the door: they
use its store, its names and its job runner), called alike by the page, the CLI
(``tunelab ratings ...``, ``tunelab train --method dpo|kto|auto --from``) and the assistant.
The ranking rule is :mod:`backend.studio.arena`'s, the pairing rule
:func:`backend.studio.ratings.preference_pairs`'s (single votes:
:func:`~backend.studio.ratings.unpaired_votes`), the rounds :mod:`backend.training.dpo`'s and
:mod:`backend.training.kto`'s. Which round: :func:`choose_round` (``method="auto"``: DPO on
enough pairs, else KTO on enough single votes, else how many more votes are needed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from backend import adapter_folder as adapter_files
from backend.data.normalized import EVAL_FILE, read_rows
from backend.data.preference import (MIN_EACH, MIN_PAIRS, MIN_VOTES, PAIRS_FILE, VOTES_FILE, enough_votes, more_votes,
                                     read_preference_files, unpair, write_pairs)
from backend.errors import AdapterNotFound, ConfigError, DataError, TuneLabError
from backend.hparams import PREFERENCE_METHODS, RunSpec, TrainSpec
from backend.names import adapter_path, validate_name
from backend.studio import arena
from backend.studio.plan_form import validation_message
from backend.studio.ratings import (BASE, preference_pairs, single_votes_needed, trl_row, trl_unpaired_row,
                                    unpaired_votes, votes_needed)
from backend.words import counted

SCORES = {"up": 1, "down": -1, "+1": 1, "-1": -1, "1": 1, "👍": 1, "👎": -1}
# a round's knobs where the spec leaves them: short, and a LoRA-sized step (TRL's 1e-6 is for
# full fine-tuning); no held-out rows, so no early stopping
ROUND_DEFAULTS = {"epochs": 3.0, "learning_rate": 5e-5, "batch_size": 4, "early_stopping": False, "beta": 0.1}
METHODS = ("auto", *PREFERENCE_METHODS)


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


def unpaired(service) -> list[dict]:
    """Every 👍/👎 (or Best) answer of the stored ratings as a single vote, for a KTO round."""
    return unpaired_votes(service.store.ratings(), system_of=service.shared_system_prompt)


def export_preference(service, dest: str | Path | None = None) -> dict:
    """Write the ratings' pairs in TRL's preference format (JSON lines) to ``dest`` (default:
    a new file under the home's uploads); returns its path, the pair count and rating ids."""
    found = pairs(service)
    path = _write_lines(service, [trl_row(p) for p in found], dest, "ratings")
    return {"path": str(path), "pairs": len(found), "rating_ids": sorted({i for p in found for i in p["rating_ids"]})}


def export_unpaired(service, dest: str | Path | None = None) -> dict:
    """Write every 👍/👎 (or Best) rating as one row of TRL's unpaired preference format
    (``prompt, completion, label``; JSON lines) to ``dest`` (default: a new file under the
    home's uploads); returns its path, the vote counts and rating ids."""
    found = unpaired(service)
    path = _write_lines(service, [trl_unpaired_row(v) for v in found], dest, "votes")
    up = sum(v["label"] for v in found)
    return {"path": str(path), "votes": len(found), "up": up, "down": len(found) - up,
            "rating_ids": sorted({i for v in found for i in v["rating_ids"]})}


def _write_lines(service, rows: list[dict], dest: str | Path | None, stem: str) -> Path:
    if dest is None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        dest = service.paths.uploads / "preference" / f"{stem}-{stamp}.jsonl"
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return dest


@dataclass
class RoundChoice:
    """Which round to train and on what: ``rows`` are normalized pairs (``dpo``) or single
    votes (``kto``); ``why`` says why this method, in one sentence."""

    method: str
    rows: list[dict]
    why: str
    pairs: int
    up: int
    down: int

    @property
    def data_text(self) -> str:
        """``9 pairs`` or ``20 single votes (12 👍, 8 👎)``: what the round trains on."""
        return counted(self.pairs, "pair") if self.method == "dpo" else _single_votes(self.up, self.down)


def _single_votes(up: int, down: int) -> str:
    return f"{counted(up + down, 'single vote')} ({up} 👍, {down} 👎)"


def choose_round(service, data: list[str | Path] | None = None, method: str = "auto") -> RoundChoice:
    """The round to train on ``data`` (preference files: pairs and/or single votes) or, without,
    on the stored ratings. ``dpo`` and ``kto`` ask for one; ``auto`` takes DPO where there are
    at least :data:`MIN_PAIRS` pairs (a pair, one answer 👍 and another 👎 on the same prompt,
    says more than its two votes alone), else KTO where there are at least :data:`MIN_VOTES`
    single votes with :data:`MIN_EACH` of each kind (every 👍/👎 counts, paired or not), else
    refuses, saying how many more votes each would need."""
    if method not in METHODS:
        raise ConfigError(f"Unknown round method {method!r}.", fix="Use auto, dpo or kto.")
    if data:
        report = read_preference_files(list(data))
        if report.errors:
            raise DataError(f"The preference {'file has' if len(data) == 1 else 'files have'} "
                            f"{counted(len(report.errors), 'problem')}; nothing was queued.",
                            report, fix="Fix the lines named above, or leave them out.")
        found, votes = report.pairs, report.unpaired + [v for p in report.pairs for v in unpair(p)]
    else:
        found = [_normalized(trl_row(p)) for p in pairs(service)]
        votes = [_normalized(trl_unpaired_row(v)) for v in unpaired(service)]
    up = sum(v["label"] for v in votes)
    down = len(votes) - up
    enough_pairs, enough_single = len(found) >= MIN_PAIRS, enough_votes(up, down)
    if method == "dpo" or (method == "auto" and enough_pairs):
        if not enough_pairs:
            _too_few(data, len(found), up, down, "dpo")
        why = (", as asked" if method == "dpo" else
               f": at least {MIN_PAIRS} pairs, and a pair says more than its two votes alone")
        return RoundChoice("dpo", found, f"DPO on {counted(len(found), 'pair')}{why}.", len(found), up, down)
    if not enough_single:
        _too_few(data, len(found), up, down, method)
    few = f"only {counted(len(found), 'pair')}" if found else "no pairs"
    why = (", as asked" if method == "kto" else
           f": {few}, too few for DPO (it needs {MIN_PAIRS}), but enough single votes for KTO")
    return RoundChoice("kto", votes, f"KTO on {_single_votes(up, down)}{why}.", len(found), up, down)


def _too_few(data, pairs_found: int, up: int, down: int, method: str) -> None:
    """Refuse a round on too little: how many more pairs (DPO) and single votes (KTO) it needs."""
    if not data:
        said = {"dpo": votes_needed(pairs_found), "kto": single_votes_needed(up, down),
                "auto": f"{votes_needed(pairs_found)} Or a KTO round on single votes: "
                        f"{single_votes_needed(up, down)}"}[method]
        raise TuneLabError(said, fix="Compare and rate more answers, then try again.")
    dpo = (f"{counted(pairs_found, 'preference pair')} in the files; a round needs at least {MIN_PAIRS}.",
           f"Add {MIN_PAIRS - pairs_found} more pairs (or rate more answers and export them).")
    kto = (f"{counted(up + down, 'unpaired vote')} ({up} 👍, {down} 👎) in the files, pairs counted as two; a KTO "
           f"round needs at least {MIN_VOTES} with at least {MIN_EACH} of each, so {more_votes(up, down)}.",
           "Add more rated answers (or rate more and export them).")
    message, fix = {"dpo": dpo, "kto": kto, "auto": (f"{dpo[0]} {kto[0]}", f"{dpo[1]} {kto[1]}")}[method]
    raise DataError(message, fix=fix)


def start_round(service, parent: str, name: str, data: list[str | Path] | None = None, *,
                method: str = "dpo", train: dict | None = None) -> int:
    """Queue a preference round continuing from adapter ``parent`` as adapter ``name``, on
    ``data`` (preference files) or, without, on the stored ratings: ``method`` ``dpo`` (pairs),
    ``kto`` (single 👍/👎 votes) or ``auto`` (:func:`choose_round`). Refuses on too little,
    saying how many more votes are needed. Returns the job id."""
    validate_name(name)
    row = service.store.get_adapter(parent)
    folder = adapter_path(service.paths.adapters, parent)
    if row is None or row.status != "done" or not adapter_files.is_complete(folder):
        raise AdapterNotFound(parent, service.adapter_names(status="done"))
    choice = choose_round(service, data, method)
    digest = hashlib.sha256(json.dumps(choice.rows, sort_keys=True).encode()).hexdigest()
    data_file = write_pairs(choice.rows, service.paths.uploads / f"preference-{digest[:12]}"
                            / (PAIRS_FILE if choice.method == "dpo" else VOTES_FILE))
    meta = adapter_files.AdapterMeta.of(folder)
    knobs = {**ROUND_DEFAULTS, "system_prompt": meta.system_prompt, **(train or {})}
    try:
        spec = RunSpec(name=name, base=row.base, goal=row.goal or meta.goal, method=choice.method, parent=parent,
                       train=TrainSpec(**knobs))
    except ValidationError as exc:
        raise ConfigError(f"Invalid option for the round: {validation_message(exc)}.",
                          fix="See `tunelab train --help` for each option's range.") from None
    parent_job = service.store.get_job(row.job_id) if row.job_id else None
    sweep = (parent_job.sweep if parent_job is not None else None) or parent  # ranked beside its parent
    return service.runner.submit(spec, data_file, None, data_hash=f"sha256:{digest}", sweep=sweep)


def _normalized(row: dict) -> dict:
    """A TRL row from :func:`trl_row` or :func:`trl_unpaired_row` in the normalized
    (conversational) shape the rounds read."""
    if isinstance(row["prompt"], str):
        answers = [key for key in ("chosen", "rejected", "completion") if key in row]
        row = {**row, "prompt": [{"role": "user", "content": row["prompt"]}],
               **{key: [{"role": "assistant", "content": row[key]}] for key in answers}}
    return row


def round_line(meta: adapter_files.AdapterMeta) -> str | None:
    """``a preference round from news-r8 on 12 pairs (24 ratings)`` (or ``a KTO round from
    news-r8 on 20 single votes (12 👍, 8 👎; 20 ratings)``) for an adapter made by one."""
    extra = meta.model_extra or {}
    preference = extra.get("preference")
    method = meta.hyperparameters.get("method")
    if method not in PREFERENCE_METHODS or not isinstance(preference, dict):
        return None
    ratings = counted(len(preference.get("rating_ids") or []), "rating")
    if method == "kto":
        return (f"a KTO round from {extra.get('parent')} on {preference.get('votes')} single votes "
                f"({preference.get('up')} 👍, {preference.get('down')} 👎; {ratings})")
    return f"a preference round from {extra.get('parent')} on {preference.get('pairs')} pairs ({ratings})"


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


def free_name(service, parent: str, method: str = "dpo") -> str:
    taken = set(service.adapter_names())
    stem = f"{parent}-{method}"[:60]
    return next(f"{stem}{i if i > 1 else ''}" for i in range(1, 1000) if f"{stem}{i if i > 1 else ''}" not in taken)


def round_name(service, parent: str) -> str:
    """A free name for the round "train from my ratings" would start now: ``<parent>-kto`` when
    the stored votes make a KTO round, else ``<parent>-dpo``."""
    try:
        method = choose_round(service, method="auto").method
    except TuneLabError:
        method = "dpo"
    return free_name(service, parent, method)


def train_from_ratings(service, text: str = "", name: str | None = None, method: str = "auto") -> tuple[bool, str]:
    """"Train from my ratings": a round from the best-rated (or named) adapter on the stored
    votes, DPO or KTO as :func:`choose_round` decides (or as ``method`` asks); (started, what to
    say: which round, why)."""
    parent = round_parent(service, text)
    if parent is None:
        return False, "There is no finished adapter to improve yet: train one, compare it and rate the answers."
    try:
        choice = choose_round(service, method=method)
        name = name or free_name(service, parent, choice.method)
        job = start_round(service, parent, name, method=choice.method)
    except TuneLabError as exc:
        return False, str(exc)
    return True, (f"Queued job {job}: a preference round **{name}** from **{parent}** on {choice.data_text} from "
                  f"your ratings. {choice.why} The reference is {parent} as it is now. When it finishes it is loaded "
                  f"next to {parent}; compare the two and rate again.")
