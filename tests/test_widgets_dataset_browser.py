"""DatasetBrowser, Python side: the table, filters, problem spans, fixing and saving."""

from __future__ import annotations

import json

import pytest
import torch

import medverse_lab as ml
from medverse_lab.widgets.dataset_browser import plan_draft, with_plan


@pytest.fixture(scope="module")
def dataset():
    records = ml.curate.synthesize(40, seed=0)
    broken, planted = ml.curate.plant_problems(records, rate=0.5, seed=2)
    return records, broken, planted


def test_planted_problems_are_found_by_the_checker(dataset):
    records, broken, planted = dataset
    assert {k for _, k in planted} == set(ml.curate.PLANTABLE)
    problems = ml.check_dataset(broken)
    for i, kind in planted:
        assert kind in problems.filter(problems["sample_id"] == broken[i]["id"])["kind"].to_list()
    assert ml.check_dataset(records).filter(ml.check_dataset(records)["severity"] == "error").height == 0
    with pytest.raises(ValueError, match="plantable kinds"):
        ml.curate.plant_problems(records, kinds=("typo",))


def test_table_filters_and_search(dataset):
    _, broken, planted = dataset
    b = ml.DatasetBrowser(broken)
    cols = b.table.columns
    assert cols["id"] == [r["id"] for r in broken] and len(b.visible) == len(broken)
    b.kind = "any"
    assert sorted(b.visible) == sorted({i for i, _ in planted})
    b.kind = "forward-dependency"
    assert b.visible == sorted(i for i, k in planted if k == "forward-dependency")
    assert b.table.n_visible == len(b.visible)
    b.kind = ""
    b.search = broken[7]["id"]
    assert b.visible == [7]
    b.search = ""
    kinds = dict(b.table.kinds)
    assert kinds["forward-dependency"] == sum(k == "forward-dependency" for _, k in planted)
    with pytest.raises(ValueError, match="unknown problem kind"):
        b.kind = "typo"


def test_a_plan_in_the_wrong_order_still_shows_its_width(dataset):
    _, broken, planted = dataset
    b = ml.DatasetBrowser(broken)
    columns = b.table.columns
    for i in (i for i, k in planted if k == "forward-dependency"):  # an error, but still a DAG
        assert "forward-dependency" in columns["kinds"][i] and columns["width"][i] >= 1


def test_selecting_marks_each_problem_where_it_is_and_fixing_the_plan_rechecks(dataset):
    records, broken, planted = dataset
    i = next(i for i, k in planted if k == "forward-dependency")
    b = ml.DatasetBrowser(broken)
    b.select(i)
    text = b.table.text
    assert text == b.text_of(i)
    spans = [s for s in b.table.spans if s["kind"] == "forward-dependency"]
    assert spans and "Dependency:" in text[spans[0]["start"]:spans[0]["end"]]
    assert b.editor.errors and b.editor.plan is None  # the invalid plan is the editor's draft
    assert "does not parse" in b._mask_box.children[0].value  # a placeholder that says why, not a crash
    # fix it in the editor, as a user would: drop the forward dependency
    bad = next(s for s in plan_draft(text).steps if any(int(d) > int(s.id) for d in s.deps))
    forward = next(d for d in bad.deps if int(d) > int(bad.id))
    b.editor.toggle_dependency(forward, bad.id)
    assert b.problems_of(i).filter(b.problems_of(i)["severity"] == "error").height == 0
    assert i in b.fixed and b.inspector is not None and b.inspector.T > 100
    assert "forward-dependency" not in b.table.columns["kinds"][i]
    assert b.table.notice.endswith("no errors")


def test_fix_text_and_save(dataset, tmp_path):
    records, broken, planted = dataset
    src = tmp_path / "broken.jsonl"
    ml.curate.write_jsonl(broken, src)
    b = ml.DatasetBrowser(src)
    for i, _ in planted:  # put the original text back: every planted problem fixed
        problems = b.fix_text(i, records[i]["messages"][-1]["content"])
        assert problems.filter(problems["severity"] == "error").height == 0
    with pytest.raises(ValueError, match="being browsed"):
        b.save(src)
    out = b.save(tmp_path / "fixed.jsonl")
    with pytest.raises(FileExistsError):
        b.save(out)
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert saved == records
    assert ml.check_dataset(out).filter(ml.check_dataset(out)["severity"] == "error").height == 0
    assert src.read_text() != out.read_text()  # the input is untouched


def test_with_plan_rewrites_outline_and_headers(example_text):
    trace = ml.parse_trace(example_text)
    plan = ml.Plan([ml.Step(s.id, s.description.upper(), s.deps) for s in trace.plan.steps])
    new = with_plan(example_text, plan)
    assert ml.parse_trace(new).plan == plan
    assert "<Step> Transient Step 1: CHEST PAIN" in new


def test_visible_travels_as_int32_bytes(dataset):
    b = ml.DatasetBrowser(dataset[1])
    assert isinstance(b.table.visible, bytes) and len(b.table.visible) == 4 * len(dataset[1])
    assert torch.frombuffer(bytearray(b.table.visible), dtype=torch.int32).tolist() == list(range(len(dataset[1])))
    with pytest.raises(ValueError, match="empty"):
        ml.DatasetBrowser([])
