"""The shipped clinical knowledge graph and the cases built from it."""

from __future__ import annotations

import shutil
from functools import reduce

import networkx as nx
import polars as pl
import pytest

import medverse_lab as ml
from medverse_lab.data.curate import CurationError, enumerate_cases, knowledge_table, load_knowledge, split_cases
from medverse_lab.data.curate.cases import is_sound, supported
from medverse_lab.data.curate.knowledge import FACT_COLUMNS, KNOWLEDGE_DIR, RELATIONS, nodes_of

BLOCKERS = {"unstable angina", "acute cystitis", "threatened miscarriage"}  # distractors that block unsound cases


@pytest.fixture(scope="module")
def graph():
    return load_knowledge()


@pytest.fixture(scope="module")
def cases(graph):
    return enumerate_cases(graph)


def test_facts_table_has_named_sources_and_typed_relations():
    facts = knowledge_table()
    assert isinstance(facts, pl.DataFrame) and tuple(facts.columns) == FACT_COLUMNS
    assert facts.height >= 150
    assert facts["source"].str.len_chars().min() > 10  # a named guideline or textbook chapter
    assert set(facts["relation"]) == set(RELATIONS)
    assert facts.filter(pl.struct("head", "relation", "tail").is_duplicated()).height == 0


def test_graph_links_findings_conditions_diagnoses_treatments_and_tests(graph):
    assert isinstance(graph, nx.MultiDiGraph)
    counts = {c: len(nodes_of(graph, c)) for c in ("finding", "condition", "diagnosis", "treatment", "test")}
    assert counts["finding"] >= 150 and counts["condition"] >= 100 and counts["diagnosis"] >= 60
    assert counts["treatment"] >= 50 and counts["test"] >= 25
    for u, v, k, d in graph.edges(keys=True, data=True):
        assert (graph.nodes[u]["category"], graph.nodes[v]["category"]) == RELATIONS[k] and d["source"]
    for f in nodes_of(graph, "finding"):  # a finding determines its condition
        assert graph.out_degree(f) == 1
    stemi = graph.nodes["ST-elevation myocardial infarction"]
    assert stemi["specialty"] == "cardiology" and stemi["age"] == (45, 80, "years")
    assert graph.has_edge("ST-elevation myocardial infarction", "primary PCI", key="managed_with")
    assert "Universal Definition" in graph.edges["elevated troponin", "myocardial necrosis", "indicates"]["source"]


def test_every_case_singles_out_its_diagnosis(graph, cases):
    assert len(cases) > 800
    for case in cases:
        assert is_sound(graph, case.diagnosis, case.conditions)
        assert reduce(set.__and__, (supported(graph, c) for c in case.conditions)) == {case.diagnosis}
        for cond, findings in zip(case.conditions, case.findings):
            assert all(graph.has_edge(f, cond, key="indicates") for f in findings)
    generated = {c.diagnosis for c in cases}
    assert set(nodes_of(graph, "diagnosis")) - generated == BLOCKERS


def test_unsound_combinations_are_left_out(graph):
    # ischemia + necrosis fit STEMI and NSTEMI alike; dysuria alone fits cystitis too
    assert not is_sound(graph, "ST-elevation myocardial infarction", ["myocardial ischemia", "myocardial necrosis"])
    assert not is_sound(graph, "acute pyelonephritis", ["lower UTI"])
    # DKA needs hyperglycemia (its anchor); anaphylaxis needs more than skin signs
    assert not is_sound(graph, "diabetic ketoacidosis", ["ketosis", "volume depletion"])
    assert not is_sound(graph, "anaphylaxis", ["allergen exposure", "mast cell degranulation"])
    assert is_sound(graph, "anaphylaxis", ["allergen exposure", "bronchospasm"])


def test_split_is_deterministic_disjoint_and_keeps_every_fact_in_training(graph, cases):
    split = split_cases(cases)
    again = split_cases(list(reversed(cases)))  # a case's split does not depend on order
    assert {k: set(v) for k, v in split.items()} == {k: set(v) for k, v in again.items()}
    train, test = set(split["train"]), set(split["test"])
    assert not train & test and len(train) + len(test) == len(cases)
    assert 0.08 < len(test) / len(cases) < 0.2
    assert {c.diagnosis for c in test} <= {c.diagnosis for c in train}

    def facts(case):
        return {(f, c) for c, fs in zip(case.conditions, case.findings) for f in fs} | \
               {(c, case.diagnosis) for c in case.conditions}
    seen = set().union(*(facts(c) for c in train))
    assert set().union(*(facts(c) for c in test)) <= seen


def _copy(tmp_path):
    folder = tmp_path / "kg"
    shutil.copytree(KNOWLEDGE_DIR, folder)
    return folder


@pytest.mark.parametrize("row, match", [
    ("fever,causes,anemia,sign,condition,X", r"facts.csv line \d+: unknown relation 'causes'"),
    ("fever,indicates,anemia,sign,diagnosis,X", r"line \d+: 'indicates' links a finding to a condition"),
    ("fever,indicates,hypoxemia,vital,condition,X", r"finding 'fever' indicates 2 conditions"),
    ("a -> b,indicates,hypoxemia,sign,condition,X", r"reserved text '->'"),
    ("fever,indicates,,vital,condition,X", r"facts.csv line \d+: empty tail"),
    ("new thing,supports,brand new disease,condition,diagnosis,X", r"new thing.*condition here|no row for \['brand new disease'\]"),
])
def test_bad_knowledge_rows_are_named(tmp_path, row, match):
    folder = _copy(tmp_path)
    with open(folder / "facts.csv", "a") as f:
        f.write(row + "\n")
    with pytest.raises(CurationError, match=match):
        load_knowledge(folder)


def test_bad_diagnosis_rows_are_named(tmp_path):
    folder = _copy(tmp_path)
    text = (folder / "diagnoses.csv").read_text().replace(
        "croup,pediatrics,any,6,36,months,subglottic inflammation,2", "croup,pediatrics,any,6,36,months,fever,2")
    (folder / "diagnoses.csv").write_text(text)
    with pytest.raises(CurationError, match=r"diagnoses.csv line \d+: anchors \['fever'\] are not conditions"):
        load_knowledge(folder)
    with pytest.raises(CurationError, match="knowledge file not found"):
        load_knowledge(tmp_path / "nowhere")


def test_exports():
    assert ml.curate.load_knowledge is load_knowledge and issubclass(ml.curate.CurationError, ValueError)
