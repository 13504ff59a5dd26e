"""Writers: who writes the text of each step and of the conclusion.

The Curator derives the plan from the knowledge paths; a *writer* fills in the words. Any
object with these two methods is a writer (a ``typing.Protocol``)::

    class MyWriter:
        def step(self, question, plan, step, parent_texts) -> str:
            '''Body of one step. ``question`` is a medverse_lab.data.questions.Question (its
            ``meta`` holds the item kind, diagnosis and paths), ``plan`` the whole Plan,
            ``step`` the Step to write, ``parent_texts`` {step id: body} of the steps it
            depends on (what a MedVerse model sees when it decodes this step).'''

        def conclusion(self, question, plan, step_texts, options, answer) -> str:
            '''The conclusion, seeing every step body (``step_texts``, {id: body}). It must
            end with "Answer: X" for the option letter it chooses; ``answer`` is the key.'''

Steps are written in plan order, so ``parent_texts`` is always complete. Return plain
text; the Curator adds the newlines of the MedVerse format. :class:`TemplateWriter` is the
default: deterministic templates with seeded variety. :class:`EngineWriter` makes any
:class:`~medverse_lab.Engine` a writer: one run per question with the Curator's plan
forced, its step bodies and conclusion as the model wrote them.
"""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

import networkx as nx

from ...modes import Mode
from ...plan import Plan, Step
from ..questions import Question, format_question
from .knowledge import load_knowledge
from .vignette import join


@runtime_checkable
class Writer(Protocol):
    """The writer protocol (see the module docstring)."""

    def step(self, question: Question, plan: Plan, step: Step, parent_texts: dict[str, str]) -> str: ...

    def conclusion(self, question: Question, plan: Plan, step_texts: dict[str, str],
                   options: dict[str, str], answer: str) -> str: ...


def split_description(description: str) -> tuple[list[str], str]:
    """``"A + B -> C"`` -> ``(["A", "B"], "C")``; no arrow gives ``([], description)``."""
    left, arrow, right = description.rpartition(" -> ")
    if not arrow:
        return [], description.strip()
    return [p.strip() for p in left.split(" + ")], right.strip()


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


_STEP = {
    "condition": ["{x} indicates {y}.", "This suggests {y}.", "This points to {y}.", "A sign of {y}."],
    "condition+": ["Together these indicate {y}.", "Both point to {y}.", "These suggest {y}."],
    "diagnosis": ["This indicates {y}.", "This points to {y}."],
    "diagnosis+": ["Only {y} explains all of these.", "Together these indicate {y}.", "These converge on {y}."],
    "treatment": ["{x} is managed with {y}.", "Management: {y}.", "Treat with {y}."],
    "test": ["{x} is confirmed by {y}.", "Confirm with {y}."],
    "other": ["This leads to {y}."],
}
_CONCLUSION = {
    "diagnosis": ["The findings point to {y}, option {l}.", "The most likely diagnosis is {y}, option {l}."],
    "treatment": ["{x} is managed with {y}, option {l}.", "The best management of {x} is {y}, option {l}."],
    "test": ["{x} is confirmed by {y}, option {l}.", "The test that confirms {x} is {y}, option {l}."],
    "other": ["The answer is {y}, option {l}."],
}


class TemplateWriter:
    """The default writer: one short templated sentence per step; a conclusion that checks
    each option (``"C. text: yes"``) and then names the chosen one, ending ``Answer: X``.

    The wording varies with ``seed``, deterministically per question and step (the same
    question id, step and seed always give the same text). ``knowledge`` is the graph used
    to tell conditions, diagnoses, treatments and tests apart (default: the shipped one).
    """

    def __init__(self, knowledge: nx.MultiDiGraph | None = None, seed: int = 0):
        self.graph = knowledge if knowledge is not None else load_knowledge()
        self.seed = seed

    def _rng(self, *parts) -> random.Random:
        return random.Random("|".join(map(str, (self.seed, *parts))))

    def _kind(self, entity: str) -> str:
        kind = self.graph.nodes[entity]["category"] if entity in self.graph else "other"
        return kind if kind in ("condition", "diagnosis", "treatment", "test") else "other"

    def step(self, question: Question, plan: Plan, step: Step, parent_texts: dict[str, str]) -> str:
        preds, target = split_description(step.description)
        kind = self._kind(target)
        if kind in ("condition", "diagnosis") and len(preds) > 1:
            kind += "+"
        template = self._rng(question.id, step.id).choice(_STEP[kind])
        return _cap(template.format(x=join(preds) if preds else "the findings", y=target))

    def conclusion(self, question: Question, plan: Plan, step_texts: dict[str, str],
                   options: dict[str, str], answer: str) -> str:
        preds, target = split_description(plan.steps[-1].description) if len(plan) else ([], "")
        letter = next((k for k, v in options.items() if v == target), answer)
        kind = self._kind(target)
        kind = kind if kind in _CONCLUSION else "other"
        template = self._rng(question.id, "conclusion").choice(_CONCLUSION[kind])
        text = template.format(x=join(preds) if preds else "the case", y=target, l=letter)
        # Going through the options one by one before naming the letter helps a small model
        # bind its conclusion to the right letter: each line copies an option from the prompt
        # and judges it against the last step (the teaching model went from about chance on
        # letters with a one-line conclusion to 89% with these checks, once trained long
        # enough to copy options from the prompt: see its model card).
        checks = "\n".join(f"{k}. {v}: {'yes' if k == letter else 'no'}" for k, v in options.items())
        return f"{checks}\n{_cap(text)} Answer: {letter}"


class EngineWriter:
    """A language model as the writer: the engine answers each question with the Curator's
    plan forced (``engine.run(question, plan=plan)``), and the step bodies and conclusion
    are the run's text.

    One run per question, made at its first ``step`` call and reused for the rest. Keywords
    go to :meth:`Engine.run` (greedy by default; ``mode=None`` is the model's own). A
    conclusion that does not name the key makes :func:`synthesize` raise, or drop the
    question with ``errors="skip"``: the Curator keeps only traces that answer right.
    """

    def __init__(self, engine, *, temperature: float = 0.0, seed: int = 0, mode: Mode | None = None, **run_kwargs):
        if not callable(getattr(engine, "run", None)):
            raise TypeError(f"EngineWriter needs an engine with run(), not {type(engine).__name__}")
        self.engine = engine
        self.run_kwargs = dict(temperature=temperature, seed=seed, mode=mode, **run_kwargs)
        self._key, self._run = None, None

    def run_for(self, question: Question, plan: Plan):
        """The engine run behind ``question`` with ``plan`` forced (cached for the last question)."""
        if self._key != (question.id, plan):
            if self._run is not None:
                self._run.release()
            self._run = self.engine.run(format_question(question), plan=plan, **self.run_kwargs)
            self._key = (question.id, plan)
        return self._run

    def step(self, question: Question, plan: Plan, step: Step, parent_texts: dict[str, str]) -> str:
        return self.run_for(question, plan).steps[step.id]

    def conclusion(self, question: Question, plan: Plan, step_texts: dict[str, str],
                   options: dict[str, str], answer: str) -> str:
        return self.run_for(question, plan).conclusion
