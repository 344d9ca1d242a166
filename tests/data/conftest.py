"""Fixtures of the data tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    """The tiny Llama's tokenizer (with its chat template), once per test module."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)
