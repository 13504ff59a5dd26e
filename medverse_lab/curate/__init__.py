"""The Curator: a clinical knowledge graph, knowledge paths to plans, and synthetic
MedVerse training data.

>>> import medverse_lab as ml
>>> g = ml.curate.load_knowledge()                       # networkx MultiDiGraph
>>> plan = ml.curate.plan_from_paths(["1: A->B->D", "2: C->E->D"])
>>> records = ml.curate.synthesize(100, seed=0, split="train")
>>> ml.curate.write_jsonl(records, "train.jsonl")
"""

from .errors import CurationError
from .paths import parse_path, paths_graph, plan_from_paths

__all__ = ["CurationError", "parse_path", "paths_graph", "plan_from_paths"]
