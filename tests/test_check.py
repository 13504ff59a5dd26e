"""check_dataset: one row per problem in curated MedVerse data; the check command."""

from __future__ import annotations

import copy
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medverse_lab as ml
from medverse_lab import cli
from medverse_lab.data.check import CHECK_KINDS, COLUMNS, check_text

from conftest import EXAMPLE

OPTIONS = {"A": "aspirin alone", "B": "thrombolysis", "C": "primary PCI, fluids, no nitrates", "D": "observation"}


def record(text=None, **fields):
    """A MedVerse14k-shaped record around the shipped STEMI trace (answer C)."""
    rec = {"id": "s1", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Question:\nInferior STEMI?\nOptions:\n" +
         "\n".join(f"{k}. {v}" for k, v in OPTIONS.items())},
        {"role": "assistant", "content": EXAMPLE.read_text() if text is None else text}],
        "options": dict(OPTIONS), "answer_idx": "C"}
    rec.update(fields)
    return rec


def kinds(df):
    return sorted(df["kind"].to_list())


def test_clean_records_have_no_problems_and_the_table_has_its_columns():
    df = ml.check_dataset([record()])
    assert isinstance(df, pl.DataFrame) and tuple(df.columns) == COLUMNS and df.height == 0
    assert df.schema["offset"] == pl.Int64
    curated = ml.curate.synthesize(200, seed=2)
    df = ml.check_dataset(curated)
    assert set(df["kind"]) <= {"no-parallelism"} and set(df["severity"]) <= {"warning"}


def test_answer_letter_is_checked_against_every_spelling_of_the_key():
    assert kinds(ml.check_dataset([record(answer_idx="B")])) == ["answer-mismatch"]
    row = ml.check_dataset([record(answer_idx="B")]).row(0, named=True)
    assert row["severity"] == "error" and row["message"] == "the conclusion answers C but the key is B"
    text = EXAMPLE.read_text()
    assert text[row["offset"]:].startswith("Answer: C")  # the wrong answer itself, not the conclusion tag
    for key in ({"answer": "C. primary PCI, fluids, no nitrates"}, {"answer": "primary PCI, fluids, no nitrates"},
                {"answer": "C"}, {"Goal": "C"}):
        rec = record(**key)
        del rec["answer_idx"]
        assert ml.check_dataset([rec]).height == 0, key
    rec = record(answer="thrombolysis")
    del rec["answer_idx"]
    assert kinds(ml.check_dataset([rec])) == ["answer-mismatch"]
    rec = record()
    del rec["options"]  # options then come from the user turn
    assert kinds(ml.check_dataset([record(answer_idx="Z")])) == ["bad-key"]
    assert kinds(ml.check_dataset([rec | {"answer_idx": "A"}])) == ["answer-mismatch"]


@pytest.mark.parametrize("old, new, expected", [
    ("Answer: C", "Answer: H", ["answer-not-an-option"]),
    ("Answer: C", "so PCI it is.", ["no-answer"]),
    ("Inferior STEMI from an occluded", "", None),  # still has text and a letter
    ("</Step>\n<Step> Transient Step 2", "\n<Step> Transient Step 2", ["not-executed", "unclosed-block"]),
    ("<Step> Transient Step 2: troponin rise -> myocardial necrosis\n", "<Step> Transient Step 2: troponin -> necrosis\n",
     ["header-mismatch"]),
    ("Dependency: [1, 2] </Outline>", "Dependency: [1, 9] </Outline>", ["unknown-dependency"]),
    ("aVF -> inferior STEMI; Dependency: []", "aVF -> inferior STEMI; Dependency: [2]", ["forward-dependency"]),
    ("; Dependency: [] </Outline>\n<Outline> Transient Step 3", " </Outline>\n<Outline> Transient Step 3",
     ["bad-outline", "not-planned", "unknown-dependency"]),
    ("A rising troponin confirms myocardial necrosis rather than ischaemia alone.\n", "", ["empty-step"]),
    ("<Conclusion>", "<Conclusio>", ["missing-section"]),
    ("</Plan>", "</Plan>\n<Plan>\n</Plan>", ["duplicate-section"]),
    ("</Execution>", "<Step> Transient Step 6: x\ny\n</Step>\n</Execution>", ["not-planned"]),
    ("</Execution>\n", "</Execution>\n<Step> Transient Step 1: a\nb\n</Step>\n", ["stray-tag"]),
])
def test_each_problem_kind_is_reported_with_its_step_and_offset(old, new, expected):
    text = EXAMPLE.read_text()
    assert old in text
    broken = text.replace(old, new, 1)
    df = ml.check_dataset([record(broken)])
    if expected is None:
        assert df.height == 0
        return
    assert kinds(df) == expected
    for row in df.iter_rows(named=True):
        assert row["sample_id"] == "s1" and row["kind"] in CHECK_KINDS
        assert row["offset"] is None or 0 <= row["offset"] <= len(broken)


def test_offsets_and_steps_point_at_the_problem():
    text = EXAMPLE.read_text()
    broken = text.replace("</Step>\n<Step> Transient Step 2", "\n<Step> Transient Step 2", 1)
    row = ml.check_dataset([record(broken)]).row(0, named=True)
    assert row["step"] == "1" and broken[row["offset"]:].startswith("<Step> Transient Step 1")
    empty = text.replace("A rising troponin confirms myocardial necrosis rather than ischaemia alone.\n", "")
    row = ml.check_dataset([record(empty)]).row(0, named=True)
    assert row["step"] == "2" and empty[row["offset"]:].startswith("<Step> Transient Step 2")
    row = ml.check_dataset([record(text.replace("Dependency: []", "Dependency: [7]", 1))]).row(0, named=True)
    assert row["kind"] == "unknown-dependency" and row["message"].endswith("(line 3, column 11)")
    assert text[row["offset"]:].startswith("Transient Step 1:")


def test_plans_without_parallelism_are_warnings():
    plan = ml.Plan([ml.Step("1", "a -> b"), ml.Step("2", "b -> c", ["1"])])
    text = ml.make_trace(plan, {"1": "x\n", "2": "y\n"}, "\nAnswer: C\n").to_text()
    df = ml.check_dataset([record(text)])
    assert kinds(df) == ["no-parallelism"] and df["severity"][0] == "warning"
    assert df["offset"][0] == text.index("<Plan>")


def test_other_record_shapes_and_bad_records(tmp_path):
    text = EXAMPLE.read_text()
    chatml = {"id": "7", "text": f"<|im_start|>user\nQ\n<|im_end|>\n<|im_start|>assistant\n{text}<|im_end|>\n",
              "answer_idx": "B"}
    sharegpt = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": text}]}
    df = ml.check_dataset([chatml, sharegpt, {"id": "x", "messages": [{"role": "user", "content": "Q"}]}, "oops"])
    assert df.select("sample_id", "kind").rows() == [("7", "answer-mismatch"), ("x", "bad-record"), ("4", "bad-record")]
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record()) + "\n\n{not json\n" + json.dumps(record(answer_idx="A") | {"id": "s3"}) + "\n")
    df = ml.check_dataset(path)
    assert df.select("sample_id", "kind").rows() == [("3", "bad-record"), ("s3", "answer-mismatch")]
    assert "data.jsonl line 3: not JSON" in df["message"][0]
    as_list, as_dict = tmp_path / "list.json", tmp_path / "dict.json"
    as_list.write_text(json.dumps([record(answer_idx="A")]))
    as_dict.write_text(json.dumps({"q9": {k: v for k, v in record(answer_idx="D").items() if k != "id"}}))
    assert ml.check_dataset(as_list)["kind"].to_list() == ["answer-mismatch"]
    assert ml.check_dataset(as_dict).select("sample_id", "kind").rows() == [("q9", "answer-mismatch")]
    assert ml.check_dataset(record(answer_idx="A")).height == 1  # a single record


def test_input_is_never_modified(tmp_path):
    records = [record(), record(EXAMPLE.read_text().replace("</Step>", "", 1), id="s2"), record(answer_idx="A")]
    before = copy.deepcopy(records)
    ml.check_dataset(records)
    assert records == before
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data, stat = path.read_bytes(), path.stat()
    ml.check_dataset(path)
    assert path.read_bytes() == data and path.stat().st_mtime_ns == stat.st_mtime_ns


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 60))
def test_any_damaged_trace_gives_rows_not_exceptions(start, length):
    text = EXAMPLE.read_text()
    start = start % len(text)
    damaged = text[:start] + text[start + length:]
    rows = check_text(damaged, "s", key="C", options=OPTIONS)
    assert all(set(r) == set(COLUMNS) and r["kind"] in CHECK_KINDS for r in rows)
    if length == 0:
        assert rows == []


def test_check_command_prints_a_summary_writes_the_table_and_sets_the_exit_code(tmp_path, capsys):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    ml.curate.write_jsonl(ml.curate.synthesize(20, seed=1), good)
    ml.curate.write_jsonl([record(), record(answer_idx="A", id="s2"),
                           record(EXAMPLE.read_text().replace("</Step>", "", 1), id="s3")], bad)
    assert cli.main(["check", str(good)]) == 0
    assert capsys.readouterr().out.startswith("checked 20 samples: 0 with errors")
    out_csv = tmp_path / "out" / "problems.csv"
    assert cli.main(["check", str(bad), "--out", str(out_csv)]) == 1
    out = capsys.readouterr().out
    assert "checked 3 samples: 2 with errors, 0 with warnings" in out
    assert "answer-mismatch" in out and "unclosed-block" in out and "samples with errors: s2, s3" in out
    table = pl.read_csv(out_csv)
    assert table.columns == list(COLUMNS) and sorted(table["sample_id"].unique()) == ["s2", "s3"]
    for suffix, read in ((".parquet", pl.read_parquet), (".jsonl", pl.read_ndjson)):
        assert cli.main(["check", str(bad), "--out", str(tmp_path / f"p{suffix}")]) == 1
        assert read(tmp_path / f"p{suffix}").height == table.height
    capsys.readouterr()
    assert cli.main(["check", str(bad), "--out", str(tmp_path / "p.xlsx")]) == 2
    assert "unknown table format '.xlsx'" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "missing.jsonl")]) == 2


def test_a_wrong_answer_is_placed_on_its_answer_line():
    text = ("<Think>\n<Plan>\n<Outline> Transient Step 1: a -> b; Dependency: [] </Outline>\n"
            "<Outline> Transient Step 2: c -> d; Dependency: [] </Outline>\n</Plan>\n<Execution>\n"
            "<Step> Transient Step 1: a -> b\nb.\n</Step>\n<Step> Transient Step 2: c -> d\nd.\n</Step>\n"
            "</Execution>\n<Conclusion>\nSo it is this.\nAnswer: B\n</Conclusion>\n</Think>")
    record = {"messages": [{"role": "user", "content": "Q?\nA. x\nB. y"}, {"role": "assistant", "content": text}],
              "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    problems = ml.check_dataset([record])
    row = problems.filter(problems["kind"] == "answer-mismatch").row(0, named=True)
    assert text[row["offset"]:].startswith("Answer: B")  # the mark underlines the wrong "Answer: B"
