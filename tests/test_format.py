"""The MedVerse text format: round trip, tolerance, and every PlanError kind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

import medverse_lab as ml

from strategies import trace_texts


@settings(max_examples=250, deadline=None)
@given(trace_texts())
def test_round_trip_is_byte_identical(case):
    text, plan = case
    trace = ml.parse_trace(text)
    assert trace.plan == plan
    assert [b.id for b in trace.steps] == plan.ids
    assert trace.to_text() == text


@settings(max_examples=50, deadline=None)
@given(trace_texts())
def test_segments_join_to_text_and_cut_at_step_tags(case):
    text, _ = case
    segments = ml.parse_trace(text).segments()
    assert "".join(t for _, t in segments) == text
    assert segments[0][1].endswith(segments[0][1].rsplit("<Execution>", 1)[1])
    for branch, piece in segments[1:-1]:
        assert piece.startswith("<Step>") and "</Step>" in piece
    assert segments[-1][1].startswith("</Execution>")


def test_example_trace(example_text):
    trace = ml.parse_trace(example_text)
    assert trace.plan.ids == ["1", "2", "3", "4", "5"]
    assert trace.plan["5"].deps == ("3", "4")
    assert trace.step("2").body.startswith("A rising troponin")
    assert trace.conclusion.strip().endswith("Answer: C")
    assert trace.prefix == "<Think>\n" and trace.suffix == "\n</Think>\n"
    assert trace.to_text() == example_text


def test_edited_fields_render_canonically(example_text):
    trace = ml.parse_trace(example_text)
    plan = ml.Plan([*trace.plan.steps[:4], ml.Step("5", "new description", ["3", "4"])])
    text = trace.with_plan(plan).to_text()
    assert "<Outline> Transient Step 5: new description; Dependency: [3, 4] </Outline>" in text
    assert ml.parse_trace(text.replace(trace.step("5").description, "new description")).plan == plan


def test_make_trace_parses_back():
    plan = ml.Plan([ml.Step(1, "a -> b"), ml.Step(2, "c -> d"), ml.Step(3, "b + d -> e", [1, 2])])
    trace = ml.make_trace(plan, {"1": "x\n", "2": "y\n", "3": "z\n"}, "\nAnswer: A\n")
    assert ml.parse_trace(trace.to_text()) == trace


def test_tolerant_spacing_case_and_missing_think_close():
    text = ("<Plan>\n  <Outline>transient   step 1 :a -> b ;dependency:[ ]</Outline>\n"
            "TRANSIENT STEP 2: c -> d; Dependency: [1]\n</Plan>\n<Execution>\n"
            "<Step>Transient Step 1:   a -> b\nbody\n</Step>\n<Step> transient step 2: c  ->  d\nbody\n</Step>\n"
            "</Execution>\n<Conclusion>\nAnswer: A\n</Conclusion>")
    trace = ml.parse_trace(text)
    assert trace.plan == ml.Plan([ml.Step("1", "a -> b"), ml.Step("2", "c -> d", ["1"])])
    assert trace.to_text() == text


def test_plain_and_tagged_outline_parse_alike():
    tagged = ml.Plan.from_outline("<Outline> Transient Step 1: a; Dependency: [] </Outline>\n"
                                  "<Outline> Transient Step 2: b; c; Dependency: [1] </Outline>")
    plain = ml.Plan.from_outline("Transient Step 1: a; Dependency: []\nTransient Step 2: b; c; Dependency: [1]")
    assert tagged == plain
    assert plain["2"].description == "b; c"  # a ';' inside a description is kept


# ----- every problem kind, with its step and where it is -------------------------------

def _trace(outline: str, steps: str, conclusion: str = "<Conclusion>\nAnswer: A\n</Conclusion>") -> str:
    return f"<Think>\n<Plan>\n{outline}\n</Plan>\n<Execution>\n{steps}</Execution>\n{conclusion}"


def _line(n, desc, deps):
    return f"<Outline> Transient Step {n}: {desc}; Dependency: [{deps}] </Outline>"


def _block(n, desc, body="text\n"):
    return f"<Step> Transient Step {n}: {desc}\n{body}</Step>\n"


def _error(text) -> ml.PlanError:
    with pytest.raises(ml.PlanError) as info:
        ml.parse_trace(text)
    return info.value


def _only(err: ml.PlanError, kind: str) -> ml.Problem:
    found = [p for p in err.problems if p.kind == kind]
    assert found, f"no {kind} in {err}"
    return found[0]


def test_unknown_dependency_names_step_line_and_column():
    text = _trace(_line(1, "a", "") + "\n" + _line(2, "b", "7"), _block(1, "a") + _block(2, "b"))
    p = _only(_error(text), "unknown-dependency")
    assert p.step == "2" and "7" in p.message
    assert (p.line, p.column) == (4, 11)  # the outline line of step 2, after "<Outline> "
    assert text[p.offset:].startswith("Transient Step 2")


def test_forward_dependency_offers_renumbered():
    text = _trace(_line(1, "a", "2") + "\n" + _line(2, "b", ""), _block(1, "a") + _block(2, "b"))
    err = _error(text)
    assert _only(err, "forward-dependency").step == "1"
    assert "renumbered()" in str(err)
    plan = ml.Plan([ml.Step(1, "a", [2]), ml.Step(2, "b")])
    fixed = plan.renumbered().validate()
    assert fixed == ml.Plan([ml.Step(1, "b"), ml.Step(2, "a", [1])])


def test_cycle_self_dependency_duplicate_step():
    text = _trace("\n".join([_line(1, "a", "3"), _line(2, "b", "1"), _line(3, "c", "2"),
                             _line(4, "d", "4"), _line(4, "e", "")]),
                  "".join(_block(i, d) for i, d in [(1, "a"), (2, "b"), (3, "c"), (4, "d")]))
    err = _error(text)
    assert _only(err, "cycle").message.endswith("1 -> 2 -> 3 -> 1")
    assert _only(err, "self-dependency").step == "4"
    assert _only(err, "duplicate-step").step == "4"
    assert "forward-dependency" not in err.kinds  # the cycle is reported as a cycle, once
    assert "renumbered()" not in str(err)


def test_unclosed_step_block_and_unmatched_close():
    text = _trace(_line(1, "a", "") + "\n" + _line(2, "b", ""),
                  "<Step> Transient Step 1: a\nno end\n" + _block(2, "b") + "</Step>\n")
    err = _error(text)
    unclosed = _only(err, "unclosed-block")
    assert text[unclosed.offset:].startswith("<Step> Transient Step 1")
    assert (unclosed.step, unclosed.line, unclosed.column) == ("1", 7, 1)
    assert "unmatched-close" in err.kinds


def test_unclosed_sections():
    err = _error("<Plan>\n" + _line(1, "a", ""))
    assert err.kinds == ["unclosed-block"] and err.problems[0].offset == 0
    assert _error("no plan at all").kinds == ["missing-section"]
    err = _error(_trace(_line(1, "a", ""), _block(1, "a"), conclusion=""))
    assert err.kinds == ["missing-section"] and "Conclusion" in str(err)
    err = _error(_trace(_line(1, "a", ""), _block(1, "a"), conclusion="<Conclusion>\nAnswer: A"))
    assert err.kinds == ["unclosed-block"]


def test_not_planned_not_executed_and_header_mismatch():
    text = _trace(_line(1, "a -> b", "") + "\n" + _line(2, "c", ""),
                  _block(1, "a -> x") + _block(3, "c"))
    err = _error(text)
    assert _only(err, "not-planned").step == "3"
    assert _only(err, "not-executed").step == "2"
    assert _only(err, "header-mismatch").step == "1"


def test_execution_order_and_duplicate_execution():
    outline = _line(1, "a", "") + "\n" + _line(2, "b", "")
    assert "execution-order" in _error(_trace(outline, _block(2, "b") + _block(1, "a"))).kinds
    err = _error(_trace(outline, _block(1, "a") + _block(1, "a") + _block(2, "b")))
    assert _only(err, "duplicate-execution").step == "1"


def test_bad_outline_bad_header_empty_plan_bad_id():
    err = _error(_trace("Transient Step 1: no dependency list", _block(1, "x")))
    assert "bad-outline" in err.kinds
    err = _error(_trace(_line(1, "a", "one"), _block(1, "a")))
    assert _only(err, "bad-outline").step == "1"
    err = _error(_trace(_line(1, "a", ""), "<Step> Step one\nbody\n</Step>\n"))
    assert "bad-header" in err.kinds
    assert _error(_trace("", "")).kinds == ["empty-plan"]
    assert ml.Plan([ml.Step("x", "a")]).problems()[0].kind == "bad-step-id"


def test_every_problem_is_listed_not_only_the_first():
    text = _trace("\n".join([_line(1, "a", "9"), _line(2, "b", "2"), _line(3, "c", "8")]),
                  _block(1, "a") + _block(2, "b") + _block(3, "c"))
    err = _error(text)
    assert err.kinds.count("unknown-dependency") == 2 and "self-dependency" in err.kinds
    assert str(err).startswith("3 problems found")


BAD = {  # one input per problem kind
    "empty-plan": _trace("", ""),
    "bad-step-id": ml.Plan([ml.Step("x", "a")]),
    "duplicate-step": _trace(_line(1, "a", "") + "\n" + _line(1, "b", ""), _block(1, "a")),
    "unknown-dependency": _trace(_line(1, "a", "4"), _block(1, "a")),
    "forward-dependency": _trace(_line(1, "a", "2") + "\n" + _line(2, "b", ""), _block(1, "a") + _block(2, "b")),
    "step-order": ml.Plan([ml.Step(2, "a"), ml.Step(1, "b")]),
    "self-dependency": _trace(_line(1, "a", "1"), _block(1, "a")),
    "cycle": ml.Plan([ml.Step(1, "a", [2]), ml.Step(2, "b", [1])]),
    "bad-outline": _trace("Transient Step 1 a", _block(1, "a")),
    "bad-header": _trace(_line(1, "a", ""), "<Step> a\nb\n</Step>\n"),
    "header-mismatch": _trace(_line(1, "a", ""), _block(1, "z")),
    "missing-section": "<Think>\n",
    "unclosed-block": _trace(_line(1, "a", ""), "<Step> Transient Step 1: a\nb\n"),
    "unmatched-close": _trace(_line(1, "a", ""), _block(1, "a") + "</Step>\n"),
    "not-planned": _trace(_line(1, "a", ""), _block(1, "a") + _block(2, "b")),
    "not-executed": _trace(_line(1, "a", "") + "\n" + _line(2, "b", ""), _block(1, "a")),
    "duplicate-execution": _trace(_line(1, "a", ""), _block(1, "a") + _block(1, "a")),
    "execution-order": _trace(_line(1, "a", "") + "\n" + _line(2, "b", ""), _block(2, "b") + _block(1, "a")),
}


@pytest.mark.parametrize("kind", sorted(ml.PROBLEM_KINDS))
def test_every_documented_kind_is_reported(kind):
    bad = BAD[kind]
    kinds = [p.kind for p in bad.problems()] if isinstance(bad, ml.Plan) else _error(bad).kinds
    assert kind in kinds


def test_parse_trace_rejects_non_text():
    with pytest.raises(TypeError, match="expects a str"):
        ml.parse_trace(b"<Plan>")
