"""Preference files: both TRL shapes read, and every problem on its line and field."""

from __future__ import annotations

import json

from backend.data.formats import read_file
from backend.data.preference import looks_like_preference, read_pairs, read_preference_files, write_pairs


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_standard_and_conversational_rows_are_read_and_normalized(tmp_path):
    f = write(tmp_path / "pairs.jsonl", [
        {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "rating_ids": [3, 4]},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}],
         "chosen": [{"role": "assistant", "content": "Red."}],
         "rejected": [{"role": "assistant", "content": "I like many colours, for example red."}]},
    ])
    report = read_preference_files([f])
    assert report.ok and len(report.pairs) == 2
    assert report.formats == {"pairs.jsonl": "mixed"}
    assert report.pairs[0]["prompt"] == [{"role": "user", "content": "Say hi"}]
    assert report.pairs[0]["rating_ids"] == [3, 4] and report.rating_ids == [3, 4]
    assert report.pairs[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert report.pairs[1]["chosen"] == [{"role": "assistant", "content": "Red."}]
    assert looks_like_preference(f)
    out = write_pairs(report.pairs, tmp_path / "n" / "pairs.jsonl")
    assert read_pairs(out) == report.pairs


def test_each_bad_line_is_named_with_its_problem(tmp_path):
    f = write(tmp_path / "bad.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"},                       # 1 fine
        {"prompt": "a", "chosen": "b"},                                        # 2 missing side
        {"prompt": "a", "chosen": "same", "rejected": " same "},               # 3 chosen == rejected
        {"prompt": "a", "chosen": "", "rejected": "c"},                        # 4 empty text
        '{"prompt": "a", "chosen": ',                                          # 5 not JSON
        {"prompt": [{"role": "assistant", "content": "x"}], "chosen": [{"role": "assistant", "content": "y"}],
         "rejected": [{"role": "assistant", "content": "z"}]},                 # 6 no user turn
        {"prompt": "a", "chosen": 5, "rejected": "c"},                         # 7 wrong type
        ["not", "an", "object"],                                                # 8
    ])
    report = read_preference_files([f])
    assert not report.ok and len(report.pairs) == 1
    found = {(p.line, p.code, p.field) for p in report.problems}
    assert found == {(2, "missing_field", "rejected"), (3, "same_answer", "rejected"), (4, "empty_text", "chosen"),
                     (5, "bad_json", None), (6, "no_user", "prompt"), (7, "wrong_type", "chosen"),
                     (8, "not_object", None)}
    assert all(p.file == "bad.jsonl" for p in report.problems)
    assert "'rejected' is missing" in next(p.message for p in report.problems if p.line == 2)


def test_a_missing_file_and_an_empty_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    report = read_preference_files([tmp_path / "nope.jsonl", tmp_path / "empty.jsonl"])
    assert {p.code for p in report.problems} == {"file_not_found", "empty_file"}


def test_the_example_doctor_says_a_pair_is_for_a_preference_round(tmp_path):
    f = write(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    read = read_file(f, "pairs.jsonl", style_prompt="")
    assert [p.code for p in read.problems] == ["preference_file"]
    assert "--method dpo" in read.problems[0].message


def test_unpaired_votes_are_read_in_both_shapes_and_normalized(tmp_path):
    f = write(tmp_path / "votes.jsonl", [
        {"prompt": "Say hi", "completion": "Hi!", "label": True, "rating_ids": [7]},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}],
         "completion": [{"role": "assistant", "content": "I like many colours."}], "label": False},
        {"prompt": "Say bye", "completion": "Bye.", "label": "UP"},
    ])
    report = read_preference_files([f])
    assert report.ok and not report.pairs and len(report.unpaired) == 3
    assert (report.up, report.down) == (2, 1)
    assert report.formats == {"votes.jsonl": "mixed"}
    assert report.unpaired[0] == {"prompt": [{"role": "user", "content": "Say hi"}],
                                  "completion": [{"role": "assistant", "content": "Hi!"}], "label": True,
                                  "rating_ids": [7]}
    assert report.unpaired[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert report.unpaired[1]["label"] is False and report.unpaired[2]["label"] is True
    assert looks_like_preference(f)
    assert report.render_text().splitlines()[0] == "3 unpaired votes (2 👍, 1 👎) ready."
    assert "a KTO round needs at least 16 votes with at least 4 👍 and 4 👎; 13 more, at least 2 more 👍 and 3 " \
           "more 👎 among them" in report.render_text()


def test_each_bad_vote_line_is_named_with_its_problem(tmp_path):
    f = write(tmp_path / "bad.jsonl", [
        {"prompt": "a", "completion": "b", "label": True},                     # 1 fine
        {"prompt": "a", "completion": "b"},                                    # 2 no label
        {"prompt": "a", "label": False},                                       # 3 no completion
        {"prompt": "a", "completion": "b", "label": "maybe"},                  # 4 not a vote
        {"prompt": "a", "completion": "b", "label": 1},                        # 5 a number is not a vote
        {"prompt": "a", "completion": "  ", "label": False},                   # 6 empty text
        {"prompt": "", "completion": "b", "label": True},                      # 7 empty prompt
        {"completion": "b", "label": True},                                    # 8 no prompt
        ["not", "an", "object"],                                                # 9
    ])
    report = read_preference_files([f])
    assert not report.ok and len(report.unpaired) == 1
    found = [(p.line, p.code, p.field) for p in report.problems]
    assert found == [(2, "missing_field", "label"), (3, "missing_field", "completion"), (4, "wrong_type", "label"),
                     (5, "wrong_type", "label"), (6, "empty_text", "completion"), (7, "empty_text", "prompt"),
                     (8, "missing_field", "prompt"), (9, "not_object", None)]
    messages = {p.line: p.message for p in report.problems}
    assert "'label' is missing; unpaired vote examples need 'prompt', 'completion' and 'label'" in messages[2]
    assert 'got "maybe"' in messages[4] and "true for 👍, false for 👎" in messages[4]
    assert "remove this vote" in messages[6]


def test_the_example_doctor_says_a_vote_is_for_a_kto_round(tmp_path):
    f = write(tmp_path / "votes.jsonl", [{"prompt": "a", "completion": "b", "label": False}])
    read = read_file(f, "votes.jsonl", style_prompt="")
    assert [p.code for p in read.problems] == ["vote_file"]
    assert "--method kto" in read.problems[0].message
    plain = write(tmp_path / "plain.jsonl", [{"prompt": "a", "completion": "b", "label": "sports"}])
    assert not read_file(plain, "plain.jsonl", style_prompt="").problems  # a label that is no vote: an example
