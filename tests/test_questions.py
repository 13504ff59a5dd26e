"""Loading multiple-choice questions (real evaluation files and other spellings)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medverse_lab as ml
from medverse_lab.data.questions import (LETTERS, Question, format_question, load_questions, parse_answer,
                                    parse_user_turn)

from conftest import SHARED_DATA

REAL = {"medqa_test.jsonl": (1273, 5), "medbullets_op4.jsonl": (308, 4), "medbullets_op5.jsonl": (308, 5)}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_evaluation_files_load(name):
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    qs = load_questions(path)
    count, n_options = REAL[name]
    assert len(qs) == count and len({q.id for q in qs}) == count
    assert qs[0].id == f"{path.stem}-1"
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for q, r in zip(qs, raw):
        assert list(q.options) == list(LETTERS[:n_options]) and q.answer == r["answer_idx"]
        assert q.answer_text == " ".join(r["answer"].split())  # one line per option
        assert parse_user_turn(format_question(q)) == (q.question, q.options)
    if name == "medqa_test.jsonl":
        assert qs[0].meta == {"meta_info": "step1"}
        assert qs[0].answer == "C" and qs[0].question.startswith("A junior orthopaedic surgery resident")


def test_format_question_is_the_curators_user_turn():
    q = Question("q1", "  A 54-year-old man has chest pain. What next?\n", {"A": "PCI", "B": "aspirin"}, "A")
    assert format_question(q) == "Question:\nA 54-year-old man has chest pain. What next?\nOptions:\nA. PCI\nB. aspirin"
    (r,) = ml.curate.synthesize(1)
    (loaded,) = load_questions([r])
    assert format_question(loaded) == r["messages"][1]["content"]
    del r["question"]  # the question then comes from the user turn
    (again,) = load_questions([r])
    assert (again.question, again.options, again.answer) == (loaded.question, loaded.options, loaded.answer)
    assert again.meta["qtype"] == r["qtype"] and "messages" not in again.meta


@pytest.mark.parametrize("fields, key", [
    ({"answer_idx": "B"}, "B"),
    ({"answer": "C. Cefazolin"}, "C"),
    ({"answer": "(c) cefazolin"}, "C"),
    ({"answer": "cefazolin "}, "C"),
    ({"answer": "D"}, "D"),
    ({"answer": "Cefazolin", "answer_idx": "C"}, "C"),
    ({}, None),
])
def test_every_spelling_of_the_key(fields, key):
    rec = {"question": "Which drug?", "options": {"A": "Aspirin", "B": "Heparin", "C": "Cefazolin", "D": "None"}}
    (q,) = load_questions([rec | fields])
    assert q.answer == key and q.id == "1"


def test_option_shapes_and_ids():
    ten = {L: f"option {L}" for L in LETTERS}
    (a, b, c, d) = load_questions([
        {"id": 42, "question": "Q?", "options": ten, "answer_idx": "J"},
        {"question": "Q?", "options": ["x", "y", "z"], "answer": "z"},
        {"question": "Q?", "options": "A. first\nB. second\n  continued", "answer": "B"},
        {"question": "Q?", "options": {"a": "x", "b": "y"}, "answer_idx": "b"},
    ])
    assert (a.id, a.answer, len(a.options)) == ("42", "J", 10)
    assert b.options == {"A": "x", "B": "y", "C": "z"} and b.answer == "C"
    assert c.options == {"A": "first", "B": "second continued"} and c.answer == "B"
    assert d.options == {"A": "x", "B": "y"} and d.answer == "B"


@pytest.mark.parametrize("line, match", [
    ('{"question": "Q?"}', r"bad.jsonl line 2: no options"),
    ('{"options": {"A": "x", "B": "y"}}', r"line 2: no question text"),
    ('{"question": "Q?", "options": {"A": "x", "K": "y"}}', r"line 2: option keys must be letters A-J, got \['K'\]"),
    ('{"question": "Q?", "options": {"A": "x"}}', r"line 2: .*at least 2 options"),
    ('{"question": "Q?", "options": {"A": "x", "B": ""}}', r"line 2: option\(s\) \['B'\] have no text"),
    ('{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "C"}', r"line 2: answer_idx 'C' is not one"),
    ('{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "z"}', r"line 2: answer 'z' is neither"),
    ('{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "y", "answer_idx": "A"}',
     r"line 2: answer 'y' is option B but answer_idx is A"),
    ('{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "A. z"}', r"line 2: answer 'A. z' is neither"),
    ("[1, 2]", r"line 2: expected a JSON object"),
    ("{oops", r"bad.jsonl line 2: not JSON"),
])
def test_malformed_input_names_the_line(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok?", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}\n' + line + "\n")
    with pytest.raises(ValueError, match=match):
        load_questions(path)
    with pytest.raises(ValueError, match="record 3"):
        load_questions([{"question": "Q", "options": ["a", "b"]}] * 2 + [{"question": "Q"}])
    with pytest.raises(FileNotFoundError):
        load_questions(tmp_path / "missing.jsonl")


def test_parse_answer():
    assert parse_answer("so PCI. Answer: B") == "B"
    assert parse_answer("Answer: C. foo, then Answer: (E)") == "E"
    assert parse_answer("the answer is D") == "D"
    assert parse_answer("The answer is a combination of both") is None
    assert parse_answer("") is None and parse_answer(None) is None


texts = st.text(st.characters(whitelist_categories=("L", "N", "Zs"), max_codepoint=0x2FF), min_size=1, max_size=30) \
    .map(str.strip).filter(bool)


@settings(max_examples=80, deadline=None)
@given(st.lists(texts, min_size=2, max_size=10, unique_by=lambda t: " ".join(t.split()).casefold().rstrip(".")),
       st.data())
def test_random_questions_round_trip(option_texts, data):
    options = dict(zip(LETTERS, option_texts))
    letter = data.draw(st.sampled_from(list(options)))
    spelling = data.draw(st.sampled_from(["idx", "letter-text", "text"]))
    key = {"idx": {"answer_idx": letter}, "letter-text": {"answer": f"{letter}. {options[letter]}"},
           "text": {"answer": options[letter]}}[spelling]
    question = data.draw(texts)
    (q,) = load_questions([{"question": question, "options": options} | key])
    assert q.answer == letter and q.options == {k: " ".join(v.split()) for k, v in options.items()}
    assert parse_user_turn(format_question(q)) == (q.question, q.options)
