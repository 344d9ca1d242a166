"""Published folders are swapped in whole: a failure leaves the old one, and no leftovers."""

from __future__ import annotations

import pytest

from backend.atomic import replace_file, staged_folder


def test_success_replaces_the_old_folder_whole(tmp_path):
    final = tmp_path / "wine"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_folder(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()  # nothing visible until the block ends
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wine"]


def test_failure_leaves_the_old_folder_and_no_temporary_files(tmp_path):
    final = tmp_path / "wine"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wine"]


def test_first_write_creates_the_folder(tmp_path):
    final = tmp_path / "sub" / "new"
    with staged_folder(final) as tmp:
        (tmp / "a").write_text("a")
    assert (final / "a").read_text() == "a"


def test_a_file_is_replaced_whole_or_left_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "tunelab.json"
    replace_file(path, "first")
    replace_file(path, "second")
    assert path.read_text() == "second" and sorted(p.name for p in path.parent.iterdir()) == ["tunelab.json"]

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        replace_file(path, "third")
    assert path.read_text() == "second" and sorted(p.name for p in path.parent.iterdir()) == ["tunelab.json"]
