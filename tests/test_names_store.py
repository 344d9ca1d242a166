"""Adapter names, paths inside adapters/, settings paths, and the SQLite store."""

from __future__ import annotations

import pytest

from backend.errors import InvalidName
from backend.names import adapter_path, slugify, validate_name
from backend.studio.ratings import tallies
from backend.settings import Settings
from backend.store import Store


@pytest.mark.parametrize("name", ["autumn", "autumn-r8", "a.b_c-1", "0", "x" * 64])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Autumn", "-x", ".hidden", "a/b", "..", "a..b", "x" * 65, "a b", "é"])
def test_invalid_names_say_the_rule(name):
    with pytest.raises(InvalidName) as info:
        validate_name(name)
    assert repr(name) in str(info.value) and "lowercase" in str(info.value)


def test_adapter_path_stays_inside_root(tmp_path):
    root = tmp_path / "adapters"
    root.mkdir()
    assert adapter_path(root, "ok") == (root / "ok").resolve()
    (root / "link").symlink_to(tmp_path)  # a symlink that escapes
    with pytest.raises(InvalidName, match="outside"):
        adapter_path(root, "link")


def test_slugify():
    assert slugify("Autumn Mood!") == "autumn-mood"
    assert slugify("!!!") == "adapter"


def test_settings_home_owns_every_path(home, monkeypatch):
    settings = Settings()
    assert settings.home == home
    paths = settings.paths.ensure()
    for folder in (paths.adapters, paths.uploads, paths.models, paths.runs):
        assert folder.is_dir() and home in folder.parents
    assert settings.db_url == f"sqlite:///{paths.database}"
    monkeypatch.setenv("TUNELAB_DATABASE_URL", "sqlite:///elsewhere.db")
    assert Settings().db_url == "sqlite:///elsewhere.db"


def test_store_is_a_real_sqlite_file_shared_by_two_handles(settings):
    settings.paths.ensure()
    first, second = Store(settings.db_url), Store(settings.db_url)
    first.upsert_adapter("autumn", base="default", goal="autumn mood")
    job = first.add_job("autumn", {"x": 1})
    assert settings.paths.database.is_file()
    claimed = second.claim_next_job()
    assert claimed.id == job.id and claimed.status == "running" and claimed.attempts == 1
    assert second.claim_next_job() is None
    second.add_event(job.id, step=3, total_steps=10, loss=1.5)
    assert first.get_job(job.id).step == 3
    assert [e.loss for e in first.events(job.id)] == [1.5]
    assert second.get_adapter("autumn").goal == "autumn mood"


def test_tallies_count_wins_against_base(settings):
    settings.paths.ensure()
    store = Store(settings.db_url)
    # comparison 1: adapter 👍, base 👎 -> win; comparison 2: base picked best -> loss; 3: both 👍 -> tie
    for comparison, base_score, base_best, ad_score in [("c1", -1, False, 1), ("c2", 0, True, 0), ("c3", 1, False, 1)]:
        store.add_rating(comparison=comparison, model="base", prompt="p", output="b", score=base_score, best=base_best)
        store.add_rating(comparison=comparison, model="autumn", prompt="p", output="a", score=ad_score)
    tally = tallies(store.ratings())["autumn"]
    assert [(r.comparison, r.model) for r in store.ratings(comparison="c2")] == [("c2", "base"), ("c2", "autumn")]
    assert [r.comparison for r in store.ratings(model="autumn", comparison="c3")] == ["c3"]
    assert tally.ratings == 3 and tally.up == 2 and tally.comparisons_with_base == 3
    assert tally.win_rate_vs_base == pytest.approx(1.5 / 3)
