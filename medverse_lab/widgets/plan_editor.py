"""PlanEditor: draw a plan as a Petri net and edit it, validated live.

Python owns the state. The browser view draws :attr:`PlanEditor.graph` and sends edit
commands (add, remove, rename, describe, toggle a dependency, undo, redo); this module
applies them to the *draft*, validates it with :meth:`Plan.problems` and updates the
traitlets. :attr:`PlanEditor.plan` is always the last valid plan.
"""

from __future__ import annotations

import json
import threading

import traitlets as t

from ..errors import PlanError
from ..petri import SOURCE, PetriNet, place
from ..plan import Plan, Step
from ._shared import STATIC, BackgroundJob, LiveView
from .picture import plan_picture


def _problem_dict(p) -> dict:
    return {"kind": p.kind, "message": p.message, "step": p.step}


def _draft_of(plan: Plan) -> list[dict]:
    return [{"id": s.id, "description": s.description, "deps": list(s.deps)} for s in plan.steps]


def _plan_of(draft: list[dict]) -> Plan:
    return Plan(Step(s["id"], s["description"], s["deps"]) for s in draft)


def petri_layout(plan: Plan) -> dict:
    """The drawing of a plan's Petri net on a grid, by levels (:meth:`Plan.levels`).

    Column 0 holds the source place; a step of level L has its transition in column
    2L+1 and its "done" place in column 2L+2; rows are the order within a level,
    centred. Nodes are keyed by the step's index in the plan (so a draft with a duplicate
    id still draws); arcs go source -> root transitions, done place of a dependency ->
    dependent's transition, transition -> its done place. Unknown dependencies draw no arc.
    Works for invalid drafts too: an arc of a cycle or a forward dependency has ``back``
    set, and is drawn around the boxes, under the net.
    """
    # depths by hand, not Plan.levels(): a draft may hold duplicate ids and dependencies on
    # missing steps, and it is drawn keyed by index, so the depth is computed per index
    steps = list(plan.steps)
    first = {}
    for i, s in enumerate(steps):
        first.setdefault(s.id, i)
    depth: list[int] = []
    for i, s in enumerate(steps):
        parents = [first[d] for d in s.deps if d in first and first[d] < i]
        depth.append(1 + max((depth[p] for p in parents), default=-1))
    by_level: dict[int, list[int]] = {}
    for i, d in enumerate(depth):
        by_level.setdefault(d, []).append(i)
    tallest = max((len(v) for v in by_level.values()), default=1)
    nodes = [{"key": "source", "kind": "place", "place": SOURCE, "step": None, "index": None,
              "col": 0, "row": (tallest - 1) / 2}]
    arcs = []
    for level, members in sorted(by_level.items()):
        offset = (tallest - len(members)) / 2
        for r, i in enumerate(members):
            s = steps[i]
            nodes.append({"key": f"t{i}", "kind": "transition", "step": s.id, "index": i,
                          "description": s.description, "col": 2 * level + 1, "row": offset + r})
            nodes.append({"key": f"p{i}", "kind": "place", "place": place(s.id), "step": s.id, "index": i,
                          "col": 2 * level + 2, "row": offset + r})
            arcs.append({"from": f"t{i}", "to": f"p{i}"})
            known = [d for d in s.deps if d in first]
            if not known and not s.deps:
                arcs.append({"from": "source", "to": f"t{i}"})
            for d in known:  # "back": the needed step is drawn at or right of this one (a cycle, a forward dep)
                arcs.append({"from": f"p{first[d]}", "to": f"t{i}", "dep": d, "back": depth[first[d]] >= level})
    return {"nodes": nodes, "arcs": arcs, "cols": 2 * len(by_level) + 1, "rows": tallest}


class PlanEditor(LiveView):
    """Edit a plan as a Petri net in the notebook, validated at every edit.

    >>> editor = ml.PlanEditor(plan)      # draw it, click to edit
    >>> editor.plan                       # the last valid plan
    >>> editor.errors                     # problems of the current draft (dicts)

    Every edit is also a method (``add_step``, ``remove_step``, ``rename_step``,
    ``set_description``, ``toggle_dependency``, ``undo``, ``redo``, ``renumber``), so
    what the view does can be scripted and tested. With ``engine``, the view's Run button
    runs the plan on ``question`` in a background thread and the frontier fires as steps
    finish.
    """

    _esm = STATIC / "plan_editor.js"

    #: the plan being edited, possibly invalid: ``{"steps": [{"id", "description", "deps"}]}``
    draft = t.Dict({"steps": []}).tag(sync=True)
    #: the last valid plan, in the same shape (``json.loads(plan.to_json())``)
    valid_plan = t.Dict({"steps": []}).tag(sync=True)
    #: problems of the draft: ``{"kind", "message", "step"}`` (empty when valid)
    errors = t.List().tag(sync=True)
    #: the Petri-net drawing of the draft (see :func:`petri_layout`)
    graph = t.Dict().tag(sync=True)
    #: tokens per place of the valid plan's Petri net, the enabled steps and those fired
    marking = t.Dict().tag(sync=True)
    frontier = t.List().tag(sync=True)
    fired = t.List().tag(sync=True)
    #: steps being decoded right now (engine runs)
    running = t.List().tag(sync=True)
    can_undo = t.Bool(False).tag(sync=True)
    can_redo = t.Bool(False).tag(sync=True)
    #: the step selected in the view ("" for none)
    selected = t.Unicode("").tag(sync=True)
    #: a one-line message for the user (why an edit was refused, run progress)
    notice = t.Unicode("").tag(sync=True)
    #: what the plan shown does not say by itself, in the warning colour (e.g. it is what was
    #: salvaged from a model-written plan that failed validation); "" for none
    warning = t.Unicode("").tag(sync=True)
    #: "error" when the notice says an edit was refused (shown in the error colour), else "info"
    notice_kind = t.Unicode("info").tag(sync=True)
    has_engine = t.Bool(False).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    question = t.Unicode("").tag(sync=True)

    def __init__(self, plan: Plan | str | None = None, engine=None, question: str = "", **kwargs):
        super().__init__(**kwargs)
        if isinstance(plan, str):
            plan = Plan.from_outline(plan)
        plan = plan if plan is not None else Plan([Step("1", "first step")])
        self._valid: Plan | None = None
        self._net: PetriNet | None = None
        self._past: list[list[dict]] = []
        self._future: list[list[dict]] = []
        self._lock = threading.RLock()
        self._job = BackgroundJob(self)
        self.engine = engine
        self.last_run = None
        self.has_engine = engine is not None
        self.question = question
        self._load(_draft_of(plan))
        self.on_msg(self._on_frontend_msg)

    def picture(self) -> str:
        return plan_picture(self.graph, self.errors, self.notice, self.warning, self.selected)

    # ----- state -----------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        """The last valid plan (``None`` only if no valid plan was ever edited)."""
        return self._valid

    @plan.setter
    def plan(self, plan: Plan) -> None:
        self._edit(_draft_of(plan))

    @property
    def draft_plan(self) -> Plan:
        """The draft as a :class:`Plan` (may be invalid)."""
        return _plan_of(self.draft["steps"])

    @property
    def is_valid(self) -> bool:
        return not self.errors

    def _steps(self) -> list[dict]:
        return [dict(s, deps=list(s["deps"])) for s in self.draft["steps"]]

    def _load(self, steps: list[dict]) -> None:
        """Show ``steps`` as the draft: validate, redraw, and keep it if valid."""
        plan = _plan_of(steps)
        problems = plan.problems()
        with self.hold_sync():
            self.draft = {"steps": steps}
            self.errors = [_problem_dict(p) for p in problems]
            self.graph = petri_layout(plan)
            if not problems:
                self._valid = plan
                self.valid_plan = json.loads(plan.to_json())
                self._net = PetriNet(plan)
                self._show_marking()
            if self.selected and self.selected not in [s["id"] for s in steps]:
                self.selected = ""
            self.can_undo, self.can_redo = bool(self._past), bool(self._future)

    def load(self, plan: Plan) -> None:
        """Show ``plan`` (valid or not) as a fresh draft: no undo history, and
        :attr:`plan` is ``None`` until a valid draft exists."""
        with self._lock:
            self._past.clear()
            self._future.clear()
            self._valid, self._net = None, None
            self.valid_plan = {"steps": []}
            self.notice = ""
            self._load(_draft_of(plan))
            if self._net is None:
                self._show_marking()

    def _edit(self, steps: list[dict]) -> None:
        with self._lock:
            if self.busy:
                raise RuntimeError("the plan is running; edit it when the run is done")
            current = self._steps()
            if steps == current:
                return
            self._past.append(current)
            self._future.clear()
            self.notice = ""
            self._load(steps)

    def _index(self, steps: list[dict], step_id) -> int:
        for i, s in enumerate(steps):
            if s["id"] == str(step_id).strip():
                return i
        raise KeyError(f"no step {step_id!r} in the draft; steps are {[s['id'] for s in steps]}")

    # ----- edits -----------------------------------------------------------------------
    def add_step(self, description: str = "new step", deps=()) -> str:
        """Append a step numbered one past the highest number; returns its id."""
        steps = self._steps()
        nums = [int(s["id"]) for s in steps if s["id"].isdigit()]
        sid = str(max(nums, default=0) + 1)
        steps.append({"id": sid, "description": str(description), "deps": [str(d) for d in deps]})
        self._edit(steps)
        return sid

    def remove_step(self, step_id) -> None:
        """Remove a step and every dependency on it."""
        steps = self._steps()
        i = self._index(steps, step_id)
        gone = steps.pop(i)["id"]
        if gone not in [s["id"] for s in steps]:
            for s in steps:
                s["deps"] = [d for d in s["deps"] if d != gone]
        self._edit(steps)

    def rename_step(self, step_id, new_id) -> None:
        """Give a step a new number; dependencies on it follow. Refused (ValueError) when
        the number is taken or empty."""
        steps = self._steps()
        i = self._index(steps, step_id)
        old, new = steps[i]["id"], str(new_id).strip()
        if new == old:
            return
        if not new:
            raise ValueError("a step needs a number")
        if new in [s["id"] for s in steps]:
            raise ValueError(f"step {new} already exists")
        steps[i]["id"] = new
        for s in steps:
            s["deps"] = [new if d == old else d for d in s["deps"]]
        if self.selected == old:
            self.selected = new
        self._edit(steps)

    def set_description(self, step_id, description: str) -> None:
        """Change what a step says."""
        steps = self._steps()
        steps[self._index(steps, step_id)]["description"] = str(description)
        self._edit(steps)

    def toggle_dependency(self, dependency, step_id) -> bool:
        """Add the dependency of ``step_id`` on ``dependency`` if absent, else remove it;
        returns whether it is now present. The draft may become invalid (a forward
        dependency, a cycle): the problems show and :attr:`plan` keeps the last valid one."""
        steps = self._steps()
        i = self._index(steps, step_id)
        dep = str(dependency).strip()
        self._index(steps, dep)
        deps = steps[i]["deps"]
        present = dep not in deps
        steps[i]["deps"] = deps + [dep] if present else [d for d in deps if d != dep]
        if present:  # keep declared order readable: by step order in the plan
            order = {s["id"]: n for n, s in enumerate(steps)}
            steps[i]["deps"] = sorted(steps[i]["deps"], key=lambda d: order.get(d, len(order)))
        self._edit(steps)
        return present

    def renumber(self) -> None:
        """Renumber the draft 1..n in topological order (fixes forward dependencies and
        step order; refused with the problems when the draft is not a DAG)."""
        self._edit(_draft_of(self.draft_plan.renumbered()))

    def undo(self) -> bool:
        """Go back one edit; returns False when there is nothing to undo."""
        with self._lock:
            if not self._past or self.busy:
                return False
            self._future.append(self._steps())
            self._load(self._past.pop())
            return True

    def redo(self) -> bool:
        """Redo the last undone edit; returns False when there is nothing to redo."""
        with self._lock:
            if not self._future or self.busy:
                return False
            self._past.append(self._steps())
            self._load(self._future.pop())
            return True

    # ----- the Petri net ---------------------------------------------------------------
    def _show_marking(self) -> None:
        net = self._net
        with self.hold_sync():
            self.marking = dict(net.marking) if net else {}
            self.frontier = net.frontier() if net else []
            self.fired = list(net.fired) if net else []

    def _valid_net(self) -> PetriNet:
        if self._net is None:
            raise RuntimeError("no valid plan yet: fix the problems first")
        return self._net

    def fire(self, step_id) -> None:
        """Fire a step's transition in the drawing (PetriNetError when not enabled)."""
        self._valid_net().fire(str(step_id))
        self._show_marking()

    def fire_frontier(self) -> list[str]:
        """Fire every enabled step at once (one wave); returns the steps fired."""
        wave = self._valid_net().frontier()
        for sid in wave:
            self._net.fire(sid)
        self._show_marking()
        return wave

    def reset_marking(self) -> None:
        """Back to the initial marking: only the source place holds a token."""
        self._valid_net().reset()
        self.running = []
        self._show_marking()

    # ----- running (with an engine) ------------------------------------------------------
    def run(self, question: str | None = None, wait: bool = False, **kwargs):
        """Run the valid plan on the engine in a background thread; the drawing fires each
        step as it finishes. Returns the thread (``wait=True``: the finished Run)."""
        if self.engine is None:
            raise RuntimeError("no engine: PlanEditor(plan, engine=ml.Engine.load())")
        self._valid_net()
        question = self.question if question is None else question
        if not question.strip():
            raise ValueError("type a question first")
        with self._lock:  # no edit may slip in between the check and the start
            if self.busy:
                raise RuntimeError("a run is already in progress")
            plan = self._valid
            self.reset_marking()
            worker = self._job.start(self._run, question, plan, kwargs)
        self.notice = "running…"
        if wait:
            self._job.wait()
            return self.last_run
        return worker

    def wait(self, timeout: float | None = None):
        """Wait for the background run; returns it (``None`` if it failed)."""
        self._job.wait(timeout)
        return self.last_run

    def _run(self, question, plan, kwargs) -> None:  # in the job's thread: every change is posted
        from ..engine.events import StepEnd, StepStart

        post = self._job.post
        started: set[str] = set()
        try:
            stream = self.engine.stream(question, plan=plan, **kwargs)
            for ev in stream:
                if isinstance(ev, StepStart):
                    started.add(ev.branch)
                    post(lambda sid=ev.branch: self._step_started(plan, started | {sid}))
                elif isinstance(ev, StepEnd):
                    post(lambda sid=ev.branch: self._step_ended(sid))
            run = stream.run

            def finish() -> None:
                self._net.waves()  # steps a non-dag scheduler finished before their parents
                self._show_marking()
                self.last_run = run
                self.notice = f"done: answer {run.answer}" if run is not None else "done"

            post(finish)
        except Exception as exc:  # shown in the view; the notebook keeps going
            post(lambda msg=f"run failed: {type(exc).__name__}: {exc}": self._refused(msg))
        finally:
            post(lambda: setattr(self, "running", []))

    def _step_started(self, plan: Plan, started: set[str]) -> None:
        self.running = sorted(started - set(self._net.fired), key=plan.ids.index)

    def _step_ended(self, sid: str) -> None:
        if self._net.is_enabled(sid):
            self._net.fire(sid)
        self.running = [s for s in self.running if s != sid]
        self._show_marking()

    # ----- messages from the view ------------------------------------------------------
    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict) or content.get("type") != "edit":
            return
        op, args = content.get("op"), content.get("args", {})
        try:
            if op == "add":
                self.selected = self.add_step(args.get("description", "new step"), args.get("deps", []))
            elif op == "remove":
                self.remove_step(args["step"])
            elif op == "rename":
                self.rename_step(args["step"], args["new"])
            elif op == "describe":
                self.set_description(args["step"], args["description"])
            elif op == "toggle":
                self.toggle_dependency(args["dependency"], args["step"])
            elif op == "undo":
                self.undo()
            elif op == "redo":
                self.redo()
            elif op == "renumber":
                self.renumber()
            elif op == "fire":
                self.fire_frontier() if args.get("step") is None else self.fire(args["step"])
            elif op == "reset":
                self.reset_marking()
            elif op == "run":
                self.question = str(args.get("question", self.question))
                self.run()
        except PlanError as exc:  # every problem, not the "N problems found:" header
            self._refused(f"{op} refused: " + "; ".join(str(p) for p in exc.problems))
        except (KeyError, ValueError, RuntimeError) as exc:
            self._refused(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except Exception as exc:  # never let a view message raise into the kernel log only
            self._refused(f"{type(exc).__name__}: {exc}")

    def _refused(self, message: str) -> None:
        """Say ``message`` in the error colour (an edit refused, a run failed)."""
        self._refusing = True
        try:
            with self.hold_sync():
                self.notice, self.notice_kind = message, "error"
        finally:
            self._refusing = False

    @t.observe("notice")
    def _plain_notice(self, _change) -> None:
        if not getattr(self, "_refusing", False):
            self.notice_kind = "info"
