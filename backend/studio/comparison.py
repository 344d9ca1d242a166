"""One comparison: the same prompt answered by several models with the same settings, and
what the page, the CLI and the assistant show and rate of it (:meth:`Service.compare`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.studio import trust


@dataclass
class Answer:
    model: str
    label: str
    text: str


@dataclass
class Comparison:
    id: str
    prompt: str
    blind: bool
    answers: list[Answer] = field(default_factory=list)
    # what every model was asked with (the same for all): backend.studio.trust says it in words
    temperature: float = 0.0
    max_tokens: int = trust.COMPARE_MAX_TOKENS
    seed: int | None = None
    system_prompt: str | None = None

    @property
    def settings_text(self) -> str:
        """``all answered greedily, same prompt, max 64 tokens``."""
        return trust.sampling_text(self.temperature, self.max_tokens, seed=self.seed,
                                   system_prompt=self.system_prompt)

    def to_dict(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "blind": self.blind,
                "answers": [a.__dict__ for a in self.answers], "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": self.seed, "system_prompt": self.system_prompt,
                "settings": self.settings_text}
