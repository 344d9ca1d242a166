"""From logits to text: picking each row's token (greedy or sampled), detokenizing, stop strings.

The scheduler hands every chosen token to :meth:`Detokenizer.advance`, which records it
on its request and returns the event to send: the text the token adds (held back while
a stop string or a multi-byte character may still be incomplete), and on the last event
the finish reason and the whole answer.
"""

from __future__ import annotations

import torch

from backend.serving.requests import Request, TokenEvent


def choose(logits, requests: list[Request]):
    """Each row's next token (argmax, or sampled where the request has a temperature) and its logprob."""
    logprobs = torch.log_softmax(logits, dim=-1)
    chosen = torch.argmax(logits, dim=-1)
    for row, request in enumerate(requests):
        temperature = request.params.temperature or 0.0
        if temperature > 0:
            chosen[row] = sample(logits[row], temperature, request.params.top_p, request.generator).to(chosen.device)
    return chosen, logprobs.gather(1, chosen[:, None])[:, 0]


def sample(logits, temperature: float, top_p: float, generator):
    # on the CPU, where the request's seeded generator lives: the same seed picks the same
    # tokens whatever device computed the logits
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    if top_p is not None and 0 < top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        cut = cumulative - sorted_probs > top_p
        sorted_probs[cut] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[0]


def eos_ids(model, tokenizer) -> set[int]:
    """Every end-of-sequence id the model's configs and the tokenizer name."""
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class Detokenizer:
    """Turns each request's tokens into the events its caller receives."""

    def __init__(self, tokenizer, eos: set[int]):
        self.tokenizer = tokenizer
        self.eos = eos
        self.special = set(getattr(tokenizer, "all_special_ids", []) or [])

    def advance(self, request: Request, token: int, logprob: float) -> TokenEvent:
        """Record ``token`` for ``request``; the event to send (with a finish reason when it is the last)."""
        params = request.params
        special = token in self.eos or token in self.special
        token_text = self.tokenizer.decode([token], skip_special_tokens=False)
        if token in self.eos and not params.ignore_eos:
            return self.last(request, "stop", token=token, token_text=token_text, logprob=logprob, special=True)
        request.generated.append(token)
        text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
        finish = None
        visible = len(text)
        if params.stop:
            hit = find_stop(text, params.stop, max(0, request.sent_chars - max(map(len, params.stop))))
            if hit is not None:
                visible, finish = hit, "stop"
            else:
                visible = len(text) - partial_stop(text, params.stop)
        if finish is None and len(request.generated) >= params.max_tokens:
            finish = "length"
        if finish is None and text.endswith("\ufffd"):
            visible = min(visible, len(text) - 1)  # half of a multi-byte character: wait for the rest
        if finish == "length":
            visible = len(text)  # no stop string was hit: release any text held back
        delta = text[request.sent_chars:visible] if visible > request.sent_chars else ""
        request.sent_chars = max(request.sent_chars, visible)
        return TokenEvent(token_id=token, token_text=token_text, logprob=logprob, special=special, text=delta,
                          finish_reason=finish, generated_text=None if finish is None else text[:visible],
                          prompt_tokens=len(request.prompt_ids), completion_tokens=len(request.generated))

    def last(self, request: Request, reason: str, *, token=None, token_text: str = "", logprob=None,
             special: bool = False, error: str | None = None) -> TokenEvent:
        """The final event of a request that ends for ``reason`` without a new visible token
        (end of sequence, cancelled, failed): the rest of its text, cut at a stop string."""
        final_text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
        if request.params.stop:
            hit = find_stop(final_text, request.params.stop, 0)
            final_text = final_text[:hit] if hit is not None else final_text
        return TokenEvent(token_id=token, token_text=token_text, logprob=logprob, special=special,
                          text=final_text[request.sent_chars:], finish_reason=reason, generated_text=final_text,
                          prompt_tokens=len(request.prompt_ids), completion_tokens=len(request.generated),
                          error=error)


def find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def partial_stop(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that could start a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                best = max(best, n)
                break
    return best
