"""One reading of a record, whatever its shape: training, the checker, question loading
and curation all take the same turns from it."""

from __future__ import annotations

import json

import pytest

import medverse_lab as ml
from medverse_lab.data.check import check_record
from medverse_lab.data.questions import question_from_record
from medverse_lab.data.records import load_records, read_records, replace_assistant, training_turns, turns, write_jsonl

TRACE = ml.curate.synthesize(1, seed=3)[0]
USER = turns(TRACE).user
ANSWER = turns(TRACE).assistant


def shapes(user: str, assistant: str) -> dict[str, dict]:
    """The same two-round conversation (a warm-up round, then the question) in each shape."""
    return {
        "messages": {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "warm-up"},
                                  {"role": "assistant", "content": "ok"}, {"role": "user", "content": user},
                                  {"role": "assistant", "content": assistant}]},
        "conversations": {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "warm-up"},
                                            {"from": "gpt", "value": "ok"}, {"from": "human", "value": user},
                                            {"from": "gpt", "value": assistant}]},
        "chatml": {"text": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nwarm-up<|im_end|>\n"
                           "<|im_start|>assistant\nok<|im_end|>\n"
                           f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant}<|im_end|>\n"},
    }


@pytest.mark.parametrize("shape", ["messages", "conversations", "chatml"])
def test_every_shape_reads_as_the_last_round(shape):
    rec = shapes(USER, ANSWER)[shape]
    assert turns(rec) == ("S", USER, ANSWER)


@pytest.mark.parametrize("shape", ["messages", "conversations", "chatml"])
def test_train_check_and_questions_read_the_same_turns(shape):
    rec = shapes(USER, ANSWER)[shape]
    assert training_turns(rec) == ("S", USER, ANSWER)
    assert check_record(rec) == check_record(TRACE)  # the checker sees the same trace
    q, want = question_from_record(dict(rec, answer_idx=TRACE["answer_idx"]), "x"), question_from_record(TRACE, "x")
    assert (q.question, q.options, q.answer) == (want.question, want.options, want.answer)


def test_a_bare_trace_is_all_assistant_turn():
    assert turns({"text": ANSWER}) == (None, None, ANSWER)
    assert turns({"text": "no trace here"}) == (None, None, None)
    assert turns("not a record") == (None, None, None)


@pytest.mark.parametrize("shape", ["messages", "conversations", "chatml"])
def test_replace_assistant_changes_only_the_last_assistant_turn(shape):
    rec = shapes(USER, ANSWER)[shape]
    before = json.dumps(rec)
    out = replace_assistant(rec, "NEW")
    assert turns(out) == ("S", USER, "NEW")
    assert json.dumps(rec) == before  # the input is untouched
    assert "ok" in json.dumps(out)  # the warm-up answer stays


def test_replace_assistant_refuses_a_record_without_one():
    with pytest.raises(ValueError, match="'r7' has no assistant turn"):
        replace_assistant({"id": "r7", "messages": [{"role": "user", "content": "Q"}]}, "x")


def test_training_turns_names_the_record_missing_a_turn():
    with pytest.raises(ValueError, match="record 'r9' has no user and assistant turns"):
        training_turns({"id": "r9", "messages": [{"role": "user", "content": "Q"}]})


def test_jsonl_round_trip_and_json_shapes(tmp_path):
    recs = [shapes(USER, ANSWER)["messages"], {"id": "b", "text": ANSWER}]
    assert load_records(write_jsonl(recs, tmp_path / "a" / "r.jsonl")) == recs
    (tmp_path / "by_id.json").write_text(json.dumps({"x1": recs[0], "x2": recs[1]}))
    assert [(n, rec) for n, _, rec in read_records(tmp_path / "by_id.json")] == [("x1", recs[0]), ("x2", recs[1])]
    (tmp_path / "one.json").write_text(json.dumps(recs[1]))
    assert load_records(tmp_path / "one.json") == [recs[1]]


def test_a_failed_write_leaves_no_file(tmp_path):
    def records():
        yield {"id": 1}
        raise RuntimeError("the generator broke")

    with pytest.raises(RuntimeError):
        write_jsonl(records(), tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_bad_lines_are_named_or_yielded(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl line 3: not JSON"):
        load_records(bad)
    got = list(read_records(bad, errors="yield"))
    assert got[0][2] == {"id": 1} and isinstance(got[1][2], ValueError) and got[1][0] == 3
