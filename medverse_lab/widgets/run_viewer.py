"""RunViewer: a run's branches as lanes that grow while the engine decodes.

Runs and reruns decode in a background thread (the notebook stays usable) and stream
their tokens into the lanes. Each lane has its span on a timeline of forward calls; the
critical path of the plan is marked and the forward-call speedup against sequential
decoding (tokens per forward call, not wall time) is computed from the run's own token
table. Clicking a step shows its text; it can be rerun with a new seed or an edited text
(reusing the cache) and the new version is diffed against the previous one. Every run
and rerun stays in the history.
"""

from __future__ import annotations

import difflib
import re
import threading
import time

import traitlets as t

from ..modes import ENGINE_MODES
from ._shared import STATIC, BackgroundJob, LiveView
from .picture import run_picture


def run_summary(run) -> dict:
    """Lanes, timeline and forward-call speedup of a finished run (see :class:`RunViewer`).

    ``call_speedup`` is a ratio of forward calls, not of wall time (that is what
    ``ml.evaluate`` and the command line's "Phase II speedup" measure): Phase II tokens
    (steps and conclusion; for a rerun, the branches it decoded again) over the forward
    calls the run made for them, since a sequential decoder needs one call per token.
    ``ideal_call_speedup`` divides the same tokens by the critical path of those
    branches plus the conclusion, so it is never below 1. ``answer_note`` says why there
    is no answer (``None`` when there is one).
    """
    df = run.tokens
    branches = df["branch"].to_list()
    calls = df["forward_call"].to_list()
    times = df["time_s"].to_list()
    # mode request: a branch first re-feeds the blocks it reads; they are context, not its tokens
    repeated = df["repeat_of"].is_not_null().to_list()
    lanes = []
    for branch in run.layout.branches:
        idx = [i for i, b in enumerate(branches) if b == branch and not repeated[i]]
        if branch == "prefix":
            label, text = "Plan", run.plan.to_outline(tagged=False)
        elif branch == "conclusion":
            label, text = "Conclusion", run.conclusion
        else:
            label, text = f"Step {branch}: {run.plan[branch].description}", run.steps[branch]
        lanes.append({"branch": branch, "label": label, "text": text, "tokens": len(idx),
                      "repeated": sum(1 for i, b in enumerate(branches) if b == branch and repeated[i]),
                      "first_call": min((calls[i] for i in idx), default=0),
                      "last_call": max((calls[i] for i in idx), default=0),
                      "first_s": min((times[i] for i in idx), default=0.0),
                      "last_s": max((times[i] for i in idx), default=0.0), "done": True})
    rerun = run.rerun_event
    if rerun is not None:  # a rerun decoded only these branches; the others are the earlier run's
        redone = set(rerun.dropped) | {rerun.step, "conclusion"}
        scope = f"rerun of step {rerun.step}"
    else:
        redone = set(branches) - {"prefix"}
        scope = "steps and conclusion"
    phase2 = [i for i, b in enumerate(branches) if b in redone and not repeated[i]]
    achieved = len({calls[i] for i in phase2})
    # the ideal over the same branches the tokens count: a rerun's kept steps weigh nothing
    lens = {sid: run.layout.step_lens[sid] for sid in run.plan.ids if sid in redone}
    path, path_len = run.plan.critical_path(lens)
    path = [sid for sid in path if sid in lens]
    ideal = path_len + run.layout.conclusion_len
    return {
        "lanes": lanes,
        "scope": scope,
        "critical_path": path,
        "critical_tokens": path_len,
        "phase2_tokens": len(phase2),
        "forward_calls": achieved,
        "call_speedup": round(len(phase2) / achieved, 3) if achieved else 1.0,
        "ideal_call_speedup": round(len(phase2) / ideal, 3) if ideal else 1.0,
        "calls": max(calls, default=0) + 1,
        "mode": run.mode,
        "seed": run.seed,
        "answer": run.answer,
        "answer_note": run.answer_note,
        "total_s": round(float(run.timings.get("total", 0.0)), 3),
        "backend": run.backend,
        "backend_note": backend_note(run),
        "warnings": run.warnings,
    }


def backend_note(run) -> str | None:
    """What a run decoded by a stock engine cannot show (``None`` for the local backend)."""
    if run.backend == "vllm":
        return ("Decoded by vLLM in this process: forward calls are vLLM engine steps, and the key/value cache "
                "is vLLM's (no cache slots here)")
    if run.backend == "remote":
        exact = "" if run.token_exact else "; the server returned text, re-tokenized here, so tokens may differ"
        return ("Decoded by a remote server: each branch's tokens came in one reply, so forward calls and times "
                f"are this client's, not the server's, and there is no cache here{exact}")
    return None


def outcome(run) -> str:
    """The run in a few words, for a status line: its answer (or why none), and that it
    was decoded ``sequential`` when the model's plan was rejected."""
    text = f"answer {run.answer}" if run.answer else run.answer_note
    error = run.plan_error
    if error is not None:
        text += f"; decoded {error.fallback}, not {error.requested_mode}: the model's plan did not validate"
    return text


def word_diff(old: str, new: str) -> list[list[str]]:
    """``[[op, text], ...]`` with op ``=`` (kept), ``-`` (removed) or ``+`` (added), by words."""
    a, b = re.findall(r"\S+|\s+", old), re.findall(r"\S+|\s+", new)
    out: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(["=", "".join(a[i1:i2])])
        else:
            if i2 > i1:
                out.append(["-", "".join(a[i1:i2])])
            if j2 > j1:
                out.append(["+", "".join(b[j1:j2])])
    return out


class RunViewer(LiveView):
    """Watch a run decode, read its steps, rerun one, compare versions.

    >>> viewer = ml.RunViewer(engine)            # type a question, press Run
    >>> viewer = ml.RunViewer(engine, plan=plan) # Run forces this plan instead of Phase I
    >>> viewer.submit("A 54-year-old ...")       # or from code (background thread)
    >>> viewer.wait().answer                     # the finished Run
    >>> viewer.rerun("2", seed=1, wait=True)     # reuses the cache; viewer.diffs shows the change
    >>> viewer.runs                              # the history, oldest first
    """

    _esm = STATIC / "run_viewer.js"

    question = t.Unicode("").tag(sync=True)
    mode = t.Unicode("dag").tag(sync=True)
    modes = t.List(list(ENGINE_MODES)).tag(sync=True)
    #: the seed Run uses; showing a run (or rerun) sets it to the seed that run used
    seed = t.Int(0).tag(sync=True)
    temperature = t.Float(0.7).tag(sync=True)
    max_step_tokens = t.Int(64).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    #: one lane per branch: label, text so far, tokens, forward-call span, done
    lanes = t.List().tag(sync=True)
    #: timeline and forward-call speedup of the run shown (:func:`run_summary` without the lanes)
    summary = t.Dict().tag(sync=True)
    #: the branch selected in the view ("" for none)
    selected = t.Unicode("").tag(sync=True)
    #: after a rerun: branch -> word diff against the previous version (:func:`word_diff`)
    diffs = t.Dict().tag(sync=True)
    #: one entry per run or rerun: index, kind, step, seed (the one it used), mode, answer, call_speedup
    history = t.List().tag(sync=True)
    current = t.Int(-1).tag(sync=True)
    notice = t.Unicode("").tag(sync=True)

    def __init__(self, engine, run=None, question: str = "", plan=None, **kwargs):
        super().__init__(**kwargs)
        self.engine = engine
        #: a Plan (or outline text) that Run forces instead of letting the model plan (None: the model plans)
        self.forced_plan = plan
        self.runs: list = []
        self._parents: list[int | None] = []
        self._job = BackgroundJob(self)
        self._adding = False
        self.question = question or (run.question if run is not None else "")
        if engine is not None:
            if getattr(engine, "backend", "local") != "local":  # a stock engine decodes these exactly
                from ..engine.requests import EXACT_MODES

                self.modes = list(EXACT_MODES)
            default = getattr(engine, "default_mode", "dag")
            self.mode = default if default in self.modes else self.modes[0]
            self.temperature = getattr(engine, "sampling", {}).get("temperature", self.temperature)
        if run is not None:
            self.seed = run.seed  # the box starts at the given run's seed, then is the user's
            self._add(run, {"kind": "run"}, parent=None)
        self.observe(self._on_current, names="current")
        self.on_msg(self._on_frontend_msg)

    def picture(self) -> str:
        return run_picture(self.question, self.lanes, self.summary, self.notice)

    # ----- the run shown -------------------------------------------------------------------
    @property
    def run(self):
        """The run shown (``None`` before the first)."""
        return self.runs[self.current] if 0 <= self.current < len(self.runs) else None

    def _show(self, run, diffs=None) -> None:
        s = run_summary(run)
        with self.hold_sync():
            self.lanes = s.pop("lanes")
            self.summary = s
            self.diffs = diffs or {}
            # the seed box keeps the seed the user set for the next Run; the run's own seed is
            # on its history chip and in the summary
            if run.requested_mode in self.modes:  # so does the mode: the one asked (a fallback is in the warnings)
                self.mode = run.requested_mode

    def _add(self, run, meta: dict, parent: int | None, diffs=None) -> None:
        self.runs.append(run)
        self._parents.append(parent)
        s = run_summary(run)
        entry = {"index": len(self.runs) - 1, "kind": meta.get("kind", "run"), "step": meta.get("step"),
                 "seed": run.seed, "answer": run.answer, "call_speedup": s["call_speedup"], "parent": parent,
                 "mode": run.mode if run.plan_error is None else f"{run.mode} (fallback from {run.requested_mode})",
                 "warnings": len(s["warnings"])}
        self._adding = True
        try:
            with self.hold_sync():
                self.history = self.history + [entry]
                self._show(run, diffs)
                self.current = len(self.runs) - 1
        finally:
            self._adding = False

    def _on_current(self, change) -> None:
        run = self.run
        if run is None or self._adding or self.busy:
            return
        parent = self._parents[self.current]
        self._show(run, self._diffs(self.runs[parent], run) if parent is not None else {})
        entry = self.history[self.current]
        what = "run" if entry["kind"] == "run" else f"rerun of step {entry['step']}"
        self.notice = f"showing {what} #{self.current + 1}: {outcome(run)}"  # the notice follows the run shown

    # ----- decoding in the background --------------------------------------------------------
    def _start(self, target, *args) -> threading.Thread:
        thread = self._job.start(target, *args)  # refuses while a run is in progress
        self.notice = "decoding…"
        return thread

    def wait(self, timeout: float | None = None):
        """Wait for the background run or rerun; returns the run shown."""
        self._job.wait(timeout)
        return self.run

    def _streamer(self, lanes: dict[str, dict], order: list[str]):
        last = [0.0]

        def on_token(ev) -> None:
            lane = lanes.get(ev.branch)
            if lane is None:
                lane = lanes[ev.branch] = {"branch": ev.branch, "label": ev.branch, "text": "", "tokens": 0,
                                           "first_call": ev.forward_call, "last_call": ev.forward_call,
                                           "first_s": ev.time_s, "last_s": ev.time_s, "done": False}
                order.append(ev.branch)
            lane["text"] += ev.text
            lane["tokens"] += 1
            lane["last_call"], lane["last_s"] = ev.forward_call, ev.time_s
            now = time.monotonic()
            if now - last[0] > 0.1:  # at most ten updates a second reach the browser
                last[0] = now
                shown, calls = [dict(lanes[b]) for b in order], ev.forward_call + 1
                self._job.post(lambda: self._stream_to(shown, calls))

        return on_token

    def submit(self, question: str | None = None, **kwargs) -> threading.Thread:
        """Run ``question`` in the background with the viewer's mode, seed, temperature and
        step limit (``kwargs`` go to :meth:`Engine.run`); lanes grow as tokens arrive."""
        if self.engine is None:
            raise RuntimeError("no engine: RunViewer(engine)")
        question = self.question if question is None else question
        if not question.strip():
            raise ValueError("type a question first")
        self.question = question
        settings = dict(mode=self.mode, seed=self.seed, temperature=self.temperature,
                        max_step_tokens=self.max_step_tokens, plan=self.forced_plan)
        settings.update(kwargs)
        return self._start(self._do_run, question, settings)

    def _stream_to(self, lanes: list[dict], calls: int) -> None:
        with self.hold_sync():
            self.lanes = lanes
            self.summary = {**self.summary, "calls": calls, "live": True}

    def _clear(self) -> None:
        with self.hold_sync():
            self.lanes, self.diffs, self.summary = [], {}, {"live": True, "calls": 0}

    def _say(self, notice: str) -> None:
        self._job.post(lambda: setattr(self, "notice", notice))

    def _do_run(self, question, settings) -> None:  # in the job's thread: every change is posted
        lanes, order = {}, []
        self._job.post(self._clear)
        try:
            run = self.engine.run(question, on_token=self._streamer(lanes, order), **settings)
            self._job.post(lambda: self._add(run, {"kind": "run"}, parent=None))
            self._say(f"done: {outcome(run)}")
        except Exception as exc:  # shown in the view; the notebook keeps going
            self._say(f"run failed: {type(exc).__name__}: {exc}")

    def rerun(self, step, seed: int | None = None, text: str | None = None, wait: bool = False):
        """Decode ``step`` of the shown run again (new ``seed`` or forced ``text``), with
        what depends on it, reusing the cache; the new run joins the history and
        :attr:`diffs` holds what changed. Returns the thread (``wait=True``: the new Run)."""
        base = self.run
        if base is None:
            raise RuntimeError("no run to rerun yet")
        if str(step) not in base.plan:
            raise KeyError(f"no step {step!r} in the run's plan; steps are {base.plan.ids}")
        thread = self._start(self._do_rerun, self.current, str(step), seed, text, [dict(x) for x in self.lanes])
        if wait:
            return self.wait()
        return thread

    def _do_rerun(self, parent: int, step: str, seed, text, shown: list[dict]) -> None:  # in the job's thread
        base = self.runs[parent]
        lanes = {lane["branch"]: lane for lane in shown}
        order = [lane["branch"] for lane in shown]
        try:
            run = self.engine.rerun(base, step, seed=seed, text=text, on_token=self._rerun_streamer(lanes, order))

            def show() -> None:
                self._add(run, {"kind": "rerun", "step": step}, parent=parent, diffs=self._diffs(base, run))
                self.selected = step

            self._job.post(show)
            same = run.steps[step] == base.steps[step]
            self._say(f"rerun of step {step} done: {outcome(run)}" + (
                f" (step {step} came out identical: greedy decoding repeats itself; raise the temperature or "
                "edit its text)" if same else ""))
        except Exception as exc:
            self._say(f"rerun failed: {type(exc).__name__}: {exc}")

    def _rerun_streamer(self, lanes, order):
        cleared: set[str] = set()
        inner = self._streamer(lanes, order)

        def on_token(ev):
            if ev.branch not in cleared and ev.branch in lanes:  # a dropped branch starts over
                cleared.add(ev.branch)
                lanes[ev.branch].update(text="", tokens=0, first_call=ev.forward_call, done=False)
            inner(ev)

        return on_token

    @staticmethod
    def _diffs(old, new) -> dict:
        out = {}
        for sid in new.plan.ids:
            if old.steps.get(sid) != new.steps.get(sid):
                out[sid] = word_diff(old.steps.get(sid, ""), new.steps[sid])
        if old.conclusion != new.conclusion:
            out["conclusion"] = word_diff(old.conclusion, new.conclusion)
        return out

    # ----- messages from the view ----------------------------------------------------------
    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict):
            return
        try:
            if content.get("type") == "run":
                self.submit(content.get("question", self.question))
            elif content.get("type") == "rerun":
                seed = content.get("seed")
                self.rerun(content["step"], seed=None if seed in (None, "") else int(seed), text=content.get("text"))
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            self.notice = str(exc)
