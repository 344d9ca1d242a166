"""Answers that can be trusted (backend/studio/trust.py): greedy by default where answers
can be checked, every model of a comparison asked with the same prompt and the same
sampling (checked against the real endpoint, one model at a time), the settings said in
words, and the verdict badge shown wherever an adapter is listed."""

from __future__ import annotations

from backend.names import adapter_path
from backend.studio import trust
from backend.studio.session import SessionState
from backend.studio.tools import AssistantTools
from tests.builders import add_finished_adapter, exact_match_proof, make_lora

PROMPT = "Pale straw, crisp, green apple and citrus."


def test_the_default_temperature_follows_the_goal_and_the_person_overrides_it(service):
    assert trust.default_temperature("classification") == trust.default_temperature("extraction") == 0.0
    assert trust.default_temperature("style") == trust.default_temperature(None) == trust.OPEN_TEMPERATURE > 0
    state = SessionState()
    assert trust.temperature_of(state, "compare") == trust.OPEN_TEMPERATURE  # no goal, nothing known
    # no plan (a reload): the compared adapters' own task, from their proof
    add_finished_adapter(service, "wine", proof=exact_match_proof(29))
    add_finished_adapter(service, "plain")
    assert service.adapters_task(["Base", "plain", "wine"]) == "classification"
    assert service.adapters_task(["plain"]) is None
    assert trust.temperature_of(state, "compare", service.adapters_task(["wine"])) == 0.0
    state.plan = service.plan("write in an autumn mood")
    assert trust.temperature_of(state, "chat", "classification") == trust.OPEN_TEMPERATURE  # the plan wins
    state.plan = service.plan("classify wine as red or white")
    assert state.plan.kind == "classification"
    assert trust.temperature_of(state, "compare") == trust.temperature_of(state, "chat") == 0.0
    state.chat_temperature = 0.9
    assert (trust.temperature_of(state, "compare"), trust.temperature_of(state, "chat")) == (0.0, 0.9)
    assert "Greedy by default" in trust.default_note("classification")
    assert "0.7 by default" in trust.default_note("style")


def test_the_settings_are_said_in_words():
    assert trust.sampling_text(0.0, 64) == "all answered greedily, same prompt, max 64 tokens"
    assert trust.sampling_text(0.7, 32, seed=5, system_prompt="Answer red or white.") == (
        "all sampled at temperature 0.7 with seed 5, same prompt, same system prompt, max 32 tokens")


def test_every_model_of_a_comparison_gets_the_same_prompt_and_sampling(served, tiny_llama):
    folder = make_lora(tiny_llama, adapter_path(served.paths.adapters, "noisy"), seed=1)
    served.client.load_adapter("noisy", str(folder))
    base = served.models()[0]
    messages = [{"role": "user", "content": PROMPT}]

    greedy = served.compare(PROMPT, [base, "noisy"], max_tokens=8)
    again = served.compare(PROMPT, [base, "noisy"], max_tokens=8)
    assert (greedy.temperature, greedy.seed) == (0.0, None)
    assert greedy.settings_text == "all answered greedily, same prompt, max 8 tokens"
    assert greedy.to_dict()["settings"] == greedy.settings_text
    answers = {a.model: a.text for a in greedy.answers}
    assert answers == {a.model: a.text for a in again.answers}  # greedy: repeatable
    assert answers[base] != answers["noisy"]  # the adapter really answers differently
    for model in (base, "noisy"):  # each answer is what the model says greedily when asked alone
        assert answers[model] == served.chat(model, messages, max_tokens=8, temperature=0.0)

    sampled = served.compare(PROMPT, [base, "noisy"], max_tokens=8, temperature=1.2)
    assert sampled.seed is not None and "sampled at temperature 1.2 with seed" in sampled.settings_text
    for answer in sampled.answers:  # one seed for every model: each answer is reproducible alone
        assert answer.text == served.chat(answer.model, messages, max_tokens=8, temperature=1.2, seed=sampled.seed)


def test_the_assistants_compare_is_greedy_for_a_checkable_goal(served, tiny_llama):
    folder = make_lora(tiny_llama, adapter_path(served.paths.adapters, "noisy"), seed=2)
    served.client.load_adapter("noisy", str(folder))
    state = SessionState(base=str(tiny_llama))
    tools = AssistantTools(served, state)
    assert tools.set_goal("classify wine as red or white").ok
    result = tools.compare(PROMPT, ["noisy"])
    assert result.ok, result.text
    assert state.comparison.temperature == 0.0 and result.data["temperature"] == 0.0
    assert "all answered greedily, same prompt, same system prompt, max 64 tokens" in result.text
    state.compare_temperature = 0.8
    assert tools.compare(PROMPT, ["noisy"]).data["temperature"] == 0.8
    assert tools.set_goal("classify wine as red, white or rosé").ok  # a new goal: its default again
    assert state.compare_temperature is None and tools.compare(PROMPT, ["noisy"]).data["temperature"] == 0.0


def test_the_badge_says_the_verdict_and_the_proofs_suggestion(service):
    assert trust.verdict_badge(None) == "unmarked"
    assert trust.verdict_badge("success", "beats_base") == "✓ success · proof: beats base"
    assert trust.verdict_badge("fail", "no_better") == "✗ fail · proof: no better"
    add_finished_adapter(service, "wine", proof=exact_match_proof(29))
    add_finished_adapter(service, "plain")
    assert service.badges() == {"wine": "unmarked · proof: beats base", "plain": "unmarked"}
    service.mark("wine", "success")
    service.mark("plain", "fail")
    assert service.badges() == {"wine": "✓ success · proof: beats base", "plain": "✗ fail"}
    assert trust.labelled("wine", "✗ fail") == "wine — ✗ fail"


def test_a_finished_adapter_not_yet_hot_loaded_is_loaded_when_compared(served, tiny_llama):
    """The store says 'done' a moment before the job runner loads the adapter into the endpoint:
    the Compare tab already lists it, so comparing must not fail in that moment."""
    folder = make_lora(tiny_llama, adapter_path(served.paths.adapters, "fresh"), seed=3)
    (folder / "tunelab.json").write_text('{"name": "fresh", "status": "done"}')
    served.store.upsert_adapter("fresh", base=str(tiny_llama), status="done")
    assert "fresh" not in served.models()
    state = SessionState(base=str(tiny_llama))
    result = AssistantTools(served, state).compare(PROMPT, ["fresh"])
    assert result.ok, result.text
    assert [a.model for a in state.comparison.answers][1:] == ["fresh"] and "fresh" in served.models()
