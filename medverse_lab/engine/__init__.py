"""The MedVerse engine: exact parallel DAG decoding in one shared KV cache.

Modules: :mod:`.engine` (Engine: load, run, stream, rerun), :mod:`.decode` (the decode
loop and schedulers), :mod:`.run` (Run, TokenEvent), :mod:`.events` (what ``run.events`` holds), :mod:`.sampling`, :mod:`.kv` (the
cache). The prompt comes from :mod:`medverse_lab.prompt`, the one source training uses too.
"""

from .engine import SFT_REFUSED, Engine, check_engine_mode, default_model_path
from .events import Event, ForcedClose, PhaseStart, PlanRejected, Rerun, StepEnd, StepStart
from .run import Run, RunStream, TokenEvent, parse_answer

__all__ = ["Engine", "Run", "RunStream", "TokenEvent", "default_model_path",
           "parse_answer", "check_engine_mode", "SFT_REFUSED", "Event", "PhaseStart", "StepStart", "StepEnd",
           "ForcedClose", "PlanRejected", "Rerun"]
