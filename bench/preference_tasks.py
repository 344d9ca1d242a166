"""The pure parts of the preference benchmark (bench/preference.py): its questions, the
simulated rater, the scoring of held-out answers and the paired test. No model, no store:
tests/test_bench_preference.py runs all of it on fixed strings.

Two question families in the same style, each with a short right answer:

- **colours** (``What colour is a cherry?`` -> red): the parent trains on some, the rater
  votes on the answers to those, and the rest are held out;
- **opposites** (``What is the opposite of hot?`` -> cold): nobody trains or votes on any
  of them; they show whether what the round learned carries to new kinds of questions.

The preferred format is an answer of one or two words (``Red.``). The SFT data shows it in
one row of three (:data:`SHORT_EVERY`); the other rows answer in a sentence that names the
right colour first (``Red is the colour of a cherry, as most people would say.``). With one
row in five the parent almost never answered short, greedy (0 of 80 held-out questions) or
sampled (5 of 120 and 0 of 75 voted answers, with sentences starting ``The colour of ...``
and ``Red is ...``): 0 to 2 👍 and at most 7 pairs, too few for a round; with one row in two
(the bench before) it already answered short 82% of the time sampled, 85% greedy (no room). The rater gives 👍 only to an answer that follows the format **and** is right,
so a round that keeps the format but loses the right colours is caught.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from backend.proof.intervals import paired, scored

SHORT_EVERY = 3  # one SFT row in three follows the preferred format (33%; 20% was too rare: see below)
VOTE_EVERY = 3  # the rater votes on the answers to one training question in three

COLOURS = {
    "white": ["snow", "milk", "a cloud", "salt", "sugar", "a swan", "chalk", "rice", "cotton", "a pearl",
              "a polar bear", "paper"],
    "green": ["grass", "a leaf", "a lime", "a frog", "an emerald", "a cucumber", "moss", "a pea", "broccoli",
              "jade", "lettuce", "spinach", "a cactus"],
    "blue": ["the sky", "the ocean", "a sapphire", "a blueberry", "denim", "a bluebird", "cornflowers", "the sea"],
    "red": ["blood", "a cherry", "a ruby", "a tomato", "a strawberry", "a fire truck", "a ladybug", "a brick",
            "a stop sign", "ketchup"],
    "yellow": ["a banana", "a lemon", "the sun", "corn", "butter", "a canary", "a dandelion", "an egg yolk",
               "a sunflower", "a school bus", "mustard"],
    "black": ["coal", "a crow", "ink", "tar", "a raven", "licorice", "a panther", "charcoal", "soot"],
    "orange": ["an orange", "a carrot", "a pumpkin", "a tangerine", "an apricot", "a goldfish", "a basketball",
               "a traffic cone"],
    "brown": ["chocolate", "coffee", "soil", "tree bark", "a walnut", "a bear", "mud", "cinnamon", "a chestnut"],
    "pink": ["a flamingo", "a pig", "bubble gum"],
    "purple": ["an eggplant", "lavender", "a plum"],
    "grey": ["an elephant", "ash", "concrete"],
}
COLOUR_WORDS = ("white", "green", "blue", "red", "yellow", "black", "orange", "brown", "pink", "purple", "grey",
                "gray", "violet", "gold", "golden", "silver", "beige", "tan")
SAME_COLOUR = {"grey": ("grey", "gray"), "purple": ("purple", "violet")}

OPPOSITES = [("hot", ("cold",)), ("big", ("small", "little")), ("up", ("down",)), ("day", ("night",)),
             ("fast", ("slow",)), ("happy", ("sad", "unhappy")), ("wet", ("dry",)), ("open", ("closed", "close", "shut")),
             ("tall", ("short",)), ("old", ("new", "young")), ("hard", ("soft", "easy")), ("left", ("right",)),
             ("in", ("out",)), ("high", ("low",)), ("early", ("late",)), ("full", ("empty",)), ("rich", ("poor",)),
             ("strong", ("weak",)), ("thick", ("thin",)), ("push", ("pull",)), ("win", ("lose",)),
             ("love", ("hate",)), ("clean", ("dirty",)), ("loud", ("quiet", "soft")), ("yes", ("no",)),
             ("first", ("last",)), ("inside", ("outside",)), ("north", ("south",)), ("east", ("west",)),
             ("good", ("bad", "evil")), ("heavy", ("light",)), ("true", ("false",)), ("alive", ("dead",)),
             ("light", ("dark", "heavy")), ("long", ("short",)), ("black", ("white",))]
OPPOSITE_WORDS = tuple(sorted({w for word, answers in OPPOSITES for w in (word, *answers)}))


@dataclass(frozen=True)
class Item:
    """One question: its family, what it asks about, the answers counted right, and the words
    of the question itself an answer may repeat before it answers (``the opposite of hot is cold``)."""

    family: str
    subject: str
    answers: tuple[str, ...]
    skip: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        if self.family == "colours":
            return f"What colour is {self.subject}?"
        return f"What is the opposite of {self.subject}?"

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return COLOUR_WORDS if self.family == "colours" else OPPOSITE_WORDS


def colour_items() -> list[Item]:
    return [Item("colours", thing, SAME_COLOUR.get(colour, (colour,)))
            for colour, things in COLOURS.items() for thing in things]


def opposite_items() -> list[Item]:
    return [Item("opposites", word, answers, skip=(word,)) for word, answers in OPPOSITES]


def split_items(quick: bool = False) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, vote, held out). Colours are dealt in a fixed order, one in two held out; the
    others train the parent, and the rater votes on the answers to one in :data:`VOTE_EVERY` of
    them (prompts a person would compare on: the plan's probes). Every opposite is held out."""
    colours = colour_items()
    held, train = colours[1::2], colours[0::2]
    vote = train[::VOTE_EVERY]  # every colour among them
    opposites = opposite_items()
    if quick:
        return train, vote[::2], held[::5] + opposites[::6]
    return train, vote, held + opposites


def words(answer: str) -> list[str]:
    return re.findall(r"[a-z]+(?:'[a-z]+)?", answer.lower())


def follows_format(answer: str) -> bool:
    """The preferred format: one or two words, nothing more."""
    return 1 <= len(words(answer)) <= 2


def is_right(answer: str, item: Item) -> bool:
    """The first answer word of the item's family in ``answer`` (the question's own words
    passed over) is one of the item's right answers."""
    vocabulary = set(item.vocabulary)
    for word in words(answer):
        if word in item.skip:
            continue
        if word in vocabulary:
            return word in item.answers
    return False


def rate(answer: str, item: Item) -> int:
    """The simulated rater: 👍 (+1) only for an answer in the preferred format that is right,
    👎 (-1) for anything else."""
    return 1 if follows_format(answer) and is_right(answer, item) else -1


def sft_answer(item: Item, row: int) -> str:
    colour = item.answers[0]
    if row % SHORT_EVERY == 0:
        return f"{colour.capitalize()}."
    # the sentence starts with the same word as the short answer, so the two formats part at
    # the second token: sampled, the parent answers short about as often as its data did
    return f"{colour.capitalize()} is the colour of {item.subject}, as most people would say."


def sft_rows(items: list[Item]) -> list[dict]:
    return [{"messages": [{"role": "user", "content": item.prompt},
                          {"role": "assistant", "content": sft_answer(item, i)}]} for i, item in enumerate(items)]


def score_answers(texts: list[str], items: list[Item]) -> dict:
    """The held-out shares of one model: following the format, right, and both (what the
    rater would 👍), each with its n and 95% Wilson interval; overall and per family."""
    if len(texts) != len(items):
        raise ValueError(f"{len(texts)} answers for {len(items)} questions")

    def shares(pairs):
        return {"follows_format": scored([follows_format(t) for t, _ in pairs]),
                "right_answer": scored([is_right(t, i) for t, i in pairs]),
                "preferred": scored([rate(t, i) > 0 for t, i in pairs])}

    pairs = list(zip(texts, items))
    families = sorted({i.family for i in items})
    return {"all": shares(pairs), **{f: shares([(t, i) for t, i in pairs if i.family == f]) for f in families}}


def compare_arms(first: list[str], second: list[str], items: list[Item]) -> dict:
    """:func:`paired` for each of the three outcomes (format, right, both) of two models' answers."""
    checks = {"follows_format": lambda t, i: follows_format(t), "right_answer": is_right,
              "preferred": lambda t, i: rate(t, i) > 0}
    return {name: paired([check(t, i) for t, i in zip(first, items)], [check(t, i) for t, i in zip(second, items)])
            for name, check in checks.items()}


def verdict(tests: dict, alpha: float = 0.05) -> dict:
    """What a round did against its parent, from :func:`compare_arms` (parent first, round
    second) in one sentence: helped only when more held-out answers get the rater's 👍 (sign
    test below ``alpha``) and the right answers did not fall (no significant loss)."""
    def moved(name):
        t = tests[name]
        if t["p_value"] >= alpha:
            return 0
        return 1 if t["only_second"] > t["only_first"] else -1

    liked, right = moved("preferred"), moved("right_answer")
    if liked > 0 and right >= 0:
        said = "helped: more held-out answers the rater likes"
    elif liked > 0:
        said = "mixed: more answers in the liked format, but fewer right answers"
    elif liked < 0:
        said = "hurt: fewer held-out answers the rater likes"
    else:
        said = "no effect shown: the rater's share did not change beyond noise"
    if right < 0 and liked <= 0:
        said += "; and fewer right answers"
    p = tests["preferred"]["p_value"]
    return {"helped": liked > 0 and right >= 0, "said": f"{said} (👍 on {tests['preferred']['only_second']} "
            f"questions only after the round, {tests['preferred']['only_first']} only before; p = {p:.2g})"}
