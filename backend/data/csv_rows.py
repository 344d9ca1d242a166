"""CSV/TSV examples: a header row, then one example per row from an input and an
output column (detected by common names, or chosen explicitly). The chosen columns
(:class:`CsvColumns`) also read JSON records with named fields
(:mod:`backend.data.json_records`)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from backend.data.file_read import FileRead, RawExample
from backend.data.problems import CHOOSE_COLUMNS, CSV_MISSING_COLUMNS, CSV_UNKNOWN_COLUMN, EMPTY_FILE, EMPTY_TEXT


@dataclass(frozen=True)
class CsvColumns:
    """Which columns (CSV) or fields (flat JSON records) to read; None means 'detect by
    common names'. ``how_to_choose`` ends the missing-columns problem: the caller's words
    for its own controls (the CLI's flags by default, the page's pickers on the page)."""

    input: str | None = None
    output: str | None = None
    how_to_choose: str = CHOOSE_COLUMNS

    @property
    def chosen(self) -> bool:
        return self.input is not None or self.output is not None


INPUT_COLUMNS = ("input", "prompt", "question", "text", "query")
OUTPUT_COLUMNS = ("output", "completion", "answer", "label", "response", "target")
SYSTEM_COLUMNS = ("system", "system_prompt")


def pick(header: list[str], names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that ``header`` holds (any case), as the header spells it."""
    by_lower = {h.strip().lower(): h for h in header}
    return next((by_lower[n] for n in names if n in by_lower), None)


def named_columns(header: list[str]) -> tuple[str | None, str | None]:
    """The (input, output) columns the doctor reads by their names when none are chosen; an
    ``instruction`` column stands for the input (read the alpaca way, with ``input``)."""
    return pick(header, ("instruction",)) or pick(header, INPUT_COLUMNS), pick(header, OUTPUT_COLUMNS)


def delimiter_of(first_line: str, delimiter: str) -> str:
    """The delimiter a file uses: ``delimiter`` (tab for .tsv, else comma), or a tab or
    semicolon when a "comma" file's header holds no comma."""
    if delimiter == "," and "," not in first_line:
        return next((d for d in ("\t", ";") if d in first_line), ",")
    return delimiter


def read_csv(text: str, delimiter: str, columns: CsvColumns, result: FileRead) -> None:
    """CSV/TSV with a header row: one example per row from an input and an output column.

    Columns are chosen explicitly, or detected by common names. An ``instruction``
    column (with an optional ``input``) is read the alpaca way; a ``system`` column
    becomes the system turn.
    """
    delimiter = delimiter_of(text.split("\n", 1)[0], delimiter)
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
    input_col = columns.input or pick(header, INPUT_COLUMNS)
    if columns.input is None:
        instruction = pick(header, ("instruction",))
        if instruction is not None:
            input_col = pick(header, ("input",))
    output_col = columns.output or pick(header, OUTPUT_COLUMNS)
    missing = [name for name, col in (("inputs", input_col or instruction), ("outputs", output_col)) if col is None]
    if missing:
        recognised = []
        if "inputs" in missing:
            recognised.append("the input one of " + "/".join(INPUT_COLUMNS))
        if "outputs" in missing:
            recognised.append("the output one of " + "/".join(OUTPUT_COLUMNS))
        result.add(CSV_MISSING_COLUMNS, 1, "column", missing=" and the ".join(missing), found=found,
                   recognised=" and ".join(recognised), choose=columns.how_to_choose)
        ok = False
    if not ok:
        return
    system_col = pick(header, SYSTEM_COLUMNS)
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
