"""medverse-lab: a workbench for MedVerse, DAG-structured parallel reasoning in LLMs.

>>> import medverse_lab as ml
>>> trace = ml.parse_trace(text)
>>> layout = ml.Layout.from_plan(trace.plan, prefix_len=8, step_lens={"1": 5, "2": 4, "3": 6})
>>> ml.attention_mask(layout, "dag"), ml.position_ids(layout, "dag")
"""

from .errors import LayoutError, PetriNetError, PlanError, Problem, PROBLEM_KINDS
from .format import StepBlock, Trace, make_trace, parse_trace
from .layout import Layout, Segment
from .petri import PetriNet
from .plan import Plan, Step
from .tokens import TAGS, add_medverse_tokens, tag_ids
from .engine import Engine, Run
from .explain import explain
from .topology import ENGINE_MODES, MODES, attention_mask, mask_diff, position_ids, segment_starts, segment_visibility
from . import curate
from .curate import CurationError
from .check import check_dataset
from .questions import load_questions
from .evaluate import evaluate
from . import records, workshop

__version__ = "0.1.0"

_WIDGETS = ("PlanEditor", "MaskInspector", "RunViewer", "Workbench", "DatasetBrowser")


def load_ipython_extension(ipython):
    """``%load_ext medverse_lab`` registers ``%medverse run ...`` and ``%%medverse_plan``."""
    from .widgets.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name):
    # widgets load anywidget and ipywidgets: import them on first use only
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'medverse_lab' has no attribute {name!r}")

__all__ = [
    "Plan", "Step", "PetriNet", "Trace", "StepBlock", "parse_trace", "make_trace",
    "Layout", "Segment", "attention_mask", "position_ids", "mask_diff", "segment_starts",
    "segment_visibility", "explain", "MODES", "ENGINE_MODES", "TAGS", "add_medverse_tokens", "tag_ids",
    "PlanError", "Problem", "PROBLEM_KINDS", "PetriNetError", "LayoutError", "Engine", "Run",
    "curate", "records", "workshop", "check_dataset", "load_questions", "evaluate", "CurationError", "PlanEditor", "MaskInspector",
    "RunViewer", "Workbench", "DatasetBrowser",
]
