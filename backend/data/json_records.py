"""JSON examples: JSON lines, a JSON array or one JSON object, each record read by its keys.

=====================  ==========================================================
``messages``           OpenAI / TRL chat (roles system/user/assistant; Gemini's
                       ``model`` is read as assistant)
``contents``           Gemini (``parts`` with ``text``; ``systemInstruction`` or
                       ``system_instruction``)
``prompt/completion``  TRL prompt-completion, strings or conversational lists
``instruction/output`` alpaca (``input`` optional); ``input/output`` alone also works
``conversations``      sharegpt (``from`` human/gpt/system, ``value``)
``text``               style text: paired with a user prompt derived from the goal
``chosen``, ``label``  preference pairs and 👍/👎 votes (a completion with a true/false
                       label): refused, naming the round that trains them
chosen fields          with an input and/or output field chosen (``CsvColumns``), a
                       flat record ({"email": ..., "label": ...}) is read by them
=====================  ==========================================================

Every record becomes normalized chat messages whose last turn is the assistant's answer,
or problems (by line and field) saying why it cannot.
"""

from __future__ import annotations

import json
from typing import Any

from backend.data.csv_rows import INPUT_COLUMNS, OUTPUT_COLUMNS, SYSTEM_COLUMNS, CsvColumns, pick
from backend.data.file_read import FileRead, RawExample
from backend.data.problems import (
    BAD_JSON,
    EMPTY_TEXT,
    LAST_NOT_ASSISTANT,
    MISSING_FIELD,
    NO_ASSISTANT,
    NO_USER,
    NOT_OBJECT,
    PREFERENCE_FILE,
    TOO_DEEP,
    UNKNOWN_FORMAT,
    UNKNOWN_ROLE,
    VOTE_FILE,
    WRONG_TYPE,
)
from backend.data.preference import is_vote
from backend.data.style_text import style_example


def read_json(text: str, suffix: str, result: FileRead, style_prompt: str,
              columns: CsvColumns = CsvColumns()) -> None:
    """Every record of a JSON file into ``result``: its examples and its problems. With
    ``columns`` chosen, a flat record holding a chosen field is read by the chosen fields
    (:func:`_from_columns`); any other record by its keys."""
    for line, record in json_values(text, suffix, result):
        before = len(result.problems), len(result.examples)
        try:
            if columns.chosen and is_flat(record) and (columns.input in record or columns.output in record):
                _from_columns(record, line, result, columns)
            else:
                _read_record(record, line, result, style_prompt)
        except RecursionError:  # parsed, but too deep to walk: one problem, nothing kept from it
            del result.problems[before[0]:], result.examples[before[1]:]
            result.add(TOO_DEEP, line, None, error="too deep to walk")


_DEEP = "lists or objects nested deeper than Python's JSON reader can follow"


def json_values(text: str, suffix: str, result: FileRead):
    """(line, value) pairs from JSON lines, a JSON array, or one JSON object; what cannot be
    parsed is a problem in ``result``."""
    start = text.lstrip()[:1]
    if start == "[":
        yield from _json_array(text, result)
        return
    if suffix == ".json" and start == "{":
        try:  # one (possibly pretty-printed) object
            value = json.loads(text)
        except json.JSONDecodeError:
            pass  # JSON lines saved as .json: read line by line below
        except RecursionError:
            result.add(TOO_DEEP, text.count("\n", 0, text.index("{")) + 1, None, error=_DEEP)
            return
        else:
            yield text.count("\n", 0, text.index("{")) + 1, value
            return
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.strip()
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            result.add(BAD_JSON, number, None, error=f"{exc.msg} at column {exc.colno}")
        except RecursionError:
            result.add(TOO_DEEP, number, None, error=_DEEP)
        else:
            yield number, value


def _json_array(text: str, result: FileRead):
    """Walk a top-level JSON array element by element, keeping each element's line."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip()) + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            result.add(BAD_JSON, exc.lineno, None, error=f"{exc.msg} at column {exc.colno}")
            return
        except RecursionError:  # the rest of the array cannot be found without this element's end
            result.add(TOO_DEEP, text.count("\n", 0, pos) + 1, None, error=_DEEP + "; the rest of the array "
                       "was not read")
            return
        yield text.count("\n", 0, pos) + 1, value
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            line = text.count("\n", 0, pos) + 1
            result.add(BAD_JSON, line, None, error="expected ',' or ']' between array elements")
            return


_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def is_flat(record: Any) -> bool:
    """A JSON object whose values are all plain (text, numbers, true/false, null): a table's row."""
    return isinstance(record, dict) and bool(record) and not any(isinstance(v, (list, dict)) for v in record.values())


def field_text(value: Any) -> str:
    """A plain JSON value as text: a label written as 1 or true reads as "1" / "true"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _from_columns(record: dict, line: int, result: FileRead, columns: CsvColumns) -> None:
    """A flat record read by the chosen fields (the one not chosen found by its common name),
    the way a CSV row is read by its columns; a ``system`` field becomes the system turn."""
    keys = list(record)
    input_key = columns.input or pick(keys, INPUT_COLUMNS)
    output_key = columns.output or pick(keys, OUTPUT_COLUMNS)
    result.found("fields")
    needs = f"{input_key or 'an input field'!r} (input) and {output_key or 'an output field'!r} (output)"
    ok = True
    for which, key in (("input", input_key), ("output", output_key)):
        if key is None or key not in record:
            result.add(MISSING_FIELD, line, key or which, name=key or which, fmt="records read by the chosen fields",
                       needs=needs)
            ok = False
        elif not field_text(record[key]).strip():
            result.add(EMPTY_TEXT, line, key, what="record")
            ok = False
    if not ok:
        return
    messages = [{"role": "user", "content": field_text(record[input_key])},
                {"role": "assistant", "content": field_text(record[output_key])}]
    system_key = pick(keys, SYSTEM_COLUMNS)
    if system_key and field_text(record[system_key]).strip():
        messages.insert(0, {"role": "system", "content": field_text(record[system_key])})
    result.examples.append(RawExample(messages, line, "fields"))


def _read_record(record: Any, line: int, result: FileRead, style_prompt: str) -> None:
    if not isinstance(record, dict):
        result.add(NOT_OBJECT, line, None, kind=_JSON_KINDS.get(type(record), type(record).__name__))
        return
    reader = _reader_for(record)
    if reader is None:
        keys = ", ".join(repr(k) for k in record) or "none"
        result.add(UNKNOWN_FORMAT, line, None, keys=keys)
        return
    before = len(result.problems)
    fmt, turns, container = reader(record, line, result, style_prompt)
    result.found(fmt)
    if turns is None or len(result.problems) > before:
        return
    if _check_conversation(turns, container, line, result):
        result.examples.append(RawExample([message for message, _ in turns], line, fmt))


def _reader_for(record: dict):
    if "chosen" in record or "rejected" in record:
        return _from_preference
    if is_vote(record):
        return _from_vote
    if "messages" in record:
        return _from_messages
    if "contents" in record:
        return _from_gemini
    if "conversations" in record:
        return _from_sharegpt
    if "prompt" in record or "completion" in record:
        return _from_prompt_completion
    if "instruction" in record or "output" in record or "input" in record:
        return _from_alpaca
    if "text" in record:
        return _from_text
    return None


Turns = list[tuple[dict, str]]  # (normalized message, the field it came from)

CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "model": "assistant"}
GEMINI_ROLES = {"user": "user", "model": "assistant", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant"}


def _turn_list(value: Any, path: str, line: int, result: FileRead, *, role_key: str, text_key: str,
               roles: dict[str, str], accepted: str, text_of) -> Turns | None:
    """Normalize a list of turns; every bad turn is reported, None if any was bad."""
    if not isinstance(value, list) or not value:
        given = "an empty list" if isinstance(value, list) else _describe(value)
        result.add(WRONG_TYPE, line, path, expected=f"a non-empty list of turns with {role_key!r} and "
                   f"{text_key!r}", given=given, fix="Give the conversation as a JSON list of turns.")
        return None
    turns: Turns = []
    ok = True
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            result.add(WRONG_TYPE, line, where, expected=f"an object with {role_key!r} and {text_key!r}",
                       given=_describe(item), fix="Write each turn as a JSON object.")
            ok = False
            continue
        role = item.get(role_key)
        if role_key not in item:
            result.add(MISSING_FIELD, line, f"{where}.{role_key}", name=role_key, fmt="each turn of these",
                       needs=f"{role_key!r} ({accepted}) and {text_key!r}")
            ok = False
        elif not isinstance(role, str) or role.strip().lower() not in roles:
            result.add(UNKNOWN_ROLE, line, f"{where}.{role_key}", role=role, accepted=accepted)
            ok = False
        if text_key not in item:
            result.add(MISSING_FIELD, line, f"{where}.{text_key}", name=text_key, fmt="each turn of these",
                       needs=f"{role_key!r} and {text_key!r}")
            ok = False
            continue
        text = text_of(item[text_key], f"{where}.{text_key}", line, result)
        if text is None:
            ok = False
            continue
        if not text.strip():
            result.add(EMPTY_TEXT, line, f"{where}.{text_key}", what="turn")
            ok = False
            continue
        if ok:
            turns.append(({"role": roles[role.strip().lower()], "content": text}, where))
    return turns if ok else None


def _plain_text(value: Any, path: str, line: int, result: FileRead) -> str | None:
    if isinstance(value, str):
        return value
    result.add(WRONG_TYPE, line, path, expected="a string", given=_describe(value),
               fix="Write the text as a JSON string.")
    return None


def _chat_content(value: Any, path: str, line: int, result: FileRead) -> str | None:
    """OpenAI content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(value, list) and value and all(
            isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)
            for p in value):
        return "\n".join(p["text"] for p in value)
    if isinstance(value, list):
        result.add(WRONG_TYPE, line, path, expected='a string or a list of {"type": "text", "text": ...} parts',
                   given=_describe(value), fix="Only text is supported; drop image/audio parts.")
        return None
    return _plain_text(value, path, line, result)


def _gemini_parts(value: Any, path: str, line: int, result: FileRead) -> str | None:
    """Gemini parts: a list of {"text": ...} (joined with newlines); other parts are refused."""
    if isinstance(value, list) and value and all(isinstance(p, dict) and isinstance(p.get("text"), str)
                                                 for p in value):
        return "\n".join(p["text"] for p in value)
    result.add(WRONG_TYPE, line, path, expected='a non-empty list of {"text": ...} parts', given=_describe(value),
               fix="Only text parts are supported; drop inlineData/fileData parts.")
    return None


def _from_messages(record: dict, line: int, result: FileRead, style_prompt: str):
    turns = _turn_list(record["messages"], "messages", line, result, role_key="role", text_key="content",
                       roles=CHAT_ROLES, accepted="system, user, assistant (or 'model')",
                       text_of=_chat_content)
    return "messages", turns, "messages"


def _from_preference(record: dict, line: int, result: FileRead, style_prompt: str):
    """A preference pair among examples to imitate: said, with the command that trains it
    (:mod:`backend.data.preference` reads such files)."""
    result.add(PREFERENCE_FILE, line, None)
    return "preference", None, ""


def _from_vote(record: dict, line: int, result: FileRead, style_prompt: str):
    """An unpaired vote (a completion with a 👍/👎 label) among examples to imitate: said, with
    the command that trains it, so a 👎 answer is never learned as a good one."""
    result.add(VOTE_FILE, line, None)
    return "unpaired vote", None, ""


def _from_gemini(record: dict, line: int, result: FileRead, style_prompt: str):
    turns = _turn_list(record["contents"], "contents", line, result, role_key="role", text_key="parts",
                       roles=GEMINI_ROLES, accepted="user, model", text_of=_gemini_parts)
    key = next((k for k in ("systemInstruction", "system_instruction") if k in record), None)
    if key is None:
        return "gemini", turns, "contents"
    value = record[key]
    if isinstance(value, str):
        text = value
    else:
        parts = value.get("parts") if isinstance(value, dict) else value
        text = _gemini_parts(parts, f"{key}.parts", line, result)
    if text is not None and not text.strip():
        result.add(EMPTY_TEXT, line, key, what="system instruction")
        text = None
    if text is None or turns is None:
        return "gemini", None, "contents"
    return "gemini", [({"role": "system", "content": text}, key), *turns], "contents"


def _from_sharegpt(record: dict, line: int, result: FileRead, style_prompt: str):
    turns = _turn_list(record["conversations"], "conversations", line, result, role_key="from",
                       text_key="value", roles=SHAREGPT_ROLES, accepted="human, gpt, system",
                       text_of=_plain_text)
    return "sharegpt", turns, "conversations"


def _from_prompt_completion(record: dict, line: int, result: FileRead, style_prompt: str):
    needs = "'prompt' and 'completion' (strings, or lists of chat turns)"
    missing = [key for key in ("prompt", "completion") if key not in record]
    for key in missing:
        result.add(MISSING_FIELD, line, key, name=key, fmt="prompt/completion", needs=needs)
    if missing:
        return "prompt-completion", None, "completion"
    turns: Turns = []
    conversational = False
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = record[key]
        if isinstance(value, list):
            conversational = True
            part = _turn_list(value, key, line, result, role_key="role", text_key="content", roles=CHAT_ROLES,
                              accepted="system, user, assistant", text_of=_chat_content)
        else:
            text = _plain_text(value, key, line, result)
            part = None
            if text is not None and not text.strip():
                result.add(EMPTY_TEXT, line, key, what="example")
            elif text is not None:
                part = [({"role": role, "content": text}, key)]
        if part is None:
            turns = None
        elif turns is not None:
            turns.extend(part)
    fmt = "prompt-completion (conversational)" if conversational else "prompt-completion"
    return fmt, turns, "completion"


def _from_alpaca(record: dict, line: int, result: FileRead, style_prompt: str):
    """alpaca rows; {"input", "output"} without an instruction reads the input as the prompt."""
    has_instruction = "instruction" in record
    fmt = "alpaca" if has_instruction else "input-output"
    needs = "'instruction' and 'output' ('input' optional)" if has_instruction else "'input' and 'output'"
    required = ("instruction", "output") if has_instruction or "input" not in record else ("input", "output")
    texts: dict[str, str | None] = {}
    for key in ("instruction", "input", "output"):
        if key not in record or (key == "input" and record[key] is None):
            if key in required:
                result.add(MISSING_FIELD, line, key, name=key, fmt=fmt, needs=needs)
                texts[key] = None
            continue
        text = _plain_text(record[key], key, line, result)
        if text is not None and not text.strip() and key in required:
            result.add(EMPTY_TEXT, line, key, what="example")
            text = None
        texts[key] = text
    if any(text is None for text in texts.values()):
        return fmt, None, "output"
    parts = [texts.get("instruction") or "", texts.get("input") or ""]
    prompt = "\n\n".join(p for p in parts if p.strip())
    turns = [({"role": "user", "content": prompt}, required[0]),
             ({"role": "assistant", "content": texts["output"]}, "output")]
    if isinstance(record.get("system"), str) and record["system"].strip():
        turns.insert(0, ({"role": "system", "content": record["system"]}, "system"))
    return fmt, turns, "output"


def _from_text(record: dict, line: int, result: FileRead, style_prompt: str):
    text = _plain_text(record["text"], "text", line, result)
    if text is None:
        return "text", None, "text"
    if not text.strip():
        result.add(EMPTY_TEXT, line, "text", what="example")
        return "text", None, "text"
    messages = style_example(style_prompt, text.strip())
    return "text", [(m, "text") for m in messages], "text"


def _check_conversation(turns: Turns, container: str, line: int | None, result: FileRead) -> bool:
    """The shape every example needs: a user turn, and an assistant answer last."""
    roles = [message["role"] for message, _ in turns]
    shown = ", ".join(roles) or "none"
    ok = True
    if "assistant" not in roles:
        result.add(NO_ASSISTANT, line, container, roles=shown,
                   assistant_role="gpt" if container == "conversations" else
                   "model" if container == "contents" else "assistant")
        ok = False
    elif roles[-1] != "assistant":
        result.add(LAST_NOT_ASSISTANT, line, f"{turns[-1][1]}.{_role_key(container)}", role=roles[-1])
        ok = False
    if "user" not in roles:
        result.add(NO_USER, line, container, roles=shown)
        ok = False
    return ok


def _role_key(container: str) -> str:
    return "from" if container == "conversations" else "role"


def _describe(value: Any) -> str:
    kind = _JSON_KINDS.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)
    shown = json.dumps(value, ensure_ascii=False, default=str)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"a {kind} ({shown})"
