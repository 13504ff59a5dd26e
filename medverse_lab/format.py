"""The MedVerse text format: parse a reasoning trace and write it back byte for byte.

A trace is ``PREFIX <Plan>..</Plan> <Execution> <Step>..</Step>... </Execution>
<Conclusion>..</Conclusion> SUFFIX``. Parsing is tolerant about spacing and the case of
"transient step" and strict where meaning is at stake; every problem is collected into
one :class:`~medverse_lab.PlanError` with offsets, lines and columns.

Round trip: a :class:`Trace` keeps the whitespace between tags and the exact text of the
plan and of each step header, and writes them back as long as they still say what the
parsed fields say; otherwise it writes the canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .errors import PlanError, Problem, problem
from .plan import Plan, Step, parse_outline

#: a step header line, "Transient Step <id>: <description>" (after ``<Step>``)
STEP_HEADER = re.compile(r"^\s*transient\s+step\s+(?P<id>\d+)\s*:\s*(?P<desc>.*?)\s*$", re.IGNORECASE)


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


@dataclass(frozen=True)
class StepBlock:
    """One executed step: ``<Step>`` HEADER ``\\n`` BODY ``</Step>`` SEPARATOR."""

    id: str
    description: str
    body: str
    separator: str = "\n"
    header: str | None = field(default=None, compare=False, repr=False)  # as written
    offset: int | None = field(default=None, compare=False, repr=False)

    def header_text(self) -> str:
        """The header as written when it still matches id and description, else canonical."""
        if self.header is not None:
            m = STEP_HEADER.match(self.header)
            if m and m.group("id") == self.id and m.group("desc") == self.description:
                return self.header
        return f" Transient Step {self.id}: {self.description}"

    def to_text(self) -> str:
        return f"<Step>{self.header_text()}\n{self.body}</Step>{self.separator}"


@dataclass(frozen=True)
class Trace:
    """A parsed MedVerse trace. ``steps`` are the executed blocks in execution order."""

    prefix: str
    plan: Plan
    steps: tuple[StepBlock, ...]
    conclusion: str
    suffix: str = ""
    plan_text: str | None = field(default=None, compare=False, repr=False)  # inside <Plan>, as written
    glue: tuple[str, str, str] = ("\n", "\n", "\n")  # </Plan>|<Execution>, <Execution>|<Step>, </Execution>|<Conclusion>

    def step(self, step_id) -> StepBlock:
        for block in self.steps:
            if block.id == str(step_id):
                return block
        raise KeyError(f"step {step_id!r} was not executed; executed steps are {[b.id for b in self.steps]}")

    @property
    def step_texts(self) -> dict[str, str]:
        """Step id -> body text."""
        return {b.id: b.body for b in self.steps}

    def _plan_section(self) -> str:
        if self.plan_text is not None:
            steps, problems = parse_outline(self.plan_text)
            if not problems and Plan(steps) == self.plan:
                return self.plan_text
        return "\n" + self.plan.to_outline() + "\n"

    def segments(self) -> list[tuple[str, str]]:
        """``(branch, text)`` pieces in logical order: ``prefix`` (through the
        ``<Execution>`` line), each executed step, ``conclusion``; they join to :meth:`to_text`."""
        head = (f"{self.prefix}<Plan>{self._plan_section()}</Plan>{self.glue[0]}"
                f"<Execution>{self.glue[1]}")
        tail = f"</Execution>{self.glue[2]}<Conclusion>{self.conclusion}</Conclusion>{self.suffix}"
        return [("prefix", head)] + [(b.id, b.to_text()) for b in self.steps] + [("conclusion", tail)]

    def to_text(self) -> str:
        """The trace as text; byte-identical to the parsed input for well-formed input."""
        return "".join(text for _, text in self.segments())

    def with_plan(self, plan: Plan) -> "Trace":
        return replace(self, plan=plan)

    def __str__(self) -> str:
        return self.to_text()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.problems: list[Problem] = []

    def add(self, kind, message, step=None, offset=None):
        self.problems.append(problem(kind, message, step, offset, self.text))

    def find(self, tag: str, start: int, fatal_msg: str | None = None, opened_at: int | None = None) -> int:
        i = self.text.find(tag, start)
        if i < 0 and fatal_msg:
            kind = "unclosed-block" if opened_at is not None else "missing-section"
            self.add(kind, fatal_msg, offset=start if opened_at is None else opened_at)
            raise PlanError(self.problems)
        return i

    def parse(self) -> Trace:
        t = self.text
        p0 = self.find("<Plan>", 0, "no <Plan> section")
        p1 = self.find("</Plan>", p0, "<Plan> is never closed", opened_at=p0)
        plan_text = t[p0 + len("<Plan>"): p1]
        outline, problems = parse_outline(plan_text, p0 + len("<Plan>"), source=t)
        self.problems += problems
        plan = Plan(outline, source=t)
        e0 = self.find("<Execution>", p1, "no <Execution> section after </Plan>")
        e1 = self.find("</Execution>", e0, "<Execution> is never closed", opened_at=e0)
        blocks, glue1 = self.blocks(e0 + len("<Execution>"), e1)
        c0 = self.find("<Conclusion>", e1, "no <Conclusion> section after </Execution>")
        c1 = self.find("</Conclusion>", c0, "<Conclusion> is never closed", opened_at=c0)
        if not outline and not problems:
            self.add("empty-plan", "the plan has no steps", offset=p0)
        elif outline:
            self.problems += [p for p in plan.problems() if p.kind != "empty-plan"]
        self.check_execution(plan, blocks)
        if self.problems:
            raise PlanError(self.problems)
        return Trace(
            prefix=t[:p0], plan=plan, steps=tuple(blocks),
            conclusion=t[c0 + len("<Conclusion>"): c1], suffix=t[c1 + len("</Conclusion>"):],
            plan_text=plan_text,
            glue=(t[p1 + len("</Plan>"): e0], glue1, t[e1 + len("</Execution>"): c0]),
        )

    def blocks(self, start: int, end: int) -> tuple[list[StepBlock], str]:
        """Step blocks between ``start`` and ``end``, and the text before the first one."""
        t = self.text
        tags = [(m.start(), m.group()) for m in re.finditer(r"</?Step>", t[start:end])]
        blocks: list[StepBlock] = []
        opened: int | None = None
        spans: list[tuple[int, int]] = []
        for rel, tag in tags:
            at = start + rel
            if tag == "<Step>":
                if opened is not None:
                    self.add("unclosed-block", "<Step> is not closed before the next <Step>",
                             self.step_at(opened), opened)
                opened = at
            elif opened is None:
                self.add("unmatched-close", "</Step> without an opening <Step>", offset=at)
            else:
                spans.append((opened, at))
                opened = None
        if opened is not None:
            self.add("unclosed-block", "<Step> is never closed before </Execution>", self.step_at(opened), opened)
        glue1 = t[start: spans[0][0]] if spans else t[start:end]
        for i, (s, e) in enumerate(spans):
            inner = t[s + len("<Step>"): e]
            header, nl, body = inner.partition("\n")
            sep_end = spans[i + 1][0] if i + 1 < len(spans) else end
            m = STEP_HEADER.match(header)
            if not nl or not m:
                self.add("bad-header", f"step block does not start with 'Transient Step N: ...' "
                         f"on its own line: {header.strip()[:60]!r}", offset=s)
                continue
            blocks.append(StepBlock(m.group("id"), m.group("desc"), body,
                                    separator=t[e + len("</Step>"): sep_end], header=header, offset=s))
        return blocks, glue1

    def step_at(self, offset: int) -> str | None:
        """The step id in the header of the ``<Step>`` at ``offset``, if it has one."""
        m = STEP_HEADER.match(self.text[offset + len("<Step>"):].split("\n", 1)[0])
        return m.group("id") if m else None

    def check_execution(self, plan: Plan, blocks: list[StepBlock]):
        planned = {s.id: s for s in plan.steps}
        seen: set[str] = set()
        for b in blocks:
            if b.id in seen:
                self.add("duplicate-execution", f"step {b.id} is executed twice", b.id, b.offset)
                continue
            seen.add(b.id)
            if b.id not in planned:
                self.add("not-planned", f"step {b.id} is executed but not in the plan", b.id, b.offset)
            elif not _same_text(b.description, planned[b.id].description):
                self.add("header-mismatch", f"step {b.id} header {b.description!r} differs from the "
                         f"plan's {planned[b.id].description!r}", b.id, b.offset)
        for s in plan.steps:
            if s.id not in seen:
                self.add("not-executed", f"step {s.id} is planned but never executed", s.id, s.offset)
        executed = [b.id for b in blocks if b.id in planned]
        in_plan_order = [sid for sid in dict.fromkeys(plan.ids) if sid in seen]
        if len(set(executed)) == len(executed) and executed != in_plan_order:
            first = next(i for i, (a, b) in enumerate(zip(executed, in_plan_order)) if a != b)
            block = next(b for b in blocks if b.id == executed[first])
            self.add("execution-order", f"steps are executed in order {executed}, the plan orders "
                     f"them {in_plan_order}", block.id, block.offset)


def parse_trace(text: str) -> Trace:
    """Parse a MedVerse trace (``<Think>``, ``<Plan>`` of ``<Outline>`` lines, ``<Execution>``
    of ``<Step>`` blocks, ``<Conclusion>``). Raises :class:`PlanError` listing every problem."""
    if not isinstance(text, str):
        raise TypeError(f"parse_trace expects a str, got {type(text).__name__}")
    return _Parser(text).parse()


def make_trace(plan: Plan, step_texts: dict[str, str], conclusion: str, prefix: str = "<Think>\n",
               suffix: str = "\n</Think>") -> Trace:
    """A canonical trace from a plan, step bodies and a conclusion (no parsing involved)."""
    missing = [s for s in plan.ids if s not in step_texts]
    extra = [s for s in step_texts if s not in plan]
    if missing or extra:
        raise ValueError(f"step_texts must have one body per planned step: missing {missing}, extra {extra}")
    blocks = tuple(StepBlock(s.id, s.description, step_texts[s.id]) for s in plan.steps)
    return Trace(prefix, plan, blocks, conclusion, suffix)


__all__ = ["Trace", "StepBlock", "parse_trace", "make_trace", "Step"]
