"""The sample datasets shipped inside the package: found through the package, and clean."""

from __future__ import annotations

from pathlib import Path

import pytest

import backend.data
from backend.data.doctor import check_files
from backend.data.samples import SAMPLES_DIR, sample_file, sample_files
from backend.errors import DataError

SHIPPED = ["autumn_style.txt", "product_specs.jsonl", "support_emails.csv", "wine_color.jsonl"]


def test_samples_are_found_through_the_package_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert SAMPLES_DIR.parent == Path(next(iter(backend.data.__path__))).resolve() and SAMPLES_DIR.is_dir()
    assert [p.name for p in sample_files()] == SHIPPED
    assert all(p.is_absolute() and p.is_file() for p in sample_files())


def test_a_sample_is_picked_by_its_name_only(tmp_path):
    assert sample_file("wine_color.jsonl") == SAMPLES_DIR / "wine_color.jsonl"
    for name in ("nope.jsonl", "../samples.py", "__pycache__"):
        with pytest.raises(DataError, match="wine_color.jsonl"):
            sample_file(name)


def test_shipped_samples_pass(tokenizer):
    for sample in sample_files():
        report = check_files([sample], tokenizer=tokenizer, goal="autumn mood")
        assert report.ok and report.warnings == [], report.render_text()
        assert report.stats["examples"] >= 10 and report.stats["tokens"]["max"] > 0
    labels = {e.messages[-1]["content"] for e in check_files([sample_file("support_emails.csv")]).examples}
    assert labels == {"billing", "bugs", "other"}
