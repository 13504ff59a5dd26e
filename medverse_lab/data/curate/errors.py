"""The Curator's error type."""

from __future__ import annotations


class CurationError(ValueError):
    """Curation input (knowledge paths, the knowledge graph, synthesis arguments) is not
    usable; the message names the line, row or argument concerned."""
