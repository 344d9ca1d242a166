"""The page as built (no browser, no service): its tabs, and the upload pickers that
offer exactly the file types the data doctor reads."""

from __future__ import annotations

from backend.data.formats import CSV_SUFFIXES, JSON_SUFFIXES, TEXT_SUFFIXES
from ui.app import create_ui


def _by_id(demo) -> dict:
    return {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}


def test_the_upload_pickers_offer_exactly_what_the_data_doctor_reads():
    def no_service():
        raise AssertionError("building the page must not call the service")

    blocks = _by_id(create_ui(no_service))
    readable = JSON_SUFFIXES | CSV_SUFFIXES | TEXT_SUFFIXES
    assert {".md", ".ndjson"} <= readable
    for picker in ("data-upload", "assistant-input"):
        assert set(blocks[picker].file_types) == readable, picker


def test_the_tabs_are_the_panels():
    blocks = _by_id(create_ui(lambda: None))
    assert [tab for tab in ("tab-plan", "tab-data", "tab-base", "tab-equalizer", "tab-train", "tab-compare",
                            "tab-chat", "tab-adapters") if tab in blocks] == [
        "tab-plan", "tab-data", "tab-base", "tab-equalizer", "tab-train", "tab-compare", "tab-chat", "tab-adapters"]
    assert {"assistant-chat", "playground-chat", "proof-box", "shape-box"} <= set(blocks)
