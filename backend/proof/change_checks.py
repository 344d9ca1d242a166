"""Did the adapter change anything, and what did it cost: checks run before anyone compares.

* :func:`divergence` — on the same prompts, the share of greedy answers that changed
  from the base's, and how much (1 − difflib's similarity ratio, averaged), so "the LoRA
  changed nothing" is caught by a number.
* :func:`changed_nothing` — the flag raised when the update is negligible (every
  ‖ΔW‖/‖W‖ below :data:`NEGLIGIBLE_DELTA`) or the greedy answers equal the base's on
  every probe prompt, with the likely causes.
* :data:`GENERAL_PROMPTS` — a dozen everyday prompts shipped with TuneLab, answered by
  base and adapter (:func:`divergence` again) for a cheap forgetting check: how many of
  them the adapter now answers differently, beside the gain.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from backend.proof.scores import SHOWN_CHARS  # the one length of an answer kept in a stored proof

NEGLIGIBLE_DELTA = 1e-4  # max ‖ΔW‖/‖W‖ below this: the update cannot move an answer

GENERAL_PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Write a haiku about the sea.",
    "Explain what a noun is in one sentence.",
    "Name three primary colours.",
    "How many days are there in a leap year?",
    "Suggest a name for a pet goldfish.",
    "What does a thermometer measure?",
    "Write one sentence describing a sunny day.",
    "List two fruits that are yellow.",
)

CAUSES = (
    "the learning rate is too low for so few steps (try 5e-4, or let the default choose)",
    "too few epochs or steps: the held-out loss was still falling when training stopped",
    "too little data, or answers so alike that there is little to learn",
    "the answer never reached the loss: check that each example ends with the assistant's answer "
    "(the data doctor's preview shows what is trained)",
)


def divergence(base_answers: Sequence[str], adapter_answers: Sequence[str]) -> dict[str, Any]:
    """Share of prompts whose answer changed, and the mean change (0 = same text, 1 = nothing alike)."""
    pairs = list(zip(base_answers, adapter_answers, strict=True))
    changes = [1.0 - difflib.SequenceMatcher(None, b.strip(), a.strip()).ratio() for b, a in pairs]
    changed = sum(1 for b, a in pairs if b.strip() != a.strip())
    return {"changed": changed, "total": len(pairs), "share": changed / len(pairs) if pairs else 0.0,
            "mean_change": sum(changes) / len(changes) if changes else 0.0}


def forgetting(base_answers: Sequence[str], adapter_answers: Sequence[str], shown: int = 3) -> dict[str, Any]:
    """:func:`divergence` on :data:`GENERAL_PROMPTS`, with a few changed answers to read."""
    result = divergence(base_answers, adapter_answers)
    examples = [{"prompt": p, "base": b[:SHOWN_CHARS], "adapter": a[:SHOWN_CHARS]}
                for p, b, a in zip(GENERAL_PROMPTS, base_answers, adapter_answers) if b.strip() != a.strip()]
    return dict(result, prompts=len(base_answers), examples=examples[:shown])


def changed_nothing(delta_max: float | None, probe: dict | None) -> dict[str, Any]:
    """The "did it learn at all" flag from the weight change and the probe divergence."""
    reasons = []
    if delta_max is not None and delta_max < NEGLIGIBLE_DELTA:
        reasons.append(f"the update is negligible: the largest ‖ΔW‖/‖W‖ is {delta_max:.1e} "
                       f"(below {NEGLIGIBLE_DELTA:.0e})")
    if probe and probe["total"] and probe["changed"] == 0:
        reasons.append(f"its greedy answers equal the base's on all {probe['total']} probe prompts")
    return {"flag": bool(reasons), "reasons": reasons, "causes": list(CAUSES) if reasons else []}
