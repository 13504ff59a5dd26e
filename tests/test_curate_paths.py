"""Knowledge paths (MedReason style) to plans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medverse_lab as ml
from medverse_lab.data.curate import CurationError, plan_from_paths


def test_issue_example_gives_two_independent_chains():
    plan = plan_from_paths(["1: Chest pain->ST elevation->Myocardial infarction",
                            "2: Inferior leads->RCA territory->Inferior STEMI"])
    assert [(s.id, s.description, s.deps) for s in plan] == [
        ("1", "Chest pain -> ST elevation", ()),
        ("2", "ST elevation -> Myocardial infarction", ("1",)),
        ("3", "Inferior leads -> RCA territory", ()),
        ("4", "RCA territory -> Inferior STEMI", ("3",)),
    ]
    assert plan.width == 2 and plan.levels() == [["1", "3"], ["2", "4"]]


def test_converging_paths_share_steps_and_list_predecessors_in_first_seen_order():
    plan = plan_from_paths([
        "1: crushing chest pain->myocardial ischemia->STEMI->primary PCI",
        "2: ST elevation->transmural injury->STEMI->primary PCI",
        "3: Elevated  TROPONIN->myocardial necrosis->stemi",
        "4: Diaphoresis->Myocardial Ischemia",
    ])
    assert [(s.id, s.description, s.deps) for s in plan] == [
        ("1", "crushing chest pain + Diaphoresis -> myocardial ischemia", ()),
        ("2", "ST elevation -> transmural injury", ()),
        ("3", "Elevated TROPONIN -> myocardial necrosis", ()),
        ("4", "myocardial ischemia + transmural injury + myocardial necrosis -> STEMI", ("1", "2", "3")),
        ("5", "STEMI -> primary PCI", ("4",)),
    ]
    assert plan.width == 3 and plan.is_valid


def test_number_prefix_is_optional_and_text_block_accepted():
    a = plan_from_paths("A->B->C\n\n  D -> C  \n")
    b = plan_from_paths(["7: A->B->C", "12: D->C"])
    assert a == b
    assert [s.description for s in a] == ["A -> B", "B + D -> C"]


def test_topological_numbering_breaks_ties_by_first_appearance():
    # C is seen before X, but C needs X's step; X's chain comes first as it must
    plan = plan_from_paths(["1: A->C", "2: B->X->C", "3: Q->R"])
    assert [s.description for s in plan] == ["B -> X", "A + X -> C", "Q -> R"]
    assert plan["2"].deps == ("1",)


@pytest.mark.parametrize("lines, match", [
    (["1: A->B", "2: just a finding"], r"line 2 has no arrow.*just a finding"),
    (["1: A->->B"], r"line 1 has an empty entity"),
    (["A->B->"], r"line 1 has an empty entity"),
    (["1: A->B", "2: B->C", "3: c->a"], r"cycle A -> B -> C -> A.*line 1.*line 2.*line 3"),
    (["1: A->a"], r"line 1 has an entity leading to itself"),
    ([], r"no paths"),
])
def test_bad_paths_raise_curation_error_naming_the_line(lines, match):
    with pytest.raises(CurationError, match=match):
        plan_from_paths(lines)
    assert issubclass(CurationError, ValueError)


def test_cycle_error_names_only_the_lines_on_the_cycle():
    with pytest.raises(CurationError) as err:
        plan_from_paths(["1: Z->A", "2: A->B", "3: B->A"])
    assert "line 2" in str(err.value) and "line 3" in str(err.value) and "line 1" not in str(err.value)


entities = st.sampled_from(["fever", "cough", "rash", "anemia", "sepsis", "pneumonia", "PCI", "CT", "biopsy"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(entities, min_size=2, max_size=5, unique=True), min_size=1, max_size=5))
def test_random_paths_give_a_valid_plan_or_a_cycle_error(paths):
    lines = [f"{i}: " + "->".join(p) for i, p in enumerate(paths, start=1)]
    try:
        plan = plan_from_paths(lines)
    except CurationError as exc:
        assert "cycle" in str(exc)
        return
    plan.validate()
    derived = {p[j] for p in paths for j in range(1, len(p))}
    assert sorted(s.description.split(" -> ")[-1] for s in plan) == sorted(derived)
    step_of = {s.description.split(" -> ")[-1]: s.id for s in plan}
    for s in plan:  # deps are exactly the predecessors that are steps
        target = s.description.split(" -> ")[-1]
        preds = {p[j - 1] for p in paths for j in range(1, len(p)) if p[j] == target}
        assert set(s.description.split(" -> ")[0].split(" + ")) == preds
        assert set(s.deps) == {step_of[p] for p in preds if p in step_of}
    assert ml.Plan.from_outline(plan.to_outline()) == plan
