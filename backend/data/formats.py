"""Reading training examples in the formats people bring, and naming what is wrong.

One reader per file kind (JSON lines / JSON array, CSV/TSV, plain text) turns a file
into normalized chat examples: ``[{"role": "system"|"user"|"assistant", "content": str},
...]`` whose last turn is the assistant's answer. JSON records are recognised by their
keys, one record at a time:

=====================  ==========================================================
``messages``           OpenAI / TRL chat (roles system/user/assistant; Gemini's
                       ``model`` is read as assistant)
``contents``           Gemini (``parts`` with ``text``; ``systemInstruction`` or
                       ``system_instruction``)
``prompt/completion``  TRL prompt-completion, strings or conversational lists
``instruction/output`` alpaca (``input`` optional); ``input/output`` alone also works
``conversations``      sharegpt (``from`` human/gpt/system, ``value``)
``text``               style text: paired with a user prompt derived from the goal
=====================  ==========================================================

CSV/TSV files need a header; the input and output columns are detected by common
names (:data:`INPUT_COLUMNS`, :data:`OUTPUT_COLUMNS`) or chosen explicitly. Plain text
(.txt/.md) gives one example per paragraph (blocks separated by blank lines).

Readers never raise for bad data: every problem becomes a :class:`Problem` built from
one :class:`Rule`, so the check and the words that explain it come from one place.
This module knows nothing about tokenizers, splits or the disk layout of imports
(that is :mod:`backend.data.doctor`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]

# --- problems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data, located by file, line (1-based) and field.

    ``file`` is None for problems about the upload as a whole (e.g. too few examples);
    ``line`` is None for problems about a whole file. ``code`` names the :class:`Rule`.
    """

    severity: Severity
    file: str | None
    line: int | None
    field: str | None
    message: str
    code: str = ""

    def where(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(f"field {self.field!r}")
        if parts:
            return ", ".join(parts)
        return "whole file" if self.file else "all files"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """A check's identity, severity and explanation (what was given, what is wrong, what to do)."""

    code: str
    severity: Severity
    template: str

    def problem(self, file: str | None, line: int | None = None, field: str | None = None,
                **values: Any) -> Problem:
        return Problem(self.severity, file, line, field, self.template.format(**values), self.code)


ACCEPTED_JSON = (
    '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}; '
    'Gemini {"contents": [{"role": "user"|"model", "parts": [{"text": ...}]}]}; '
    '{"prompt": ..., "completion": ...}; alpaca {"instruction", "input" (optional), "output"}; '
    'sharegpt {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}; '
    'or {"text": ...} for style text'
)
ACCEPTED_FILES = ".jsonl, .json, .csv, .tsv, .txt, .md"

FILE_NOT_FOUND = Rule("file_not_found", "error",
                      "File {path!r} does not exist or is not a file. Pick an existing file.")
UNSUPPORTED_FILE = Rule(
    "unsupported_file", "error",
    "File type {suffix!r} is not supported. Save the examples as one of: " + ACCEPTED_FILES + ".")
NOT_UTF8 = Rule(
    "not_utf8", "error",
    "The file is not UTF-8 text: byte {byte} at line {at_line}, column {column} cannot be decoded "
    "(lines with such bytes: {lines}). Save the file with UTF-8 encoding (e.g. "
    "`iconv -f latin1 -t utf-8 in.csv > out.csv`, or 'Save as UTF-8' in your editor).")
EMPTY_FILE = Rule("empty_file", "error",
                  "The file holds no examples ({detail}). Add examples or leave the file out.")
BAD_JSON = Rule(
    "bad_json", "error",
    "This line is not valid JSON ({error}). Write exactly one JSON object per line, "
    "with double-quoted keys and strings.")
NOT_OBJECT = Rule("not_object", "error",
                  "Expected a JSON object ({{...}}), got a JSON {kind}. Write one object per example.")
UNKNOWN_FORMAT = Rule(
    "unknown_format", "error",
    "Unknown example format: keys found {keys}. Accepted: "
    + ACCEPTED_JSON.replace("{", "{{").replace("}", "}}") + ".")
MISSING_FIELD = Rule("missing_field", "error",
                     "{name!r} is missing; {fmt} examples need {needs}. Add it.")
WRONG_TYPE = Rule("wrong_type", "error",
                  "Expected {expected}, got {given}. {fix}")
UNKNOWN_ROLE = Rule("unknown_role", "error",
                    "Unknown role {role!r}. Use one of: {accepted}.")
EMPTY_TEXT = Rule("empty_text", "error",
                  "The text is empty. Write the text, or remove this {what}.")
NO_ASSISTANT = Rule(
    "no_assistant", "error",
    "The example has no assistant turn (roles given: {roles}), so there is no answer to learn. "
    "Add the answer as the last turn, with role {assistant_role!r}.")
LAST_NOT_ASSISTANT = Rule(
    "last_not_assistant", "error",
    "The last turn has role {role!r}; it must be the assistant's answer. Remove the trailing "
    "turn(s) or add the answer after them.")
NO_USER = Rule("no_user", "error",
               "The example has no user turn (roles given: {roles}). Add the prompt as a user turn "
               "before the answer.")
CSV_MISSING_COLUMNS = Rule(
    "csv_missing_columns", "error",
    "Cannot tell which columns hold the {missing}: the columns found are {found}. Name them "
    "{recognised}, or choose them with input_column= / output_column= "
    "(--input-column / --output-column in the CLI).")
CSV_UNKNOWN_COLUMN = Rule(
    "csv_unknown_column", "error",
    "The chosen {which} column {name!r} is not in the file; the columns found are {found}. "
    "Choose one of those.")
TEMPLATE_FAILED = Rule(
    "template_failed", "error",
    "The base's chat template refuses this example: {error}. Reshape the turns the way this "
    "base expects (e.g. alternate user/assistant, no system turn), or pick another base.")
TOO_LONG = Rule(
    "too_long", "error",
    "The example is {tokens} tokens long under the base's tokenizer; the limit is {limit} "
    "(the smaller of the base's context and the training max_length). Shorten or split it, "
    "or raise max_length if the base allows.")
DUPLICATE = Rule(
    "duplicate", "warning",
    "Exact duplicate of the example at {first}. It will be trained on twice (and may land in "
    "both train and eval); remove it unless that is intended.")
TOO_FEW = Rule(
    "too_few", "warning",
    "Only {count} example(s); the plan wants at least {minimum}. Training will run, but "
    "expect the adapter to learn little. Add more examples.")
NO_EXAMPLES = Rule("no_examples", "error",
                   "No usable examples{detail}. Fix the problems above or add examples.")

RULES = {rule.code: rule for rule in (
    FILE_NOT_FOUND, UNSUPPORTED_FILE, NOT_UTF8, EMPTY_FILE, BAD_JSON, NOT_OBJECT, UNKNOWN_FORMAT,
    MISSING_FIELD, WRONG_TYPE, UNKNOWN_ROLE, EMPTY_TEXT, NO_ASSISTANT, LAST_NOT_ASSISTANT, NO_USER,
    CSV_MISSING_COLUMNS, CSV_UNKNOWN_COLUMN, TEMPLATE_FAILED, TOO_LONG, DUPLICATE, TOO_FEW,
    NO_EXAMPLES)}


# --- reading one file ------------------------------------------------------------------------


@dataclass
class RawExample:
    """A normalized example as read from a file, before upload-wide checks."""

    messages: list[dict]
    line: int | None
    format: str


@dataclass
class FileRead:
    """What one file gave: its examples, its problems and the format(s) detected."""

    name: str
    examples: list[RawExample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)

    def add(self, rule: Rule, line: int | None = None, field_: str | None = None, **values: Any) -> None:
        self.problems.append(rule.problem(self.name, line, field_, **values))

    def found(self, fmt: str) -> None:
        if fmt not in self.formats:
            self.formats.append(fmt)

    @property
    def format(self) -> str:
        if not self.formats:
            return "unknown"
        if len(self.formats) == 1:
            return self.formats[0]
        return "mixed: " + ", ".join(self.formats)

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


@dataclass(frozen=True)
class CsvColumns:
    """Which CSV columns to read; None means 'detect by common names'."""

    input: str | None = None
    output: str | None = None


INPUT_COLUMNS = ("input", "prompt", "question", "text", "query")
OUTPUT_COLUMNS = ("output", "completion", "answer", "label", "response", "target")
SYSTEM_COLUMNS = ("system", "system_prompt")
JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
TEXT_SUFFIXES = {".txt", ".md", ".text"}


def read_file(path: Path, name: str, *, style_prompt: str, columns: CsvColumns = CsvColumns()) -> FileRead:
    """Read one file into normalized examples, collecting every problem on the way."""
    result = FileRead(name)
    path = Path(path)
    if not path.is_file():
        result.add(FILE_NOT_FOUND, path=str(path))
        return result
    suffix = path.suffix.lower()
    data = path.read_bytes()
    text = _decode(data, result)
    if not text.strip():
        result.add(EMPTY_FILE, detail="it is empty")
        return result
    kind = _kind(suffix, text)
    if kind is None:
        result.add(UNSUPPORTED_FILE, suffix=suffix or "(no extension)")
        return result
    if kind == "json":
        for line, record in _json_records(text, suffix, result):
            _read_record(record, line, result, style_prompt)
    elif kind == "csv":
        _read_csv(text, "\t" if suffix == ".tsv" else ",", columns, result)
    else:
        for line, paragraph in paragraphs(text):
            result.found("text")
            result.examples.append(RawExample(_style_example(style_prompt, paragraph), line, "text"))
    if not result.examples and not result.failed:
        result.add(EMPTY_FILE, detail="only blank lines" if kind != "csv" else "a header and no rows")
    return result


def _kind(suffix: str, text: str) -> str | None:
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if text.lstrip()[:1] in ("{", "["):  # no or unknown extension: trust the content
        return "json"
    return None


def _decode(data: bytes, result: FileRead) -> str:
    """UTF-8 text (a BOM is dropped); on bad bytes, one problem naming where, then a lossy read."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:  # plain utf-8 so that positions count the BOM too
        bad_lines = []
        for number, raw in enumerate(data.split(b"\n"), 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.append(number)
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        shown = ", ".join(map(str, bad_lines[:10])) + (f" and {len(bad_lines) - 10} more" if len(bad_lines) > 10 else "")
        result.problems.append(NOT_UTF8.problem(result.name, line, None, byte=f"0x{data[exc.start]:02X}",
                                                at_line=line, column=column, lines=shown))
    return data.decode("utf-8-sig", errors="replace")


# --- JSON ------------------------------------------------------------------------------------


def _json_records(text: str, suffix: str, result: FileRead):
    """(line, value) pairs from JSON lines, a JSON array, or one JSON object."""
    start = text.lstrip()[:1]
    if start == "[":
        yield from _json_array(text, result)
        return
    if suffix == ".json" and start == "{":
        try:  # one (possibly pretty-printed) object
            value = json.loads(text)
        except json.JSONDecodeError:
            pass  # JSON lines saved as .json: read line by line below
        else:
            yield text.count("\n", 0, text.index("{")) + 1, value
            return
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            result.add(BAD_JSON, number, None, error=f"{exc.msg} at column {exc.colno}")


def _json_array(text: str, result: FileRead):
    """Walk a top-level JSON array element by element, keeping each element's line."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip()) + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            result.add(BAD_JSON, exc.lineno, None, error=f"{exc.msg} at column {exc.colno}")
            return
        yield text.count("\n", 0, pos) + 1, value
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            line = text.count("\n", 0, pos) + 1
            result.add(BAD_JSON, line, None, error="expected ',' or ']' between array elements")
            return


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _read_record(record: Any, line: int, result: FileRead, style_prompt: str) -> None:
    if not isinstance(record, dict):
        result.add(NOT_OBJECT, line, None, kind=_JSON_KINDS.get(type(record), type(record).__name__))
        return
    reader = _reader_for(record)
    if reader is None:
        keys = ", ".join(repr(k) for k in record) or "none"
        result.add(UNKNOWN_FORMAT, line, None, keys=keys)
        return
    before = len(result.problems)
    fmt, turns, container = reader(record, line, result, style_prompt)
    result.found(fmt)
    if turns is None or len(result.problems) > before:
        return
    if _check_conversation(turns, container, line, result):
        result.examples.append(RawExample([message for message, _ in turns], line, fmt))


def _reader_for(record: dict):
    if "messages" in record:
        return _from_messages
    if "contents" in record:
        return _from_gemini
    if "conversations" in record:
        return _from_sharegpt
    if "prompt" in record or "completion" in record:
        return _from_prompt_completion
    if "instruction" in record or "output" in record or "input" in record:
        return _from_alpaca
    if "text" in record:
        return _from_text
    return None


Turns = list[tuple[dict, str]]  # (normalized message, the field it came from)

CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "model": "assistant"}
GEMINI_ROLES = {"user": "user", "model": "assistant", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}


def _turn_list(value: Any, path: str, line: int, result: FileRead, *, role_key: str, text_key: str,
               roles: dict[str, str], accepted: str, text_of) -> Turns | None:
    """Normalize a list of turns; every bad turn is reported, None if any was bad."""
    if not isinstance(value, list) or not value:
        given = "an empty list" if isinstance(value, list) else _describe(value)
        result.add(WRONG_TYPE, line, path, expected=f"a non-empty list of turns with {role_key!r} and "
                   f"{text_key!r}", given=given, fix="Give the conversation as a JSON list of turns.")
        return None
    turns: Turns = []
    ok = True
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            result.add(WRONG_TYPE, line, where, expected=f"an object with {role_key!r} and {text_key!r}",
                       given=_describe(item), fix="Write each turn as a JSON object.")
            ok = False
            continue
        role = item.get(role_key)
        if role_key not in item:
            result.add(MISSING_FIELD, line, f"{where}.{role_key}", name=role_key, fmt="each turn of these",
                       needs=f"{role_key!r} ({accepted}) and {text_key!r}")
            ok = False
        elif not isinstance(role, str) or role.strip().lower() not in roles:
            result.add(UNKNOWN_ROLE, line, f"{where}.{role_key}", role=role, accepted=accepted)
            ok = False
        if text_key not in item:
            result.add(MISSING_FIELD, line, f"{where}.{text_key}", name=text_key, fmt="each turn of these",
                       needs=f"{role_key!r} and {text_key!r}")
            ok = False
            continue
        text = text_of(item[text_key], f"{where}.{text_key}", line, result)
        if text is None:
            ok = False
            continue
        if not text.strip():
            result.add(EMPTY_TEXT, line, f"{where}.{text_key}", what="turn")
            ok = False
            continue
        if ok:
            turns.append(({"role": roles[role.strip().lower()], "content": text}, where))
    return turns if ok else None


def _plain_text(value: Any, path: str, line: int, result: FileRead) -> str | None:
    if isinstance(value, str):
        return value
    result.add(WRONG_TYPE, line, path, expected="a string", given=_describe(value),
               fix="Write the text as a JSON string.")
    return None


def _chat_content(value: Any, path: str, line: int, result: FileRead) -> str | None:
    """OpenAI content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(value, list) and value and all(
            isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)
            for p in value):
        return "\n".join(p["text"] for p in value)
    if isinstance(value, list):
        result.add(WRONG_TYPE, line, path, expected='a string or a list of {"type": "text", "text": ...} parts',
                   given=_describe(value), fix="Only text is supported; drop image/audio parts.")
        return None
    return _plain_text(value, path, line, result)


def _gemini_parts(value: Any, path: str, line: int, result: FileRead) -> str | None:
    """Gemini parts: a list of {"text": ...} (joined with newlines); other parts are refused."""
    if isinstance(value, list) and value and all(isinstance(p, dict) and isinstance(p.get("text"), str)
                                                 for p in value):
        return "\n".join(p["text"] for p in value)
    result.add(WRONG_TYPE, line, path, expected='a non-empty list of {"text": ...} parts', given=_describe(value),
               fix="Only text parts are supported; drop inlineData/fileData parts.")
    return None


def _from_messages(record: dict, line: int, result: FileRead, style_prompt: str):
    turns = _turn_list(record["messages"], "messages", line, result, role_key="role", text_key="content",
                       roles=CHAT_ROLES, accepted="system, user, assistant (or 'model')",
                       text_of=_chat_content)
    return "messages", turns, "messages"


def _from_gemini(record: dict, line: int, result: FileRead, style_prompt: str):
    turns = _turn_list(record["contents"], "contents", line, result, role_key="role", text_key="parts",
                       roles=GEMINI_ROLES, accepted="user, model", text_of=_gemini_parts)
    key = next((k for k in ("systemInstruction", "system_instruction") if k in record), None)
    if key is None:
        return "gemini", turns, "contents"
    value = record[key]
    if isinstance(value, str):
        text = value
    else:
        parts = value.get("parts") if isinstance(value, dict) else value
        text = _gemini_parts(parts, f"{key}.parts", line, result)
    if text is not None and not text.strip():
        result.add(EMPTY_TEXT, line, key, what="system instruction")
        text = None
    if text is None or turns is None:
        return "gemini", None, "contents"
    return "gemini", [({"role": "system", "content": text}, key), *turns], "contents"


def _from_sharegpt(record: dict, line: int, result: FileRead, style_prompt: str):
    turns = _turn_list(record["conversations"], "conversations", line, result, role_key="from",
                       text_key="value", roles=SHAREGPT_ROLES, accepted="human, gpt, system",
                       text_of=_plain_text)
    return "sharegpt", turns, "conversations"


def _from_prompt_completion(record: dict, line: int, result: FileRead, style_prompt: str):
    needs = "'prompt' and 'completion' (strings, or lists of chat turns)"
    missing = [key for key in ("prompt", "completion") if key not in record]
    for key in missing:
        result.add(MISSING_FIELD, line, key, name=key, fmt="prompt/completion", needs=needs)
    if missing:
        return "prompt-completion", None, "completion"
    turns: Turns = []
    conversational = False
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = record[key]
        if isinstance(value, list):
            conversational = True
            part = _turn_list(value, key, line, result, role_key="role", text_key="content", roles=CHAT_ROLES,
                              accepted="system, user, assistant", text_of=_chat_content)
        else:
            text = _plain_text(value, key, line, result)
            part = None
            if text is not None and not text.strip():
                result.add(EMPTY_TEXT, line, key, what="example")
            elif text is not None:
                part = [({"role": role, "content": text}, key)]
        if part is None:
            turns = None
        elif turns is not None:
            turns.extend(part)
    fmt = "prompt-completion (conversational)" if conversational else "prompt-completion"
    return fmt, turns, "completion"


def _from_alpaca(record: dict, line: int, result: FileRead, style_prompt: str):
    """alpaca rows; {"input", "output"} without an instruction reads the input as the prompt."""
    has_instruction = "instruction" in record
    fmt = "alpaca" if has_instruction else "input-output"
    needs = "'instruction' and 'output' ('input' optional)" if has_instruction else "'input' and 'output'"
    required = ("instruction", "output") if has_instruction or "input" not in record else ("input", "output")
    texts: dict[str, str | None] = {}
    for key in ("instruction", "input", "output"):
        if key not in record or (key == "input" and record[key] is None):
            if key in required:
                result.add(MISSING_FIELD, line, key, name=key, fmt=fmt, needs=needs)
                texts[key] = None
            continue
        text = _plain_text(record[key], key, line, result)
        if text is not None and not text.strip() and key in required:
            result.add(EMPTY_TEXT, line, key, what="example")
            text = None
        texts[key] = text
    if any(text is None for text in texts.values()):
        return fmt, None, "output"
    parts = [texts.get("instruction") or "", texts.get("input") or ""]
    prompt = "\n\n".join(p for p in parts if p.strip())
    turns = [({"role": "user", "content": prompt}, required[0]),
             ({"role": "assistant", "content": texts["output"]}, "output")]
    if isinstance(record.get("system"), str) and record["system"].strip():
        turns.insert(0, ({"role": "system", "content": record["system"]}, "system"))
    return fmt, turns, "output"


def _from_text(record: dict, line: int, result: FileRead, style_prompt: str):
    text = _plain_text(record["text"], "text", line, result)
    if text is None:
        return "text", None, "text"
    if not text.strip():
        result.add(EMPTY_TEXT, line, "text", what="example")
        return "text", None, "text"
    messages = _style_example(style_prompt, text.strip())
    return "text", [(m, "text") for m in messages], "text"


def _check_conversation(turns: Turns, container: str, line: int | None, result: FileRead) -> bool:
    """The shape every example needs: a user turn, and an assistant answer last."""
    roles = [message["role"] for message, _ in turns]
    shown = ", ".join(roles) or "none"
    ok = True
    if "assistant" not in roles:
        result.add(NO_ASSISTANT, line, container, roles=shown,
                   assistant_role="gpt" if container == "conversations" else
                   "model" if container == "contents" else "assistant")
        ok = False
    elif roles[-1] != "assistant":
        result.add(LAST_NOT_ASSISTANT, line, f"{turns[-1][1]}.{_role_key(container)}", role=roles[-1])
        ok = False
    if "user" not in roles:
        result.add(NO_USER, line, container, roles=shown)
        ok = False
    return ok


def _role_key(container: str) -> str:
    return "from" if container == "conversations" else "role"


def _describe(value: Any) -> str:
    kind = _JSON_KINDS.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)
    shown = json.dumps(value, ensure_ascii=False, default=str)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"a {kind} ({shown})"


# --- CSV -------------------------------------------------------------------------------------


def _pick(header: list[str], names: tuple[str, ...]) -> str | None:
    by_lower = {h.strip().lower(): h for h in header}
    return next((by_lower[n] for n in names if n in by_lower), None)


def _read_csv(text: str, delimiter: str, columns: CsvColumns, result: FileRead) -> None:
    """CSV/TSV with a header row: one example per row from an input and an output column.

    Columns are chosen explicitly, or detected by common names. An ``instruction``
    column (with an optional ``input``) is read the alpaca way; a ``system`` column
    becomes the system turn.
    """
    first = text.split("\n", 1)[0]
    if delimiter == "," and "," not in first:
        delimiter = next((d for d in ("\t", ";") if d in first), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        result.add(EMPTY_FILE, detail="no header row")
        return
    header = [h.strip() for h in header]
    result.found("csv")
    found = ", ".join(repr(h) for h in header if h) or "none"
    present = set(header)
    instruction = None
    ok = True
    for which, chosen in (("input", columns.input), ("output", columns.output)):
        if chosen is not None and chosen not in present:
            result.add(CSV_UNKNOWN_COLUMN, 1, "column", which=which, name=chosen, found=found)
            ok = False
    input_col = columns.input or _pick(header, INPUT_COLUMNS)
    if columns.input is None:
        instruction = _pick(header, ("instruction",))
        if instruction is not None:
            input_col = _pick(header, ("input",))
    output_col = columns.output or _pick(header, OUTPUT_COLUMNS)
    missing = [name for name, col in (("inputs", input_col or instruction), ("outputs", output_col)) if col is None]
    if missing:
        recognised = []
        if "inputs" in missing:
            recognised.append("the input one of " + "/".join(INPUT_COLUMNS))
        if "outputs" in missing:
            recognised.append("the output one of " + "/".join(OUTPUT_COLUMNS))
        result.add(CSV_MISSING_COLUMNS, 1, "column", missing=" and the ".join(missing), found=found,
                   recognised=" and ".join(recognised))
        ok = False
    if not ok:
        return
    system_col = _pick(header, SYSTEM_COLUMNS)
    index = {name: i for i, name in reversed(list(enumerate(header)))}
    previous_end = reader.line_num
    for row in reader:
        line, previous_end = previous_end + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cell = lambda col: row[index[col]] if index[col] < len(row) else ""  # noqa: E731
        bad = False
        for col in (instruction, output_col) if instruction else (input_col, output_col):
            if not cell(col).strip():
                result.add(EMPTY_TEXT, line, col, what="row")
                bad = True
        if bad:
            continue
        prompt = cell(instruction) if instruction else cell(input_col)
        if instruction and input_col and cell(input_col).strip():
            prompt = f"{prompt}\n\n{cell(input_col)}"
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": cell(output_col)}]
        if system_col and cell(system_col).strip():
            messages.insert(0, {"role": "system", "content": cell(system_col)})
        result.examples.append(RawExample(messages, line, "csv"))


# --- plain text ------------------------------------------------------------------------------


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line, paragraph) for each block of text separated by blank lines."""
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):
        if raw.strip():
            if not current:
                start = number
            current.append(raw.rstrip())
        elif current:
            blocks.append((start, "\n".join(current).strip()))
            current = []
    if current:
        blocks.append((start, "\n".join(current).strip()))
    return blocks


def _style_example(style_prompt: str, passage: str) -> list[dict]:
    return [{"role": "user", "content": style_prompt}, {"role": "assistant", "content": passage}]


def style_prompt(goal: str | None) -> str:
    """The user prompt paired with style text: goal "autumn mood" -> "Write a short passage
    with an autumn mood."; no goal -> "Write a short passage."."""
    goal = (goal or "").strip().rstrip(".!?;: ").strip()
    if not goal:
        return "Write a short passage."
    if len(goal) > 1 and goal[0].isupper() and not goal[1].isupper():
        goal = goal[0].lower() + goal[1:]
    words = goal.split()
    first = words[0].lower()
    if first in {"write", "compose", "describe", "tell"}:
        return goal[0].upper() + goal[1:] + "."
    if first in {"in", "like", "as", "with", "about", "using", "from", "for"}:
        return f"Write a short passage {goal}."
    if first in {"a", "an", "the", "some", "my", "your", "their"}:
        return f"Write a short passage with {goal}."
    article = "an" if first[0] in "aeiou" else "a"
    return f"Write a short passage with {article} {goal}."
