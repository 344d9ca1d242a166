"""The Equalizer tab: the grid shown as two tables and read back from whatever Gradio
hands over (rows, a dict, a DataFrame), and in a real browser the "attention only"
preset shows attention targets only."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.bases.equalizer import Grid
from backend.errors import ConfigError
from backend.up import start
from tests.builders import NEEDS_CHROMIUM, browser_page
from ui.equalizer_panel import grid_from_tables, grid_tables

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def test_the_tables_show_the_grid_and_read_back_in_every_shape_gradio_sends():
    grid = Grid.preset("top-half", 2, ["self_attn.q_proj", "mlp.up_proj"], r=4, alpha=8)
    headers, ranks, alphas = grid_tables(grid)
    assert headers == ["layer", "self_attn.q_proj", "mlp.up_proj"]
    assert ranks == [[0, 0, 0], [1, 4, 4]] and alphas == [[0, 8, 8], [1, 8, 8]]
    assert grid_from_tables(ranks, alphas, grid.modules) == grid
    as_dict = grid_from_tables({"headers": headers, "data": ranks}, {"headers": headers, "data": alphas}, grid.modules)
    assert as_dict == grid
    import pandas as pd

    frames = [pd.DataFrame(table, columns=headers) for table in (ranks, alphas)]
    assert grid_from_tables(*frames, grid.modules) == grid
    with pytest.raises(ConfigError, match="grid is empty"):
        grid_from_tables(None, None, grid.modules)


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_equalizer_tab_attention_preset_in_the_browser(settings, tiny_llama):
    running = start(settings, port=0, server_port=0, base=str(tiny_llama), run_jobs=False)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with browser_page(running.page_url, viewport={"width": 1500, "height": 1200}) as page:
            page.get_by_role("tab", name="Equalizer", exact=True).click()
            page.wait_for_selector("#eq-ranks table")
            page.wait_for_function("document.querySelector('#eq-compiled')?.innerText.includes('target_modules')")
            page.click("#eq-preset-attention")
            page.wait_for_function("!document.querySelector('#eq-compiled').innerText.includes('mlp.')")
            compiled = page.inner_text("#eq-compiled")
            page.screenshot(path=str(ARTIFACTS / "eq-attention.png"), full_page=True)
    finally:
        running.stop()
    for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
        assert module in compiled
    for module in ("gate_proj", "up_proj", "down_proj"):
        assert module not in compiled
