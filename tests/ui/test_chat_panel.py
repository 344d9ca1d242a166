"""The Chat tab's conversation rules (ui/chat_panel.py): switching the model starts a fresh
conversation and says so, and the turns sent to a model never include another model's
answers (so the base cannot answer by copying an adapter's earlier turns)."""

from __future__ import annotations

from backend.studio.session import BASE_CHOICE, SessionState
from ui.chat_panel import SIGNATURE, conversation_model, signer, switch_model, turns_for


def answer(text: str, label: str, how: str = "greedy") -> dict:
    return {"role": "assistant", "content": text + SIGNATURE.format(label, how)}


ADAPTER_TALK = [{"role": "user", "content": "Deep ruby colour, cherry and oak."}, answer("red", "wine"),
                {"role": "user", "content": "And pale straw?"}, answer("white", "wine", "temperature 0.7")]


def test_answers_are_signed_with_the_model_and_how_it_was_sampled():
    assert [signer(m) for m in ADAPTER_TALK] == [None, "wine", None, "wine"]
    assert conversation_model(ADAPTER_TALK) == "wine" and conversation_model([]) is None
    assert turns_for(ADAPTER_TALK, "wine")[1] == {"role": "assistant", "content": "red"}  # unsigned


def test_switching_to_the_base_starts_a_fresh_conversation_and_says_so():
    state = SessionState(chat_model="wine")
    state, history, note = switch_model("Base", list(ADAPTER_TALK), state)
    assert state.chat_model == BASE_CHOICE and history == []
    assert "fresh conversation" in note and "wine was cleared" in note and "Base" in note
    # an empty chat switches without clearing anything, and still says what switching does
    state, history, note = switch_model("wine", [], state)
    assert state.chat_model == "wine" and history == [] and "fresh conversation" in note


def test_the_same_model_keeps_its_conversation():
    state = SessionState(chat_model="wine")
    state, history, note = switch_model("wine", list(ADAPTER_TALK), state)
    assert history == ADAPTER_TALK and "Now chatting with **wine**" in note


def test_the_base_is_never_sent_an_adapters_turns():
    mixed = [*ADAPTER_TALK, {"role": "user", "content": "Now you, base?"}]
    sent = turns_for(mixed, "Base")
    assert sent == [{"role": "user", "content": "Now you, base?"}]
    assert not any("red" == m["content"] or "white" == m["content"] for m in sent)
    both = [*mixed, answer("hm", "Base"), {"role": "user", "content": "again"}]
    assert [m["content"] for m in turns_for(both, "Base")] == ["Now you, base?", "hm", "again"]
