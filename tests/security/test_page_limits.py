"""The page's edges (issue 16), on a real `tunelab up` (endpoint + page, tiny Llama):
uploads land inside the home and stop at TUNELAB_MAX_UPLOAD_MB; repeated failed logins
are slowed, one at a time, and the right password still gets in; the page and the
assistant read example files only inside the home, TUNELAB_DATA_ROOTS or the samples."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from backend.data.samples import sample_file
from backend.settings import Settings
from backend.studio.assistant.rules import RuleAssistant
from backend.studio.service import Service
from backend.studio.session import SessionState
from backend.studio.tools import AssistantTools
from tests.builders import write_wines
from ui.login import MAX_DELAY_S, delay_after, guarded_login

LOGIN = {"username": "ann", "password": "s3cret"}


@pytest.fixture(scope="module")
def page(tiny_llama, tmp_path_factory):
    from backend.up import start

    home = tmp_path_factory.mktemp("page-home")
    settings = Settings(home=home, auth="ann:s3cret", max_upload_mb=0.05, login_free_tries=2)
    running = start(settings, port=0, server_port=0, base=str(tiny_llama), run_jobs=False)
    yield running, settings
    running.stop()


@contextmanager
def _logged_in(url: str):
    with httpx.Client(base_url=url, timeout=120) as client:
        assert client.post("/login", data=LOGIN).status_code == 200
        yield client


def test_an_upload_lands_in_the_home_and_one_over_the_cap_is_refused_unwritten(page):
    running, settings = page
    folder = settings.paths.page_uploads
    with _logged_in(running.page_url) as browser:
        small = browser.post("/gradio_api/upload", files={"files": ("ok.csv", b"text,label\nhi,a\n")})
        assert small.status_code == 200, small.text
        [stored] = small.json()
        assert Path(stored).resolve().is_relative_to(folder.resolve())  # not /tmp/gradio
        assert Path(stored).read_bytes() == b"text,label\nhi,a\n"
        before = {p for p in folder.rglob("*") if p.is_file()}
        big = browser.post("/gradio_api/upload", files={"files": ("big.csv", b"x" * (60 * 1024))})  # cap: 51.2 KB
        assert big.status_code == 413, big.text
        assert "file size" in big.text.lower() or "too large" in big.text.lower()
        assert {p for p in folder.rglob("*") if p.is_file()} == before  # nothing of it was kept
        assert browser.get("/config").status_code == 200  # the page keeps serving


def test_repeated_failed_logins_are_slowed_one_at_a_time_and_the_right_password_still_works(page):
    running, _ = page
    url = running.page_url
    wrong = {"username": "ann", "password": "guess"}
    with httpx.Client(base_url=url, timeout=120) as browser:
        times = []
        for _ in range(2):  # the free tries: answered at once
            start = time.monotonic()
            assert browser.post("/login", data=wrong).status_code == 400
            times.append(time.monotonic() - start)
        assert max(times) < delay_after(2, 2)  # well under the first delay (1 s)
        # two guesses sent together queue behind each other: 1 s, then 2 s
        answers: list[tuple[int, float]] = []
        start = time.monotonic()

        def guess():
            with httpx.Client(base_url=url, timeout=120) as other:
                status = other.post("/login", data=wrong).status_code
            answers.append((status, time.monotonic() - start))

        threads = [threading.Thread(target=guess) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [status for status, _ in answers] == [400, 400]
        assert max(seconds for _, seconds in answers) >= delay_after(2, 2) + delay_after(3, 2) - 0.05
        # the person who knows the password gets in (after the wait), and the count starts again
        assert browser.post("/login", data=LOGIN).status_code == 200
        start = time.monotonic()
        assert browser.post("/login", data=wrong).status_code == 400
        assert time.monotonic() - start < delay_after(2, 2)


def test_the_delays_grow_and_stop_at_the_ceiling():
    assert [delay_after(n, 3) for n in range(3)] == [0.0, 0.0, 0.0]
    assert [delay_after(n, 3) for n in range(3, 7)] == [1.0, 2.0, 4.0, 8.0]
    assert delay_after(40, 3) == MAX_DELAY_S


def test_old_failures_stop_counting():
    now = [0.0]
    check = guarded_login("ann", "pw", free_tries=1, clock=lambda: now[0])

    async def attempts():
        assert not await check("ann", "no")  # 1 failure: the next attempt would wait 1 s ...
        now[0] += 16 * 60  # ... but 16 minutes later it has aged out of the window
        started = time.monotonic()
        assert not await check("ann", "no")
        assert time.monotonic() - started < 0.5
        assert not await check("bob", "pw")  # a wrong user is a failure too (and waits 2 s: 2 recent)
        assert await check("ann", "pw")

    asyncio.run(attempts())


# --- example files the page and the assistant may read -------------------------------------------


@pytest.fixture()
def confined(home, monkeypatch):
    monkeypatch.delenv("TUNELAB_DATA_ROOTS", raising=False)
    service = Service(Settings(home=home))
    yield service
    service.close()


def test_the_assistant_reads_no_example_file_outside_the_home(confined, tmp_path, tiny_llama):
    tools = AssistantTools(confined, SessionState(base=str(tiny_llama)))
    outside = write_wines(tmp_path / "outside")  # a real, valid file beside the home
    for given in (str(outside), "/etc/hostname", str(confined.settings.home / ".." / "outside" / outside.name)):
        refused = tools.add_examples([given])
        assert not refused.ok and "outside the folders" in refused.text and "TUNELAB_DATA_ROOTS" in refused.text
    link = confined.settings.home / "link.jsonl"
    link.symlink_to(outside)  # a link inside the home that points out
    assert not tools.add_examples([str(link)]).ok
    reply = RuleAssistant(tools).respond("here are my examples", files=[str(outside)])  # dropped into the chat
    assert not reply.ok and "outside the folders" in reply.text
    assert tools.state.n_examples == 0 and not any(confined.paths.uploads.glob("*/*"))  # nothing imported
    # inside the home, the shipped samples, or a folder of TUNELAB_DATA_ROOTS: read
    inside = write_wines(confined.settings.home / "mine")
    assert tools.add_examples([str(inside)]).ok
    assert AssistantTools(confined, SessionState(base=str(tiny_llama))).add_examples(
        [str(sample_file("wine_color.jsonl"))]).ok
    widened = Service(Settings(home=confined.settings.home, data_roots=[tmp_path / "outside"]))
    try:
        assert AssistantTools(widened, SessionState(base=str(tiny_llama))).add_examples([str(outside)]).ok
    finally:
        widened.close()
