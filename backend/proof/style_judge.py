"""Judging generated answers for a style goal, where no single answer is right.

A style adapter is judged on what it writes, not only on its loss: each answer to a
held-out prompt is checked for two things, and the shares carry 95% Wilson intervals
(:func:`backend.proof.intervals.scored`):

* **carries the style** — the answer holds at least :data:`MIN_MARKERS` distinct *style
  markers*, words that mark the training answers: words of four letters or more, not
  common English, that appear in at least :data:`MARKER_SHARE` of the training answers
  and at least three times as often (by row share) in answers as in prompts, so words
  the prompts bring along do not count. A marker that the prompt itself contains does
  not count for that answer either.
* **does what was asked** — the answer names the request's subject: it shares a content
  word with the prompt (four letters or more, not a request word such as "describe" or
  "write", compared on the first five letters so "swim" matches "swimming").

Both are heuristics, stated here and in docs/training.md, and were checked by hand on
the bench's style task; they catch the two failures that matter — an adapter that
learned nothing of the style, and one that repeats a tagline whatever it is asked.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

from backend.proof.intervals import scored

MIN_MARKERS = 2
MARKER_SHARE = 0.05
MAX_MARKERS = 60
_WORD = re.compile(r"[a-zà-ÿ]+")

COMMON = frozenset("""
about above after again against also always another around because been before being below between both
came come could does doing down during each even every from further have having here into just know like
made make many more most much must never only other over same should since some such than that their them
then there these they thing things this those through time under until very want well were what when where
which while will with would your yours shall little long still back away feel feels make makes look looks
seem seems just really quite something anything everything nothing someone people today write short
think thought first last past next pass step edge heavy somewhere light once often almost always beside
""".split())
REQUEST_WORDS = frozenset("""
describe description write tell give say something about short note sentence sentences lines line words few
please favourite favorite message couple paragraph story poem explain list make could would your what
""".split())


def words(text: str) -> list[str]:
    return _WORD.findall(str(text).lower())


def style_markers(answers: Sequence[str], prompts: Sequence[str]) -> list[str]:
    """The words that mark the training answers (see the module's rule), most marking first."""
    if not answers:
        return []
    in_answers = Counter(w for a in answers for w in set(words(a)) if len(w) >= 4 and w not in COMMON)
    in_prompts = Counter(w for p in prompts for w in set(words(p)))
    need = max(2, MARKER_SHARE * len(answers))
    markers = [(count / len(answers), w) for w, count in in_answers.items()
               if count >= need and count / len(answers) >= 3 * in_prompts[w] / max(1, len(prompts))]
    return [w for _, w in sorted(markers, reverse=True)[:MAX_MARKERS]]


def _stem(word: str) -> str:
    return word[:5]


def judge_answer(answer: str, prompt: str, markers: Sequence[str]) -> dict[str, Any]:
    """One answer: the markers it holds (not counting the prompt's), and whether it carries
    the style and names the request's subject."""
    said = words(answer)
    asked = set(words(prompt))
    marker_set = set(markers)
    found = sorted({w for w in said if w in marker_set and w not in asked})
    subject = {_stem(w) for w in asked if len(w) >= 4 and w not in COMMON and w not in REQUEST_WORDS}
    on_task = bool(subject & {_stem(w) for w in said}) if subject else True
    return {"markers": found, "style": len(found) >= MIN_MARKERS, "on_task": on_task,
            "both": len(found) >= MIN_MARKERS and on_task}


def judge_answers(answers: Sequence[str], prompts: Sequence[str], markers: Sequence[str]) -> dict[str, Any]:
    """The shares of answers that carry the style, do what was asked, and both."""
    verdicts = [judge_answer(a, p, markers) for a, p in zip(answers, prompts, strict=True)]
    return {"style": scored([v["style"] for v in verdicts]), "on_task": scored([v["on_task"] for v in verdicts]),
            "both": scored([v["both"] for v in verdicts]), "per_row": verdicts}
