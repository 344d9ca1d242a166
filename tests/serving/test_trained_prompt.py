"""Serving asks an adapter the way it was trained: the same chat template and the same
system prompt as training (the "good in the UI, garbage elsewhere" failure otherwise).

A real tiny training run (``backend.training.run.train_adapter``) writes the adapter and
its ``tunelab.json``; the rows its SFTTrainer prepared (TRL's own tokenization of the
prompt/completion rows) are kept, and the endpoint built by ``Engine.from_base`` (the
serving tokenizer) must encode the same user turn, sent to the adapter with no system
message, to exactly the prompt ids the adapter was trained on. Once on a base with a chat
template, once on a base without one (trained and served with the plain template).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import httpx
import openai
import pytest

from backend.adapter_folder import META_FILE, read_meta
from backend.data.normalized import read_rows
from backend.errors import AdapterMismatch
from backend.serving.engine import Engine
from backend.serving.http.app import create_app, start_in_thread
from backend.settings import Settings
from backend.training import run as training_run
from tests.builders import folder_ref, make_lora, tiny_spec, write_color_data
from tests.tiny_model import make_tiny_llama

SYSTEM = "Classify the input. Answer with exactly one label: red, white."
OWN_SYSTEM = "You are a poet. Answer in verse."


def _prompt_ids(row: dict) -> list[int]:
    """The prompt part of one prepared training row: the tokens before the first one the loss covers."""
    labels = row["labels"]
    first_answer = next(i for i, label in enumerate(labels) if label != -100)
    return list(row["input_ids"][:first_answer])


@pytest.fixture(scope="module", params=["chat-template", "plain-template"])
def trained(request, tiny_llama, tmp_path_factory):
    """A finished tiny run behind SYSTEM, the rows its trainer prepared, and the engine
    ``tunelab serve`` builds for that base, serving the adapter as ``colors``."""
    root = tmp_path_factory.mktemp(f"trained-{request.param}")
    plain = request.param == "plain-template"
    base = make_tiny_llama(root / "base", chat_template=False) if plain else tiny_llama
    data = write_color_data(root / "data", n=4)  # under 5 rows nothing is held out: every row trains, in order
    prepared = []

    class RecordingTrainer(training_run.AnswerOnlySFTTrainer):
        """The run's own trainer; keeps the training rows it prepared."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            prepared.append(self.train_dataset)

    out = root / "adapters" / "colors"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_run, "AnswerOnlySFTTrainer", RecordingTrainer)
        training_run.train_adapter(tiny_spec("colors", base, epochs=1, max_length=200, system_prompt=SYSTEM),
                                   base_ref=folder_ref(base), train_file=data, eval_file=None, out_dir=out,
                                   work_dir=root / "work", plain_template=plain)
    assert len(prepared) == 1

    engine = Engine.from_base(str(base), Settings(home=root / "home"), threads=1).start()
    engine.load_adapter("colors", out)
    yield SimpleNamespace(base=base, out=out, rows=read_rows(data), prepared=prepared[0], engine=engine,
                          root=root)
    engine.stop()


def test_a_training_row_and_a_chat_request_give_the_same_prompt_ids(trained):
    assert read_meta(trained.out)["hyperparameters"]["train"]["system_prompt"] == SYSTEM
    for messages, row in zip(trained.rows, trained.prepared, strict=True):
        user_turn = messages[:-1]
        assert user_turn[0]["role"] == "user"  # the row itself has no system turn: training added SYSTEM
        trained_prompt = _prompt_ids(row)
        served = trained.engine.encode_chat(user_turn, "colors")
        assert served == trained_prompt
        # nothing of the served prompt was cut from training (TRL drops the end of a prompt
        # that merges into the answer's first token, as a trailing space does)
        assert list(row["input_ids"][:len(served)]) == served
        # the same as sending the trained system prompt explicitly
        explicit = [{"role": "system", "content": SYSTEM}, *user_turn]
        assert trained.engine.encode_chat(explicit, "colors") == trained_prompt
        assert SYSTEM in trained.engine.tokenizer.decode(trained_prompt)


def test_the_trained_template_is_the_served_template(trained):
    """Training's tokenizer (``load_tokenizer`` with the run's ``plain_template``) and the
    endpoint's render a whole training row identically: prompt and answer."""
    messages = [{"role": "system", "content": SYSTEM}, *trained.rows[0]]
    served = trained.engine.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert list(served) == list(trained.prepared[0]["input_ids"])


def test_own_system_message_and_the_base_are_unchanged(trained):
    engine, user_turn = trained.engine, trained.rows[0][:-1]
    own = [{"role": "system", "content": OWN_SYSTEM}, *user_turn]
    template = engine.tokenizer.apply_chat_template
    assert engine.encode_chat(own, "colors") == list(template(own, add_generation_prompt=True,
                                                              tokenize=True, return_dict=True)["input_ids"])
    assert OWN_SYSTEM in engine.tokenizer.decode(engine.encode_chat(own, "colors"))
    assert SYSTEM not in engine.tokenizer.decode(engine.encode_chat(own, "colors"))
    # the base (and an unnamed model) is asked exactly what was sent
    bare = list(template(user_turn, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    assert engine.encode_chat(user_turn) == engine.encode_chat(user_turn, None) == bare
    assert engine.system_prompt(None) is None and engine.system_prompt("colors") == SYSTEM


def test_adapters_without_a_system_prompt_and_unreadable_tunelab_json(trained):
    engine, user_turn = trained.engine, trained.rows[0][:-1]
    bare = engine.encode_chat(user_turn)
    # a plain PEFT folder (no tunelab.json) is served as sent
    plain = make_lora(trained.base, trained.root / "plain-peft", seed=3)
    engine.load_adapter("plain-peft", plain)
    assert engine.adapters()["plain-peft"].system_prompt is None
    assert engine.encode_chat(user_turn, "plain-peft") == bare
    engine.unload_adapter("plain-peft")
    # a broken tunelab.json is refused: its system prompt would be silently lost
    broken = trained.root / "broken"
    shutil.copytree(trained.out, broken, dirs_exist_ok=True)
    (broken / META_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(AdapterMismatch, match="tunelab.json"):
        engine.load_adapter("broken", broken)
    assert "broken" not in engine.adapters()
    # a retrained adapter swapped in place brings its own system prompt
    swapped = trained.root / "swapped"
    shutil.copytree(trained.out, swapped, dirs_exist_ok=True)
    meta = read_meta(swapped)
    meta["hyperparameters"]["train"]["system_prompt"] = OWN_SYSTEM
    (swapped / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    engine.load_adapter("swap", trained.out)
    assert engine.system_prompt("swap") == SYSTEM
    engine.load_adapter("swap", swapped, inplace=True)
    assert engine.system_prompt("swap") == OWN_SYSTEM
    engine.unload_adapter("swap")


@pytest.fixture(scope="module")
def endpoint(trained):
    """The real HTTP endpoint around the trained engine, on a free loopback port."""
    url, stop = start_in_thread(create_app(trained.engine, settings=Settings(home=trained.root / "home",
                                                                              api_token="test-token-123")))
    yield url
    stop()


def test_http_chat_without_a_system_message_is_asked_behind_the_trained_one(trained, endpoint):
    oa = openai.OpenAI(base_url=endpoint + "/v1", api_key="unused", max_retries=0)
    engine, user_turn = trained.engine, trained.rows[0][:-1]
    trained_prompt = _prompt_ids(trained.prepared[0])

    def ask(model, messages):
        out = oa.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        return out.choices[0].message.content, out.usage.prompt_tokens

    implicit = ask("colors", user_turn)
    explicit = ask("colors", [{"role": "system", "content": SYSTEM}, *user_turn])
    assert implicit == explicit
    assert implicit[1] == len(trained_prompt)
    # streamed answers are asked the same way
    body = {"model": "colors", "messages": user_turn, "max_tokens": 8, "temperature": 0, "stream": True}
    with httpx.stream("POST", endpoint + "/v1/chat/completions", json=body, timeout=60) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line and line != "data: [DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == implicit[0]
    # a request's own system message is kept, not replaced
    own = [{"role": "system", "content": OWN_SYSTEM}, *user_turn]
    assert ask("colors", own)[1] == len(engine.encode_chat(own)) != len(trained_prompt)
    # the base is asked what was sent
    assert ask(engine.base_name, user_turn)[1] == len(engine.encode_chat(user_turn))
    # the listing says what each adapter is asked behind
    models = {m.id: m.model_extra for m in oa.models.list().data}
    assert models["colors"]["system_prompt"] == SYSTEM
    assert "system_prompt" not in models[engine.base_name]
