"""The data doctor: check uploads, say every problem at once, import what is clean.

:func:`check_files` reads one or more files (:mod:`backend.data.formats`),
normalizes every example to chat messages whose last turn is the assistant's answer,
and returns a :class:`DataReport` holding every problem (by file, line and field) and
what is right: counts, token lengths under the chosen base's tokenizer, duplicates,
the rows that will judge the adapter (a seeded split of the training files by
:func:`backend.data.normalized.eval_count`, or a separate evaluation file), a content
hash and a preview.

:func:`import_files` writes a clean upload to ``uploads/<hash[:12]>/`` as
``train.jsonl``, ``eval.jsonl`` (one ``{"messages": [...]}`` per line) and
``report.json``; an upload with any error imports nothing and raises
:class:`~backend.errors.DataError` carrying the report. Warnings import, and stay in
the report.

The content hash is the sha256 of the normalized examples (their messages only, not
file names or lines) in upload order: identical content in identical order gives the
same hash; reordering examples or files changes it.

Nothing here imports torch; a tokenizer is passed in by the caller
(:func:`backend.bases.load.load_tokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.atomic import staged_folder
from backend.data.columns import label_balance
from backend.data.csv_rows import CsvColumns
from backend.data.file_read import FileRead
from backend.data.formats import read_file
from backend.data.problems import (
    DUPLICATE,
    EVAL_IN_TRAINING,
    EVAL_IS_TRAINING,
    NO_EXAMPLES,
    RULES,
    TEMPLATE_FAILED,
    TOO_FEW,
    TOO_LONG,
    Problem,
    Rule,
)
from backend.data.normalized import EVAL_FILE, EVAL_RULE, MIN_EXAMPLES_FOR_EVAL, TRAIN_FILE, split_rows, write_rows
from backend.data.style_text import style_prompt
from backend.errors import BaseModelError, DataError
from backend.words import counted

__all__ = [
    "Example", "DataReport", "ImportResult", "Problem", "Rule", "RULES", "check_files", "import_files",
    "style_prompt", "content_hash", "chat_token_lengths", "judged_on", "saved_report", "REPORT_FILE", "SPLIT_NOTE",
]

REPORT_FILE = "report.json"
# what rows held back from the training file mean for a score (the report, the plan card, the proof)
SPLIT_NOTE = ("held back from the training file: they share its phrasings, so a score on them can flatter the "
              "adapter; drop in a separate evaluation file to judge on new inputs")
PREVIEW_COUNT = 3
_TOKENIZE_BATCH = 64


@dataclass(frozen=True)
class Example:
    """One normalized example and where it came from (file display name, 1-based line)."""

    messages: list[dict]
    source: str
    line: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DataReport:
    """Everything the data doctor found: problems, the clean examples, their split and stats."""

    problems: list[Problem]
    examples: list[Example]
    train: list[Example]
    eval: list[Example]
    content_hash: str
    stats: dict[str, Any]
    formats: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def preview(self) -> list[Example]:
        return self.examples[:PREVIEW_COUNT]

    def to_dict(self) -> dict:
        """JSON-able summary (the examples themselves are in train/eval.jsonl, not here)."""
        return {
            "ok": self.ok,
            "content_hash": self.content_hash,
            "formats": dict(self.formats),
            "stats": self.stats,
            "settings": self.settings,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [p.to_dict() for p in self.problems],
            "preview": [e.to_dict() for e in self.preview],
        }

    def render_text(self, max_problems_per_file: int = 50) -> str:
        """Human report: problems grouped by file (line, field), then stats and a preview."""
        lines = [_headline(self)]
        groups: dict[str | None, list[Problem]] = {name: [] for name in self.formats}
        for problem in self.problems:
            groups.setdefault(problem.file, []).append(problem)
        for name, problems in groups.items():
            if name is None:
                if problems:
                    lines += ["", "All files"]
            else:
                count = self.stats.get("files", {}).get(name, 0)
                role = ", evaluation file" if name in self.stats.get("split", {}).get("eval_files", ()) else ""
                lines += ["", f"{name} ({self.formats.get(name, 'unknown')}, {counted(count, 'example')}{role})"]
            for problem in problems[:max_problems_per_file]:
                place = f"{problem.where()}: " if problem.file else ""
                lines.append(f"  {problem.severity}: {place}{problem.message}")
            if len(problems) > max_problems_per_file:
                lines.append(f"  ... and {counted(len(problems) - max_problems_per_file, 'more problem')} in this file")
            if name is not None and not problems:
                lines.append("  no problems")
        lines += ["", *_stats_lines(self.stats)]
        if self.content_hash:
            lines.append(f"content hash: {self.content_hash}")
        if self.preview:
            lines += ["", "Preview (normalized)"]
            for example in self.preview:
                turns = " | ".join(f"{m['role']}: {_short(m['content'])}" for m in example.messages)
                lines.append(f"  [{example.source}:{example.line}] {turns}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ImportResult:
    """A clean upload written to disk: its folder, files and the report that let it in."""

    folder: Path
    report: DataReport

    @property
    def train_path(self) -> Path:
        return self.folder / TRAIN_FILE

    @property
    def eval_path(self) -> Path:
        return self.folder / EVAL_FILE

    @property
    def report_path(self) -> Path:
        return self.folder / REPORT_FILE


# --- the check --------------------------------------------------------------------------------


def check_files(
    paths: list[Path],
    *,
    eval_files: list[Path] | None = None,
    tokenizer=None,
    max_tokens: int | None = None,
    max_line_bytes: int | None = None,
    goal: str | None = None,
    min_examples: int = 10,
    eval_fraction: float | None = None,
    seed: int = 42,
    system_prompt: str | None = None,
    input_column: str | None = None,
    output_column: str | None = None,
    column_hint: str | None = None,
) -> DataReport:
    """Check every file and return one report; never raises for bad data.

    ``tokenizer`` (a transformers tokenizer with a chat template) enables token-length
    stats and, with ``max_tokens`` (pass min(base context, training max_length)), the
    too-long check. ``max_line_bytes`` (pass the setting ``max_line_kb`` × 1024) refuses a
    longer line before it is parsed. Only rows without errors are tokenized. ``goal`` words
    the prompt paired with style text.

    The rows that judge the adapter: with ``eval_files`` (read and checked like the
    training files), every training row trains and the evaluation files' rows are the
    eval split; an evaluation row that is also a training row is a warning. Without,
    rows are held back from the training files: ``eval_fraction`` None is the rule
    (:func:`backend.data.normalized.eval_count`), 0 holds none back, another fraction
    holds back that share (at least 1 of >= 5 examples).

    ``input_column`` / ``output_column`` choose the columns of CSV files and the fields of
    flat JSON records (:mod:`backend.data.columns` guesses them for the page);
    ``column_hint`` ends the missing-columns problem with the caller's way to choose them
    (the CLI's flags by default).
    """
    paths = _as_paths(paths)
    training = [_same_file(p) for p in paths]
    given_eval = _as_paths(eval_files)
    eval_paths = [p for p in given_eval if _same_file(p) not in training]
    names = _display_names(paths + eval_paths)
    eval_names = names[len(paths):]
    prompt = style_prompt(goal)
    columns = CsvColumns(input_column, output_column, **({"how_to_choose": column_hint} if column_hint else {}))
    reads: list[FileRead] = [read_file(path, name, style_prompt=prompt, columns=columns,
                                       max_line_bytes=max_line_bytes)
                             for path, name in zip(paths + eval_paths, names)]
    late: list[Problem] = []  # upload-wide checks, attached to their file later
    late += [EVAL_IS_TRAINING.problem(names[training.index(_same_file(p))])  # on the training file's name
             for p in given_eval if _same_file(p) in training]

    examples = []
    for read in reads:
        for raw in read.examples:
            messages = [dict(m) for m in raw.messages]
            if system_prompt and system_prompt.strip() and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": system_prompt})
            examples.append(Example(messages, read.name, raw.line))

    late += _duplicates([e for e in examples if e.source not in eval_names])
    late += _duplicates([e for e in examples if e.source in eval_names])
    late += _seen_in_training(examples, eval_names)
    refused: set[int] = set()  # examples the template refuses or that are too long
    token_stats = None
    if tokenizer is not None and examples:
        lengths, answers, failures = chat_token_lengths(tokenizer, [e.messages for e in examples])
        for index, (example, length, failure) in enumerate(zip(examples, lengths, failures)):
            if failure is not None:
                late.append(TEMPLATE_FAILED.problem(example.source, example.line, "messages", error=failure))
                refused.add(index)
            elif max_tokens is not None and length > max_tokens:
                late.append(TOO_LONG.problem(example.source, example.line, "messages",
                                             tokens=length, limit=max_tokens))
                refused.add(index)
        token_stats = _token_stats(tokenizer, lengths, answers, max_tokens)

    clean = [e for i, e in enumerate(examples) if i not in refused]
    to_train = [e for e in clean if e.source not in eval_names]
    upload_wide: list[Problem] = []
    if not to_train:
        had = sum(len(r.problems) for r in reads) + len(refused)
        upload_wide.append(NO_EXAMPLES.problem(None, detail=f" ({counted(had, 'problem')} found)" if had else ""))
    elif len(to_train) < min_examples:
        upload_wide.append(TOO_FEW.problem(None, examples=counted(len(to_train), "example"), minimum=min_examples))

    if eval_paths:
        train, evaluation = to_train, [e for e in clean if e.source in eval_names]
    else:
        train, evaluation = split_rows(clean, eval_fraction=eval_fraction, seed=seed)
    problems = _ordered([p for r in reads for p in r.problems] + late, names) + upload_wide
    formats = {r.name: r.format for r in reads}
    split = _split(len(to_train), len(evaluation), eval_names, eval_fraction, seed)
    stats = _stats(clean, train, evaluation, reads, token_stats, problems, split)
    settings = {
        "goal": goal, "style_prompt": prompt, "system_prompt": system_prompt, "min_examples": min_examples,
        "eval_fraction": eval_fraction, "eval_files": eval_names, "seed": seed, "max_tokens": max_tokens,
        "max_line_bytes": max_line_bytes,
        "input_column": input_column, "output_column": output_column,
        "tokenizer": _tokenizer_name(tokenizer) if tokenizer is not None else None,
    }
    digest = content_hash(to_train, held_out=evaluation if eval_paths else None) if clean else ""
    return DataReport(problems, clean, train, evaluation, digest, stats, formats, settings)


def _as_paths(paths) -> list[Path]:
    if paths is None:
        return []
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def _same_file(path: Path) -> Path:
    """The path that names ``path``'s file, whichever way it was written."""
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


def _display_names(paths: list[Path]) -> list[str]:
    """File names as shown in problems; full paths only where two files share a name."""
    counts = Counter(p.name for p in paths)
    return [p.name if counts[p.name] == 1 else str(p) for p in paths]


def _ordered(problems: list[Problem], names: list[str]) -> list[Problem]:
    order = {name: i for i, name in enumerate(names)}
    return sorted(problems, key=lambda p: (order.get(p.file, len(order)), p.line or 0))


def _key(example: Example) -> str:
    return json.dumps(example.messages, sort_keys=True, ensure_ascii=False)


def _duplicates(examples: list[Example]) -> list[Problem]:
    first_seen: dict[str, Example] = {}
    problems = []
    for example in examples:
        first = first_seen.setdefault(_key(example), example)
        if first is not example:
            where = f"line {first.line}" + ("" if first.source == example.source else f" of {first.source}")
            problems.append(DUPLICATE.problem(example.source, example.line, None, first=where))
    return problems


def _seen_in_training(examples: list[Example], eval_names: list[str]) -> list[Problem]:
    """An evaluation row with the same messages as a training row: a warning on the
    evaluation row naming the training row's file and line."""
    trained: dict[str, Example] = {}
    for example in examples:
        if example.source not in eval_names:
            trained.setdefault(_key(example), example)
    return [EVAL_IN_TRAINING.problem(e.source, e.line, None, first=f"line {seen.line} of {seen.source}")
            for e in examples if e.source in eval_names and (seen := trained.get(_key(e))) is not None]


def content_hash(examples: list[Example], *, held_out: list[Example] | None = None) -> str:
    """sha256 of the normalized messages in order (not of file names or line numbers);
    ``held_out``, the rows of an evaluation file, follow behind a marker, so the same
    training rows judged on another file hash differently."""
    digest = hashlib.sha256()
    for example in examples:
        _hash_messages(digest, example)
    if held_out is not None:
        digest.update(b"--evaluation file--\n")
        for example in held_out:
            _hash_messages(digest, example)
    return digest.hexdigest()


def _hash_messages(digest, example: Example) -> None:
    digest.update(json.dumps(example.messages, ensure_ascii=False, sort_keys=True,
                             separators=(",", ":")).encode("utf-8"))
    digest.update(b"\n")


# --- token lengths -----------------------------------------------------------------------------


def _token_ids(output) -> list:
    """apply_chat_template(tokenize=True) returns a BatchEncoding/dict in transformers 5
    (unless return_dict=False) and a list in 4.x; take the ids either way."""
    if hasattr(output, "keys") and "input_ids" in output:
        output = output["input_ids"]
    if hasattr(output, "tolist"):
        output = output.tolist()
    return list(output)


def chat_token_lengths(tokenizer, conversations: list[list[dict]]):
    """(full lengths, answer lengths, failures) per conversation under ``tokenizer``.

    Full length = len(apply_chat_template(messages, tokenize=True)). Answer length = full
    length minus the prompt (all turns but the last, with the generation prompt), i.e.
    the tokens the loss covers. A conversation the template refuses has None lengths and
    the template's error text as its failure.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise BaseModelError(
            f"Tokenizer {_tokenizer_name(tokenizer)!r} has no chat template, so token lengths "
            "cannot be counted the way training will see them.",
            fix="Load it with backend.bases.load.load_tokenizer (plain_template=True gives bases "
            "without one a 'User:/Assistant:' template), or pick an instruct/chat base.")
    full = _lengths(tokenizer, conversations, add_generation_prompt=False)
    prompts = _lengths(tokenizer, [c[:-1] for c in conversations], add_generation_prompt=True)
    lengths, answers, failures = [], [], []
    for (length, error), (prompt, _) in zip(full, prompts):
        lengths.append(length)
        failures.append(error)
        answers.append(None if length is None or prompt is None else max(0, length - prompt))
    return lengths, answers, failures


def _lengths(tokenizer, conversations, *, add_generation_prompt: bool) -> list[tuple[int | None, str | None]]:
    results: list[tuple[int | None, str | None]] = []
    for start in range(0, len(conversations), _TOKENIZE_BATCH):
        batch = conversations[start:start + _TOKENIZE_BATCH]
        try:
            ids = _token_ids(tokenizer.apply_chat_template(
                batch, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False))
            results += [(len(_token_ids(one)), None) for one in ids]
            continue
        except Exception:  # a template may refuse one conversation: find which, one by one
            pass
        for conversation in batch:
            try:
                ids = _token_ids(tokenizer.apply_chat_template(
                    conversation, tokenize=True, add_generation_prompt=add_generation_prompt,
                    return_dict=False))
                results.append((len(ids), None))
            except Exception as exc:  # noqa: BLE001 - templates raise jinja errors of any kind
                results.append((None, f"{type(exc).__name__}: {exc}"))
    return results


def _tokenizer_name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


# --- stats ----------------------------------------------------------------------------------


def _distribution(values: list[int]) -> dict[str, float | int]:
    ordered = sorted(values)
    rank = lambda q: ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # noqa: E731 - nearest rank
    return {"min": ordered[0], "p50": rank(0.5), "p90": rank(0.9), "max": ordered[-1],
            "mean": round(sum(ordered) / len(ordered), 1)}


def _token_stats(tokenizer, lengths, answers, max_tokens) -> dict | None:
    counted = [n for n in lengths if n is not None]
    if not counted:
        return None
    stats: dict[str, Any] = {"tokenizer": _tokenizer_name(tokenizer), **_distribution(counted)}
    stats["answer_total"] = sum(a for a in answers if a is not None)
    stats["limit"] = max_tokens
    stats["over_limit"] = sum(1 for n in counted if max_tokens is not None and n > max_tokens)
    return stats


def _split(n_training: int, n_eval: int, eval_names: list[str], eval_fraction: float | None, seed: int) -> dict:
    """Where the rows that judge the adapter come from, and what that means for a score."""
    split: dict[str, Any] = {"seed": seed, "eval_fraction": eval_fraction, "eval_rows": n_eval,
                             "eval_source": "file" if eval_names else "split", "eval_files": list(eval_names)}
    if eval_names:
        files = "files" if len(eval_names) > 1 else "file"
        split["note"] = f"from your evaluation {files} {', '.join(eval_names)}"
    elif n_eval:
        split["note"] = SPLIT_NOTE
    else:
        why = (f"fewer than {MIN_EXAMPLES_FOR_EVAL} examples" if n_training < MIN_EXAMPLES_FOR_EVAL
               else "the eval fraction is 0")
        split["note"] = (f"none held back ({why}), so no held-out loss or proof; drop in a separate evaluation "
                         "file to judge on new inputs")
    return split


def judged_on(split: dict) -> str:
    """One line: how many rows will judge the adapter and where they come from (the
    report's ``stats["split"]``)."""
    rows = split.get("eval_rows", 0)
    if not rows:
        return f"Judged on no rows: {split.get('note', '')}"
    return f"Judged on {counted(rows, 'row')} {split.get('note', '')}"


def _stats(clean, train, evaluation, reads, token_stats, problems, split) -> dict:
    per_file = Counter(e.source for e in clean)
    stats: dict[str, Any] = {
        "examples": len(clean),
        "train": len(train),
        "eval": len(evaluation),
        "files": {r.name: per_file.get(r.name, 0) for r in reads},
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
        "duplicates": sum(p.code == DUPLICATE.code for p in problems),
        "multi_turn": sum(1 for e in clean if sum(m["role"] == "assistant" for m in e.messages) > 1),
        "with_system": sum(1 for e in clean if e.messages[0]["role"] == "system"),
        "tokens": token_stats,
        "chars": _distribution([sum(len(m["content"]) for m in e.messages) for e in clean]) if clean else None,
        "split": split,
    }
    balance = label_balance([e.messages[-1]["content"] for e in clean])  # the answers, when they are labels
    stats["labels"] = balance.to_dict() if balance else None
    return stats


def _stats_lines(stats: dict) -> list[str]:
    split = stats["split"]
    if split.get("eval_source") == "file":
        how = " from the evaluation file"
    elif split.get("eval_fraction") is None:
        how = f"; seed {split['seed']}, held back by the rule: {EVAL_RULE}"
    else:
        how = f"; seed {split['seed']}, eval fraction {split['eval_fraction']}"
    lines = [f"Examples: {stats['examples']} (train {stats['train']}, eval {stats['eval']}{how})", judged_on(split)]
    tokens = stats.get("tokens")
    if tokens:
        limit = f", limit {tokens['limit']}" if tokens.get("limit") else ""
        lines.append(f"Tokens per example ({tokens['tokenizer']}{limit}): min {tokens['min']} · p50 {tokens['p50']} "
                     f"· p90 {tokens['p90']} · max {tokens['max']} · mean {tokens['mean']}; "
                     f"answer tokens in all: {tokens['answer_total']}")
    elif stats.get("chars"):
        chars = stats["chars"]
        lines.append(f"Characters per example (no base chosen, so no token counts): min {chars['min']} · "
                     f"p50 {chars['p50']} · p90 {chars['p90']} · max {chars['max']} · mean {chars['mean']}")
    if stats.get("labels"):
        lines.append(stats["labels"]["text"])
    if stats.get("multi_turn") or stats.get("with_system"):
        lines.append(f"Multi-turn examples: {stats['multi_turn']}; with a system turn: {stats['with_system']}")
    return lines


def _headline(report: DataReport) -> str:
    files = len(report.formats)
    verdict = "ready to import" if report.ok else "nothing can be imported until the errors are fixed"
    return (f"Data check of {counted(files, 'file')}: {counted(len(report.examples), 'usable example')}, "
            f"{counted(len(report.errors), 'error')}, {counted(len(report.warnings), 'warning')} — {verdict}.")


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- import ---------------------------------------------------------------------------------


def import_files(paths: list[Path], uploads_dir: Path, **check_kwargs) -> ImportResult:
    """Check, and only when there is no error (in any file, evaluation files included),
    write ``uploads_dir/<hash[:12]>/``.

    The folder is written under a temporary name and renamed into place, so a failure
    leaves nothing half-written. Importing the same content with the same split settings
    again returns the existing folder; other split settings replace it.
    """
    report = check_files(paths, **check_kwargs)
    if not report.ok:
        shown = "; ".join(f"{p.file or 'all files'} ({p.where()}): {p.message}" for p in report.errors[:3])
        more = f" (and {len(report.errors) - 3} more)" if len(report.errors) > 3 else ""
        raise DataError(
            f"The upload has {counted(len(report.errors), 'error')}, so nothing was imported: {shown}{more}",
            report=report,
            fix="Fix every problem listed in the report (by file, line and field) and upload again.",
        )
    uploads_dir = Path(uploads_dir)
    uploads_dir.mkdir(parents=True, exist_ok=True)
    final = uploads_dir / report.content_hash[:12]
    if _same_import(final, report):
        return ImportResult(final, report)
    with staged_folder(final) as tmp:
        write_rows(tmp / TRAIN_FILE, [e.messages for e in report.train])
        if report.eval:  # nothing held out (too few rows, or a split of 0): no eval file, not an empty one
            write_rows(tmp / EVAL_FILE, [e.messages for e in report.eval])
        (tmp / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return ImportResult(final, report)


def saved_report(folder: Path) -> dict[str, Any]:
    """The ``report.json`` an import wrote, as a dict; {} when it is missing or unreadable."""
    try:
        saved = json.loads((Path(folder) / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _same_import(folder: Path, report: DataReport) -> bool:
    saved = saved_report(folder)
    return (bool(saved) and saved.get("content_hash") == report.content_hash
            and saved.get("stats", {}).get("split") == report.stats["split"]
            and (folder / TRAIN_FILE).is_file() and (folder / EVAL_FILE).is_file() == bool(report.eval))
