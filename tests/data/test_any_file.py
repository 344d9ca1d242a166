"""Any file gets a report, never a traceback (issue 16): property-based tests (Hypothesis)
that write generated files (arbitrary bytes, JSON lines of any JSON value and of almost
valid rows, CSV text with any quoting) and run the data doctor on them as the page and
the CLI do. Whatever comes in, the doctor returns a report whose problems name a file
and say where, renders it, and importing either writes a folder whose rows are valid or
raises :class:`DataError` with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from backend.data.doctor import check_files, import_files
from backend.errors import DataError

PROPERTY = hypothesis_settings(max_examples=60, deadline=None, derandomize=True,
                               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
roles = st.sampled_from(["user", "assistant", "system", "tool", "", "USER", 5, None])
turns = st.fixed_dictionaries({"role": roles, "content": json_values | st.text(max_size=60)})
rows = st.one_of(
    json_values,
    st.fixed_dictionaries({"messages": st.lists(turns, max_size=4)}),
    st.fixed_dictionaries({"prompt": json_values | st.text(max_size=40), "completion": json_values | st.text(max_size=40)}),
    st.fixed_dictionaries({"text": json_values | st.text(max_size=80)}),
    st.fixed_dictionaries({"prompt": st.text(max_size=30), "chosen": st.text(max_size=30),
                           "rejected": json_values}),
)
json_line_files = st.lists(st.one_of(rows.map(json.dumps), st.text(max_size=40)), max_size=14).map(
    lambda lines: "\n".join(lines))
words = st.text(alphabet=st.sampled_from(list("abcdefg xyz.?!가나é")), min_size=1, max_size=30)
valid_rows = st.builds(lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                       words, words)


@st.composite
def mostly_valid_files(draw) -> str:
    """Valid rows, sometimes with one line of anything among them: an import succeeds or fails."""
    lines = [json.dumps(row) for row in draw(st.lists(valid_rows, min_size=1, max_size=10))]
    if draw(st.integers(0, 3)) == 0:  # one file in four
        lines.insert(draw(st.integers(0, len(lines))), draw(rows.map(json.dumps) | st.text(max_size=40)))
    return "\n".join(lines)


csv_cell = st.text(alphabet=st.sampled_from(list('ab ,"\n\r\t;é가') + ["\x00"]), max_size=12)
csv_files = st.lists(st.lists(csv_cell, min_size=1, max_size=4), max_size=12).map(
    lambda table: "\n".join(",".join(row) for row in table))

SUFFIX_CONTENT = [(".jsonl", json_line_files), (".json", rows.map(json.dumps) | st.lists(rows).map(json.dumps)),
                  (".csv", csv_files), (".txt", st.text(max_size=300)),
                  (".jsonl", st.binary(max_size=300)), (".csv", st.binary(max_size=300))]


def _file(tmp_path: Path, suffix: str, content: str | bytes) -> Path:
    path = tmp_path / f"upload{suffix}"
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    path.write_bytes(content)
    return path


def _check_report(report, path: Path) -> None:
    text = report.render_text()
    assert isinstance(text, str) and text
    for problem in report.problems:
        assert problem.message and problem.where()
        assert problem.file in (None, path.name)
        if problem.line is not None:
            assert problem.line >= 1
    json.dumps(report.to_dict())  # what the page and report.json store


@pytest.mark.parametrize("suffix, content", SUFFIX_CONTENT,
                         ids=["jsonl", "json", "csv", "txt", "jsonl-bytes", "csv-bytes"])
def test_any_file_gets_a_report_never_a_traceback(tmp_path, tokenizer, suffix, content):
    @PROPERTY
    @given(content)
    def check(given_content):
        path = _file(tmp_path, suffix, given_content)
        report = check_files([path], tokenizer=tokenizer, max_tokens=64, max_line_bytes=2048, min_examples=1)
        _check_report(report, path)

    check()


@PROPERTY
@given(json_line_files | mostly_valid_files())
def test_an_import_of_any_json_lines_writes_valid_rows_or_nothing(tmp_path_factory, json_lines):
    folder = tmp_path_factory.mktemp("any")
    path = _file(folder, ".jsonl", json_lines)
    uploads = folder / "uploads"
    uploads.mkdir()
    try:
        imported = import_files([path], uploads, min_examples=1)
    except DataError as refused:
        assert not any(uploads.iterdir())  # a refused upload imports nothing
        assert refused.report is not None and not refused.report.ok
        return
    written = [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
               if (Path(imported.folder) / name).is_file()
               for line in (Path(imported.folder) / name).read_text(encoding="utf-8").splitlines()]
    assert len(written) == len(imported.report.examples) >= 1
    again = check_files([Path(imported.folder) / "train.jsonl"], min_examples=1)  # what it wrote reads back
    assert not again.errors, again.render_text()


@PROPERTY
@given(st.one_of(json_line_files, mostly_valid_files(), st.lists(rows).map(json.dumps),
                 st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_file_read_as_preference_pairs_gets_a_report(tmp_path_factory, content):
    """The preference reader (`tunelab data check` on pair files, the round's input) too."""
    from backend.data.preference import looks_like_preference, read_preference_files

    path = _file(tmp_path_factory.mktemp("pairs"), ".jsonl", content)
    looks_like_preference(path)
    report = read_preference_files([path])
    for problem in report.problems:
        assert problem.message and problem.where()
    for pair in report.pairs:
        assert pair["chosen"] != pair["rejected"]
