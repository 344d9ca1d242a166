"""backend/words.py: counts in the right number wherever problems are counted, and a Korean
goal's words (its subject without the request, the particle 로/으로, English words for a name);
and the one sentence of Compare's status that used to end in two periods."""

from __future__ import annotations

import pytest

from backend.data.doctor import check_files, import_files
from backend.data.preference import read_preference_files
from backend.errors import DataError
from backend.studio.comparison import Comparison
from backend.words import counted, is_korean, korean_subject, name_words, plural, with_ro
from tests.data.files import jsonl, write
from ui.compare_panel import status_line


def test_counted_says_one_and_many():
    assert [counted(n, "error") for n in (0, 1, 2)] == ["0 errors", "1 error", "2 errors"]
    assert counted(1, "bad row") == "1 bad row" and counted(3, "match") == "3 matches"
    assert counted(2, "entry") == "2 entries" and counted(2, "person", "people") == "2 people"
    assert plural("warning") == "warnings"


def test_no_count_of_problems_says_s_in_brackets(tmp_path):
    one = write(tmp_path, "one.jsonl", jsonl({"messages": [{"role": "user", "content": "hi"}]}, *[
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(3)]))
    report = check_files([one], min_examples=1)
    text = report.render_text()
    assert "Data check of 1 file: 3 usable examples, 1 error, 0 warnings" in text and "(s)" not in text
    with pytest.raises(DataError) as refused:
        import_files([one], tmp_path / "uploads", min_examples=1)
    assert refused.value.message.startswith("The upload has 1 error, so nothing was imported")
    few = check_files([write(tmp_path, "few.jsonl", jsonl(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))])
    assert "Only 1 example; the plan wants at least 10" in few.warnings[0].message
    pairs = write(tmp_path, "pairs.jsonl", jsonl({"prompt": "p", "chosen": "same", "rejected": "same"}))
    assert "read; 1 error." in read_preference_files([pairs]).render_text()


@pytest.mark.parametrize("goal, subject", [
    ("가을 분위기로 써 줘", "가을 분위기"), ("가을 분위기로 글을 쓰게 해줘", "가을 분위기"),
    ("해적처럼 말하게 해 줘", "해적처럼"), ("셰익스피어 문체로 써주세요", "셰익스피어 문체"),
])
def test_a_korean_goal_without_the_request(goal, subject):
    assert is_korean(goal) and korean_subject(goal) == subject


def test_the_particle_and_the_name_words():
    assert with_ro("가을 분위기") == "가을 분위기로" and with_ro("봄밤") == "봄밤으로" and with_ro("겨울") == "겨울로"
    assert with_ro("해적처럼") == "해적처럼"
    assert name_words("가을 분위기로 써 줘") == ["autumn", "mood"]
    assert name_words("고객 이메일을 분류해 줘") == ["customer", "email"]
    assert not is_korean("autumn mood") and not is_korean("a 가")


def test_the_compare_status_ends_each_sentence_once():
    for prompt in ("Pale straw, crisp, green apple and citrus.", "Is this red?", "no stop"):
        line = status_line(Comparison(id="c1", prompt=prompt, blind=False), "Rate each answer.")
        assert line.startswith("Compared on “") and ".." not in line and line.endswith("Rate each answer.")
