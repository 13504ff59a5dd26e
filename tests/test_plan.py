"""Plans as DAGs and Petri nets; networkx, JSON and pyvis round trips."""

from __future__ import annotations

from html.parser import HTMLParser

import networkx as nx
import pytest
from hypothesis import given, settings

import medverse_lab as ml

from strategies import plans

DIAMOND = ml.Plan([ml.Step(1, "a"), ml.Step(2, "b"), ml.Step(3, "c", [1]), ml.Step(4, "d", [2, 3])])


def test_petri_net_fires_along_the_frontier():
    net = DIAMOND.petri_net()
    assert net.places == ["source", "done:1", "done:2", "done:3", "done:4"]
    assert net.marking == {"source": 1, "done:1": 0, "done:2": 0, "done:3": 0, "done:4": 0}
    assert net.frontier() == ["1", "2"]
    net.fire("1")
    assert net.frontier() == ["2", "3"]  # 3 starts while 2 still runs
    net.fire("3")
    assert net.frontier() == ["2"]
    net.fire("2")
    assert net.frontier() == ["4"] and not net.is_complete()
    net.fire("4")
    assert net.is_complete() and net.frontier() == [] and net.fired == ["1", "3", "2", "4"]


def test_firing_a_disabled_transition_names_the_missing_places():
    net = DIAMOND.petri_net()
    net.fire("2")
    with pytest.raises(ml.PetriNetError, match=r"cannot fire step 4: input place done:3 holds no token"):
        net.fire("4")
    with pytest.raises(ml.PetriNetError, match=r"input places done:2, done:3 hold no token"):
        DIAMOND.petri_net().fire("4")
    with pytest.raises(ml.PetriNetError, match="already fired"):
        net.fire("2")
    with pytest.raises(ml.PetriNetError, match="no step '9'"):
        net.fire("9")


def test_petri_net_requires_a_valid_plan():
    with pytest.raises(ml.PlanError):
        ml.Plan([ml.Step(1, "a", [2]), ml.Step(2, "b", [1])]).petri_net()


@settings(max_examples=100, deadline=None)
@given(plans())
def test_waves_are_levels_and_every_step_fires_after_its_parents(plan):
    net = plan.petri_net()
    waves = net.waves()
    assert waves == plan.levels() and net.is_complete()
    done_at = {sid: i for i, wave in enumerate(waves) for sid in wave}
    for s in plan.steps:
        assert all(done_at[d] < done_at[s.id] for d in s.deps)


@settings(max_examples=100, deadline=None)
@given(plans())
def test_networkx_and_json_round_trips(plan):
    assert ml.Plan.from_networkx(plan.to_networkx()) == plan
    assert ml.Plan.from_json(plan.to_json()) == plan
    assert ml.Plan.from_outline(plan.to_outline()) == plan
    assert ml.Plan.from_outline(plan.to_outline(tagged=False)) == plan


@settings(max_examples=100, deadline=None)
@given(plans(min_steps=2))
def test_renumbered_restores_topological_order(plan):
    # list the steps backwards: the same DAG, now out of order
    shuffled = ml.Plan(reversed(plan.steps))
    kinds = {p.kind for p in shuffled.problems()}
    assert "step-order" in kinds
    assert ("forward-dependency" in kinds) == any(s.deps for s in plan.steps)
    fixed = shuffled.renumbered().validate()
    assert nx.is_isomorphic(fixed.to_networkx(), plan.to_networkx())


def test_step_numbers_must_increase():
    plan = ml.Plan([ml.Step(2, "a"), ml.Step(1, "b", [2])])
    with pytest.raises(ml.PlanError, match=r"step 1 comes after step 2.*\n.*renumbered\(\)"):
        plan.validate()
    assert plan.renumbered() == ml.Plan([ml.Step(1, "a"), ml.Step(2, "b", [1])])


def test_structure_queries():
    assert DIAMOND.ancestors("4") == {"1", "2", "3"}
    assert DIAMOND.descendants("1") == {"3", "4"}
    assert DIAMOND.roots() == ["1", "2"] and DIAMOND.children("3") == ["4"]
    assert DIAMOND.chunks() == [["1", "2"], ["3"], ["4"]]
    assert DIAMOND.levels() == [["1", "2"], ["3"], ["4"]] and DIAMOND.width == 2
    with pytest.raises(KeyError, match="no step '7'"):
        DIAMOND["7"]


def test_from_networkx_rejects_cycles_and_orders_topologically():
    g = nx.DiGraph([("b", "a")])
    g.nodes["a"]["description"] = "x"
    plan = ml.Plan.from_networkx(g)
    assert plan.ids == ["b", "a"] and plan["a"].deps == ("b",)
    with pytest.raises(ml.PlanError, match="cycle"):
        ml.Plan.from_networkx(nx.DiGraph([(1, 2), (2, 1)]))


def test_from_json_explains_bad_input():
    with pytest.raises(ValueError, match="not a plan JSON document"):
        ml.Plan.from_json('{"nodes": []}')


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []
        self.inline_scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append((tag, attrs[key]))
        if tag == "script" and not attrs.get("src"):
            self.inline_scripts += 1


def test_pyvis_html_is_self_contained_and_escapes_text():
    plan = ml.Plan([ml.Step(1, "<img src=x onerror=alert(1)>"), ml.Step(2, "b", [1])])
    page = plan.to_pyvis().generate_html()
    refs = _References()
    refs.feed(page)
    assert refs.refs == []  # no <script src>, no <link href>: nothing loads over the network
    assert refs.inline_scripts >= 2 and "vis.Network" in page and "new vis.DataSet" in page
    assert "<img" not in page and "\\u0026lt;img src=x" in page
    assert "srcdoc=" in plan.to_pyvis()._repr_html_()


def test_a_densely_cyclic_plan_is_one_problem_found_fast():
    # every step depends on every other: exponentially many simple cycles, one component
    n = 14
    plan = ml.Plan(ml.Step(i, f"s{i}", [j for j in range(1, n + 1) if j != i]) for i in range(1, n + 1))
    cycles = [p for p in plan.problems() if p.kind == "cycle"]
    assert len(cycles) == 1 and cycles[0].step == "1"


def test_critical_path_is_the_heaviest_dependency_chain():
    plan = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b"), ml.Step("3", "c", ["1", "2"]), ml.Step("4", "d", ["1"])])
    assert plan.critical_path({"1": 5, "2": 9, "3": 4, "4": 20}) == (["1", "4"], 25)
    assert plan.critical_path({"1": 5, "2": 9, "3": 4, "4": 1}) == (["2", "3"], 13)
    assert ml.Plan([]).critical_path({}) == ([], 0)
    assert plan.critical_path({"2": 3}) == (["2"], 3)  # a lone root can be the whole path


def test_dependency_path_follows_edges_forward_only():
    plan = ml.Plan([ml.Step("1", "a"), ml.Step("2", "b", ["1"]), ml.Step("3", "c", ["2"]), ml.Step("4", "d")])
    assert plan.dependency_path(1, 3) == ["1", "2", "3"]
    assert plan.dependency_path("3", "1") is None and plan.dependency_path("4", "3") is None
