"""Goal -> plan card. Pure functions: no model, no I/O.

A plan card is what the assistant proposes after the person states a goal: the task
kind, a system prompt, 3-5 probe prompts, what the examples should look like, and a
sweep of 1-5 LoRA configurations sized to the data. The person edits it or says "go".
Works in English and Korean for the core goal words.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from backend.errors import ConfigError, InvalidName
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.names import NAME_RULE, slugify, validate_name

TaskKind = Literal["style", "classification", "extraction", "sentiment", "chat"]

KIND_WORDS: list[tuple[TaskKind, tuple[str, ...]]] = [
    ("sentiment", ("sentiment", "positive or negative", "positive/negative", "감정", "감성", "긍정", "부정")),
    ("extraction", ("extract", "pull out", "pull ", "parse", "as json", "into json", "fields", "추출", "뽑아")),
    ("classification", ("classify", "classif", "categor", "sort ", "sort these", "label", "triage", "route",
                        "분류", "카테고리", "구분")),
    ("chat", ("chatbot", "assistant that", "persona", "talk like", "converse", "conversation", "대화", "챗봇", "말투")),
    ("style", ("style", "mood", "tone", "voice", "write", "poem", "story", "스타일", "분위기", "문체", "느낌")),
]

_LABEL_SPLIT = re.compile(r"\s*(?:/|,|\bor\b|\band\b|또는|혹은|이나|나)\s*")


class SweepConfig(BaseModel):
    """One configuration of a sweep: the default (no knob set) or one knob changed."""

    epochs: float | None = None
    learning_rate: float | None = None
    r: int | None = None
    note: str = ""

    def variation(self) -> dict[str, float] | None:
        """The knob this configuration changes, as ``{"epochs": 6}``; None for the default."""
        knobs = {k: v for k, v in (("epochs", self.epochs), ("learning_rate", self.learning_rate), ("r", self.r))
                 if v is not None}
        return knobs or None

    @property
    def suffix(self) -> str:
        """Name suffix: "" for the default, "-e6", "-lr1e-4", "-r16" for a variation."""
        knobs = self.variation()
        return "" if not knobs else "-" + "-".join(variation_suffix(k, v) for k, v in knobs.items())


def short_number(value: float) -> str:
    """1e-4 -> '1e-4', 2.5e-4 -> '2.5e-4', 6.0 -> '6', 1.5 -> '1.5'."""
    if value == int(value) and abs(value) >= 1:
        return str(int(value))
    mantissa, _, exponent = f"{value:.3g}".partition("e")
    if not exponent:
        mantissa, _, exponent = f"{value:.2e}".partition("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def variation_suffix(knob: str, value: float) -> str:
    """The one naming rule for sweep variations: e6, lr1e-4, r16."""
    prefix = {"epochs": "e", "learning_rate": "lr", "r": "r"}[knob]
    return f"{prefix}{int(value) if knob == 'r' else short_number(float(value))}"


class PlanCard(BaseModel):
    goal: str
    kind: TaskKind
    labels: list[str] = Field(default_factory=list)
    system_prompt: str
    probe_prompts: list[str]
    data_shape: str
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sweep: list[SweepConfig] = Field(default_factory=list)
    name: str = "adapter"
    equalizer: dict | None = Field(None, description="The equalizer grid ``lora`` was compiled from "
                                   "(backend.bases.equalizer.Grid.model_dump()), saved with each run.")

    def render_markdown(self) -> str:
        lines = [
            f"**Plan** for *{self.goal}*",
            f"- **Task**: {self.kind}" + (f" ({' / '.join(self.labels)})" if self.labels else ""),
            f"- **System prompt**: {self.system_prompt}",
            "- **Probe prompts**:",
            *[f"  {i}. {p}" for i, p in enumerate(self.probe_prompts, 1)],
            f"- **Examples should look like**: {self.data_shape}",
            f"- **Sweep** ({len(self.sweep)} run{'s' if len(self.sweep) != 1 else ''}, LoRA r{self.lora.r} "
            f"alpha {self.lora.alpha} on {self.lora.target_modules}, lr {self.train.learning_rate:g}, "
            f"{self.train.epochs:g} epochs):",
            *[f"  - `{self.name}{c.suffix}`: {c.note}" for c in self.sweep],
        ]
        return "\n".join(lines)


def names_a_task(text: str) -> bool:
    """True when ``text`` names a task kind ('mood', 'classify', '분위기', ...)."""
    lowered = f" {text.lower()} "
    return any(word in lowered for _, words in KIND_WORDS for word in words)


def detect_kind(goal: str) -> TaskKind:
    text = f" {goal.lower()} "
    for kind, words in KIND_WORDS:
        if any(word in text for word in words):
            return kind
    return "style"


def extract_labels(goal: str) -> list[str]:
    """Labels named in a goal: "into billing / bugs / other", "as red or white",
    "청구, 버그, 기타로 분류"."""
    korean = re.search(r"(?:을|를)?\s*([^을를]+?)\s*(?:으)?로\s*(?:분류|구분|나눠)", goal)
    if korean:
        parts = [p.strip() for p in re.split(r"\s*(?:/|,|\s또는\s|\s혹은\s)\s*", korean.group(1))]
        parts = [p.split()[-1] for p in parts if p]
        if 2 <= len(parts) <= 12:
            return parts
    match = re.search(r"(?:\binto\b|\bas\b|\bby\b|:|로|으로)\s*(.+)$", goal, flags=re.IGNORECASE)
    if not match:
        return []
    tail = re.split(r"[.;!?]|\bwith\b|\bfor\b|\bfrom\b", match.group(1), maxsplit=1)[0]
    parts = [p.strip(" '\"`()[]") for p in _LABEL_SPLIT.split(tail)]
    labels = [p for p in parts if p and len(p.split()) <= 3]
    return labels if 2 <= len(labels) <= 12 else []


def _subject(goal: str) -> str:
    text = re.sub(r"^(please\s+)?(make it|make the model|i want( it)? to|teach it to|train it to)\s+", "",
                  goal.strip(), flags=re.IGNORECASE)
    return text.rstrip(".!?") or goal


def system_prompt_for(kind: TaskKind, goal: str, labels: list[str]) -> str:
    subject = _subject(goal)
    if kind == "classification":
        if labels:
            return f"Classify the input. Answer with exactly one label: {', '.join(labels)}."
        return "Classify the input. Answer with the label only."
    if kind == "sentiment":
        return "Say whether the sentiment of the text is positive, negative or neutral. Answer with one word."
    if kind == "extraction":
        return "Extract the requested information from the text and answer with JSON only."
    if kind == "chat":
        return f"You are a helpful assistant. {subject[0].upper() + subject[1:]}."
    return f"You write with this style: {subject}."


def probe_prompts_for(kind: TaskKind, goal: str, labels: list[str]) -> list[str]:
    if kind == "classification":
        text = goal.lower()
        if "wine" in text or "와인" in text:
            return ["Deep ruby colour with notes of cherry and oak.", "Pale straw, crisp, green apple and citrus.",
                    "Dark purple, full-bodied, blackcurrant and tobacco.", "Golden, honeyed, with apricot on the nose."]
        if any(w in text for w in ("email", "support", "ticket", "이메일", "문의")):
            return ["Hi, I was charged twice this month, can you refund one payment?",
                    "The app crashes every time I open the settings page.",
                    "Do you have a student discount?"]
        label_text = " or ".join(labels) if labels else "one of your labels"
        return [f"Here is a new example. Which is it: {label_text}?",
                "A short, ambiguous example that could go either way.",
                "A clear-cut example of the most common label."]
    if kind == "sentiment":
        return ["I love how quiet this keyboard is.", "The delivery was late and the box was crushed.",
                "It works. Nothing special.", "Best purchase I've made all year!"]
    if kind == "extraction":
        return ["Weight 2 kg, colour blue, price 30 dollars.", "The X200 drill: 18 V battery, 1.4 kg, two-year warranty.",
                "Our new lamp is 45 cm tall, made of brass, and costs 79 euros."]
    if kind == "chat":
        return ["Hello! Who are you?", "Can you help me plan a weekend?", "Tell me something interesting."]
    return ["Describe a walk in the park.", "Write two sentences about a city at night.",
            "Describe a cup of tea.", "Write a short note to a friend."]


def data_shape_for(kind: TaskKind, labels: list[str]) -> str:
    if kind == "classification":
        label_text = " / ".join(labels) if labels else "one label"
        return (f"JSONL or CSV pairs: an input text and its label ({label_text}); 20+ examples per label "
                "works better than 5. A CSV with columns input,output works.")
    if kind == "sentiment":
        return "Pairs of text and positive / negative / neutral, balanced across the three."
    if kind == "extraction":
        return "Pairs of source text and the JSON you want back (same keys every time)."
    if kind == "chat":
        return "Conversations (JSONL with messages, sharegpt or Gemini contents) ending in the reply you want."
    return ("Plain text paragraphs written in the style (TXT, one per paragraph), or prompt/answer pairs "
            "whose answers show the style. 20-200 paragraphs.")


def sweep_for(n_examples: int, max_runs: int = 3) -> tuple[TrainSpec, list[SweepConfig]]:
    """The default config plus one-knob-at-a-time variations, sized to the data.

    This is the one place that sizes sweeps (the plan card, the CLI's ``--sweep`` and
    :func:`backend.training.jobs.suggest_sweep` all use it). Little data needs more passes to be
    seen enough, and a higher rate is the cheap way to get there; a lot of data fits in
    fewer passes, where more rank can pay off.
    """
    if n_examples < 50:
        epochs = 5.0
        variations = [SweepConfig(epochs=10.0, note="10 epochs: fits tighter"),
                      SweepConfig(learning_rate=5e-4, note="lr 5e-4: faster fit"),
                      SweepConfig(r=16, note="rank 16: more capacity"),
                      SweepConfig(r=4, note="rank 4: smaller, less overfitting")]
    elif n_examples < 500:
        epochs = 3.0
        variations = [SweepConfig(r=16, note="rank 16: more capacity"),
                      SweepConfig(epochs=6.0, note="6 epochs: fits tighter"),
                      SweepConfig(learning_rate=1e-4, note="lr 1e-4: gentler"),
                      SweepConfig(r=4, note="rank 4: smaller, less overfitting")]
    else:
        epochs = 1.0
        variations = [SweepConfig(r=16, note="rank 16: more capacity"),
                      SweepConfig(epochs=2.0, note="2 epochs: fits tighter"),
                      SweepConfig(learning_rate=1e-4, note="lr 1e-4: gentler"),
                      SweepConfig(r=32, note="rank 32: most capacity")]
    train = TrainSpec(epochs=epochs)
    default = SweepConfig(note=f"default: r8, lr {train.learning_rate:g}, {epochs:g} epochs")
    return train, ([default] + variations)[: max(1, min(5, max_runs))]


_STOPWORDS = {"make", "it", "write", "with", "an", "a", "the", "these", "those", "this", "into", "as", "to",
              "of", "and", "or", "in", "out", "me", "my", "please", "text", "sort", "that", "for", "from", "by"}


def short_name(goal: str, kind: TaskKind) -> str:
    """A short adapter name from a goal: "sort support emails into billing..." -> "support-emails"."""
    head = re.split(r"\binto\b|\bas\b|:", goal, maxsplit=1, flags=re.IGNORECASE)[0]
    words = [w for w in re.findall(r"[a-z0-9]+", head.lower()) if w not in _STOPWORDS]
    if kind != "style":
        words = [w for w in words if not w.startswith(("classif", "categor", "extract", "pull", "parse"))]
    slug = slugify("-".join(words[:3]), fallback="")
    return slug or {"style": "style", "classification": "classifier", "extraction": "extractor",
                    "sentiment": "sentiment", "chat": "chat"}[kind]


def make_plan(goal: str, *, n_examples: int = 0, name: str | None = None, max_runs: int = 3) -> PlanCard:
    goal = goal.strip()
    kind = detect_kind(goal)
    labels = extract_labels(goal) if kind == "classification" else []
    train, sweep = sweep_for(n_examples, max_runs=max_runs)
    prompt = system_prompt_for(kind, goal, labels)
    train = train.model_copy(update={"system_prompt": prompt})
    return PlanCard(
        goal=goal,
        kind=kind,
        labels=labels,
        system_prompt=prompt,
        probe_prompts=probe_prompts_for(kind, goal, labels),
        data_shape=data_shape_for(kind, labels),
        train=train,
        sweep=sweep,
        name=name or short_name(goal, kind),
    )


# --- sweeps: the default configuration, then one knob at a time -------------------------------

MAX_SWEEP = 5
KNOBS = ("epochs", "learning_rate", "r")


def apply_variation(base: RunSpec, variation: dict[str, float]) -> RunSpec:
    """``base`` with one knob changed and a name that says which (``<name>-e2``,
    ``<name>-lr1e-4``, ``<name>-r16``). Changing the rank scales alpha with it, so the
    update's scale (alpha / r) stays the same and only the capacity changes."""
    unknown = sorted(set(variation) - set(KNOBS))
    if unknown or len(variation) != 1:
        raise ConfigError(
            f"A sweep variation changes exactly one knob; got {variation!r}.",
            fix=f"Use one of {', '.join(KNOBS)} per variation, e.g. {{'epochs': 2}}.",
        )
    (knob, value), = variation.items()
    data = base.model_dump()
    if knob == "epochs":
        data["train"]["epochs"] = float(value)
    elif knob == "learning_rate":
        data["train"]["learning_rate"] = float(value)
    else:
        rank = int(value)
        data["lora"]["alpha"] = max(1, round(base.lora.alpha * rank / base.lora.r))
        data["lora"]["r"] = rank
    data["name"] = f"{base.name}-{variation_suffix(knob, value)}"
    try:
        return RunSpec.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"Sweep variation {variation!r} gives an invalid configuration: {exc}") from exc


def make_sweep(base: RunSpec, *, epochs: list[float] = (), learning_rate: list[float] = (),
               r: list[int] = ()) -> list[RunSpec]:
    """The base config plus one config per listed value, one knob at a time (1-5 configs).

    Values equal to the base's are skipped (they would train the same adapter twice).
    """
    variations = ([{"epochs": v} for v in epochs if float(v) != base.train.epochs]
                  + [{"learning_rate": v} for v in learning_rate if float(v) != base.train.learning_rate]
                  + [{"r": v} for v in r if int(v) != base.lora.r])
    return sweep_specs(base, variations)


def sweep_specs(base: RunSpec, variations: list[dict[str, float]]) -> list[RunSpec]:
    specs = [base] + [apply_variation(base, v) for v in variations]
    problems = []
    if len(specs) > MAX_SWEEP:
        problems.append(f"{len(specs)} configurations (the base plus {len(variations)} variations); "
                        f"a sweep holds at most {MAX_SWEEP}")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"repeated names {dupes}")
    for spec in specs:
        try:
            validate_name(spec.name)
        except InvalidName:
            problems.append(f"name {spec.name!r} is invalid (too long?)")
    if problems:
        raise ConfigError("The sweep cannot be built: " + "; ".join(problems) + ".",
                          fix=f"Vary fewer values, or shorten the base name. {NAME_RULE}")
    return specs


def suggest_sweep(n_examples: int, max_runs: int = MAX_SWEEP) -> list[dict[str, float]]:
    """Variations (besides the default config) sized to the data: the plan's sweep
    (:func:`sweep_for`), as knob dicts for :func:`sweep_specs`."""
    _, configs = sweep_for(n_examples, max_runs=max_runs)
    return [c.variation() for c in configs if c.variation()]
