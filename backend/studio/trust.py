"""Answers that can be trusted: how the page asks the models, and what it says about an adapter.

- :func:`default_temperature`: greedy (temperature 0) for goals whose answers can be checked
  (classification, sentiment, extraction: :data:`backend.proof.scores.CHECKABLE_TASKS`), so
  the same prompt always gets the same answer and a difference between two models is the
  models', not the dice's; 0.7 for open-ended goals (style, generation, chat).
- :func:`sampling_text`: one sentence stating the settings every model of a comparison was
  asked with ("all answered greedily, same prompt, max 64 tokens").
- :func:`verdict_badge`: what the page shows wherever an adapter is listed: the person's
  verdict (``✓ success`` / ``✗ fail`` / ``unmarked``) and, where there is one, the proof's
  suggestion.
- :data:`RATING_NOTE`: what a rating does, said beside the rating buttons.

Pure: no service, no store; the service and the panels hand the facts in.
"""

from __future__ import annotations

from backend.proof.scores import CHECKABLE_TASKS

OPEN_TEMPERATURE = 0.7  # open-ended goals: some variety, still on topic
COMPARE_MAX_TOKENS = 64  # every model of a comparison gets the same budget

VERDICT_BADGES = {"success": "✓ success", "fail": "✗ fail"}
UNMARKED = "unmarked"
PROOF_WORDS = {"beats_base": "proof: beats base", "no_better": "proof: no better",
               "too_few_rows": "proof: too few rows", "changed_nothing": "proof: changed nothing",
               "unchecked": "proof: not scored"}

RATING_NOTE = ("👍 / 👎 / Best are stored in TuneLab's database (the `ratings` table of `.tunelab/tunelab.db` "
               "in the home) with the prompt and every answer. They change the tallies, the win rate against the "
               "base and the arena's ranking below; *Train from my ratings* turns them into a preference round, "
               "a new adapter. They do not change the adapter you rated, its held-out score or the leaderboard. "
               "Success / fail is your decision: it is stored on the adapter (the store and its `tunelab.json`) "
               "and shown as its badge everywhere it is listed.")


def checkable(kind: str | None) -> bool:
    """True when the goal's answers can be right or wrong (a label, extracted fields)."""
    return kind in CHECKABLE_TASKS


def default_temperature(kind: str | None) -> float:
    """The temperature Compare and Chat use until the person moves the control."""
    return 0.0 if checkable(kind) else OPEN_TEMPERATURE


def temperature_of(state, tab: str, task: str | None = None) -> float:
    """The temperature ``tab`` ('compare' or 'chat') of a session (``SessionState``) asks with:
    the person's choice, else the default of the plan's task, or of ``task`` when the session
    has no plan (the compared adapters' own, e.g. after a reload)."""
    chosen = state.compare_temperature if tab == "compare" else state.chat_temperature
    return chosen if chosen is not None else default_temperature(state.plan.kind if state.plan else task)


def temperature_words(temperature: float, seed: int | None = None) -> str:
    """``answered greedily`` or ``sampled at temperature 0.7 with seed 12``."""
    if not temperature:
        return "answered greedily"
    return f"sampled at temperature {temperature:g}" + (f" with seed {seed}" if seed is not None else "")


def sampling_text(temperature: float, max_tokens: int, *, seed: int | None = None,
                  system_prompt: str | None = None) -> str:
    """The settings of one comparison, in words (every model got the same ones), e.g.
    ``all answered greedily, same prompt, max 64 tokens``."""
    system = ", same system prompt" if system_prompt else ""
    return f"all {temperature_words(temperature, seed)}, same prompt{system}, max {max_tokens} tokens"


def default_note(kind: str | None) -> str:
    """Why the control starts where it does, said under it."""
    if checkable(kind):
        return ("Greedy by default (temperature 0): this goal's answers can be checked, so the same prompt "
                "always gets the same answer and differences come from the models.")
    return (f"Temperature {OPEN_TEMPERATURE:g} by default: this goal's answers are open-ended. "
            "Set 0 for greedy, repeatable answers.")


def verdict_badge(verdict: str | None, suggestion: str | None = None) -> str:
    """``✓ success · proof: beats base``, ``✗ fail``, ``unmarked · proof: no better``, ``unmarked``."""
    badge = VERDICT_BADGES.get(verdict or "", UNMARKED)
    proof = PROOF_WORDS.get(suggestion or "")
    return f"{badge} · {proof}" if proof else badge


def labelled(name: str, badge: str | None) -> str:
    """An adapter's name with its badge, as a picker shows it: ``wine — ✓ success``."""
    return f"{name} — {badge}" if badge else name
