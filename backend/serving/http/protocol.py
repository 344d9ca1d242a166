"""The request bodies the endpoint reads, as pydantic models: OpenAI chat and text
completions (with vLLM's ``ignore_eos``), TGI's generate, vLLM's load/unload of LoRA adapters.

Unknown fields are accepted and ignored: OpenAI and TGI clients send many the engine
has no use for. :func:`parse_body` turns every problem of a body into one
:class:`InvalidRequest` that names each field, what was given and what is allowed;
the routes answer it in their protocol's error shape.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError,
                      field_validator)

from backend.serving.requests import SamplingParams

TGI_MAX_NEW_TOKENS = 100  # answer length when a TGI request names none
SEED_MAX = 2**64 - 1  # a seed is an unsigned 64-bit integer, as TGI's and torch's generators take


class InvalidRequest(ValueError):
    """A request body that does not follow the protocol; ``param`` names the first field at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class _Body(BaseModel):
    # strict types (no "5" for 5, no true for 1, no 1.5 for an integer) and finite numbers only
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


def _stop_strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"must be a string or a list of strings, got {value!r}")


# --- OpenAI -------------------------------------------------------------------------------------


ROLES = ("system", "user", "assistant", "developer")  # "developer" is OpenAI's newer name for "system"


class ChatMessage(_Body):
    role: StrictStr = "user"
    content: Any = None  # a string, a list of {"type": "text", "text": ...} parts, or null

    @field_validator("content")
    @classmethod
    def _content(cls, value):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(part, dict) and isinstance(part.get("text", ""), str)
                                           for part in value):
            return value
        raise ValueError(f"must be a string, null or a list of {{\"type\": \"text\", \"text\": <string>}} parts, "
                         f"got {json.dumps(value, default=str)[:80]}")

    @field_validator("role")
    @classmethod
    def _role(cls, value):
        if value not in ROLES:  # a chat template renders only these; "tool" turns need tools, which are not served
            raise ValueError(f"must be one of {', '.join(ROLES)}, got {value[:40]!r}")
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if isinstance(part, dict))
        return "" if self.content is None else str(self.content)


class StreamOptions(_Body):
    include_usage: StrictBool | None = None


class _OpenAISampling(_Body):
    """The fields chat and text completions share."""

    default_max_tokens: ClassVar[int]  # answer length when a request names none
    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, ge=0, le=1)
    seed: StrictInt | None = Field(None, ge=0, le=SEED_MAX)
    stop: list[str] = Field(default_factory=list)  # a string or a list of strings
    n: StrictInt | None = None
    ignore_eos: StrictBool | None = None  # vLLM's knob: keep generating past end-of-sequence
    return_token_ids: StrictBool | None = None  # vLLM's: the prompt's and the answer's token ids too
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value):
        return _stop_strings(value)

    @field_validator("n")
    @classmethod
    def _one_answer(cls, value):
        if value not in (None, 0, 1):
            raise ValueError(f"must be 1, got {value}: send one request per answer")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or self.default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed, stop=self.stop, ignore_eos=bool(self.ignore_eos))


class ChatCompletionRequest(_OpenAISampling):
    """``POST /v1/chat/completions``."""

    default_max_tokens: ClassVar[int] = 256
    messages: list[ChatMessage] = Field(min_length=1)

    def conversation(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_OpenAISampling):
    """``POST /v1/completions``: one prompt per request."""

    default_max_tokens: ClassVar[int] = 16  # OpenAI's and vLLM's default for text completions
    prompt: str

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise ValueError(f"must be a string (one prompt per request), got {value!r}")
        return value


# --- vLLM's runtime LoRA API -------------------------------------------------------------------


class LoadLoraAdapterRequest(_Body):
    """``POST /v1/load_lora_adapter``."""

    lora_name: StrictStr = Field(min_length=1)
    lora_path: StrictStr = Field(min_length=1)
    load_inplace: StrictBool | None = None


class UnloadLoraAdapterRequest(_Body):
    """``POST /v1/unload_lora_adapter``."""

    lora_name: StrictStr = Field(min_length=1)


# --- TGI ------------------------------------------------------------------------------------------


class GenerateParameters(_Body):
    adapter_id: StrictStr | None = None  # absent: the base
    do_sample: StrictBool | None = None
    temperature: StrictFloat | None = Field(None, ge=0, le=100)
    top_p: StrictFloat | None = Field(None, ge=0, le=1)
    max_new_tokens: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = Field(None, ge=0, le=SEED_MAX)
    stop: list[str] = Field(default_factory=list)
    return_full_text: StrictBool | None = None
    details: StrictBool | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, value):
        return _stop_strings(value)

    def sampling(self) -> SamplingParams:
        """TGI samples when asked to or when a temperature or top_p is given; greedy otherwise."""
        sample = bool(self.do_sample) or self.temperature is not None or self.top_p is not None
        temperature = (1.0 if self.temperature is None else self.temperature) if sample else 0.0
        return SamplingParams(max_tokens=self.max_new_tokens or TGI_MAX_NEW_TOKENS, temperature=temperature,
                              top_p=1.0 if self.top_p is None else self.top_p, seed=self.seed, stop=self.stop)


class GenerateRequest(_Body):
    """``POST /generate``, ``/generate_stream`` and ``/`` (``stream`` picks the answer's shape there)."""

    inputs: StrictStr = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: StrictBool | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _no_parameters(cls, value):
        return {} if value is None else value


# --- reading a body --------------------------------------------------------------------------------


def parse_body(model: type[BaseModel], raw: bytes):
    """``raw`` (a request's body) as ``model``; :class:`InvalidRequest` listing every problem."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, got {type(body).__name__}.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_url=False)]
        first = _field(exc.errors()[0]["loc"]) if exc.errors() else None
        raise InvalidRequest("Invalid request: " + " ".join(problems), param=first) from None


def _field(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problem(error: dict) -> str:
    """One sentence per problem: the field, what was given, what is allowed."""
    field = _field(error["loc"])
    if error["type"] == "missing":
        return f"'{field}' is required."
    message = error["msg"]
    if error["type"] == "value_error":
        return f"'{field}' {message.removeprefix('Value error, ')}."
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        allowed = "it should be a JSON object"
    else:
        allowed = message.replace("Input should", "it should", 1)
        allowed = allowed[0].lower() + allowed[1:]
    given = json.dumps(error.get("input"), default=str)
    given = given if len(given) <= 80 else given[:77] + "..."
    return f"'{field}' is {given}; {allowed}."
