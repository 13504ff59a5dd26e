"""Cases: a diagnosis with the findings a vignette shows, and their train/test split.

A case picks 1-4 of a diagnosis' conditions and, for each, one or two of its findings.
It is *sound* when the conditions single out the diagnosis in the whole graph (no other
diagnosis is supported by all of them), it shows a condition of each of the diagnosis'
anchor groups, and it has at least the diagnosis' ``min_conditions``. Only sound cases become questions,
so the key is derivable from the vignette through the graph.

The split hashes the case (diagnosis and findings), so every wording of one case lands in
the same split and train and test never share a case.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import reduce
from itertools import combinations, product

import networkx as nx

from .knowledge import nodes_of, sources, targets

MAX_CONDITIONS = 4
MAX_FINDINGS = 5
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Case:
    """A diagnosis and the findings shown, grouped by the condition each indicates."""

    diagnosis: str
    conditions: tuple[str, ...]
    findings: tuple[tuple[str, ...], ...]  # one tuple per condition, same order

    @property
    def key(self) -> str:
        """A stable identity: the diagnosis and the sorted findings."""
        return self.diagnosis + "|" + "|".join(sorted(f for fs in self.findings for f in fs))

    @property
    def all_findings(self) -> list[str]:
        return [f for fs in self.findings for f in fs]

    def hash_fraction(self) -> float:
        """A number in [0, 1) fixed by :attr:`key` (sha256), for deterministic splits."""
        digest = hashlib.sha256(self.key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64

    def paths(self, final: str | None = None) -> list[str]:
        """MedReason-style knowledge paths ``"1: finding->condition->diagnosis[->final]"``."""
        tail = [self.diagnosis] + ([final] if final else [])
        chains = [[f, c, *tail] for c, fs in zip(self.conditions, self.findings) for f in fs]
        return [f"{i}: " + "->".join(chain) for i, chain in enumerate(chains, start=1)]


def supported(g: nx.MultiDiGraph, condition: str) -> set[str]:
    """The diagnoses a condition supports."""
    return set(targets(g, condition, "supports"))


def is_sound(g: nx.MultiDiGraph, diagnosis: str, conditions) -> bool:
    """Whether ``conditions`` single out ``diagnosis`` under its anchors and minimum size."""
    node = g.nodes[diagnosis]
    conditions = set(conditions)
    if len(conditions) < node["min_conditions"]:
        return False
    if any(not conditions & set(group) for group in node["anchors"]):
        return False
    return reduce(set.__and__, (supported(g, c) for c in conditions)) == {diagnosis}


def enumerate_cases(g: nx.MultiDiGraph, max_conditions: int = MAX_CONDITIONS,
                    max_findings: int = MAX_FINDINGS) -> list[Case]:
    """Every sound case of the graph, in a stable order."""
    out = []
    for d in nodes_of(g, "diagnosis"):
        conditions = sources(g, d, "supports")
        for k in range(1, min(max_conditions, len(conditions)) + 1):
            for chosen in combinations(conditions, k):
                if not is_sound(g, d, chosen):
                    continue
                options = []
                for c in chosen:
                    fs = sources(g, c, "indicates")
                    options.append([x for r in (1, 2) for x in combinations(fs, r)])
                for pick in product(*options):
                    if sum(map(len, pick)) <= max_findings:
                        out.append(Case(d, chosen, pick))
    return out


def split_cases(cases: list[Case], test_fraction: float = 0.15) -> dict[str, list[Case]]:
    """``{"train": [...], "test": [...]}``: a case is test when its hash fraction is below
    ``test_fraction``, except that every diagnosis keeps at least half of its cases (at
    least one) for training, so all of its facts are seen in training."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    by_dx: dict[str, list[Case]] = {}
    for c in cases:
        by_dx.setdefault(c.diagnosis, []).append(c)
    split = {"train": [], "test": []}
    for group in by_dx.values():
        ranked = sorted(group, key=Case.hash_fraction)
        n_test = min(sum(c.hash_fraction() < test_fraction for c in ranked), len(ranked) // 2)
        test = set(ranked[:n_test])
        for c in group:
            split["test" if c in test else "train"].append(c)
    return split
