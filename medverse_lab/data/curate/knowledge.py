"""The shipped clinical knowledge graph: findings, conditions, diagnoses, treatments, tests.

Two CSV files in ``medverse_lab/assets/knowledge/`` (see the README there):

- ``facts.csv``: ``head, relation, tail, head_type, tail_type, source``, one fact per row;
  ``source`` names the guideline or textbook chapter the fact comes from.
- ``diagnoses.csv``: per diagnosis its specialty, the sex and age range of the patients a
  vignette describes, its *anchors* and the least number of conditions a case needs.
  Anchors are groups separated by ``|`` of conditions separated by ``;``: a case must show
  at least one condition of every group (``"a; b | c"``: a or b, and c).

Relations (head type -> tail type):

==============  ==========================================  ==============
relation        head                                        tail
==============  ==========================================  ==============
indicates       a finding (symptom, sign, vital, lab, ...)  condition
supports        condition                                   diagnosis
managed_with    diagnosis                                   treatment
confirmed_by    diagnosis                                   test
==============  ==========================================  ==============

Every finding indicates exactly one condition, so a vignette's findings determine the
conditions, and the conditions (through :func:`~medverse_lab.data.curate.cases.enumerate_cases`)
the diagnosis.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import networkx as nx
import polars as pl

from .errors import CurationError

#: the folder the knowledge CSVs ship in
KNOWLEDGE_DIR = Path(str(files("medverse_lab") / "assets" / "knowledge"))
FINDING_TYPES = ("symptom", "sign", "vital", "lab", "ecg", "imaging", "history")
#: relation -> (head category, tail category)
RELATIONS = {
    "indicates": ("finding", "condition"),
    "supports": ("condition", "diagnosis"),
    "managed_with": ("diagnosis", "treatment"),
    "confirmed_by": ("diagnosis", "test"),
}
FACT_COLUMNS = ("head", "relation", "tail", "head_type", "tail_type", "source")
DIAGNOSIS_COLUMNS = ("diagnosis", "specialty", "sex", "age_min", "age_max", "age_unit", "anchors", "min_conditions")
#: strings an entity name may not contain: they carry meaning in paths and plan steps
_RESERVED = ("->", " + ", "\n", "|")


def category(node_type: str) -> str:
    """``"finding"`` for the finding types, else the type itself."""
    return "finding" if node_type in FINDING_TYPES else node_type


def _read(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    if not path.is_file():
        raise CurationError(f"knowledge file not found: {path}")
    try:
        df = pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # polars raises several error types for malformed CSV
        raise CurationError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CurationError(f"{path.name}: missing column(s) {missing}; expected {list(columns)}")
    df = df.select(columns).with_columns(pl.all().str.strip_chars())
    for row, rec in enumerate(df.iter_rows(named=True), start=2):
        empty = [c for c in columns if not rec[c] and c != "anchors"]
        if empty:
            raise CurationError(f"{path.name} line {row}: empty {', '.join(empty)}")
    return df


def knowledge_table(path: str | Path | None = None) -> pl.DataFrame:
    """The facts as a polars DataFrame (``head, relation, tail, head_type, tail_type, source``).

    ``path`` is a folder holding ``facts.csv`` (default: the shipped one) or a facts CSV.
    """
    path = Path(path) if path is not None else KNOWLEDGE_DIR
    return _read(path / "facts.csv" if path.is_dir() else path, FACT_COLUMNS)


def load_knowledge(path: str | Path | None = None) -> nx.MultiDiGraph:
    """The knowledge graph as a ``networkx.MultiDiGraph``.

    Nodes are entity names with attributes ``type`` (e.g. ``"lab"``, ``"condition"``) and
    ``category`` (``finding``, ``condition``, ``diagnosis``, ``treatment``, ``test``);
    diagnosis nodes also carry ``specialty``, ``sex``, ``age`` (``(min, max, unit)``),
    ``anchors`` and ``min_conditions``. Edges are keyed by relation and carry ``relation``
    and ``source``.

    ``path`` is a folder with ``facts.csv`` and ``diagnoses.csv`` (default: the shipped
    knowledge). Raises :class:`CurationError` naming the file and line of a bad row.
    """
    folder = Path(path) if path is not None else KNOWLEDGE_DIR
    facts = knowledge_table(folder)
    g = nx.MultiDiGraph()
    for line, r in enumerate(facts.iter_rows(named=True), start=2):
        where = f"facts.csv line {line}"
        if r["relation"] not in RELATIONS:
            raise CurationError(f"{where}: unknown relation {r['relation']!r}; known: {sorted(RELATIONS)}")
        want = RELATIONS[r["relation"]]
        got = (category(r["head_type"]), category(r["tail_type"]))
        if got != want:
            raise CurationError(f"{where}: {r['relation']!r} links a {want[0]} to a {want[1]}, "
                                f"got {r['head_type']} -> {r['tail_type']}")
        for name, kind in ((r["head"], r["head_type"]), (r["tail"], r["tail_type"])):
            bad = [s for s in _RESERVED if s in name]
            if bad:
                raise CurationError(f"{where}: entity {name!r} contains reserved text {bad[0]!r}")
            if name in g and g.nodes[name]["type"] != kind:
                raise CurationError(f"{where}: {name!r} is a {kind} here but a {g.nodes[name]['type']} earlier")
            g.add_node(name, type=kind, category=category(kind))
        if g.has_edge(r["head"], r["tail"], key=r["relation"]):
            raise CurationError(f"{where}: duplicate fact {r['head']!r} {r['relation']} {r['tail']!r}")
        g.add_edge(r["head"], r["tail"], key=r["relation"], relation=r["relation"], source=r["source"])
    for n, d in g.nodes(data=True):
        if d["category"] == "finding":
            conds = [v for _, v in g.out_edges(n)]
            if len(conds) != 1:
                raise CurationError(f"finding {n!r} indicates {len(conds)} conditions {conds}; "
                                    "each finding must indicate exactly one")
    _add_diagnoses(g, folder / "diagnoses.csv")
    return g


def _add_diagnoses(g: nx.MultiDiGraph, path: Path) -> None:
    table = _read(path, DIAGNOSIS_COLUMNS)
    seen = set()
    for line, r in enumerate(table.iter_rows(named=True), start=2):
        where = f"diagnoses.csv line {line}"
        name = r["diagnosis"]
        if g.nodes.get(name, {}).get("category") != "diagnosis":
            raise CurationError(f"{where}: {name!r} is not a diagnosis in facts.csv")
        if r["sex"] not in ("any", "female", "male"):
            raise CurationError(f"{where}: sex must be any, female or male, got {r['sex']!r}")
        if r["age_unit"] not in ("years", "months", "weeks"):
            raise CurationError(f"{where}: age_unit must be years, months or weeks, got {r['age_unit']!r}")
        try:
            lo, hi, k = int(r["age_min"]), int(r["age_max"]), int(r["min_conditions"])
        except ValueError:
            raise CurationError(f"{where}: age_min, age_max and min_conditions must be integers") from None
        if not 0 < lo <= hi or k < 1:
            raise CurationError(f"{where}: need 0 < age_min <= age_max and min_conditions >= 1")
        conditions = set(g.predecessors(name))
        anchors = tuple(tuple(a.strip() for a in group.split(";") if a.strip())
                        for group in (r["anchors"] or "").split("|") if group.strip())
        stray = [a for group in anchors for a in group if a not in conditions]
        if stray:
            raise CurationError(f"{where}: anchors {stray} are not conditions supporting {name!r}")
        g.nodes[name].update(specialty=r["specialty"], sex=r["sex"], age=(lo, hi, r["age_unit"]),
                             anchors=anchors, min_conditions=k)
        seen.add(name)
    missing = [n for n, d in g.nodes(data=True) if d["category"] == "diagnosis" and n not in seen]
    if missing:
        raise CurationError(f"diagnoses.csv has no row for {missing}")


def nodes_of(g: nx.MultiDiGraph, cat: str) -> list[str]:
    """Names of the nodes of one category, in file order."""
    return [n for n, d in g.nodes(data=True) if d["category"] == cat]


def targets(g: nx.MultiDiGraph, node: str, relation: str) -> list[str]:
    """Tails of ``relation`` edges from ``node``, in file order."""
    return [v for _, v, k in g.out_edges(node, keys=True) if k == relation]


def sources(g: nx.MultiDiGraph, node: str, relation: str) -> list[str]:
    """Heads of ``relation`` edges into ``node``, in file order."""
    return [u for u, _, k in g.in_edges(node, keys=True) if k == relation]
