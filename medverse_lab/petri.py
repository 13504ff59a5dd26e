"""A plan read as a Petri net.

One transition per step, one place per step meaning "step done", and a ``source`` place
marked from the start. A transition is enabled when every input place holds a token (a
root step's only input is ``source``) and its own place is still empty; firing it marks
its own place. Inputs are read, not consumed: a finished step feeds every child.
"""

from __future__ import annotations

from .errors import PetriNetError

SOURCE = "source"


def place(step_id: str) -> str:
    """The name of the place that holds a token once ``step_id`` is done."""
    return f"done:{step_id}"


class PetriNet:
    """The Petri net of a validated :class:`~medverse_lab.Plan`.

    >>> net = plan.petri_net()
    >>> net.frontier()        # enabled transitions, in plan order
    >>> net.fire("1")         # marks place done:1
    >>> net.is_complete()
    """

    def __init__(self, plan):
        self.plan = plan
        self.transitions: list[str] = plan.ids
        self.places: list[str] = [SOURCE] + [place(t) for t in self.transitions]
        self._inputs = {s.id: [place(d) for d in s.deps] or [SOURCE] for s in plan.steps}
        self.marking: dict[str, int] = {}
        self.fired: list[str] = []
        self.reset()

    def reset(self) -> "PetriNet":
        """Back to the initial marking (only ``source`` marked)."""
        self.marking = {p: 0 for p in self.places}
        self.marking[SOURCE] = 1
        self.fired = []
        return self

    def inputs(self, step_id: str) -> list[str]:
        """The input places of a step's transition."""
        self._check_known(step_id)
        return list(self._inputs[str(step_id)])

    def is_enabled(self, step_id: str) -> bool:
        self._check_known(step_id)
        sid = str(step_id)
        return not self.marking[place(sid)] and all(self.marking[p] for p in self._inputs[sid])

    def frontier(self) -> list[str]:
        """The enabled transitions (steps that can start now), in plan order."""
        return [t for t in self.transitions if self.is_enabled(t)]

    def fire(self, step_id: str) -> "PetriNet":
        """Fire a step's transition, marking its place. Raises :class:`PetriNetError` naming
        the input places without a token when it is not enabled."""
        self._check_known(step_id)
        sid = str(step_id)
        if self.marking[place(sid)]:
            raise PetriNetError(f"step {sid} has already fired (place {place(sid)} is marked)")
        missing = [p for p in self._inputs[sid] if not self.marking[p]]
        if missing:
            raise PetriNetError(f"cannot fire step {sid}: input place{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)} hold{'' if len(missing) > 1 else 's'} no token")
        self.marking[place(sid)] = 1
        self.fired.append(sid)
        return self

    def is_complete(self) -> bool:
        """True when every step has fired."""
        return len(self.fired) == len(self.transitions)

    def waves(self) -> list[list[str]]:
        """Fire the whole net from its current marking, every enabled step at once, and
        return the steps of each wave (the net is left complete)."""
        out = []
        while frontier := self.frontier():
            for t in frontier:
                self.fire(t)
            out.append(frontier)
        return out

    def copy(self) -> "PetriNet":
        net = PetriNet(self.plan)
        net.marking, net.fired = dict(self.marking), list(self.fired)
        return net

    def _check_known(self, step_id):
        if str(step_id) not in self._inputs:
            raise PetriNetError(f"no step {step_id!r} in the net; transitions are {self.transitions}")

    def __repr__(self) -> str:
        marked = [p for p, n in self.marking.items() if n]
        return f"PetriNet(transitions={self.transitions}, marked={marked}, frontier={self.frontier()})"
