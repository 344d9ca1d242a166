"""A new person's journey through the page, in real headless Chromium (issue 17).

One `tunelab up` (the tiny Llama as base, a real serving endpoint and job runner, a fresh
home) serves every test of this module; each test opens its own browser page, so each is
its own session. In order:

1. phone width (390x844): the workspace's tab bar is in the first screen, above the fold,
   and an error toast never covers it;
2. the journey: the goal in the chat -> a CSV with its own column names (`email,label`) ->
   the columns picked in the Data tab -> one run -> the adapter appears in Compare without
   a reload -> a greedy comparison against the base, its settings stated and repeatable ->
   rate -> mark success (the badge follows everywhere) -> back to the base in a fresh chat;
3. Train: a double click queues one run, a second click on the same plan asks first, and
   Cancel acts on the running run with the status changing at once.

Each step saves a screenshot under tests/artifacts/ (git-ignored); with
TUNELAB_DOC_IMAGES=1 the journey's screenshots go to docs/images/ instead, where
docs/page.md's tour shows them (`TUNELAB_DOC_IMAGES=1 pytest tests/ui/test_journey.py`).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest

from tests.builders import NEEDS_CHROMIUM, REPO, chromium, running_up, write_wines

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]

GOAL = "Sort customer support emails into billing, bug or other. Answer with one word."
EMAILS = {
    "billing": ["I was charged twice for my subscription this month.", "Please send me an invoice for March.",
                "My card was declined but the money left my account.", "How do I get a refund for the annual plan?",
                "Why did my bill go up by ten euros?", "Can I pay by bank transfer instead of card?",
                "The receipt shows the wrong company name.", "Cancel my plan and stop charging me."],
    "bug": ["The app crashes when I open the settings page.", "Login fails with error 500 since the update.",
            "Export to PDF produces an empty file.", "The search box ignores accents in names.",
            "Notifications arrive twice on Android.", "The dark mode makes the buttons invisible.",
            "Uploading a photo freezes the whole screen.", "The sync button spins forever."],
    "other": ["Do you have an office in Berlin?", "Who should I talk to about a partnership?",
              "Are you hiring designers this year?", "Can I visit your booth at the fair?",
              "What are your opening hours at Christmas?", "Is there a student discount club?",
              "Thanks for the great support last week!", "Where can I read your privacy policy?"],
}
PROMPT = "My card was charged two times for one order."
PHONE = {"width": 390, "height": 844}
ARTIFACTS = REPO / "tests" / "artifacts"
DOC_IMAGES = REPO / "docs" / "images"


def write_emails(folder: Path) -> Path:
    """`email,label`: 8 short support emails per label, the column names a person's export has."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "support.csv"
    rows = [(text, label) for i in range(8) for label, texts in EMAILS.items() for text in texts[i:i + 1]]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def page_url(tiny_llama, tmp_path_factory):
    """One `tunelab up` for the module: the tiny Llama in a fresh home."""
    root = tmp_path_factory.mktemp("journey")
    home = root / "home"
    home.mkdir()
    with running_up(home, str(tiny_llama), {}, root / "up.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)  # two shared cores: a refresh can take seconds

    with chromium() as launched:
        yield launched


def open_page(browser, url: str, viewport: dict):
    """A new browser session on the page, with every console error collected."""
    tab = browser.new_page(viewport=viewport)
    tab.set_default_timeout(30_000)
    tab.errors = []
    tab.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    tab.goto(url, wait_until="load")
    tab.wait_for_selector("#assistant-input textarea")
    return tab


def doc_shot(page, name: str, focus: str | None = None) -> None:
    """The viewport (scrolled to ``focus``) as a small PNG: docs/images/ with TUNELAB_DOC_IMAGES=1,
    else tests/artifacts/."""
    if focus:
        page.locator(focus).first.scroll_into_view_if_needed()
    folder = DOC_IMAGES if os.environ.get("TUNELAB_DOC_IMAGES") == "1" else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    try:  # a 256-colour palette keeps the docs' images small
        from PIL import Image

        with Image.open(path) as image:
            image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    except ImportError:
        pass


def say(page, text: str) -> None:
    box = page.locator("#assistant-input textarea")
    box.fill(text)
    box.press("Enter")


def open_tab(page, name: str) -> None:
    """Click a workspace tab, through the tab bar's overflow menu where it is folded away."""
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count() and tab.is_visible():
        tab.click()
        return
    page.locator("#workspace button[aria-label='More tabs']").click()
    page.locator("#workspace .overflow-dropdown button", has_text=name).click()


def overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def settled(page, selector: str) -> None:
    """Wait for the event running on ``selector`` to show its progress, then to be over."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    busy = page.locator(", ".join(f"{selector} {mark}" for mark in (".eta-bar", ".meta-text", ".meta-text-center")))
    try:
        busy.first.wait_for(state="attached", timeout=5_000)
    except PlaywrightTimeout:
        pass  # over before it showed
    busy.first.wait_for(state="detached", timeout=120_000)


def answers(page) -> list[str]:
    """The texts of the base's and the adapter's answers (without any progress overlay)."""
    return [page.locator(f"#compare-answer-{i} [data-testid=markdown]").inner_text() for i in (0, 1)]


def test_at_phone_width_the_tabs_are_in_the_first_screen_and_no_toast_covers_them(browser, page_url):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, PHONE)
    tabs = page.locator("#workspace [role=tablist]")
    box = tabs.bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (
        f"the tab bar is not within the first 390x844 screen: {box}")
    chat = page.locator("#assistant-chat").bounding_box()
    assert chat["height"] <= PHONE["height"] * 0.4  # the chat is a strip, not the whole screen
    doc_shot(page, "journey-6-phone")

    open_tab(page, "Compare")  # folded into the tab bar's menu at this width
    page.locator("#compare-run").click()  # nothing to compare yet: an error toast
    toast = page.locator(".toast-body").first
    expect(toast).to_contain_text("Pick at least one adapter")
    for scroll in ("window.scrollTo(0, 0)", f"window.scrollTo(0, {int(box['y'])})"):
        page.evaluate(scroll)  # the tab bar at the top of the screen, and where it first is
        page.wait_for_timeout(100)
        bar, note = tabs.bounding_box(), toast.bounding_box()
        assert not overlaps(bar, note), f"the toast {note} covers the tab bar {bar}"
    page.evaluate("window.scrollTo(0, 0)")
    bar = tabs.bounding_box()
    assert 0 <= bar["y"] and bar["y"] + bar["height"] <= PHONE["height"]
    assert not page.errors, page.errors
    page.close()


def test_from_goal_and_own_csv_to_a_kept_adapter_and_back_to_the_base(browser, page_url, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, {"width": 1280, "height": 900})
    chat = page.locator("#assistant-chat")

    # 1. The goal in plain words: a plan card for a classification, one run on this CPU.
    say(page, GOAL)
    expect(chat).to_contain_text("Plan for Sort customer support emails")
    expect(page.locator("#plan-card")).to_contain_text("classification")
    expect(page.locator("#plan-card")).to_contain_text("Sweep (1 run")

    # 2. Their own CSV, `email,label`: a preview with the columns guessed, confirmed, imported.
    open_tab(page, "Data")
    page.locator("#data-upload input[type=file]").set_input_files(str(write_emails(tmp_path / "csv")))
    expect(page.locator("#data-columns")).to_be_visible()
    expect(page.locator("#data-columns-preview")).to_contain_text("I was charged twice")
    expect(page.locator("#data-input-column input")).to_have_value("email")
    expect(page.locator("#data-output-column input")).to_have_value("label")
    doc_shot(page, "journey-1-columns", "#data-import-columns")
    page.locator("#data-import-columns").click()
    expect(page.locator("#data-labels")).to_contain_text("billing", timeout=120_000)  # scores the base too
    expect(page.locator("#data-status")).to_contain_text(f"{sum(map(len, EMAILS.values()))} examples")
    expect(page.locator("#data-status")).to_contain_text("support.csv")

    # 3. One run of the plan; the Train tab follows it to the end.
    open_tab(page, "Plan")
    page.locator("#plan-train").click()
    expect(page.locator("#plan-status")).to_contain_text("Queued 1 run:")
    name = re.search(r"Queued 1 run: (\S+) \(job", page.locator("#plan-status").inner_text()).group(1)
    open_tab(page, "Train")
    done = page.locator(f"#train-runs .tl-run[data-status='done']", has_text=name)
    expect(done).to_have_count(1, timeout=240_000)
    doc_shot(page, "journey-2-trained")
    # under the chat, what the run scored: the assistant's markdown rendered, a list and emphasis
    news = page.locator("#assistant-news")
    expect(news).to_contain_text(f"{name} finished training:")
    expect(news.locator("li").first).to_contain_text("exact match")
    expect(news.locator("em", has_text=f"mark {name} success")).to_have_count(1)
    expect(news).not_to_contain_text("*")

    # 4. The adapter is in Compare without a reload; the comparison is greedy, stated, repeatable.
    open_tab(page, "Compare")
    models = page.locator("#compare-models")
    expect(models).to_contain_text(name)
    expect(page.locator("#compare-temperature input[type=number]")).to_have_value("0")
    expect(page.locator("#compare-sampling")).to_contain_text("Greedy by default")
    page.locator("#compare-prompt textarea").fill(PROMPT)
    checkbox = models.locator("label", has_text=name).locator("input")
    if not checkbox.is_checked():
        checkbox.check()
    page.locator("#compare-run").click()
    status = page.locator("#compare-status")
    expect(status).to_contain_text("all answered greedily, same prompt, same system prompt, max 64 tokens",
                                   timeout=60_000)
    expect(page.locator("#compare-label-0")).to_contain_text("Base")
    expect(page.locator("#compare-label-1")).to_contain_text(name)
    settled(page, "#compare-answer-1")
    first = answers(page)
    page.locator("#compare-run").click()  # greedy: the same answers again
    settled(page, "#compare-answer-1")
    expect(status).to_contain_text("Compared on")
    assert answers(page) == first
    doc_shot(page, "journey-3-compare", "#compare-rating-note")

    # 5. Rate (what it does is said beside the buttons), then mark: the badge follows everywhere.
    expect(page.locator("#compare-rating-note")).to_contain_text("do not change the adapter you rated")
    page.locator("#compare-up-1").click()
    expect(status).to_contain_text(f"{name} rated 👍")
    page.locator("#compare-down-0").click()
    expect(page.locator("#compare-tallies")).to_contain_text("100%")
    expect(models).to_contain_text("unmarked")
    page.locator("#mark-success").click()
    expect(page.locator("#mark-status")).to_contain_text(f"Marked {name} as success")
    expect(models).to_contain_text(f"{name} — ✓ success")
    expect(page.locator("#compare-label-1")).to_contain_text("✓ success")
    doc_shot(page, "journey-4-rated-marked", "#mark-status")

    # 6. Chat with the adapter, then back to the base: a fresh conversation, said in a note.
    open_tab(page, "Chat")
    switcher = page.locator("#chat-model")
    expect(switcher).to_contain_text(f"{name} — ✓ success")
    expect(page.locator("#playground-temperature input[type=number]")).to_have_value("0")
    switcher.locator("label", has_text=name).click()
    playground = page.locator("#playground-chat")
    page.locator("#playground-input textarea").fill(PROMPT)
    page.locator("#playground-input textarea").press("Enter")
    expect(playground).to_contain_text(f"— {name} · greedy", timeout=60_000)
    switcher.locator("label", has_text="Base").click()
    expect(page.locator("#playground-note")).to_contain_text("fresh conversation")
    expect(playground).not_to_contain_text(PROMPT)
    page.locator("#playground-input textarea").fill("And this one: the app crashes on start.")
    page.locator("#playground-input textarea").press("Enter")
    expect(playground).to_contain_text("— Base · greedy", timeout=60_000)
    expect(playground).not_to_contain_text(f"— {name}")
    doc_shot(page, "journey-5-base-fresh-chat")

    # 7. The Adapters tab lists it with the same badge.
    open_tab(page, "Adapters")
    expect(page.locator("#adapters-leaderboard")).to_contain_text("✓ success")
    expect(page.locator("#adapters-detail")).to_contain_text("✓ success")
    assert not page.errors, page.errors
    page.close()


def test_a_double_click_queues_one_run_a_second_click_asks_and_cancel_acts_at_once(browser, page_url, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, page_url, {"width": 1280, "height": 900})
    chat = page.locator("#assistant-chat")
    say(page, "classify wine as red or white")
    expect(chat).to_contain_text("Plan for classify wine as red or white")
    page.locator("#assistant-input input[type=file]").set_input_files(str(write_wines(tmp_path / "wine")))
    expect(page.locator("#assistant-input [aria-label='File thumbnail']")).to_have_count(1)
    page.locator("#assistant-input textarea").press("Enter")
    expect(chat).to_contain_text(re.compile(r"Imported \d+ training and \d+ eval examples from wine\.jsonl"))

    # A double click on "Train this plan" queues the plan once.
    open_tab(page, "Plan")
    status = page.locator("#plan-status")
    page.locator("#plan-train").dblclick()
    expect(status).to_contain_text("Queued 1 run:")
    name = re.search(r"Queued 1 run: (\S+) \(job", status.inner_text()).group(1)
    page.wait_for_timeout(1500)  # a second queued job, if any, would be listed by now
    open_tab(page, "Train")
    runs = page.locator("#train-runs .tl-run", has_text=name)
    expect(runs).to_have_count(1)

    # A second click while that plan is queued or running asks first and queues nothing.
    open_tab(page, "Plan")
    page.locator("#plan-train").click()
    expect(status).to_contain_text("⚠️")
    expect(page.locator("#plan-train-again")).to_be_visible()
    open_tab(page, "Train")
    expect(runs).to_have_count(1)

    # Cancel names the run it acts on; the run's status changes at once, then it is cancelled.
    cancel = page.locator("#train-cancel")
    expect(cancel).to_be_visible()
    expect(cancel).to_contain_text(name)
    cancel.click()
    expect(runs.locator(".tl-badge")).to_have_text(re.compile(r"stopping|cancelled"), timeout=3_000)
    expect(page.locator(f"#train-runs .tl-run[data-status='cancelled']", has_text=name)).to_have_count(
        1, timeout=120_000)
    expect(cancel).to_be_hidden()  # nothing left to cancel
    assert not page.errors, page.errors
    page.close()
