"""medverse-lab: a workbench for MedVerse, DAG-structured parallel reasoning in LLMs.

>>> import medverse_lab as ml
>>> trace = ml.parse_trace(text)
>>> layout = ml.Layout.from_plan(trace.plan, prefix_len=8, step_lens={"1": 5, "2": 4, "3": 6})
>>> ml.attention_mask(layout, "dag"), ml.position_ids(layout, "dag")
"""

from importlib import import_module

# The ground floor loads at once (plain Python and networkx): parse traces, build plans,
# fire Petri nets, read records. Everything that needs torch, transformers, polars or the
# widget stack loads on first use, so `import medverse_lab` stays fast.
from .data import records
from .errors import LayoutError, PetriNetError, PlanError, Problem, PROBLEM_KINDS
from .format import StepBlock, Trace, make_trace, parse_trace
from .petri import PetriNet
from .plan import Plan, Step

_LAZY = {  # public name -> the module that defines it
    **dict.fromkeys(["Layout", "Segment"], ".layout"),
    **dict.fromkeys(["TAGS", "add_medverse_tokens", "tag_ids"], ".tokens"),
    **dict.fromkeys(["ENGINE_MODES", "MODES"], ".modes"),
    **dict.fromkeys(["attention_mask", "mask_diff", "position_ids", "segment_starts", "segment_visibility"],
                    ".topology"),
    "explain": ".explanation",
    **dict.fromkeys(["Engine", "Run"], ".engine"),
    "CurationError": ".data.curate",
    "check_dataset": ".data.check",
    "load_questions": ".data.questions",
    "evaluate": ".evaluation",
    "TopologyCollator": ".training.collator",
    **dict.fromkeys(["PlanEditor", "MaskInspector", "RunViewer", "Workbench", "DatasetBrowser"], ".widgets"),
}
#: public submodules -> where they live (``ml.train`` is the trainer, ``ml.curate`` the Curator)
_SUBMODULES = {"curate": ".data.curate", "workshop": ".workshop", "engine": ".engine", "widgets": ".widgets",
               "train": ".training.trainer", "serve": ".serve"}

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    """``%load_ext medverse_lab`` registers ``%medverse run ...`` and ``%%medverse_plan``."""
    from .widgets.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = import_module(_SUBMODULES[name], __name__)
    else:
        raise AttributeError(f"module 'medverse_lab' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Plan", "Step", "PetriNet", "Trace", "StepBlock", "parse_trace", "make_trace",
    "Layout", "Segment", "attention_mask", "position_ids", "mask_diff", "segment_starts",
    "segment_visibility", "explain", "MODES", "ENGINE_MODES", "TAGS", "add_medverse_tokens", "tag_ids",
    "PlanError", "Problem", "PROBLEM_KINDS", "PetriNetError", "LayoutError", "Engine", "Run",
    "curate", "records", "workshop", "check_dataset", "load_questions", "evaluate", "CurationError",
    "TopologyCollator", "PlanEditor", "MaskInspector", "RunViewer", "Workbench", "DatasetBrowser",
]
