"""From MedReason-style knowledge paths to a :class:`~medverse_lab.Plan`.

A knowledge path is a line of entities joined by arrows, optionally numbered::

    1: Chest pain->ST elevation->Myocardial infarction

The paths of a question together form a graph of entities. Every entity that has a
predecessor on some path becomes one step, ``"P1 + P2 -> E"``, that depends on the steps
of those predecessors that are themselves steps. Entities that start every path they are
on (the findings) are given, not derived, so they are no steps.
"""

from __future__ import annotations

import re
from typing import Iterable

import networkx as nx

from ...plan import Plan, Step
from .errors import CurationError

_NUMBER_RE = re.compile(r"^\s*\d+\s*:")


def _key(entity: str) -> str:
    """The matching key of an entity: whitespace collapsed, case folded."""
    return " ".join(entity.split()).casefold()


def parse_path(line: str, where: str = "path") -> list[str]:
    """The entities of one path line (leading ``"N:"`` optional), stripped.

    Raises :class:`CurationError` naming ``where`` when the line has no arrow or an
    entity is empty.
    """
    body = _NUMBER_RE.sub("", line, count=1)
    if "->" not in body:
        raise CurationError(f"{where} has no arrow ('->'): {line.strip()!r}")
    entities = [" ".join(e.split()) for e in body.split("->")]
    if any(not e for e in entities):
        raise CurationError(f"{where} has an empty entity: {line.strip()!r}")
    return entities


def paths_graph(lines: Iterable[str] | str) -> nx.DiGraph:
    """The entity graph of path lines: a node per normalised entity (attributes ``name``,
    its first-seen spelling, and ``order``, its first-seen rank), an edge per arrow
    (attribute ``line``, the 1-based line that first drew it). Blank lines are skipped.

    Raises :class:`CurationError` naming the line of a malformed path, or the lines whose
    arrows close a cycle.
    """
    if isinstance(lines, str):
        lines = lines.splitlines()
    g = nx.DiGraph()
    texts: dict[int, str] = {}
    for n, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise CurationError(f"line {n} is a {type(line).__name__}, not a path string")
        if not line.strip():
            continue
        texts[n] = line.strip()
        keys = []
        for name in parse_path(line, where=f"line {n}"):
            key = _key(name)
            if key not in g:
                g.add_node(key, name=name, order=len(g))
            keys.append(key)
        for a, b in zip(keys, keys[1:]):
            if a == b:
                raise CurationError(f"line {n} has an entity leading to itself ({g.nodes[a]['name']!r}): {texts[n]!r}")
            if not g.has_edge(a, b):
                g.add_edge(a, b, line=n)
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        loop = " -> ".join([g.nodes[u]["name"] for u, _ in cycle] + [g.nodes[cycle[0][0]]["name"]])
        where = sorted({g.edges[u, v]["line"] for u, v in cycle})
        lines_txt = "; ".join(f"line {n}: {texts[n]!r}" for n in where)
        raise CurationError(f"the paths form a cycle {loop} ({lines_txt})")
    return g


def plan_from_paths(lines: Iterable[str] | str) -> Plan:
    """A :class:`Plan` from knowledge path lines (a list, or one string of lines).

    One step per entity with a predecessor, described ``"P1 + P2 -> E"`` with its
    predecessors in first-seen order, depending on the steps of those predecessors that
    are steps. Steps are numbered 1..n in a topological order, ties broken by first
    appearance. Entities match after whitespace and case normalisation and are shown in
    their first-seen spelling.

    >>> plan_from_paths(["1: Chest pain->ST elevation->Myocardial infarction",
    ...                  "2: Inferior leads->RCA territory->Inferior STEMI"]).width
    2

    Raises :class:`CurationError` naming the line for a line without an arrow, an empty
    entity, or paths that together form a cycle.
    """
    g = paths_graph(lines)
    if not g.number_of_nodes():
        raise CurationError("no paths given: expected lines like '1: Finding->Condition->Diagnosis'")
    order = nx.get_node_attributes(g, "order")
    steps = [n for n in g if g.in_degree(n)]
    sub = g.subgraph(steps)
    numbered = list(nx.lexicographical_topological_sort(sub, key=order.__getitem__))
    number = {n: str(i) for i, n in enumerate(numbered, start=1)}
    out = []
    for n in numbered:
        preds = sorted(g.predecessors(n), key=order.__getitem__)
        desc = " + ".join(g.nodes[p]["name"] for p in preds) + " -> " + g.nodes[n]["name"]
        deps = sorted((number[p] for p in preds if p in number), key=int)
        out.append(Step(number[n], desc, deps))
    return Plan(out).validate()
