"""The built-in assistant: a person's words (English or Korean) -> one tool call -> an
honest reply.

It recognises the core requests with small patterns (goal, go/train, compare, use base,
pick base, inspect, status, cancel, rate, mark, use adapter, export, plan), calls the
tool (:class:`backend.studio.tools.AssistantTools`), and writes its reply from the
tool's actual result plus what comes next. Always available; with a capable chat model
configured, :mod:`backend.studio.assistant.agent` answers instead
(:func:`backend.studio.assistant.respond.respond` decides).
"""

from __future__ import annotations

import re

from backend.studio import rounds
from backend.studio.assistant.reply import Reply
from backend.studio.session import ToolResult
from backend.studio.tools import AssistantTools
from backend.training.plan import names_a_task

HELP = (
    "I can: **set a goal** (just say it, e.g. *autumn mood* or *classify wine as red or white*), "
    "**add examples** (drop JSONL/CSV/TXT files here), **pick a table's columns** (*use email as the input and "
    "label as the answer*), **pick a base** (*base: default* or a folder, "
    "hub id, .gguf), **inspect** the base, **train** (*go*), show **status**, **cancel**, **compare** "
    "base and adapters, **rate** answers (*A 👍*, *B is best*), **mark** an adapter *success* or *fail*, "
    "**use base** / **use <adapter>** in the chat, and **export** an adapter."
)


# --- understanding ------------------------------------------------------------------------------

_PUNCT = " \t\n.!?~,;:。！？"
_GO_EN = re.compile(
    r"^(ok(ay)?|yes|yep|sure|great|fine|good)?[ ,]*(please )?(go( ahead)?|train( it| now| them| the plan)?|"
    r"start( training| it| the training| now)?|begin( training)?|run( it| the plan)?|let'?s go|do it|launch)"
    r"( now| please)?$", re.IGNORECASE)
_GO_KO = ("시작", "학습", "훈련", "고고", "가자", "돌려")
_AGAIN = re.compile(r"^(yes[ ,]*)?(train|go|run|queue)( it| the plan)? again( anyway)?$|^다시\s*(학습|시작|훈련)",
                    re.IGNORECASE)
_FROM_RATINGS = re.compile(r"\b(train|learn|tune|improve)\b.*\b(from|on|with|using)\s+(my\s+|the\s+)?(ratings|votes)\b|"
                           r"평가(로|를|에서).*(학습|훈련)", re.IGNORECASE)
_RANKING = re.compile(r"\b(leaderboard|ranking|rank(ed)?|arena|which( model| adapter| one)? is (the )?(best|winning)|"
                      r"who('s| is) winning)\b|순위|랭킹|리더보드|(뭐|어느|무엇).{0,8}(제일|가장)\s*(좋|나아|잘)", re.IGNORECASE)
_CANCEL = re.compile(r"\b(cancel|stop|abort|halt)\b|취소|중지|중단|멈춰", re.IGNORECASE)
_COMPARE = re.compile(r"\bcompare\b|\bside[- ]by[- ]side\b|비교", re.IGNORECASE)
_BLIND = re.compile(r"\bblind\b|블라인드|가려|숨겨", re.IGNORECASE)
_USE_BASE = re.compile(
    r"^(please )?(use|switch( back)? to|back to|go back to|chat with|talk to|try)\s+(the\s+)?(untouched\s+|plain\s+|original\s+)?"
    r"base( model)?( again| please| now)?$|"
    r"^(베이스|기본|원래|원본)\s*(모델)?\s*(로|으로)?\s*(바꿔|전환|돌아가|사용|써|채팅|대화)", re.IGNORECASE)
_PICK_BASE = [
    re.compile(r"^(?:base|base model)\s*[:=]\s*(?P<spec>\S.*)$", re.IGNORECASE),
    re.compile(r"\b(?:pick|choose|select|set|switch|change)\s+(?:the\s+)?base(?:\s+model)?\s*(?:to|:|=)?\s+(?P<spec>\S+)",
               re.IGNORECASE),
    re.compile(r"\b(?:use|train on)\s+(?P<spec>\S+)\s+as\s+(?:the\s+)?base\b", re.IGNORECASE),
    re.compile(r"^베이스\s*(?:모델)?\s*[:=]\s*(?P<spec>\S+)"),
    re.compile(r"(?P<spec>\S+?)\s*(?:을|를)\s*베이스\s*(?:모델)?\s*(?:로|으로)"),
]
_INSPECT = re.compile(r"\binspect\b|\bweight points\b|\blayers?\b.*\bmodules?\b|분석|살펴|검사|구조", re.IGNORECASE)
_STATUS = re.compile(r"\b(status|progress|how('?s| is) (it|training) going|how far)\b|상태|진행|어디까지", re.IGNORECASE)
_PLAN = re.compile(r"^(show( me)?( the)? plan|plan|the plan|계획|플랜)(\s*보여\s*줘)?$", re.IGNORECASE)
_RUNS = re.compile(r"(\d+|one|two|three|four|five)\s*(runs?|configs?|configurations?|개\s*실행|번\s*실행|개)", re.IGNORECASE)
_HELP = re.compile(r"^(help|\?|what can you do|도움말?|뭘 할 수 있어)", re.IGNORECASE)
_GOAL_PREFIX = re.compile(
    r"^(?:(?:new\s+)?goal|목표)\s*[:：]\s*(?P<goal>.+)$|"
    r"^(?:i want (?:it |a model |an adapter )?to|i'?d like (?:it )?to|make (?:it|the model)|teach it to|"
    r"train (?:it|a model|an adapter) to)\s+(?P<goal2>.+)$", re.IGNORECASE)
_MARK = re.compile(
    r"\bmark\s+(?:(?P<name>[a-z0-9][a-z0-9._-]*)\s+)?(?:as\s+)?(?:a\s+)?(?P<verdict>success(?:ful)?|fail(?:ed|ure)?)\b"
    r"|^(?P<name2>[a-z0-9][a-z0-9._-]*)?\s*(?:은|는|을|를)?\s*(?P<verdict_ko>성공|실패)", re.IGNORECASE)
_EXPORT = re.compile(r"\bexport\s+(?P<name>[a-z0-9][a-z0-9._-]*)(?:\s+(?:to|into)\s+(?P<dest>\S+))?(?P<merged>.*\bmerged?\b)?"
                     r"|(?P<name_ko>[a-z0-9][a-z0-9._-]*)\s*(?:을|를)?\s*(?P<dest_ko>\S+)?\s*(?:로|에)?\s*내보내", re.IGNORECASE)
_RATE_BEST = re.compile(
    r"^(?:answer\s+)?(?P<ref>[a-z0-9][a-z0-9._-]*)\s+(?:is\s+)?(?:the\s+)?(?:better|best|wins|won)\b|"
    r"^(?:best|pick|winner)\s*(?:is|:)?\s*(?:answer\s+)?(?P<ref2>[a-z0-9][a-z0-9._-]*)$|"
    r"^(?P<ref_ko>\S+?)\s*(?:가|이)\s*(?:더\s*)?(?:좋아|낫|최고|베스트)", re.IGNORECASE)
_THUMB = re.compile(r"👍|👎|\bthumbs? (?:up|down)\b|\b(?:like|dislike)\b|좋아요|싫어요", re.IGNORECASE)
_USE_ADAPTER = re.compile(
    r"^(?:please\s+)?(?:use|switch to|chat with|talk to|try)\s+(?:the\s+)?(?:adapter\s+)?(?P<name>[a-z0-9][a-z0-9._-]*)"
    r"(?:\s+adapter)?(?:\s+(?:now|please|in the chat))?$|"
    r"^(?P<name_ko>[a-z0-9][a-z0-9._-]*)\s*(?:으로|로)?\s*(?:바꿔|전환|사용|써|채팅|대화)", re.IGNORECASE)
_NUM_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}

# Which columns of a table hold the inputs and the answers ("use email as the input and label as
# the answer", "input_column=email", "email을 입력으로, label을 답으로 써 줘").
_NAME = r"(?P<name>\"[^\"]+\"|'[^']+'|`[^`]+`|[\w.\-]+)"
_IN_EN = r"(?:input|inputs|prompt|prompts|question|questions)"
_OUT_EN = r"(?:answer|answers|output|outputs|label|labels|target|response|completion)"
_IN_KO = r"(?:입력|질문|프롬프트|인풋)"
_OUT_KO = r"(?:정답|답변|답|출력|라벨|레이블|응답|아웃풋)"
_COLUMN_WORD = r"(?:column|col|field|열|컬럼|칼럼|필드)"


def _role_patterns(role_en: str, role_ko: str, key: str) -> list[re.Pattern]:
    return [re.compile(p, re.IGNORECASE) for p in (
        rf"\b{key}[_ ]?{_COLUMN_WORD}?\s*[=:]\s*{_NAME}",  # input_column=email, output: label
        rf"{_NAME}\s+(?:{_COLUMN_WORD}\s+)?(?:as|is|for)\s+(?:the\s+)?{role_en}\b",  # email as the input
        rf"\b(?:the\s+)?{role_en}\s+(?:{_COLUMN_WORD}\s+)?(?:is|=|should be|comes from)\s+(?:the\s+)?{_NAME}",
        rf"\b{role_en}\s+{_COLUMN_WORD}\s+{_NAME}",  # input column email
        rf"{_NAME}\s*(?:{_COLUMN_WORD})?\s*(?:을|를|은|는|이|가)?\s*{role_ko}\s*(?:으로|로)",  # email을 입력으로
        rf"{role_ko}\s*(?:{_COLUMN_WORD})?\s*(?:은|는|이|가|:|=)\s*{_NAME}",  # 입력은 email
    )]


_INPUT_PATTERNS = _role_patterns(_IN_EN, _IN_KO, "input")
_OUTPUT_PATTERNS = _role_patterns(_OUT_EN, _OUT_KO, "(?:output|answer|label|target)")
_COLUMN_TALK = re.compile(rf"{_COLUMN_WORD}|_column\b|[=]", re.IGNORECASE)
_PARTICLE = re.compile(r"(?<=[\w)\]])(?:을|를|은|는|이|가|으로|로)$")


def column_mapping(text: str, columns: list[str] | None = None) -> tuple[str | None, str | None] | None:
    """The (input, output) columns a message names, either None when not named; None when it
    names none. With the file's ``columns``, a name is taken as the file spells it, a Korean
    particle stuck to it dropped ("email을" -> "email"), and a name the file lacks is no mapping
    unless the message speaks of columns ("input_column=", "column", "열")."""
    found = []
    for patterns in (_INPUT_PATTERNS, _OUTPUT_PATTERNS):
        names = [_column_name(m.group("name"), columns) for p in patterns for m in p.finditer(text)]
        found.append(next((n for n in names if n in (columns or ())), names[0] if names else None))
    if found == [None, None]:
        return None
    if columns is not None and any(name is not None and name not in columns for name in found) \
            and not _COLUMN_TALK.search(text):
        return None  # "use JSON as the output format": not this file's columns
    return found[0], found[1]


def _column_name(name: str, columns: list[str] | None) -> str:
    name = name.strip("\"'`")
    by_lower = {c.lower(): c for c in columns or []}
    for candidate in (name, _PARTICLE.sub("", name)):
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    return _PARTICLE.sub("", name) if re.search(r"[A-Za-z0-9_]", name) else name


def _clean(text: str) -> str:
    return text.strip().strip(_PUNCT).strip()


def looks_like_goal(text: str) -> bool:
    """A message that names a task kind ('mood', 'classify', '분위기', ...)."""
    return names_a_task(text)


def _runs(text: str) -> int | None:
    match = _RUNS.search(text)
    if not match:
        return None
    raw = match.group(1).lower()
    return max(1, min(5, _NUM_WORDS.get(raw) or int(raw)))


def _quoted(text: str) -> str | None:
    match = re.search(r"[\"“'‘「](.+?)[\"”'’」]", text)
    return match.group(1).strip() if match else None


def _is_go(text: str) -> bool:
    cleaned = _clean(text)
    if _GO_EN.match(cleaned):
        return True
    return len(cleaned) <= 14 and any(word in cleaned for word in _GO_KO) and not looks_like_goal(cleaned)


class RuleAssistant:
    """The built-in assistant: patterns in, tool calls out, replies from real results."""

    def __init__(self, tools: AssistantTools):
        self.tools = tools

    def respond(self, message: str, files: list[str] | None = None) -> Reply:
        tools, state = self.tools, self.tools.state
        start = len(tools.log)
        parts: list[str] = []
        if files:
            result = tools.add_examples(list(files))
            parts.append(self._say_examples(result))
        text = (message or "").strip()
        if text:
            parts.append(self._understand(text))
        elif not files:
            parts.append(HELP)
        reply = Reply("\n\n".join(p for p in parts if p), results=tools.log[start:])
        state.history += [{"role": "user", "content": message or ""}, {"role": "assistant", "content": reply.text}]
        return reply

    # one message -> one intent ------------------------------------------------------------------
    def _understand(self, text: str) -> str:
        tools, state = self.tools, self.tools.state
        cleaned = _clean(text)
        lowered = cleaned.lower()
        if _HELP.match(cleaned):
            return HELP
        if _FROM_RATINGS.search(cleaned):  # before "go": "내 평가로 다시 학습해" also says 학습
            result = tools.arena.train_from_ratings(rounds.round_parent(tools.service, lowered))
            return result.text + ("\n\nNext: watch the **Train** tab." if result.ok else "")
        if _RANKING.search(cleaned) and not looks_like_goal(cleaned):
            return self._say(tools.arena.ranking(), next_step="compare and rate more answers, or say "
                                                              "*train from my ratings*.")
        mapping = column_mapping(cleaned, state.column_guess.get("columns"))
        if mapping and (state.column_guess.get("columns") or _COLUMN_TALK.search(cleaned)):
            return self._say_examples(tools.choose_columns(*mapping))
        if _AGAIN.match(cleaned):
            return self._say_training(tools.start_training(confirm=True))
        if _is_go(cleaned):
            return self._say_training(tools.start_training())
        if _CANCEL.search(cleaned) and len(cleaned) < 40:
            job = re.search(r"\b(\d+)\b", cleaned)
            result = tools.cancel_training(int(job.group(1)) if job else None,
                                           every=bool(re.search(r"\ball\b|모두|전부", cleaned, re.IGNORECASE)))
            return self._say(result, next_step="Say *status* to see where each run stopped.")
        if _COMPARE.search(cleaned):
            prompt = _quoted(text) or _after(cleaned, r"(?:compare|비교)\s*(?:on|with prompt|:|해줘|해)?\s*")
            adapters = [n for n in tools.service.adapter_names() if re.search(rf"\b{re.escape(n)}\b", lowered)]
            result = tools.compare(prompt or None, adapters or None, blind=bool(_BLIND.search(cleaned)))
            return self._say(result, next_step="Rate the answers: *A 👍*, *B 👎* or *A is best* "
                                               "(or use the buttons in Compare).")
        if _USE_BASE.match(cleaned):
            return self._say(tools.use_base(), next_step="Chat in the **Chat** tab (a fresh conversation). "
                                                         "Say *use <adapter>* to switch back.")
        for pattern in _PICK_BASE:
            match = pattern.search(cleaned)
            if match:
                result = tools.pick_base(match.group("spec").strip(_PUNCT))
                return self._say(result, next_step="Say *inspect* to see its weight points, or drop examples.")
        mark = _MARK.search(cleaned)
        if mark:
            verdict = mark.group("verdict") or mark.group("verdict_ko")
            verdict = "success" if verdict.lower().startswith("success") or verdict == "성공" else "fail"
            name = mark.group("name") or mark.group("name2")
            return self._say(tools.mark(verdict, name), next_step="The verdict is saved with the adapter.")
        export = _EXPORT.search(cleaned)
        if export:
            name = export.group("name") or export.group("name_ko")
            dest = export.group("dest") or export.group("dest_ko")
            if not dest:
                return f"Where should I export {name}? Say *export {name} to /path/to/empty-folder*."
            return self._say(tools.export(name, dest, merged=bool(export.group("merged"))))
        if _THUMB.search(cleaned) or _RATE_BEST.match(cleaned):
            return self._rate(cleaned)
        if _INSPECT.search(cleaned) and not looks_like_goal(cleaned):
            result = tools.inspect_base()
            if result.ok:
                return f"Inspected the base:\n```\n{result.text}\n```\nNext: drop examples, or say *go* to train."
            return self._say(result)
        if _STATUS.search(cleaned):
            return self._say(tools.training_status(), next_step="The **Train** tab shows the live loss curves.")
        use = _USE_ADAPTER.match(cleaned)
        if use:
            name = use.group("name") or use.group("name_ko")
            if not looks_like_goal(cleaned):
                return self._say(tools.use_adapter(name), next_step="Say *use base* to switch back (each switch starts a fresh chat).")
        if _PLAN.match(cleaned) or (_runs(cleaned) and state.plan is not None and not looks_like_goal(cleaned)):
            return self._say(tools.show_plan(_runs(cleaned)), next_step=self._next_after_plan())
        goal = _GOAL_PREFIX.match(cleaned)
        if goal:
            return self._set_goal(goal.group("goal") or goal.group("goal2"))
        if state.plan is None:
            return self._set_goal(cleaned)
        if looks_like_goal(cleaned):  # a plan stands: only words that say so replace it
            return (f"That reads like a new goal, so I changed nothing: the plan is still for *{state.plan.goal}*. "
                    f"To replace it, say *goal: {cleaned}* (or type it in the Plan tab's Goal box).")
        return ("I did not recognise that as a request, so I did nothing. " + HELP)

    def _set_goal(self, goal: str) -> str:
        runs = _runs(goal)
        goal = _RUNS.sub("", goal).strip(_PUNCT + " ,(")
        goal = re.sub(r"\s*(with|in)$", "", goal).strip()
        result = self.tools.set_goal(goal, runs=runs)
        if not result.ok:
            return self._say(result)
        return f"Here is a plan for your goal:\n\n{result.text}\n\nNext: {self._next_after_plan()}"

    def _next_after_plan(self) -> str:
        state = self.tools.state
        if not state.data_dir:
            return ("drop example files (JSONL, CSV or TXT) into this box or the **Data** tab, edit the plan if "
                    "you like, then say *go*.")
        return f"you have {state.n_examples} examples; edit the plan if you like, then say *go* (or *시작*)."

    def _rate(self, text: str) -> str:
        tools = self.tools
        best = _RATE_BEST.match(text)
        if best and not _THUMB.search(text):
            ref = best.group("ref") or best.group("ref2") or best.group("ref_ko")
            return self._say(tools.rate(ref, score=1, best=True), next_step=self._next_after_rating())
        results: list[ToolResult] = []
        for ref, thumb in re.findall(r"(?:answer\s+)?([a-z0-9][a-z0-9._-]*)\s*[:=]?\s*(👍|👎|thumbs? up|thumbs? down|"
                                     r"like|dislike|좋아요|싫어요)", text, flags=re.IGNORECASE):
            score = 1 if thumb in ("👍", "좋아요") or thumb.lower() in ("like", "thumbs up", "thumb up") else -1
            results.append(tools.rate(ref, score=score))
        if not results:
            for thumb, ref in re.findall(r"(👍|👎)\s*(?:answer\s+)?([a-z0-9][a-z0-9._-]*)", text, flags=re.IGNORECASE):
                results.append(tools.rate(ref, score=1 if thumb == "👍" else -1))
        if not results:
            return "Which answer? Say e.g. *A 👍* or *B is best*."
        text = "\n".join(r.text if r.ok else f"That did not work: {r.text}" for r in results)
        return text + (f"\n\nNext: {self._next_after_rating()}" if any(r.ok for r in results) else "")

    def _next_after_rating(self) -> str:
        return "rate the other answers, compare another prompt, or say *mark <adapter> success* / *fail*."

    # replies ----------------------------------------------------------------------------------
    def _say(self, result: ToolResult, next_step: str | None = None) -> str:
        if not result.ok:
            return f"That did not work: {result.text}"
        return result.text + (f"\n\nNext: {next_step}" if next_step else "")

    def _say_examples(self, result: ToolResult) -> str:
        if not result.ok and result.data.get("choose"):  # a question about the file's columns, not a refusal
            return result.text
        if not result.ok:
            return f"The examples were not imported: {result.text}"
        return result.text + "\n\nNext: " + ("say *go* to train." if self.tools.state.plan else
                                              "tell me the goal (e.g. *autumn mood*).")

    def _say_training(self, result: ToolResult) -> str:
        if not result.ok:
            return f"Training did not start: {result.text}"
        return (result.text + "\n\nNext: watch the **Train** tab; each adapter is loaded into the serving "
                "endpoint when it finishes. Then say *compare*.")


def _after(text: str, pattern: str) -> str:
    parts = re.split(pattern, text, maxsplit=1, flags=re.IGNORECASE)
    rest = parts[1] if len(parts) > 1 else ""
    rest = re.sub(r"\b(blind(ly)?|base|and|with|vs\.?|against|the adapters?)\b", " ", rest, flags=re.IGNORECASE)
    return rest.strip(_PUNCT + " ") if len(rest.strip()) > 8 else ""
