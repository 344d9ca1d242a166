"""Which columns hold the inputs and which the answers: a guess from the names and the
content of a file's first rows, for a person to confirm; and how the labels are spread.

:func:`preview_columns` reads the head of a CSV/TSV file or of JSON records with named
fields (``{"email": ..., "label": ...}``) and returns a :class:`ColumnGuess`: the columns
found, the first rows, the guessed input and output columns and why, and whether the data
doctor reads the file without a choice (its columns carry names it knows, e.g.
``input,output`` or ``question,answer``). The guess: a known name ranks first
(prompt/input/question/text/query for the input, completion/output/answer/label/response/target
for the answer), then a telling one (email, review, ... / category, sentiment, ...), then the
content: the short column with few distinct values is the label, the long varied one the
input; an id column is neither.

:func:`looks_like_labels` is the one rule for "these answers are labels" (the plan's task
from the data uses it too) and :func:`label_balance` counts them and says when the largest
label has :data:`IMBALANCE_RATIO` times the examples of the smallest.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from backend.data.csv_rows import delimiter_of, named_columns
from backend.data.file_read import FileRead
from backend.data.formats import CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from backend.data.json_records import field_text, is_flat, json_values
from backend.words import counted

PREVIEW_ROWS = 5  # rows shown
SAMPLE_ROWS = 200  # rows whose content the guess reads
READ_BYTES = 1 << 20  # of the file's head read for the preview
SHOWN_CHARS = 160  # of each cell shown
MAX_LABELS = 12
IMBALANCE_RATIO = 3.0

# Names that rank first (the data doctor reads them without a choice), best first.
KNOWN_INPUTS = ("prompt", "input", "question", "text", "query", "instruction")
KNOWN_OUTPUTS = ("completion", "output", "answer", "label", "response", "target")
# Names that tell, short of the known ones.
INPUT_HINTS = ("email", "mail", "message", "msg", "review", "comment", "sentence", "content", "body", "document",
               "doc", "ticket", "tweet", "post", "description", "utterance", "source", "context", "article",
               "passage", "request", "user", "title", "subject", "note", "입력", "질문", "본문", "문장", "내용",
               "리뷰", "이메일", "메일", "문의", "글")
OUTPUT_HINTS = ("category", "class", "sentiment", "intent", "tag", "topic", "type", "kind", "rating", "reply",
                "summary", "result", "gold", "assistant", "y", "답", "정답", "라벨", "레이블", "분류", "감정", "출력",
                "답변", "응답", "요약", "카테고리")
_ID_NAME = re.compile(r"^(?:id|idx|index|uuid|guid|row|no|num|number|#|번호)$|(?:^|[_\s-])id$", re.IGNORECASE)


# The Data tab's column pickers (ui/data_panel.py labels them so) and how the page and its
# assistant say to use them; the CLI names its flags instead (problems.CHOOSE_COLUMNS).
INPUT_COLUMN_LABEL = "Input column"
OUTPUT_COLUMN_LABEL = "Answer column"
IMPORT_COLUMNS_LABEL = "Import with these columns"


def choose_on_page(input_column: str | None = None, output_column: str | None = None) -> str:
    """How to choose a file's columns on the page: the Data tab's pickers, or the assistant."""
    example = f"use {input_column or '<column>'} as the input and {output_column or '<column>'} as the answer"
    return (f"pick them in the Data tab's “{INPUT_COLUMN_LABEL}” and “{OUTPUT_COLUMN_LABEL}” lists and press "
            f"“{IMPORT_COLUMNS_LABEL}”, or tell the assistant, e.g. “{example}”")


def looks_like_labels(answers: list[str]) -> bool:
    """A few short labels: 2-12 distinct answers of 1-3 words, each seen twice on average."""
    answers = [a.strip() for a in answers if a and a.strip()]
    labels = {a.lower().rstrip(".") for a in answers}
    return (2 <= len(labels) <= MAX_LABELS and all(len(a.split()) <= 3 for a in answers)
            and len(answers) >= 2 * len(labels))


# --- the guess ---------------------------------------------------------------------------------


@dataclass
class ColumnGuess:
    """What a file's head shows: its kind, columns, first rows, and the columns to read.

    ``kind``: "table" (a CSV/TSV, or JSON records of plain fields: columns to pick),
    "records" (chat, Gemini, sharegpt... records read by their keys: nothing to pick),
    "text" (style paragraphs or ``{"text": ...}`` records) or "unknown" (``note`` says why).
    ``named``: the (input, output) the data doctor reads by their names, None when it cannot
    tell; then ``needs_choice`` is True and nothing imports until columns are chosen.
    """

    file: str
    kind: str
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    input: str | None = None
    output: str | None = None
    named: tuple[str, str] | None = None
    why: list[str] = field(default_factory=list)
    described: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def needs_choice(self) -> bool:
        return self.kind == "table" and self.named is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "named": list(self.named) if self.named else None, "needs_choice": self.needs_choice}

    def pair(self, input_column: str | None, output_column: str | None) -> tuple[str, str] | str:
        """The (input, output) columns for what was asked (any case; one left out is the
        guess's), or why they cannot be."""
        by_lower = {c.lower(): c for c in self.columns}
        found = ", ".join(repr(c) for c in self.columns)
        asked = []
        for given in (input_column, output_column):
            if given is not None and given.strip().lower() not in by_lower:
                return f"{self.file} has no column {given!r}; its columns are {found}."
            asked.append(by_lower[given.strip().lower()] if given is not None else None)
        chosen_in = asked[0] or (self.input if self.input != asked[1] else None)
        chosen_out = asked[1] or (self.output if self.output != asked[0] else None)
        if not chosen_in or not chosen_out:
            return f"Which column holds the {'inputs' if not chosen_in else 'answers'}? The columns are {found}."
        if chosen_in == chosen_out:
            return f"The input and the answer must be two different columns ({chosen_in!r} was given for both)."
        return chosen_in, chosen_out

    def ask(self, how_to_choose: str) -> str:
        """The question a file that needs a choice raises, with the guess and why, ending with
        ``how_to_choose`` (the caller's controls): "emails.csv has the columns 'email', 'label';
        which hold the inputs and which the answers? My guess: ..."."""
        found = ", ".join(repr(c) for c in self.columns)
        if self.input and self.output:
            guess = (f"My guess: {self.input!r} is the input and {self.output!r} the answer "
                     f"({'; '.join(self.why)}).")
        else:
            guess = f"I cannot guess a pair: {'; '.join(self.why)}."
        return (f"{self.file} has the columns {found}; which hold the inputs and which the answers? {guess} "
                f"Nothing is imported yet: {how_to_choose}.")


def preview_columns(path: str | Path, name: str | None = None) -> ColumnGuess:
    """The head of one file (at most :data:`READ_BYTES`): its columns, first rows and the
    guess of its input and output columns. Never raises for bad content (``kind`` "unknown")."""
    path = Path(path)
    name = name or path.name
    suffix = path.suffix.lower()
    try:
        with path.open("rb") as handle:
            head = handle.read(READ_BYTES + 1)
    except OSError as exc:
        return ColumnGuess(name, "unknown", note=f"cannot read it: {exc.strerror or exc}")
    if len(head) > READ_BYTES:  # keep whole lines only
        head = head[:READ_BYTES]
        head = head[: head.rfind(b"\n") + 1] or head
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip():
        return ColumnGuess(name, "unknown", note="it is empty")
    if suffix in CSV_SUFFIXES:
        columns, rows = _csv_table(text, "\t" if suffix == ".tsv" else ",")
        return _table(name, columns, rows, named=_both(named_columns(columns)))
    if suffix in JSON_SUFFIXES or (suffix not in TEXT_SUFFIXES and text.lstrip()[:1] in "{["):
        return _json_table(name, text, suffix)
    if suffix in TEXT_SUFFIXES:
        return ColumnGuess(name, "text", note="plain text: one style example per paragraph, nothing to pick")
    return ColumnGuess(name, "unknown", note=f"file type {suffix or '(none)'!r} is not read")


def table_of(paths: list[str | Path]) -> ColumnGuess | None:
    """The preview of the first table among ``paths`` (None when none is a table)."""
    return next((g for g in map(preview_columns, paths) if g.kind == "table"), None)


def resolve_columns(guess: ColumnGuess | None, input_column: str | None, output_column: str | None,
                    how_to_choose: Callable[[str | None, str | None], str]) -> tuple[dict[str, str], str]:
    """(the data doctor's column arguments, a question): {} reads by the columns' names, and a
    question says why nothing can import yet: a table not read by its names whose columns were
    not chosen (the guess, ending with ``how_to_choose(input, output)``: the caller's controls), or
    chosen columns it does not have. ``guess`` (the first table's preview) takes the chosen pair."""
    if guess is None:
        return ({"input_column": input_column, "output_column": output_column}
                if input_column or output_column else {}), ""
    if input_column is None and output_column is None:
        return {}, guess.ask(how_to_choose(guess.input, guess.output)) if guess.needs_choice else ""
    chosen = guess.pair(input_column, output_column)
    if isinstance(chosen, str):
        return {}, chosen
    guess.input, guess.output = chosen
    if guess.named == chosen:  # the doctor reads them by their names (an instruction column the alpaca way)
        return {}, ""
    return {"input_column": chosen[0], "output_column": chosen[1]}, ""


def _both(pair: tuple[str | None, str | None]) -> tuple[str, str] | None:
    return (pair[0], pair[1]) if pair[0] and pair[1] else None


def _csv_table(text: str, delimiter: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter_of(text.split("\n", 1)[0], delimiter))
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error):
        return [], []
    rows: list[dict[str, str]] = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append({column: (row[i] if i < len(row) else "") for i, column in enumerate(header) if column})
            if len(rows) >= SAMPLE_ROWS:
                break
    except csv.Error:
        pass  # a broken row ends the preview; the data doctor names it
    return [h for h in header if h], rows


def _json_table(name: str, text: str, suffix: str) -> ColumnGuess:
    records = []
    for _, value in json_values(text, suffix or ".jsonl", FileRead(name)):
        records.append(value)
        if len(records) >= SAMPLE_ROWS:
            break
    if not records:
        return ColumnGuess(name, "unknown", note="no JSON record could be read from its first lines")
    if not all(is_flat(r) for r in records):
        return ColumnGuess(name, "records", note="records read by their keys (chat turns): nothing to pick")
    columns = list(dict.fromkeys(key for record in records for key in record))
    if columns == ["text"]:
        return ColumnGuess(name, "text", columns=columns, note="style text records: nothing to pick")
    rows = [{key: field_text(record.get(key)) for key in columns} for record in records]
    return _table(name, columns, rows, named=_json_named(columns))


def _json_named(keys: list[str]) -> tuple[str, str] | None:
    """The pair the data doctor reads a flat record by, from its keys (json_records' readers)."""
    present = set(keys)
    for pair in (("prompt", "completion"), ("instruction", "output"), ("input", "output")):
        if set(pair) <= present:
            return pair
    return None


def _table(name: str, columns: list[str], rows: list[dict[str, str]], *, named) -> ColumnGuess:
    shown = [{c: _short(row.get(c, "")) for c in columns} for row in rows[:PREVIEW_ROWS]]
    if not columns:
        return ColumnGuess(name, "unknown", note="no header row")
    described = {c: _describe(c, [row.get(c, "") for row in rows]) for c in columns}
    if named:
        why = [f"{named[0]!r} and {named[1]!r} are read by their names"]
        return ColumnGuess(name, "table", columns, shown, named[0], named[1], named, why, described)
    chosen_in, chosen_out, why = guess_columns(columns, rows)
    return ColumnGuess(name, "table", columns, shown, chosen_in, chosen_out, None, why, described)


def guess_columns(columns: list[str], rows: list[dict[str, str]]) -> tuple[str | None, str | None, list[str]]:
    """(input, output, why): the pair of different columns with the best score, each column
    scored by its name (a known name first) and its content (few short distinct values for
    the answer, long varied text for the input), the input a little preferred before the
    output (left to right). Empty and id columns are never picked."""
    stats = {c: _Stats.of(c, [row.get(c, "") for row in rows]) for c in columns}
    usable = [c for c in columns if stats[c].filled and not stats[c].id_like]
    if not usable:
        return None, None, ["no column holds text"]
    if len(usable) == 1:
        return usable[0], None, [f"only {usable[0]!r} holds text: there is no second column for the answers"]
    longest = max(stats[c].mean_chars for c in usable) or 1
    as_input = {c: _name_score(c, KNOWN_INPUTS, INPUT_HINTS) + stats[c].input_score(longest) for c in usable}
    as_output = {c: _name_score(c, KNOWN_OUTPUTS, OUTPUT_HINTS) + stats[c].output_score() for c in usable}
    best = max(((i, o) for i in usable for o in usable if i != o),
               key=lambda p: as_input[p[0]] + as_output[p[1]] + (0.25 if columns.index(p[0]) < columns.index(p[1])
                                                                  else 0))
    chosen_in, chosen_out = best
    return chosen_in, chosen_out, [_why(chosen_in, stats[chosen_in], "input"), _why(chosen_out, stats[chosen_out], "output")]


@dataclass
class _Stats:
    filled: list[str]
    id_like: bool
    mean_chars: float
    mean_words: float
    distinct: int
    labels: bool

    @classmethod
    def of(cls, name: str, values: list[str]) -> _Stats:
        filled = [v.strip() for v in values if v and v.strip()]
        if not filled:
            return cls([], False, 0.0, 0.0, 0, False)
        distinct = len({v.lower() for v in filled})
        numbered = all(v.isdigit() for v in filled) and distinct == len(filled) and len(filled) > 2
        return cls(filled, bool(_ID_NAME.search(name.strip())) or numbered,
                   sum(map(len, filled)) / len(filled), sum(len(v.split()) for v in filled) / len(filled),
                   distinct, looks_like_labels(filled))

    def input_score(self, longest: float) -> float:
        varied = 1.0 if self.distinct >= 0.9 * len(self.filled) else 0.0
        return 2 * self.mean_chars / longest + varied - (3.0 if self.labels else 0.0)

    def output_score(self) -> float:
        if self.labels:
            return 3.0
        return 0.5 if self.mean_words <= 3 and self.distinct < len(self.filled) else 0.0


def _name_score(name: str, known: tuple[str, ...], hints: tuple[str, ...]) -> float:
    lowered = name.strip().lower()
    if lowered in known:
        return 10 - 0.3 * known.index(lowered)
    parts = [p for p in re.split(r"[\s_.\-]+", lowered) if p]
    if any(p in known for p in parts):
        return 5.0
    if lowered in hints or any(p in hints for p in parts):
        return 4.0
    if any(len(h) >= 2 and h in lowered for h in hints):
        return 3.0
    return 0.0


def _why(column: str, stats: _Stats, role: str) -> str:
    if role == "output" and stats.labels:
        top = [label for label, _ in Counter(stats.filled).most_common(4)]
        return (f"{column!r} looks like the answer: {counted(stats.distinct, 'distinct short value')} "
                f"({', '.join(top)}{', …' if stats.distinct > 4 else ''})")
    if role == "output":
        return f"{column!r} looks like the answer (by its name and place)"
    return f"{column!r} looks like the input: varied text, about {stats.mean_chars:.0f} characters"


def _describe(column: str, values: list[str]) -> str:
    stats = _Stats.of(column, values)
    if not stats.filled:
        return "empty"
    if stats.id_like:
        return "an id"
    if stats.labels:
        return f"{counted(stats.distinct, 'label')}"
    return f"text, about {stats.mean_chars:.0f} characters"


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


# --- the labels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelBalance:
    """How many examples each label has (most first), and whether they are out of balance."""

    counts: dict[str, int]

    @property
    def ratio(self) -> float:
        values = list(self.counts.values())
        return max(values) / min(values)

    @property
    def imbalanced(self) -> bool:
        return self.ratio >= IMBALANCE_RATIO

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "ratio": round(self.ratio, 2), "imbalanced": self.imbalanced,
                "text": self.text()}

    def text(self) -> str:
        """"Labels: billing 30 · bug 12 · other 6. Out of balance: ..." in plain words."""
        shown = " · ".join(f"{label} {count}" for label, count in self.counts.items())
        largest, smallest = next(iter(self.counts)), list(self.counts)[-1]
        times = f"{self.ratio:.1f}".rstrip("0").rstrip(".")
        if not self.imbalanced:
            return f"Labels: {shown} (balanced: the largest has {times}× the examples of the smallest)."
        return (f"Labels: {shown}. Out of balance: {largest!r} has {times}× the examples of {smallest!r}, so the "
                f"adapter may lean towards {largest!r}. Add examples of {smallest!r} (or drop some of {largest!r}).")


def label_balance(answers: list[str]) -> LabelBalance | None:
    """The labels' counts when ``answers`` are labels (:func:`looks_like_labels`), else None."""
    answers = [a.strip() for a in answers if a and a.strip()]
    if not looks_like_labels(answers):
        return None
    counts = Counter(answers)
    return LabelBalance(dict(sorted(counts.items(), key=lambda item: (-item[1], item[0].lower()))))
