"""What can be wrong with uploaded examples: every check's identity, severity and words.

A reader never raises for bad data: each problem it finds is a :class:`Problem` built
from one :class:`Rule` defined here, so the check and the words that explain it (what
was given, what is wrong, what to do) come from one place. :data:`RULES` lists them all
by code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data, located by file, line (1-based) and field.

    ``file`` is None for problems about the upload as a whole (e.g. too few examples);
    ``line`` is None for problems about a whole file. ``code`` names the :class:`Rule`.
    """

    severity: Severity
    file: str | None
    line: int | None
    field: str | None
    message: str
    code: str = ""

    def where(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(f"field {self.field!r}")
        if parts:
            return ", ".join(parts)
        return "whole file" if self.file else "all files"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """A check's identity, severity and explanation (what was given, what is wrong, what to do)."""

    code: str
    severity: Severity
    template: str

    def problem(self, file: str | None, line: int | None = None, field: str | None = None,
                **values: Any) -> Problem:
        return Problem(self.severity, file, line, field, self.template.format(**values), self.code)


ACCEPTED_JSON = (
    '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}; '
    'Gemini {"contents": [{"role": "user"|"model", "parts": [{"text": ...}]}]}; '
    '{"prompt": ..., "completion": ...}; alpaca {"instruction", "input" (optional), "output"}; '
    'sharegpt {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}; '
    'or {"text": ...} for style text'
)

FILE_NOT_FOUND = Rule("file_not_found", "error",
                      "File {path!r} does not exist or is not a file. Pick an existing file.")
UNSUPPORTED_FILE = Rule(
    "unsupported_file", "error",
    "File type {suffix!r} is not supported. Save the examples as one of: {accepted}.")
NOT_UTF8 = Rule(
    "not_utf8", "error",
    "The file is not UTF-8 text: byte {byte} at line {at_line}, column {column} cannot be decoded "
    "(lines with such bytes: {lines}). Save the file with UTF-8 encoding (e.g. "
    "`iconv -f latin1 -t utf-8 in.csv > out.csv`, or 'Save as UTF-8' in your editor).")
EMPTY_FILE = Rule("empty_file", "error",
                  "The file holds no examples ({detail}). Add examples or leave the file out.")
BAD_JSON = Rule(
    "bad_json", "error",
    "This line is not valid JSON ({error}). Write exactly one JSON object per line, "
    "with double-quoted keys and strings.")
TOO_DEEP = Rule(
    "too_deep", "error",
    "This record is nested too deeply to read ({error}). An example is a JSON object holding "
    "turns of text; write it without lists or objects nested inside each other.")
LINE_TOO_LONG = Rule(
    "line_too_long", "error",
    "This line is {size} long; lines over {limit} are refused unread{rest}. Split the example, "
    "shorten it, or raise the limit with TUNELAB_MAX_LINE_KB (the setting max_line_kb).")
NOT_OBJECT = Rule("not_object", "error",
                  "Expected a JSON object ({{...}}), got a JSON {kind}. Write one object per example.")
UNKNOWN_FORMAT = Rule(
    "unknown_format", "error",
    "Unknown example format: keys found {keys}. Accepted: "
    + ACCEPTED_JSON.replace("{", "{{").replace("}", "}}") + ".")
MISSING_FIELD = Rule("missing_field", "error",
                     "{name!r} is missing; {fmt} examples need {needs}. Add it.")
WRONG_TYPE = Rule("wrong_type", "error",
                  "Expected {expected}, got {given}. {fix}")
UNKNOWN_ROLE = Rule("unknown_role", "error",
                    "Unknown role {role!r}. Use one of: {accepted}.")
EMPTY_TEXT = Rule("empty_text", "error",
                  "The text is empty. Write the text, or remove this {what}.")
NO_ASSISTANT = Rule(
    "no_assistant", "error",
    "The example has no assistant turn (roles given: {roles}), so there is no answer to learn. "
    "Add the answer as the last turn, with role {assistant_role!r}.")
LAST_NOT_ASSISTANT = Rule(
    "last_not_assistant", "error",
    "The last turn has role {role!r}; it must be the assistant's answer. Remove the trailing "
    "turn(s) or add the answer after them.")
NO_USER = Rule("no_user", "error",
               "The example has no user turn (roles given: {roles}). Add the prompt as a user turn "
               "before the answer.")
# How to choose the columns, said at the end of CSV_MISSING_COLUMNS: each edge words its own
# controls (the page names its column pickers: backend.studio.session.PAGE_CHOOSE_COLUMNS).
CHOOSE_COLUMNS = "choose them with input_column= / output_column= (--input-column / --output-column in the CLI)"
CSV_MISSING_COLUMNS = Rule(
    "csv_missing_columns", "error",
    "Cannot tell which columns hold the {missing}: the columns found are {found}. Name them "
    "{recognised}, or {choose}.")
CSV_UNKNOWN_COLUMN = Rule(
    "csv_unknown_column", "error",
    "The chosen {which} column {name!r} is not in the file; the columns found are {found}. "
    "Choose one of those.")
TEMPLATE_FAILED = Rule(
    "template_failed", "error",
    "The base's chat template refuses this example: {error}. Reshape the turns the way this "
    "base expects (e.g. alternate user/assistant, no system turn), or pick another base.")
TOO_LONG = Rule(
    "too_long", "error",
    "The example is {tokens} tokens long under the base's tokenizer; the limit is {limit} "
    "(the smaller of the base's context and the training max_length). Shorten or split it, "
    "or raise max_length if the base allows.")
DUPLICATE = Rule(
    "duplicate", "warning",
    "Exact duplicate of the example at {first}. It will be trained on twice (and may land in "
    "both train and eval); remove it unless that is intended.")
TOO_FEW = Rule(
    "too_few", "warning",
    "Only {examples}; the plan wants at least {minimum}. Training will run, but "
    "expect the adapter to learn little. Add more examples.")
NO_EXAMPLES = Rule("no_examples", "error",
                   "No usable examples{detail}. Fix the problems above or add examples.")
EVAL_IN_TRAINING = Rule(
    "eval_in_training", "warning",
    "This evaluation row is also a training example ({first}), so its score measures recall, not "
    "new inputs. Remove it from one of the two files.")
EVAL_IS_TRAINING = Rule(
    "eval_is_training", "error",
    "This file is given both as training data and as the evaluation file; an evaluation file must "
    "hold rows the adapter does not train on. Drop in a separate file, or leave it out and rows are "
    "held back from the training file.")

SAME_ANSWER = Rule(
    "same_answer", "error",
    "'chosen' and 'rejected' are the same text, so the pair prefers nothing. Give two different answers, "
    "or remove this pair.")
PREFERENCE_FILE = Rule(
    "preference_file", "error",
    "This is a preference pair (prompt/chosen/rejected), not an example to imitate. Train pairs as a "
    "preference round: `tunelab train --data FILE --method dpo --from ADAPTER --name NEW`.")
VOTE_FILE = Rule(
    "vote_file", "error",
    "This is a rated answer (prompt/completion/label), not an example to imitate: a 👎 answer would be learned "
    "as a good one. Train votes as a KTO round: `tunelab train --data FILE --method kto --from ADAPTER --name NEW`.")

RULES = {rule.code: rule for rule in (
    FILE_NOT_FOUND, UNSUPPORTED_FILE, NOT_UTF8, EMPTY_FILE, BAD_JSON, TOO_DEEP, LINE_TOO_LONG, NOT_OBJECT,
    UNKNOWN_FORMAT, MISSING_FIELD, WRONG_TYPE, UNKNOWN_ROLE, EMPTY_TEXT, NO_ASSISTANT, LAST_NOT_ASSISTANT, NO_USER,
    CSV_MISSING_COLUMNS, CSV_UNKNOWN_COLUMN, TEMPLATE_FAILED, TOO_LONG, DUPLICATE, TOO_FEW,
    NO_EXAMPLES, EVAL_IN_TRAINING, EVAL_IS_TRAINING, SAME_ANSWER, PREFERENCE_FILE, VOTE_FILE)}
