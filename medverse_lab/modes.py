"""The decoding and training modes: one type, and the one function that checks a value.

A mode names a visibility rule (``topology``'s docstring and DESIGN state each one). It
travels as its plain string everywhere (runs, tables, JSON, widgets), typed as
:data:`Mode`; :func:`check_mode` is where a value from outside becomes one.
"""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["dag", "layered", "speculative", "sequential", "request", "medverse-sft"]

#: every mode, in the order the docs list them
MODES: tuple[Mode, ...] = get_args(Mode)
#: the modes the engine decodes (``medverse-sft`` reproduces the public training collator only)
ENGINE_MODES: tuple[Mode, ...] = MODES[:5]


def check_mode(mode: str, modes: tuple[Mode, ...] = MODES) -> Mode:
    """Return ``mode`` if it is one of ``modes``, else raise ``ValueError`` listing them."""
    if mode not in modes:
        raise ValueError(f"unknown mode {mode!r}; valid modes are {', '.join(modes)}")
    return mode
