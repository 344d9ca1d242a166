"""The arena clicked through in real headless Chromium (issue 18): `tunelab up` on the tiny
Llama with two finished adapters (real LoRA weights that change the answers), a blind
comparison of the base and both in Compare, votes with the 👍/👎 buttons, the arena's table
in Compare and in Adapters ranking the winner first, and "Train from my ratings": first the
number of votes still needed, then (after enough blind comparisons) the queued round.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.builders import NEEDS_CHROMIUM, REPO, browser_page, running_up

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]

ADAPTERS = ("wine-a", "wine-b")
PROMPTS = ["Deep ruby colour with notes of cherry and oak.", "Pale straw, crisp, green apple and citrus.",
           "Garnet, firm tannins, plum and tobacco.", "Lemon yellow, honeyed, with peach and flowers."]
ARTIFACTS = REPO / "tests" / "artifacts"


def add_adapter(home: Path, base: Path, name: str, seed: int) -> None:
    """A finished adapter as a run leaves it (contract files, store row 'done'), with random
    non-zero LoRA B so its answers differ from the base's and from the other adapter's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from backend.settings import Settings
    from backend.store import Store
    from backend.training.run import write_adapter_folder

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    for pname, param in model.named_parameters():
        if "lora_B" in pname:
            param.data.normal_(0.0, 0.5)
    settings = Settings(home=home)
    write_adapter_folder(model, settings.paths.ensure().adapters / name,
                         {"name": name, "status": "done", "verdict": None, "goal": "classify wine as red or white"})
    Store(settings.db_url).upsert_adapter(name, base=str(base), status="done", goal="classify wine as red or white")


@pytest.fixture()
def page(home, tiny_llama, tmp_path):
    from playwright.sync_api import expect

    for seed, name in enumerate(ADAPTERS, start=1):
        add_adapter(home, tiny_llama, name, seed)
    expect.set_options(timeout=20_000)  # two shared cores: a refresh can take seconds
    with running_up(home, str(tiny_llama), {}, tmp_path / "up.log") as url, browser_page(url) as tab:
        yield tab


def blind_compare_and_vote(page, prompt: str) -> str:
    """Compare the base and both adapters blind on ``prompt``; 👍 answer A, 👎 B and C. Returns
    the model revealed as A (the page names it once every answer is rated)."""
    from playwright.sync_api import expect

    page.locator("#compare-prompt textarea").fill(prompt)
    page.locator("#compare-run").click()
    status = page.locator("#compare-status")
    expect(status).to_contain_text(f"Compared on “{prompt}”")
    expect(status).to_contain_text("Blind: names are hidden")
    for i in range(3):
        expect(page.locator(f"#compare-label-{i}")).to_have_text(f"Answer {'ABC'[i]}")  # no names yet
    page.locator("#compare-up-0").click()
    expect(status).to_contain_text("Answer A rated 👍")
    page.locator("#compare-down-1").click()
    expect(status).to_contain_text("Answer B rated 👎")
    page.locator("#compare-down-2").click()
    expect(status).to_contain_text("Revealed: Answer A = ")
    label = page.locator("#compare-label-0")
    expect(label).to_contain_text(re.compile(r"Answer A = \s*\S+"))  # the name itself, not only its prefix
    return re.search(r"Answer A = \s*(\S+)", label.inner_text()).group(1)


def test_blind_votes_rank_the_models_and_train_from_my_ratings(page, tmp_path):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare", exact=True).click()
    models = page.locator("#compare-models")
    for name in ADAPTERS:  # both adapters beside the base
        expect(models).to_contain_text(name)
        if not models.locator("label", has_text=name).locator("input").is_checked():
            models.locator("label", has_text=name).click()
    page.locator("#compare-blind label").click()
    arena = page.locator("#compare-arena")
    expect(arena).to_contain_text("No votes yet")

    # one blind comparison, voted with the buttons: the winner leads the arena, the others follow
    winner = blind_compare_and_vote(page, PROMPTS[0])
    winner_name = "base" if winner == "Base" else winner
    expect(arena).to_contain_text(f"{winner_name} leads after 3 votes")
    first = arena.locator("tr").nth(1)
    expect(first).to_contain_text(winner_name)
    expect(first.locator("td").nth(5)).to_have_text("2/0")  # won/lost
    page.screenshot(path=str(ARTIFACTS / "arena-voted.png"), full_page=True)

    # 2 pairs: the round is not started, and the page says how many more votes it needs
    page.locator("#compare-arena-round").click()
    toast = page.locator(".toast-body")
    expect(toast.first).to_contain_text("2 preference pairs from your ratings; a round needs at least 8, so 6 more")

    # the Adapters tab's arena shows the same ranking
    page.get_by_role("tab", name="Adapters", exact=True).click()
    board = page.locator("#adapters-arena")
    expect(board).to_contain_text(f"{winner_name} leads after 3 votes")
    expect(board.locator("tr").nth(1)).to_contain_text(winner_name)

    # three more blind comparisons make 8 pairs: "Train from my ratings" queues a round from the leader
    page.get_by_role("tab", name="Compare", exact=True).click()
    for prompt in PROMPTS[1:]:
        blind_compare_and_vote(page, prompt)
    expect(arena).to_contain_text("after 12 votes")
    leader = arena.locator("tr").nth(1).locator("td").nth(1).inner_text()
    page.locator("#compare-arena-round").click()
    note = page.locator("#compare-arena-round-note")
    try:
        expect(note).to_contain_text(re.compile(r"Queued job \d+: a preference round wine-[ab]-dpo from wine-[ab] on "
                                                r"8 pairs from your ratings"))
    except AssertionError as exc:  # say why: the page's toast and the app's own log
        log = (tmp_path / "up.log").read_text(errors="replace")
        raise AssertionError(f"{exc}\nThe page said: {page.locator('.toast-body').all_inner_texts()}\n"
                             f"The app's log ends: {log[-3000:]}") from None
    if leader != "base":  # the round starts from the best-rated adapter (never from the base)
        expect(note).to_contain_text(f"a preference round {leader}-dpo from {leader} on 8 pairs")
    page.screenshot(path=str(ARTIFACTS / "arena-round-queued.png"), full_page=True)
