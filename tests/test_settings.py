"""Settings: where the home is without TUNELAB_HOME, and docs/settings.md naming every field."""

from __future__ import annotations

import re

from backend.settings import PACKAGE_ROOT, PROJECT_ROOT, Settings, default_home

ROOT = PROJECT_ROOT
DOC = ROOT / "docs" / "settings.md"


def test_a_checkout_keeps_its_home_in_the_project_folder(monkeypatch):
    monkeypatch.delenv("TUNELAB_HOME", raising=False)
    assert (PACKAGE_ROOT.parent / "pyproject.toml").is_file()  # this test runs from a checkout
    assert default_home() == PROJECT_ROOT
    assert Settings().home == PROJECT_ROOT


def test_an_installed_package_keeps_its_home_in_the_users_folder(tmp_path, monkeypatch):
    site_packages = tmp_path / "lib" / "python3.11" / "site-packages"
    package = site_packages / "backend"
    package.mkdir(parents=True)
    (package / "settings.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("")  # a project further up does not count
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    home = default_home(package)
    assert home == tmp_path / "user" / ".tunelab"
    assert site_packages not in home.parents


def test_tunelab_home_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "elsewhere"))
    settings = Settings()
    assert settings.home == tmp_path / "elsewhere"
    assert settings.paths.uploads == tmp_path / "elsewhere" / "datasets" / "uploads"


def test_docs_name_every_setting_and_no_other():
    text = DOC.read_text(encoding="utf-8")
    fields = {f"TUNELAB_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"TUNELAB_[A-Z_]*[A-Z]", text))
    assert fields - named == set(), f"settings missing from {DOC.name}"
    assert named - fields == set(), f"{DOC.name} names settings that do not exist"


def test_every_setting_says_what_it_does():
    quiet = [name for name, field in Settings.model_fields.items() if not (field.description or "").strip()]
    assert quiet == []
