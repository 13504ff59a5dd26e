"""The Curator: a clinical knowledge graph, knowledge paths to plans, and synthetic
MedVerse training data.

>>> import medverse_lab as ml
>>> g = ml.curate.load_knowledge()                       # networkx MultiDiGraph
>>> plan = ml.curate.plan_from_paths(["1: A->B->D", "2: C->E->D"])
>>> records = ml.curate.synthesize(100, seed=0, split="train")
>>> ml.curate.write_jsonl(records, "train.jsonl")

Modules: ``knowledge`` (the graph), ``paths`` (paths to plans), ``cases`` (sound cases and
the train/test split), ``vignette`` and ``items`` (multiple-choice items), ``writer`` (the
writer protocol, the template writer and the engine writer), ``synthesize`` (records),
``io`` (JSONL), ``plant`` (known problems planted for practice).
"""

from ..records import read_records, replace_assistant, write_jsonl
from .cases import Case, enumerate_cases, split_cases
from .errors import CurationError
from .knowledge import KNOWLEDGE_DIR, knowledge_table, load_knowledge
from .paths import parse_path, paths_graph, plan_from_paths
from .plant import PLANTABLE, plant_problems
from .synthesize import build_record, make_questions, synthesize
from .writer import EngineWriter, TemplateWriter, Writer

__all__ = [
    "CurationError", "load_knowledge", "knowledge_table", "KNOWLEDGE_DIR", "plan_from_paths", "parse_path",
    "paths_graph", "Case", "enumerate_cases", "split_cases", "make_questions", "synthesize", "build_record",
    "TemplateWriter", "EngineWriter", "Writer", "write_jsonl", "read_records", "plant_problems", "PLANTABLE",
    "replace_assistant",
]
