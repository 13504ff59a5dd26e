"""Synthetic MedVerse records: shape, plans, answers derivable from the graph, splits."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import reduce

import pytest

import medverse_lab as ml
from medverse_lab.data.curate import CurationError, EngineWriter, TemplateWriter, load_knowledge, synthesize, write_jsonl
from medverse_lab.data.curate.cases import supported
from medverse_lab.data.curate.knowledge import nodes_of, targets
from medverse_lab.data.questions import format_question, load_questions, parse_answer, parse_user_turn

RELATION = {"diagnosis": None, "management": "managed_with", "test": "confirmed_by"}


@pytest.fixture(scope="module")
def graph():
    return load_knowledge()


@pytest.fixture(scope="module")
def train():
    return synthesize(800, seed=0, split="train")


@pytest.fixture(scope="module")
def test_records():
    return synthesize(300, seed=0, split="test")


def test_records_have_the_medverse14k_shape(train):
    r = train[0]
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    assert r["messages"][0]["content"] == ml.prompt.SYSTEM_PROMPT
    user = r["messages"][1]["content"]
    assert user.startswith("Question:\n") and "\nOptions:\nA. " in user
    assert parse_user_turn(user) == (r["question"], r["options"])
    for key in ("id", "answer_idx", "options", "paths", "split", "qtype", "diagnosis", "answer", "case"):
        assert key in r
    assert len({x["id"] for x in train}) == len(train)
    assert all(x["split"] == "train" for x in train)


def test_assistant_turn_parses_round_trips_and_follows_the_paths(train):
    for r in train:
        text = r["messages"][2]["content"]
        assert text.startswith("<Think>\n<Plan>\n<Outline> Transient Step 1: ") and text.endswith("\n</Conclusion>\n</Think>")
        trace = ml.parse_trace(text)
        assert trace.to_text() == text
        assert trace.plan == ml.curate.plan_from_paths(r["paths"])
        assert all(b.body.strip() for b in trace.steps)
        assert re.search(r"Answer: [A-J]\n$", trace.conclusion)


def test_answers_are_derivable_from_the_vignette_through_the_graph(graph, train, test_records):
    findings = sorted(nodes_of(graph, "finding"), key=len, reverse=True)
    for r in train + test_records:
        text = r["question"]
        shown = []
        for f in findings:  # longest first, so "fever for six days" is not read as "fever"
            if f in text:
                shown.append(f)
                text = text.replace(f, "#")
        conditions = {targets(graph, f, "indicates")[0] for f in shown}
        (diagnosis,) = reduce(set.__and__, (supported(graph, c) for c in conditions))
        rel = RELATION[r["qtype"]]
        key = diagnosis if rel is None else targets(graph, diagnosis, rel)[0]
        assert r["diagnosis"] == diagnosis and r["options"][r["answer_idx"]] == key == r["answer"]
        assert list(r["options"].values()).count(key) == 1 and len(set(r["options"].values())) == len(r["options"])
        assert parse_answer(r["messages"][2]["content"]) == r["answer_idx"]


def test_plans_are_parallel_and_varied(train):
    plans = [ml.parse_trace(r["messages"][2]["content"]).plan for r in train]
    sizes, widths = Counter(len(p) for p in plans), Counter(p.width for p in plans)
    assert set(sizes) == {2, 3, 4, 5, 6}
    assert sum(v for w, v in widths.items() if w >= 2) / len(plans) > 0.85
    assert {1, 2, 3, 4} <= set(widths)
    assert Counter(r["qtype"] for r in train).keys() == {"diagnosis", "management", "test"}
    assert Counter(len(r["options"]) for r in train).keys() == {4, 5}
    assert len({r["diagnosis"] for r in train}) > 60


def test_train_and_test_share_no_question_or_case(train, test_records):
    assert not {r["question"] for r in train} & {r["question"] for r in test_records}
    assert not {r["case"] for r in train} & {r["case"] for r in test_records}
    assert not {format_question(q) for q in load_questions(train)} & \
        {format_question(q) for q in load_questions(test_records)}


def test_synthesis_is_deterministic_and_seeded():
    a, b, c = synthesize(30, seed=3), synthesize(30, seed=3), synthesize(30, seed=4)
    assert a == b and a != c
    assert synthesize(10, seed=3) == a[:10]


def test_records_fit_a_small_model_context(train):
    from medverse_lab.prompt import chat_prefix
    from medverse_lab.tokens import train_tokenizer

    tok = train_tokenizer((m["content"] for r in train for m in r["messages"]), vocab_size=4096)
    lengths = [len(tok(chat_prefix(tok, r["messages"][1]["content"], r["messages"][0]["content"])
                       + r["messages"][2]["content"], add_special_tokens=False)["input_ids"]) for r in train]
    # train() skips examples longer than max_len=512; a handful is fine, a trend is not
    assert sum(n > 512 for n in lengths) <= len(lengths) // 100 and sum(lengths) / len(lengths) < 380


def test_jsonl_round_trip_and_questions_load(tmp_path, train):
    path = write_jsonl(train[:20], tmp_path / "sub" / "train.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == train[:20]
    qs = load_questions(path)
    assert [q.answer for q in qs] == [r["answer_idx"] for r in train[:20]]
    assert [format_question(q) for q in qs] == [r["messages"][1]["content"] for r in train[:20]]


class EchoWriter:
    """A writer that names the step's parents, to check what it is given."""

    def step(self, question, plan, step, parent_texts):
        assert set(parent_texts) == set(step.deps)
        return f"step {step.id} after {sorted(parent_texts)}"

    def conclusion(self, question, plan, step_texts, options, answer):
        assert set(step_texts) == set(plan.ids) and options[answer]
        return f"I pick {answer}. Answer: {answer}"


def test_custom_writer_protocol():
    (r,) = synthesize(1, seed=5, writer=EchoWriter())
    trace = ml.parse_trace(r["messages"][2]["content"])
    last = trace.plan.steps[-1]
    assert trace.step(last.id).body == f"step {last.id} after {sorted(last.deps)}\n"
    assert trace.conclusion == f"\nI pick {r['answer_idx']}. Answer: {r['answer_idx']}\n"
    assert isinstance(TemplateWriter(), ml.curate.Writer)


def test_wrong_writer_or_arguments_raise_curation_error():
    class Wrong(EchoWriter):
        def conclusion(self, question, plan, step_texts, options, answer):
            return "Answer: " + next(k for k in options if k != answer)

    with pytest.raises(CurationError, match=r"question train-0-000000: the conclusion answers [A-J], the key is"):
        synthesize(1, writer=Wrong())
    with pytest.raises(CurationError, match="lacks step"):
        synthesize(1, writer=object())
    with pytest.raises(CurationError, match="split must be one of"):
        synthesize(1, split="validation")
    with pytest.raises(CurationError, match="non-negative integer"):
        synthesize(-1)


def test_wrong_answers_are_skipped_when_asked_and_counted():
    class WrongOnEven(EchoWriter):
        def conclusion(self, question, plan, step_texts, options, answer):
            wrong = int(question.id[-1]) % 2 == 0
            return "Answer: " + (next(k for k in options if k != answer) if wrong else answer)

    with pytest.warns(UserWarning, match=r"left out 2 of 4 questions; the first: question train-0-000000"):
        records = synthesize(4, writer=WrongOnEven(), errors="skip")
    assert [r["id"] for r in records] == ["train-0-000001", "train-0-000003"]
    with pytest.raises(CurationError, match="errors must be 'raise' or 'skip'"):
        synthesize(1, errors="ignore")


def test_an_engine_writes_the_steps_and_conclusion_of_the_curated_plan():
    engine = ml.Engine.load()  # the embedded teaching model
    writer = EngineWriter(engine)
    assert isinstance(writer, ml.curate.Writer)
    records = synthesize(3, seed=2, split="test", writer=writer, errors="skip", progress=False)
    assert records  # the teaching model answers most of these right; a wrong one is left out
    for r in records:
        trace = ml.parse_trace(r["messages"][2]["content"])
        assert trace.plan == ml.curate.plan_from_paths(r["paths"])  # the Curator's plan, forced
        run = engine.run(r["messages"][1]["content"], plan=trace.plan, temperature=0.0)
        assert {s: trace.step(s).body for s in trace.plan.ids} == {s: t.strip() + "\n" for s, t in run.steps.items()}
        assert trace.conclusion.strip() == run.conclusion.strip() and run.answer == r["answer_idx"]
    with pytest.raises(TypeError, match="needs an engine with run"):
        EngineWriter("not an engine")


def test_distractors_are_safe(graph, train):
    from medverse_lab.data.curate.items import conflicts

    treats = {}
    for d in nodes_of(graph, "diagnosis"):
        for rel in ("managed_with", "confirmed_by"):
            for t in targets(graph, d, rel):
                treats.setdefault(t, set()).add(d)
    for r in train:
        sex = "female" if re.search(r"-old (woman|girl)", r["question"]) else "male"
        conditions = set(graph.predecessors(r["diagnosis"]))
        case_conditions = {targets(graph, f, "indicates")[0] for f in r["case"].split("|")[1:]}
        assert case_conditions <= conditions
        for letter, text in r["options"].items():
            if letter == r["answer_idx"]:
                continue
            owners = {text} if r["qtype"] == "diagnosis" else treats[text]
            assert any(graph.nodes[o]["sex"] in ("any", sex) for o in owners), (r["id"], text)
            if r["qtype"] != "diagnosis":  # not a treatment of part of the picture, nor a near-synonym
                assert not conflicts(text, r["answer"]), (r["id"], text)
                assert all(not case_conditions & set(graph.predecessors(o)) for o in owners), (r["id"], text)


def test_every_case_and_item_kind_has_enough_distractors(graph):
    import random

    from medverse_lab.data.curate import enumerate_cases
    from medverse_lab.data.curate.items import distractors, qtypes_for

    for case in enumerate_cases(graph)[::3]:
        for qtype in qtypes_for(graph, case):
            for sex in ("female", "male"):
                if graph.nodes[case.diagnosis]["sex"] in ("any", sex):
                    assert len(distractors(graph, case, qtype, sex, 4, random.Random(0))) == 4
