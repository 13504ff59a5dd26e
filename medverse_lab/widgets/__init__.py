"""Jupyter widgets (anywidget): Python owns the state, small ES modules draw it.

The front end is built from ``widgets/`` in the repository into ``medverse_lab/static/``.
"""

from ..explanation import explain
from .dataset_browser import DatasetBrowser, RecordTable
from .mask_inspector import MaskInspector
from .plan_editor import PlanEditor, petri_layout
from .run_viewer import RunViewer, run_summary, word_diff
from .workbench import Workbench

__all__ = ["DatasetBrowser", "RecordTable", "PlanEditor", "petri_layout", "MaskInspector", "explain", "RunViewer",
           "run_summary", "word_diff", "Workbench"]
