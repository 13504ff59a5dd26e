"""Exercise checks for the workshop notebooks: a friendly verdict, never a traceback wall.

    ml.workshop.check("ex1: dag positions", answer, expected, hint="a step starts where its parents end")

``expected`` is computed by the notebook from the library (never typed in), so a check can
fail when the answer is wrong. Tensors compare exactly, floats to ``tol``, everything else
with ``==``. A wrong answer raises :class:`ExerciseError` with the hint; ``...`` (the
placeholder of an exercise not yet done) says so.
"""

from __future__ import annotations

import math


class ExerciseError(AssertionError):
    """A workshop answer that does not match; the message says what to look at."""


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


def check(name: str, answer, expected, hint: str = "", *, tol: float | None = None) -> bool:
    """Print ``✓ name`` when ``answer`` matches ``expected``; otherwise raise
    :class:`ExerciseError` naming the exercise, what was expected and ``hint``."""
    if answer is Ellipsis:
        raise ExerciseError(f"✗ {name}: not answered yet (replace the ... with your answer)")
    if not _same(answer, expected, tol):
        shown = repr(answer)
        shown = shown if len(shown) <= 200 else shown[:200] + "…"
        raise ExerciseError(f"✗ {name}: {shown} is not it." + (f" Hint: {hint}" if hint else ""))
    print(f"✓ {name}")
    return True


__all__ = ["check", "ExerciseError"]
