"""Reading training examples in the formats people bring: one file at a time.

:func:`read_file` decodes a file (UTF-8; a bad byte is one problem naming its line and
column), tells its kind by its suffix (or, without one, by its content) and hands it to
the reader of that kind: JSON lines / JSON array / JSON object
(:mod:`backend.data.json_records`), CSV/TSV with a header (:mod:`backend.data.csv_rows`),
or plain text (.txt/.md), one style example per paragraph (:mod:`backend.data.style_text`).
Each turns the file into normalized chat examples, ``[{"role": "system"|"user"|"assistant",
"content": str}, ...]`` whose last turn is the assistant's answer.

Readers never raise for bad data: every problem becomes a
:class:`~backend.data.problems.Problem` built from one rule of :mod:`backend.data.problems`.
Nothing here knows about tokenizers, splits or the disk layout of imports (that is
:mod:`backend.data.doctor`).
"""

from __future__ import annotations

from pathlib import Path

from backend.data.csv_rows import CsvColumns, read_csv
from backend.data.file_read import FileRead, RawExample
from backend.data.json_records import read_json
from backend.data.problems import EMPTY_FILE, FILE_NOT_FOUND, LINE_TOO_LONG, NOT_UTF8, UNSUPPORTED_FILE
from backend.data.style_text import paragraphs, style_example

JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
CSV_SUFFIXES = {".csv", ".tsv"}
TEXT_SUFFIXES = {".txt", ".md", ".text"}
ACCEPTED_FILES = ", ".join([*sorted(JSON_SUFFIXES), *sorted(CSV_SUFFIXES), *sorted(TEXT_SUFFIXES)])
LINE_BY_LINE_SUFFIXES = {".jsonl", ".ndjson"}  # one record per line: a refused line leaves the others


def read_file(path: Path, name: str, *, style_prompt: str, columns: CsvColumns = CsvColumns(),
              max_line_bytes: int | None = None) -> FileRead:
    """Read one file into normalized examples, collecting every problem on the way.

    A line longer than ``max_line_bytes`` is refused before it is parsed (the caller passes
    the setting ``max_line_kb``): in JSON lines the other lines are still read; any other
    file (an array, one object, CSV, text) cannot lose a line and is refused whole."""
    result = FileRead(name)
    path = Path(path)
    if not path.is_file():
        result.add(FILE_NOT_FOUND, path=str(path))
        return result
    suffix = path.suffix.lower()
    data = path.read_bytes()
    long_lines = _long_lines(data, max_line_bytes)
    for line, size in long_lines:
        result.add(LINE_TOO_LONG, line, None, size=_kb(size), limit=f"{max_line_bytes / 1024:,.0f} KB",
                   rest="" if suffix in LINE_BY_LINE_SUFFIXES else
                   "; a record cannot be cut out of this kind of file, so the whole file is refused")
    if long_lines and suffix not in LINE_BY_LINE_SUFFIXES:
        return result
    if long_lines:  # blank the refused lines (numbers of the others unchanged)
        refused = {line for line, _ in long_lines}
        data = b"\n".join(b"" if number in refused else raw for number, raw in enumerate(data.split(b"\n"), 1))
    text = _decode(data, result)
    if not text.strip():
        result.add(EMPTY_FILE, detail="it is empty")
        return result
    kind = _kind(suffix, text)
    if kind is None:
        result.add(UNSUPPORTED_FILE, suffix=suffix or "(no extension)", accepted=ACCEPTED_FILES)
        return result
    if kind == "json":
        read_json(text, suffix, result, style_prompt, columns)
    elif kind == "csv":
        read_csv(text, "\t" if suffix == ".tsv" else ",", columns, result)
    else:
        for line, paragraph in paragraphs(text):
            result.found("text")
            result.examples.append(RawExample(style_example(style_prompt, paragraph), line, "text"))
    if not result.examples and not result.failed:
        result.add(EMPTY_FILE, detail="only blank lines" if kind != "csv" else "a header and no rows")
    return result


def _long_lines(data: bytes, limit: int | None) -> list[tuple[int, int]]:
    """(line, size in bytes) of every line longer than ``limit``; cheap, nothing is decoded."""
    if limit is None or len(data) <= limit:
        return []
    found, start, number = [], 0, 1
    while start <= len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if end - start > limit:
            found.append((number, end - start))
        start, number = end + 1, number + 1
    return found


def _kb(size: int) -> str:
    return f"{size / 1024:,.0f} KB" if size < 1024 * 1024 else f"{size / (1024 * 1024):,.1f} MB"


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
