"""Goal -> plan card. Pure functions: no model, no I/O.

A plan card is what the assistant proposes after the person states a goal: the task
kind, a system prompt, 3-5 probe prompts, what the examples should look like, the
default configuration chosen from the data (:mod:`backend.training.defaults`, with the
reason for each knob), how many rows will judge the result, the base's score on them
before training when the answers can be checked, and a sweep of 1-5 LoRA
configurations. The person edits it or says "go". Works in English and Korean for the
core goal words.

Probe prompts are real inputs: once data is imported they are drawn from its held-out
rows (varied across labels and lengths, :func:`probes_from_rows`); before that a
classification or extraction plan says they will come from the data.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, Field

from backend.data.columns import MAX_LABELS, looks_like_labels
from backend.errors import ConfigError, InvalidName
from backend.hparams import LoraSpec, RunSpec, TrainSpec
from backend.names import NAME_RULE, slugify, validate_name
from backend.training.defaults import choose
from backend.training.estimate import Speed, estimate, estimate_text
from backend.words import is_korean, korean_probes, korean_subject, korean_system_prompt, name_words

TaskKind = Literal["style", "classification", "extraction", "sentiment", "summarization", "chat"]

# The words that name each task, English and Korean; the first kind whose word a goal holds wins.
KIND_WORDS: list[tuple[TaskKind, tuple[str, ...]]] = [
    ("sentiment", ("sentiment", "positive or negative", "positive/negative", "감정", "감성", "긍정", "부정")),
    ("extraction", ("extract", "pull out", "pull ", "parse", "as json", "into json", "fields", "추출", "뽑아")),
    ("summarization", ("summar", "tl;dr", "tldr", "요약", "줄여")),
    ("classification", ("classify", "classif", "categor", "sort ", "sort these", "label", "triage", "route",
                        "분류", "카테고리", "구분")),
    ("chat", ("chatbot", "assistant that", "persona", "talk like", "converse", "conversation", "대화", "챗봇")),
    ("style", ("style", "mood", "tone", "voice", "write", "poem", "story", "스타일", "분위기", "문체", "말투", "어조",
               "느낌", "톤")),
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


class DataFacts(BaseModel):
    """What a plan needs to know about imported data (the data doctor's report and the
    held-out rows); built by the service, never by the page."""

    train_rows: int = 0
    eval_rows: int = 0
    mean_answer_tokens: float | None = None
    eval_source: str = "split"
    note: str = ""
    held_out: list[list[dict]] = Field(default_factory=list, description="Held-out rows (message lists), "
                                       "where the probe prompts come from.")
    answers_kind: TaskKind | None = Field(None, description="The task the answers show (kind_of_answers).")
    labels: list[str] = Field(default_factory=list, description="The answers' labels, when they are labels.")


class PlanCard(BaseModel):
    goal: str
    kind: TaskKind
    labels: list[str] = Field(default_factory=list)
    system_prompt: str
    probe_prompts: list[str]
    probe_note: str = ""
    data_shape: str
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    defaults_why: list[str] = Field(default_factory=list, description="Why each default knob has its value.")
    judged_by: dict | None = Field(None, description="How many rows will judge the result and where they come from.")
    baseline: dict | None = Field(None, description="The base's score on those rows before training.")
    sweep: list[SweepConfig] = Field(default_factory=list)
    name: str = "adapter"
    equalizer: dict | None = Field(None, description="The equalizer grid ``lora`` was compiled from "
                                   "(backend.bases.equalizer.Grid.model_dump()), saved with each run.")
    timing: dict | None = Field(None, description="What the time estimate is made from: this machine's measured "
                                "speed on the base (backend.training.estimate.Speed) and the data's rows "
                                "(n_train, n_eval, doctor_mean_tokens); the estimate follows the card's knobs.")

    def time_estimate(self) -> dict | None:
        """How long this card's runs take on this machine ("about", "at most"), from
        :attr:`timing` and the card's own knobs and sweep; None until data and a speed are known."""
        if not self.timing or not self.timing.get("speed"):
            return None
        t = self.timing
        return estimate(Speed.model_validate(t["speed"]), n_train=t.get("n_train") or 0, n_eval=t.get("n_eval") or 0,
                        batch_size=self.train.batch_size, epochs=self.train.epochs, runs=max(1, len(self.sweep)),
                        early_stopping=self.train.early_stopping, time_budget_s=self.train.time_budget_s,
                        doctor_mean_tokens=t.get("doctor_mean_tokens"))

    def render_markdown(self) -> str:
        stop = (f"at most {self.train.epochs:g} epochs, stopping when the held-out loss stops falling"
                if self.train.early_stopping else f"{self.train.epochs:g} epochs")
        lines = [
            f"**Plan** for *{self.goal}*",
            f"- **Task**: {self.kind}" + (f" ({' / '.join(self.labels)})" if self.labels else ""),
            f"- **System prompt**: {self.system_prompt}",
            "- **Probe prompts**" + (f" ({self.probe_note})" if self.probe_note else "") + ":",
            *[f"  {i}. {p}" for i, p in enumerate(self.probe_prompts, 1)],
            f"- **Examples should look like**: {self.data_shape}",
            f"- **Judged on**: {judged_text(self.judged_by)}",
        ]
        if self.baseline:
            lines.append(f"- **Before training**: {baseline_text(self.baseline)}")
        if self.timing:
            lines.append(f"- **Time**: {estimate_text(self.time_estimate()) or self.timing.get('note', '')}")
        lines += [
            f"- **Sweep** ({len(self.sweep)} run{'s' if len(self.sweep) != 1 else ''}, LoRA r{self.lora.r} "
            f"alpha {self.lora.alpha} on {self.lora.target_modules}, lr {self.train.learning_rate:g}, "
            f"batch {self.train.batch_size}, {stop}):",
            *[f"  - `{self.name}{c.suffix}`: {c.note}" for c in self.sweep],
        ]
        if self.defaults_why:
            lines += ["- **Why these defaults**:", *[f"  - {why}" for why in self.defaults_why]]
        else:
            lines.append("- **Knobs**: set by you (the defaults' reasons no longer apply)")
        return "\n".join(lines)


def judged_text(judged: dict | None) -> str:
    """How many rows will judge the result, and what that means."""
    if not judged:
        return "rows held back from your data once it is imported (20%, at least 20 where the data allows)"
    rows = judged.get("eval_rows", judged.get("rows", 0))
    if not rows:
        return f"no rows: {judged.get('note', 'nothing is held out')}"
    return f"{rows} rows {judged.get('note', '')}".strip()


def baseline_text(baseline: dict) -> str:
    """'the base gets 4/30 right zero-shot, 13/30 with 6 examples in the prompt'."""
    if baseline.get("error"):
        return f"the base could not be scored ({baseline['error']})"
    zero, few = baseline.get("base_zero_shot"), baseline.get("base_few_shot")
    if not zero:
        return "the base is asked for the style in its prompt after training, beside the adapter"
    text = f"the base gets {zero['correct']}/{zero['total']} right zero-shot"
    if few and baseline.get("k"):
        text += f", {few['correct']}/{few['total']} with {baseline['k']} examples in the prompt"
    return text


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


def kind_of_answers(rows: list[list[dict]]) -> TaskKind | None:
    """The task the answers show when the goal does not say: every answer a JSON object ->
    extraction; a few short labels (2-12 distinct answers of 1-3 words, most repeated) ->
    classification; else None."""
    answers = [str(m[-1]["content"]).strip() for m in rows if m]
    if not answers:
        return None
    if all(a.startswith("{") and a.endswith("}") for a in answers):
        try:
            if all(isinstance(json.loads(a), dict) for a in answers):
                return "extraction"
        except ValueError:
            pass
    if looks_like_labels(answers):  # the one rule (backend.data.columns), the Data tab's label counts too
        return "classification"
    return None


def labels_of(rows: list[list[dict]]) -> list[str]:
    """The distinct answers of label-like data, most frequent first (as written)."""
    counts: dict[str, int] = {}
    for m in rows:
        label = str(m[-1]["content"]).strip()
        counts[label] = counts.get(label, 0) + 1
    return sorted(counts, key=lambda label: (-counts[label], label.lower()))[:MAX_LABELS]


def task_of(goal: str, rows: list[list[dict]]) -> TaskKind:
    """The goal's task when it names one, else the one the answers show, else style."""
    if names_a_task(goal):
        return detect_kind(goal)
    return kind_of_answers(rows) or "style"


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
    if is_korean(goal):
        return korean_subject(goal)
    text = re.sub(r"^(please\s+)?(make it|make the model|i want( it)? to|teach it to|train it to)\s+", "",
                  goal.strip(), flags=re.IGNORECASE)
    return text.rstrip(".!?") or goal


def system_prompt_for(kind: TaskKind, goal: str, labels: list[str]) -> str:
    """The system prompt a run trains behind, in the goal's language (Korean or English)."""
    subject = _subject(goal)
    if is_korean(goal):
        return korean_system_prompt(kind, subject, labels)
    if kind == "classification":
        if labels:
            return f"Classify the input. Answer with exactly one label: {', '.join(labels)}."
        return "Classify the input. Answer with the label only."
    if kind == "sentiment":
        return "Say whether the sentiment of the text is positive, negative or neutral. Answer with one word."
    if kind == "extraction":
        return "Extract the requested information from the text and answer with JSON only."
    if kind == "summarization":
        return "Summarize the text briefly, keeping the key points."
    if kind == "chat":
        return f"You are a helpful assistant. {subject[0].upper() + subject[1:]}."
    return f"You write with this style: {subject}."


FROM_DATA = "drawn from your held-out rows once data is imported"
DRAWN = "drawn from your held-out rows"


def probe_prompts_for(kind: TaskKind, goal: str, labels: list[str]) -> list[str]:
    """Probe prompts before any data: real inputs for the goals TuneLab knows (in Korean for
    a Korean goal), none for a classification it cannot guess (they come from the data)."""
    if is_korean(goal):
        return korean_probes(kind, goal)
    if kind == "classification":
        text = goal.lower()
        if "wine" in text or "와인" in text:
            return ["Deep ruby colour with notes of cherry and oak.", "Pale straw, crisp, green apple and citrus.",
                    "Dark purple, full-bodied, blackcurrant and tobacco.", "Golden, honeyed, with apricot on the nose."]
        if any(w in text for w in ("email", "support", "ticket", "이메일", "문의")):
            return ["Hi, I was charged twice this month, can you refund one payment?",
                    "The app crashes every time I open the settings page.",
                    "Do you have a student discount?"]
        return []
    if kind == "sentiment":
        return ["I love how quiet this keyboard is.", "The delivery was late and the box was crushed.",
                "It works. Nothing special.", "Best purchase I've made all year!"]
    if kind == "extraction":
        return ["Weight 2 kg, colour blue, price 30 dollars.", "The X200 drill: 18 V battery, 1.4 kg, two-year warranty.",
                "Our new lamp is 45 cm tall, made of brass, and costs 79 euros."]
    if kind == "summarization":
        return ["The city council met on Tuesday to discuss new bike lanes. After two hours of debate it voted 7 to 2 "
                "to build them on Main Street by next spring, paid for from the transport budget.",
                "Quarterly sales rose 12% on strong demand in Asia while costs stayed flat. The team expects similar "
                "growth next quarter but warns that shipping delays could slow it.",
                "Hi all, the office will be closed on Friday for maintenance. Please take your laptops home on "
                "Thursday and use the VPN; the help desk answers by phone until 5 pm."]
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
    if kind == "summarization":
        return "Pairs of a text and its summary, written the way you want summaries (length, tone)."
    if kind == "chat":
        return "Conversations (JSONL with messages, sharegpt or Gemini contents) ending in the reply you want."
    return ("Plain text paragraphs written in the style (TXT, one per paragraph), or prompt/answer pairs "
            "whose answers show the style. 20-200 paragraphs.")


def probes_from_rows(rows: list[list[dict]], kind: TaskKind, k: int = 4) -> list[str]:
    """Up to ``k`` real prompts from held-out rows (message lists): one per answer label
    first for classification, then spread over prompt lengths (shortest, longest, middle)."""
    prompts = [(str(m[-2]["content"]), str(m[-1]["content"]).strip().lower()) for m in rows
               if len(m) >= 2 and m[-2].get("role") == "user"]
    if not prompts:
        return []
    picked: list[str] = []
    if kind in ("classification", "sentiment"):
        by_label: dict[str, list[str]] = {}
        for text, label in prompts:
            by_label.setdefault(label, []).append(text)
        for texts in by_label.values():
            if len(picked) < k:
                picked.append(texts[0])
    by_length = sorted({text for text, _ in prompts if text not in picked}, key=len)
    while by_length and len(picked) < k:
        for index in (0, -1, len(by_length) // 2):
            if by_length and len(picked) < k:
                picked.append(by_length.pop(index if index < len(by_length) else -1))
    return picked


def sweep_for(lora: LoraSpec, train: TrainSpec, max_runs: int = 1) -> list[SweepConfig]:
    """The default configuration, then variations that each differ from it in one knob
    and from each other (a higher and a lower rank, a gentler and a faster rate), up to
    ``max_runs`` runs. The epoch count is not varied: early stopping decides it.

    This is the one place that sizes sweeps (the plan card, the CLI's ``--sweep`` and
    :func:`suggest_sweep` all use it).
    """
    r, lr = lora.r, train.learning_rate
    candidates = [SweepConfig(r=r * 2, note=f"rank {r * 2}: more capacity"),
                  SweepConfig(learning_rate=lr / 2, note=f"lr {short_number(lr / 2)}: gentler"),
                  SweepConfig(r=max(1, r // 2), note=f"rank {max(1, r // 2)}: smaller, less overfitting"),
                  SweepConfig(learning_rate=min(1e-3, lr * 2), note=f"lr {short_number(min(1e-3, lr * 2))}: faster")]
    seen = {("r", r), ("learning_rate", lr)}
    variations = []
    for config in candidates:
        (knob, value), = config.variation().items()
        if (knob, value) not in seen:
            seen.add((knob, value))
            variations.append(config)
    default = SweepConfig(note=f"default: r{r}, lr {lr:g}, batch {train.batch_size}, "
                               f"up to {train.epochs:g} epochs with early stopping" if train.early_stopping
                          else f"default: r{r}, lr {lr:g}, {train.epochs:g} epochs")
    return ([default] + variations)[: max(1, min(MAX_SWEEP, max_runs))]


_STOPWORDS = {"make", "it", "write", "with", "an", "a", "the", "these", "those", "this", "into", "as", "to",
              "of", "and", "or", "in", "out", "me", "my", "please", "text", "sort", "that", "for", "from", "by"}


def short_name(goal: str, kind: TaskKind) -> str:
    """A short adapter name from a goal: "sort support emails into billing..." -> "support-emails";
    a Korean goal's words in English: "가을 분위기로 써 줘" -> "autumn-mood"."""
    if is_korean(goal):
        labels = set(extract_labels(goal)) if kind == "classification" else set()
        words = name_words(" ".join(w for w in re.split(r"[\s,/]+", goal) if w.strip() and
                                    not any(w.startswith(label) for label in labels)))
        words = [w for w in words if w not in _STOPWORDS and w != "json"]
    else:
        head = re.split(r"\binto\b|\bas\b|:", goal, maxsplit=1, flags=re.IGNORECASE)[0]
        words = [w for w in re.findall(r"[a-z0-9]+", head.lower()) if w not in _STOPWORDS]
    if kind != "style":
        words = [w for w in words if not w.startswith(("classif", "categor", "extract", "pull", "parse", "summar"))]
    slug = slugify("-".join(dict.fromkeys(words[:3])), fallback="")
    return slug or {"style": "style", "classification": "classifier", "extraction": "extractor",
                    "sentiment": "sentiment", "summarization": "summarizer", "chat": "chat"}[kind]


def make_plan(goal: str, *, n_examples: int = 0, data: DataFacts | None = None, name: str | None = None,
              max_runs: int = 1, gpu: bool = False) -> PlanCard:
    """The plan card for ``goal``: defaults chosen from ``data`` (or ``n_examples``
    training rows when only a count is known), one run unless ``max_runs`` asks for more
    (a CPU trains them one after another)."""
    goal = goal.strip()
    data = data or DataFacts(train_rows=n_examples)
    kind = detect_kind(goal) if names_a_task(goal) or data.answers_kind is None else data.answers_kind
    labels = (extract_labels(goal) or data.labels) if kind == "classification" else []
    probes_from_data = probes_from_rows(data.held_out, kind)
    defaults = choose(data.train_rows, mean_answer_tokens=data.mean_answer_tokens, gpu=gpu)
    prompt = system_prompt_for(kind, goal, labels)
    train = defaults.train.model_copy(update={"system_prompt": prompt})
    if probes_from_data:
        probes, note = probes_from_data, DRAWN
    else:
        probes = probe_prompts_for(kind, goal, labels)
        note = FROM_DATA if not probes else f"examples until data is imported; then {DRAWN}"
    judged = ({"eval_rows": data.eval_rows, "eval_source": data.eval_source, "note": data.note}
              if data.note else None)
    return PlanCard(
        goal=goal,
        kind=kind,
        labels=labels,
        system_prompt=prompt,
        probe_prompts=probes,
        probe_note=note,
        data_shape=data_shape_for(kind, labels),
        lora=defaults.lora,
        train=train,
        defaults_why=defaults.lines(),
        judged_by=judged,
        sweep=sweep_for(defaults.lora, train, max_runs=max_runs),
        name=name or short_name(goal, kind),
    )


# --- sweeps: the default configuration, then one knob at a time -------------------------------

MAX_SWEEP = 5
GPU_RUNS = 3  # the runs a plan holds by default on a GPU (a CPU: one; more only when asked)
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


def suggest_sweep(base: RunSpec, max_runs: int = MAX_SWEEP) -> list[dict[str, float]]:
    """Variations of ``base`` (the default config or the person's) for :func:`sweep_specs`:
    the plan's sweep (:func:`sweep_for`), as knob dicts; none repeats ``base``."""
    return [c.variation() for c in sweep_for(base.lora, base.train, max_runs=max_runs) if c.variation()]
