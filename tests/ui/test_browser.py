"""The page end to end in a real browser: Debian's Chromium driven by Playwright.

`python -m backend.cli up` (what `tunelab up` runs) starts the serving endpoint, the job
runner and the page with the tiny Llama as base in a temporary home. The test types a
goal, uploads a bad JSONL file in the Data tab and a good one through the chat box, starts training, waits for the
adapter, compares base vs adapter, rates, marks success, and switches the playground
chat from the adapter to Base and back — asserting what the page shows at each step
and saving a screenshot per step under tests/artifacts/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.builders import NEEDS_CHROMIUM, WINES, browser_page, running_up, write_bad, write_wines

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = REPO / ".tunelab" / "models"  # where `make test-slow` provisions the default base

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


@pytest.fixture(params=[pytest.param("tiny", id="tiny-base"),
                        pytest.param("default", id="default-base", marks=pytest.mark.slow)])
def base_env(request, tiny_llama) -> tuple[str, dict]:
    """The base `tunelab up` serves: the tiny Llama, or (slow) the real default base taken
    from the project's model cache (`make test-slow` runs `tunelab bases pull-default`)."""
    if request.param == "tiny":
        return str(tiny_llama), {}
    return "default", {"TUNELAB_MODELS_DIR": str(DEFAULT_MODELS)}


@pytest.fixture()
def tunelab_up(home, base_env, tmp_path):
    """`tunelab up` on free ports with the base of :func:`base_env`; yields the page URL."""
    base, extra_env = base_env
    with running_up(home, base, extra_env, tmp_path / "up.log") as url:
        yield url


@pytest.fixture()
def page(tunelab_up):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # an import scores the base and times this machine first: seconds

    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(tunelab_up) as tab:
        yield tab


def shot(page, name: str) -> None:
    prefix = "" if "tiny" in os.environ.get("PYTEST_CURRENT_TEST", "tiny") else "default-base-"
    page.screenshot(path=str(ARTIFACTS / f"{prefix}{name}.png"), full_page=True)


def say(page, text: str) -> None:
    box = page.locator("#assistant-input textarea")
    box.fill(text)
    box.press("Enter")


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_goal_upload_train_compare_rate_mark_and_switch(page, tmp_path):
    from playwright.sync_api import expect

    chat = page.locator("#assistant-chat")
    expect(chat).to_contain_text("Tell me what the adapter should do")
    shot(page, "01-start")

    # 1. The goal, in plain words, becomes a plan card in the chat and in the Plan tab.
    say(page, "classify wine as red or white with 1 run")
    expect(chat).to_contain_text("Plan for classify wine as red or white")
    expect(chat).to_contain_text("classification (red / white)")
    expect(page.locator("#plan-card")).to_contain_text("Sweep (1 run")
    shot(page, "02-goal-plan")

    # 2. A bad upload shows its errors by line and imports nothing; a good one imports.
    open_tab(page, "Data")
    page.locator("#data-upload input[type=file]").set_input_files(str(write_bad(tmp_path / "bad")))
    expect(page.locator("#data-status")).to_contain_text("Not imported")
    expect(page.locator("#data-report textarea")).to_have_value(re.compile(r"bad\.jsonl[\s\S]*line 2"))
    shot(page, "03-bad-upload")
    # The good file is dropped into the chat box instead; the Data tab follows.
    page.locator("#assistant-input input[type=file]").set_input_files(str(write_wines(tmp_path / "good")))
    expect(page.locator("#assistant-input [aria-label='File thumbnail']")).to_have_count(1)
    page.locator("#assistant-input textarea").press("Enter")
    expect(chat).to_contain_text(re.compile(r"Imported \d+ training and \d+ eval examples from wine\.jsonl"))
    expect(chat).to_contain_text("Before training, the base gets")  # scored on the held-out rows
    expect(page.locator("#plan-card")).to_contain_text("Judged on")
    expect(page.locator("#data-status")).to_contain_text(f"{len(WINES)} examples")
    expect(page.locator("#data-preview")).to_contain_text("<|im_start|>user")
    expect(page.locator("#data-preview")).to_contain_text("Deep ruby colour")
    shot(page, "04-data")

    # 3. "go" in the chat queues the plan's run; the Train tab follows it to the end.
    say(page, "go")
    expect(chat).to_contain_text("Queued 1 run: wine (job 1)")
    open_tab(page, "Train")
    expect(page.locator("#train-runs")).to_contain_text("wine")
    done = page.locator("#train-runs .tl-run[data-status='done']")
    expect(done).to_have_count(1, timeout=180_000)
    expect(done).to_contain_text(re.compile(r"step (\d+)/\1 · loss \d"))
    page.wait_for_timeout(2500)  # one more timer tick draws the full loss curve
    shot(page, "05-trained")

    # Status comes from the store: it survives a page reload.
    page.reload(wait_until="load")
    open_tab(page, "Train")
    expect(page.locator("#train-runs .tl-run[data-status='done']")).to_contain_text("wine")

    # 4. Compare base vs the adapter on a probe prompt.
    open_tab(page, "Compare")
    expect(page.locator("#compare-models")).to_contain_text("wine")
    page.locator("#compare-prompt textarea").fill("Pale straw, crisp, green apple and citrus.")
    if not page.locator("#compare-models input[type=checkbox]").first.is_checked():
        page.locator("#compare-models label", has_text="wine").click()
    page.locator("#compare-run").click()
    # Generation on the real default base takes seconds on CPU; the tiny one is instant.
    expect(page.locator("#compare-label-0")).to_contain_text("Base", timeout=180_000)
    expect(page.locator("#compare-label-1")).to_contain_text("wine")
    expect(page.locator("#compare-status")).to_contain_text("Compared on")
    for i in (0, 1):
        expect(page.locator(f"#compare-answer-{i}")).not_to_be_empty()
    shot(page, "06-compare")

    # 5. Rate: the adapter 👍, the base 👎; the tallies show a 100% win rate over 1 comparison.
    page.locator("#compare-up-1").click()
    expect(page.locator("#compare-status")).to_contain_text("wine rated 👍")
    page.locator("#compare-down-0").click()
    expect(page.locator("#compare-status")).to_contain_text("Base rated 👎")
    tallies = page.locator("#compare-tallies")
    expect(tallies).to_contain_text("wine")
    expect(tallies).to_contain_text("100%")
    expect(page.locator("#mark-tally")).to_contain_text("win rate vs base 100% over 1 comparison")

    # 6. Mark success, with the tallies beside the button.
    page.locator("#mark-success").click()
    expect(page.locator("#mark-status")).to_contain_text("Marked wine as success")
    shot(page, "07-rated-marked")

    # 7. Playground: the adapter answers, then Base (one click) in a fresh conversation that
    #    does not hold the adapter's turns, then the adapter again.
    open_tab(page, "Chat")
    model = page.locator("#chat-model")
    expect(model.locator("label").first).to_have_text("Base")
    model.locator("label", has_text="wine").click()
    playground = page.locator("#playground-chat")
    page.locator("#playground-input textarea").fill("Deep ruby colour with notes of cherry and oak.")
    page.locator("#playground-input textarea").press("Enter")
    expect(playground).to_contain_text("— wine", timeout=180_000)
    model.locator("label", has_text="Base").click()
    expect(page.locator("#playground-note")).to_contain_text("fresh conversation")
    expect(playground).not_to_contain_text("Deep ruby colour with notes of cherry and oak.")
    page.locator("#playground-input textarea").fill("And this one?")
    page.locator("#playground-input textarea").press("Enter")
    expect(playground).to_contain_text("— Base", timeout=180_000)
    expect(playground).not_to_contain_text("— wine")
    model.locator("label", has_text="wine").click()
    expect(model.locator("input[type=radio]:checked")).to_have_value("wine")
    shot(page, "08-playground")

    # The assistant can switch too, in Korean, and the switcher follows.
    say(page, "베이스 모델로 바꿔줘")
    expect(chat).to_contain_text("now answers with the base model")
    expect(model.locator("input[type=radio]:checked")).to_have_value("Base")

    # 8. The adapter's card: goal, data, hyperparameters, ratings, verdict.
    open_tab(page, "Adapters")
    detail = page.locator("#adapters-detail")
    expect(detail).to_contain_text("success")
    expect(detail).to_contain_text("classify wine as red or white")
    expect(detail).to_contain_text("LoRA r16 alpha 32")  # the defaults chosen from the data
    expect(detail).to_contain_text("1 👍")
    shot(page, "09-adapters")
