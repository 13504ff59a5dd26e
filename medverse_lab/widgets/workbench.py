"""Workbench: a question, the run and its plan and mask, linked.

A :class:`RunViewer` (question, mode, sampling, lanes, reruns, history), a
:class:`PlanEditor` showing the plan of the run on display (edit it and tick "run my
plan" to force it on the next run) and a :class:`MaskInspector` of that run. Selecting a
step in any of the three selects it in the others.
"""

from __future__ import annotations

import ipywidgets as w
import traitlets as t

from ..plan import Plan, Step
from ._shared import SavedPicture
from .mask_inspector import MaskInspector
from .plan_editor import PlanEditor
from .run_viewer import RunViewer


def question_text(q) -> str:
    """The text the engine is asked: the question and its lettered options."""
    options = "\n".join(f"{k}. {v}" for k, v in q.options.items())
    return f"{q.question.strip()}\n{options}" if options else q.question.strip()


class Workbench(SavedPicture, w.VBox):
    """``ml.Workbench(engine, questions="questions.jsonl")``: everything on one page.

    Attributes: ``viewer`` (RunViewer), ``editor`` (PlanEditor), ``inspector``
    (MaskInspector, once a run exists), ``questions`` (loaded questions).
    """

    def __init__(self, engine, questions=None, plan: Plan | None = None, **kwargs):
        from ..data.questions import load_questions

        self.engine = engine
        self.questions = load_questions(questions) if questions is not None else []
        self.viewer = RunViewer(engine)
        self.editor = PlanEditor(plan if plan is not None else Plan([Step("1", "first step")]))
        self.inspector: MaskInspector | None = None
        self.picker = w.Dropdown(options=[("(type a question)", -1)] + [
            (f"{q.id}: {q.question.strip()[:70]}", i) for i, q in enumerate(self.questions)],
            value=-1, description="Question", layout=w.Layout(width="100%"))
        self.picker.observe(self._on_pick, names="value")
        # the label sizes to its text ("auto"), so ipywidgets does not cut it at its default width
        self.use_plan = w.Checkbox(value=plan is not None, description="run my plan (below) instead of the model's",
                                   indent=False, description_allow_html=False, layout=w.Layout(width="auto"),
                                   style={"description_width": "initial"})
        self.use_plan.observe(self._sync_plan, names="value")
        self.editor.observe(self._sync_plan, names="valid_plan")
        self._mask_box = w.VBox([w.HTML("<i>The mask appears after the first run.</i>")])
        t.link((self.viewer, "selected"), (self.editor, "selected"))
        self.viewer.observe(self._on_run, names="current")
        self._sync_plan()
        tabs = w.Tab(children=[self.editor, self._mask_box])
        tabs.set_title(0, "Plan")
        tabs.set_title(1, "Mask")
        children = ([self.picker] if self.questions else []) + [self.viewer, self.use_plan, tabs]
        super().__init__(children=children, **kwargs)
        # one border around the whole; widgets.css drops the borders of the views inside
        self.add_class("mv-workbench")
        if self.viewer.run is not None:
            self._on_run()

    def picture(self) -> str:
        from .picture import mask_picture, plan_picture, run_picture

        v, e, m = self.viewer, self.editor, self.inspector
        parts = [run_picture(v.question, v.lanes, v.summary, v.notice), "<h4>Plan</h4>",
                 plan_picture(e.graph, e.errors, e.notice, e.warning, e.selected)]
        if m is not None:
            parts += ["<h4>Mask</h4>", mask_picture(m.T, m.mask, m.segments, m.mode, m.notice)]
        return "".join(parts)

    def _picture_sources(self) -> list:
        return [self.viewer, self.editor]

    def _on_pick(self, change) -> None:
        if change["new"] is not None and change["new"] >= 0:
            self.viewer.question = question_text(self.questions[change["new"]])

    def _sync_plan(self, _change=None) -> None:
        self.viewer.forced_plan = self.editor.plan if self.use_plan.value else None

    def _on_run(self, _change=None) -> None:
        run = self.viewer.run
        if run is None:
            return
        if not self.use_plan.value and run.plan != self.editor.plan:
            self.editor.plan = run.plan
        error = run.plan_error
        self.editor.warning = "" if error is None or self.use_plan.value else (
            f"The model's plan did not validate, so the run decoded {error.fallback} (not {error.requested_mode}) "
            f"with this salvaged plan. The problems:\n" + "\n".join(f"- {p}" for p in error.error.problems))
        if self.inspector is None:
            self.inspector = MaskInspector(run)
            t.link((self.viewer, "selected"), (self.inspector, "selected"))
            self._mask_box.children = [self.inspector]
        else:
            self.inspector.show(run, mode=run.mode)
