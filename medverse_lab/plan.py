"""Plans: the reasoning steps a model declares before executing them.

A :class:`Plan` is an ordered list of :class:`Step` objects, each naming the steps it
depends on. A valid plan is a DAG in topological order; :meth:`Plan.validate` checks
that and reports every problem at once. A plan may be held while invalid (an editor
needs that); the engine and the topology functions validate before use.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Iterator

import networkx as nx

from .errors import PlanError, Problem, problem


def _norm_id(value) -> str:
    return str(value).strip()


@dataclass(frozen=True)
class Step:
    """One planned step: ``Step("3", "STEMI + necrosis -> PCI", deps=["1", "2"])``.

    ``offset`` is where the step was parsed from (a character offset into the plan's
    source text); it takes no part in equality.
    """

    id: str
    description: str
    deps: tuple[str, ...] = ()
    offset: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "id", _norm_id(self.id))
        object.__setattr__(self, "description", str(self.description))
        object.__setattr__(self, "deps", tuple(_norm_id(d) for d in self.deps))

    def outline(self) -> str:
        """The step's outline line, without tags: ``Transient Step 1: ...; Dependency: [...]``."""
        return f"Transient Step {self.id}: {self.description}; Dependency: [{', '.join(self.deps)}]"

    def header(self) -> str:
        """The header line its execution block starts with: ``Transient Step 1: ...``."""
        return f"Transient Step {self.id}: {self.description}"


# "Transient Step N: DESCRIPTION; Dependency: [a, b]". The description is greedy so that a
# ';' inside it is kept; the last "; Dependency" wins.
_OUTLINE_RE = re.compile(
    r"^\s*transient\s+step\s+(?P<id>\S+?)\s*:\s*(?P<desc>.*?)\s*;\s*dependenc(?:y|ies)\s*:\s*"
    r"\[(?P<deps>[^\]]*)\]\s*$",
    re.IGNORECASE | re.DOTALL,
)
_TAGGED_RE = re.compile(r"<Outline>(?P<body>.*?)(?:</Outline>|$)", re.DOTALL)


def parse_outline(text: str, base: int = 0, source: str | None = None) -> tuple[list[Step], list[Problem]]:
    """Steps and grammar problems of an outline, tagged (``<Outline>..</Outline>``) or plain.

    Offsets are ``base`` + the index in ``text``; ``source`` is the full text they index.
    """
    source = text if source is None else source
    steps: list[Step] = []
    problems: list[Problem] = []
    pos = 0
    for raw_line in text.splitlines(keepends=True):
        start = pos
        pos += len(raw_line)
        line = raw_line.strip()
        if not line:
            continue
        body, body_start = line, start + raw_line.index(line[0])
        if line.startswith("<Outline>"):
            body_start += len("<Outline>")
            body = line[len("<Outline>"):]
            if body.rstrip().endswith("</Outline>"):
                body = body.rstrip()[: -len("</Outline>")]
            else:
                problems.append(problem("unclosed-block", "<Outline> is never closed on its line",
                                        offset=base + start + raw_line.index("<"), source=source))
                continue
        lead = len(body) - len(body.lstrip())
        offset = base + body_start + lead
        m = _OUTLINE_RE.match(body)
        if not m:
            problems.append(problem(
                "bad-outline",
                f"outline line does not match 'Transient Step N: DESCRIPTION; Dependency: [..]': {body.strip()[:80]!r}",
                offset=offset, source=source))
            continue
        deps_text = m.group("deps").strip()
        deps = [d.strip() for d in deps_text.split(",")] if deps_text else []
        bad = [d for d in deps if not d.isdigit()]
        if bad:
            problems.append(problem("bad-outline", f"dependencies must be step numbers, got {bad}",
                                    step=m.group("id"), offset=offset, source=source))
            continue
        steps.append(Step(m.group("id"), m.group("desc"), deps, offset=offset))
    return steps, problems


def chunk_steps(ids: Iterable[str], deps: dict[str, Iterable[str]]) -> list[list[str]]:
    """``ids`` in order, cut where a step depends on a step of the current chunk."""
    chunks: list[list[str]] = []
    for sid in ids:
        if not chunks or set(deps.get(sid, ())) & set(chunks[-1]):
            chunks.append([])
        chunks[-1].append(sid)
    return chunks


class Plan:
    """An ordered list of steps with declared dependencies.

    >>> plan = Plan([Step("1", "a -> b"), Step("2", "c -> d"), Step("3", "b + d -> e", ["1", "2"])])
    >>> plan.petri_net().frontier()
    ['1', '2']
    """

    def __init__(self, steps: Iterable[Step] = (), source: str | None = None):
        self._steps: tuple[Step, ...] = tuple(steps)
        #: the text the plan was parsed from, for line/column in problems
        self.source = source

    # ----- construction -------------------------------------------------------------
    @classmethod
    def from_outline(cls, text: str) -> "Plan":
        """Parse outline lines, with or without ``<Outline>`` tags (``<Plan>`` tags allowed).

        Raises :class:`PlanError` when a line does not follow the grammar. The result is not
        validated as a DAG: call :meth:`validate`.
        """
        body, base = text, 0
        if "<Plan>" in text:
            base = text.index("<Plan>") + len("<Plan>")
            end = text.find("</Plan>", base)
            body = text[base: end if end >= 0 else len(text)]
        steps, problems = parse_outline(body, base, source=text)
        if problems:
            raise PlanError(problems)
        return cls(steps, source=text)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
            return cls(Step(s["id"], s["description"], s.get("deps", [])) for s in data["steps"])
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a plan JSON document ({exc!r}); expected "
                             '{"steps": [{"id": "1", "description": "...", "deps": []}, ...]}') from None

    @classmethod
    def from_networkx(cls, graph: nx.DiGraph) -> "Plan":
        """A plan from a DiGraph whose edges point from a dependency to its dependent.

        Node attribute ``description`` is the step text. Steps are numbered in graph order
        if the graph's order is topological, else in a stable topological order.
        """
        if not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            raise PlanError(problem("cycle", f"graph has a cycle: {' -> '.join(str(u) for u, _ in cycle)}"))
        order = {n: i for i, n in enumerate(graph.nodes)}
        nodes = list(nx.lexicographical_topological_sort(graph, key=order.__getitem__))
        return cls(Step(n, graph.nodes[n].get("description", str(n)),
                        sorted(graph.predecessors(n), key=order.__getitem__)) for n in nodes)

    # ----- access -------------------------------------------------------------------
    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps in plan order (a plan is immutable: edits make a new plan)."""
        return self._steps

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, step_id) -> Step:
        for step in self.steps:
            if step.id == _norm_id(step_id):
                return step
        raise KeyError(f"no step {step_id!r} in the plan; steps are {self.ids}")

    def __contains__(self, step_id) -> bool:
        return any(s.id == _norm_id(step_id) for s in self.steps)

    def __eq__(self, other) -> bool:
        return isinstance(other, Plan) and self.steps == other.steps

    def __hash__(self):
        return hash(self.steps)

    def __repr__(self) -> str:
        return f"Plan({list(self.steps)!r})"

    @property
    def ids(self) -> list[str]:
        """Step ids in plan order."""
        return [s.id for s in self.steps]

    # ----- validation ----------------------------------------------------------------
    def problems(self) -> list[Problem]:
        """Every problem of the plan as a DAG in topological order (empty when valid)."""
        src = self.source
        found: list[Problem] = []
        if not self.steps:
            return [problem("empty-plan", "the plan has no steps")]
        seen: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            if not s.id.isdigit() or int(s.id) < 1:
                found.append(problem("bad-step-id", f"step id {s.id!r} is not a positive integer",
                                     s.id, s.offset, src))
            if s.id in seen:
                found.append(problem("duplicate-step", f"step {s.id} is defined twice", s.id, s.offset, src))
            else:
                seen[s.id] = i
        numbered = [s for s in self.steps if s.id.isdigit()]
        for before, after in zip(numbered, numbered[1:]):
            if int(after.id) <= int(before.id) and after.id != before.id:
                found.append(problem("step-order", f"step {after.id} comes after step {before.id}; "
                                     "step numbers must increase along the plan", after.id, after.offset, src))
        graph = nx.DiGraph()
        for i, s in enumerate(self.steps):
            for d in s.deps:
                if d == s.id:
                    found.append(problem("self-dependency", f"step {s.id} depends on itself", s.id, s.offset, src))
                elif d not in seen:
                    found.append(problem("unknown-dependency", f"step {s.id} depends on unknown step {d}",
                                         s.id, s.offset, src))
                else:
                    graph.add_edge(d, s.id)
        in_cycle = set()
        # one problem per strongly connected component: listing every simple cycle is exponential
        for component in nx.strongly_connected_components(graph):
            if len(component) < 2:
                continue
            in_cycle.update(component)
            first = min(component, key=seen.__getitem__)
            c = [u for u, _ in nx.find_cycle(graph.subgraph(component), source=first)]
            step = self.steps[seen[first]]
            loop = " -> ".join(c[c.index(first):] + c[:c.index(first)] + [first])
            found.append(problem("cycle", f"dependencies form a cycle: {loop}", first, step.offset, src))
        for s in self.steps:
            for d in s.deps:
                if d in seen and d != s.id and seen[d] > seen[s.id] and not (d in in_cycle and s.id in in_cycle):
                    found.append(problem(
                        "forward-dependency",
                        f"step {s.id} depends on step {d}, which comes later in the plan",
                        s.id, s.offset, src))
        return found

    def validate(self) -> "Plan":
        """Raise :class:`PlanError` listing every problem; return the plan when valid."""
        found = self.problems()
        if found:
            raise PlanError(found)
        return self

    @property
    def is_valid(self) -> bool:
        return not self.problems()

    def renumbered(self) -> "Plan":
        """The same DAG renumbered 1..n in a topological order (ties keep plan order)."""
        found = [p for p in self.problems() if p.kind not in ("forward-dependency", "step-order", "bad-step-id")]
        if found:
            raise PlanError(found)
        graph = self.to_networkx()
        order = {s.id: i for i, s in enumerate(self.steps)}
        topo = list(nx.lexicographical_topological_sort(graph, key=order.__getitem__))
        new_id = {old: str(i + 1) for i, old in enumerate(topo)}
        return Plan(Step(new_id[o], self[o].description, sorted((new_id[d] for d in self[o].deps), key=int))
                    for o in topo)

    # ----- structure -----------------------------------------------------------------
    @cached_property
    def _index(self) -> dict[str, Step]:
        return {s.id: s for s in self.steps}

    def parents(self, step_id) -> list[str]:
        """The steps ``step_id`` depends on directly."""
        return list(self[step_id].deps)

    @cached_property
    def _graph(self) -> nx.DiGraph:
        return self.to_networkx()

    def ancestors(self, step_id) -> set[str]:
        """Every step ``step_id`` depends on, transitively (steps of this plan only: a
        dependency on a missing step is not one)."""
        sid = self[step_id].id
        return nx.ancestors(self._graph, sid) & self._index.keys()

    def descendants(self, step_id) -> set[str]:
        """Every step that depends on ``step_id``, transitively."""
        sid = _norm_id(step_id)
        if sid not in self._graph:
            return set()
        return nx.descendants(self._graph, sid) & self._index.keys()

    def children(self, step_id) -> list[str]:
        sid = _norm_id(step_id)
        return [s.id for s in self.steps if sid in s.deps]

    def roots(self) -> list[str]:
        """Steps with no dependency."""
        return [s.id for s in self.steps if not s.deps]

    def chunks(self) -> list[list[str]]:
        """Plan order cut into chunks, a new chunk starting when a step depends on a step
        of the current chunk (the public training rule; see ``layered`` mode)."""
        return chunk_steps(self.ids, {s.id: s.deps for s in self.steps})

    def levels(self) -> list[list[str]]:
        """Steps grouped by depth (longest path from a root): the waves of a Petri net
        where every enabled transition fires at once. Each level keeps plan order.

        Only dependencies on earlier steps count, so a draft with a forward dependency or
        a cycle still has levels (the checker reports those; the editor draws them)."""
        order = {sid: i for i, sid in enumerate(self.ids)}
        g = nx.DiGraph()
        g.add_nodes_from(self.ids)
        g.add_edges_from((d, s.id) for s in self.steps for d in s.deps if order.get(d, len(order)) < order[s.id])
        return [sorted(level, key=order.__getitem__) for level in nx.topological_generations(g)]

    @property
    def width(self) -> int:
        """The most steps that can run at once in a wave (0 for an empty plan)."""
        return max((len(level) for level in self.levels()), default=0)

    def critical_path(self, weights: dict[str, float]) -> tuple[list[str], float]:
        """The heaviest dependency chain with step weights ``weights`` (tokens, calls,
        seconds; a missing step weighs 0): what no parallel scheduler can shorten.
        Returns (step ids, total weight); ([], 0) for an empty plan."""
        if not self.steps:
            return [], 0
        g = self.to_networkx()
        start = object()  # a source before every step, so a lone heavy root can win too
        g.add_edges_from((start, s) for s in self.ids)
        for _, v, data in g.edges(data=True):
            data["weight"] = weights.get(v, 0)
        path = nx.dag_longest_path(g, weight="weight")[1:]
        return path, sum(weights.get(s, 0) for s in path)

    def dependency_path(self, src, dst) -> list[str] | None:
        """A shortest chain of dependencies ``src -> ... -> dst`` (both included), or None
        when ``dst`` does not depend on ``src``."""
        try:
            return nx.shortest_path(self.to_networkx(), _norm_id(src), _norm_id(dst))
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None

    def petri_net(self):
        """The plan as a Petri net (validates first)."""
        from .petri import PetriNet

        return PetriNet(self.validate())

    # ----- serialisation -------------------------------------------------------------
    def to_outline(self, tagged: bool = True) -> str:
        """The outline lines, one per step, joined by newlines."""
        lines = (s.outline() for s in self.steps)
        return "\n".join(f"<Outline> {line} </Outline>" if tagged else line for line in lines)

    def to_json(self) -> str:
        return json.dumps({"steps": [{"id": s.id, "description": s.description, "deps": list(s.deps)}
                                     for s in self.steps]}, ensure_ascii=False)

    def to_networkx(self) -> nx.DiGraph:
        """A DiGraph: a node per step (attribute ``description``), an edge dependency -> step."""
        g = nx.DiGraph()
        for s in self.steps:
            g.add_node(s.id, description=s.description)
        for s in self.steps:
            for d in s.deps:
                g.add_edge(d, s.id)
        return g

    def to_pyvis(self, height: str = "420px"):
        """A pyvis Network of the Petri net, with every script in-line (works offline)."""
        from .pyvis_offline import plan_network

        return plan_network(self, height=height)
