"""Style text: plain passages (a .txt/.md paragraph, a JSON ``{"text": ...}`` record),
each paired with a user prompt derived from the goal, so that training learns the voice."""

from __future__ import annotations

from backend.words import is_korean, korean_subject, with_ro


def paragraphs(text: str) -> list[tuple[int, str]]:
    """(first line, paragraph) for each block of text separated by blank lines."""
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):
        if raw.strip():
            if not current:
                start = number
            current.append(raw.rstrip())
        elif current:
            blocks.append((start, "\n".join(current).strip()))
            current = []
    if current:
        blocks.append((start, "\n".join(current).strip()))
    return blocks


def style_example(prompt: str, passage: str) -> list[dict]:
    """One example: the goal's prompt as the user turn, the passage as the answer."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": passage}]


def style_prompt(goal: str | None) -> str:
    """The user prompt paired with style text: goal "autumn mood" -> "Write a short passage
    with an autumn mood."; no goal -> "Write a short passage."; a Korean goal, in Korean:
    "가을 분위기로 써 줘" -> "가을 분위기로 짧은 글을 써 줘."."""
    goal = (goal or "").strip().rstrip(".!?;: ").strip()
    if not goal:
        return "Write a short passage."
    if is_korean(goal):
        return f"{with_ro(korean_subject(goal))} 짧은 글을 써 줘."
    if len(goal) > 1 and goal[0].isupper() and not goal[1].isupper():
        goal = goal[0].lower() + goal[1:]
    words = goal.split()
    first = words[0].lower()
    if first in {"write", "compose", "describe", "tell"}:
        return goal[0].upper() + goal[1:] + "."
    if first in {"in", "like", "as", "with", "about", "using", "from", "for"}:
        return f"Write a short passage {goal}."
    if first in {"a", "an", "the", "some", "my", "your", "their"}:
        return f"Write a short passage with {goal}."
    article = "an" if first[0] in "aeiou" else "a"
    return f"Write a short passage with {article} {goal}."
