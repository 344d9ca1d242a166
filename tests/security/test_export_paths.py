"""The page and the assistant export adapters only inside the home or a folder of
TUNELAB_EXPORT_ROOTS (issue 16); `tunelab adapters export`, run at the person's own
terminal, writes wherever it is told."""

from __future__ import annotations

import uuid
from pathlib import Path

from typer.testing import CliRunner

from backend.cli import app
from backend.studio.assistant.rules import RuleAssistant
from backend.studio.service import Service
from backend.studio.session import SessionState
from backend.studio.tools import AssistantTools
from tests.builders import add_finished_adapter


def _tools(service) -> AssistantTools:
    add_finished_adapter(service, "wine")
    return AssistantTools(service, SessionState())


def test_an_export_from_the_session_outside_the_home_is_refused_and_writes_nothing(service):
    tools = _tools(service)
    outside = Path("/tmp") / f"outside-{uuid.uuid4().hex}"
    refused = tools.export("wine", str(outside))
    assert not refused.ok and "outside the folders" in refused.text and "TUNELAB_EXPORT_ROOTS" in refused.text
    assert not outside.exists()
    reply = RuleAssistant(tools).respond(f"export wine to {outside}")  # the assistant's own words
    assert not reply.ok and not outside.exists()
    assert not tools.export("wine", str(service.settings.home / ".." / outside.name)).ok
    assert not (service.settings.home.parent / outside.name).exists()


def test_a_symlink_inside_the_home_that_points_outside_is_refused(service, tmp_path):
    tools = _tools(service)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (service.settings.home / "link").symlink_to(target)
    assert not tools.export("wine", str(service.settings.home / "link" / "wine")).ok
    assert list(target.iterdir()) == []


def test_an_export_inside_the_home_or_an_export_root_is_written(service, tmp_path):
    tools = _tools(service)
    inside = service.settings.home / "exports" / "wine"
    written = tools.export("wine", str(inside))
    assert written.ok, written.text
    assert (inside / "tunelab.json").is_file()

    root = tmp_path / "shared"
    root.mkdir()
    rooted = Service(service.settings.model_copy(update={"export_roots": [root]}))
    try:
        assert AssistantTools(rooted, SessionState()).export("wine", str(root / "wine")).ok
        assert (root / "wine" / "tunelab.json").is_file()
    finally:
        rooted.close()


def test_export_roots_are_read_from_the_environment(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_EXPORT_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    from backend.settings import Settings

    assert Settings(home=settings.home).export_roots == [tmp_path / "a", tmp_path / "b"]


def test_the_cli_at_a_terminal_may_write_anywhere(service, tmp_path):
    add_finished_adapter(service, "wine")
    dest = tmp_path / "cli-export"
    result = CliRunner().invoke(app, ["adapters", "export", "wine", str(dest)])
    assert result.exit_code == 0, result.output
    assert (dest / "tunelab.json").is_file()
