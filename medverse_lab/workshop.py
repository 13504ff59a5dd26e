"""Exercise checks for the workshop notebooks: a friendly verdict, never a traceback wall.

    ml.workshop.check("ex1: dag positions", answer, expected, hint="a step starts where its parents end")

``expected`` is computed by the notebook from the library (never typed in), so a check can
fail when the answer is wrong. Tensors compare exactly, floats to ``tol``, everything else
with ``==``. A wrong answer shows a ✗ with the hint (no exception: the notebook goes on);
``...`` (the placeholder of an exercise not yet done) says so.
"""

from __future__ import annotations

import math


class ExerciseError(AssertionError):
    """Kept for code that caught it; :func:`check` no longer raises (it shows a ✗)."""


def _same(answer, expected, tol: float | None) -> bool:
    try:
        import torch

        if isinstance(answer, torch.Tensor) or isinstance(expected, torch.Tensor):
            a, e = torch.as_tensor(answer), torch.as_tensor(expected)
            if a.shape != e.shape:
                return False
            return bool(torch.allclose(a.double(), e.double(), atol=tol or 0.0, rtol=0.0))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(expected, float) or isinstance(answer, float):
        return math.isclose(float(answer), float(expected), abs_tol=tol or 1e-9)
    return answer == expected


class Verdict:
    """What :func:`check` found: truthy when the answer is right. It is shown when made
    (a styled ✓ or ✗ in a notebook, a line of text elsewhere), so a check on a cell's last
    line does not echo a value after it."""

    def __init__(self, name: str, passed: bool, message: str):
        self.name, self.passed, self.message = name, passed, message

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        import html

        colour = "var(--jp-success-color1, #388e3c)" if self.passed else "var(--jp-error-color1, #d32f2f)"
        return (f'<div class="mv-verdict {"mv-pass" if self.passed else "mv-fail"}" style="color: {colour}; '
                f'font-weight: 600; white-space: pre-wrap">{html.escape(self.message)}</div>')

    def _ipython_display_(self) -> None:  # already shown by check(): no second copy as the cell's result
        pass

    def show(self) -> "Verdict":
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython comes with the notebook stack
            get_ipython = None
        if get_ipython is not None and get_ipython() is not None:
            display({"text/plain": self.message, "text/html": self._repr_html_()}, raw=True)
        else:
            print(self.message)
        return self


def _describe(answer) -> str:
    shown = repr(answer)
    return shown if len(shown) <= 200 else shown[:200] + "…"


def check(name: str, answer, expected, hint: str = "", *, tol: float | None = None) -> Verdict:
    """Show ``✓ name`` when ``answer`` matches ``expected``, else ``✗ name`` with what to
    look at and ``hint`` (never a traceback: the notebook goes on); returns the
    :class:`Verdict`, truthy when right. A right value of another type (a tuple for a list)
    is ✗ and says so."""
    if answer is Ellipsis:
        return Verdict(name, False, f"✗ {name}: not answered yet (replace the ... with your answer)").show()
    if _same(answer, expected, tol):
        return Verdict(name, True, f"✓ {name}").show()
    hint = f" Hint: {hint}" if hint else ""
    kinds = (list, tuple, set, frozenset, dict)
    if isinstance(answer, kinds) and isinstance(expected, kinds) and type(answer) is not type(expected):
        try:
            values_match = type(expected)(answer) == expected
        except (TypeError, ValueError):
            values_match = False
        if values_match:
            return Verdict(name, False, f"✗ {name}: the values are right, but the type differs: a "
                                        f"{type(answer).__name__}, where a {type(expected).__name__} is asked."
                                        ).show()
    return Verdict(name, False, f"✗ {name}: {_describe(answer)} is not it.{hint}").show()


__all__ = ["check", "Verdict", "ExerciseError"]
