"""Hypothesis strategies for plans, traces and layouts."""

from __future__ import annotations

from hypothesis import strategies as st

import medverse_lab as ml

WORDS = ["chest pain", "ST elevation", "troponin", "fever", "cough", "rash", "anemia", "sepsis",
         "aspirin", "PCI", "x-ray", "CT", "MRI", "biopsy", "HbA1c 9%", "K+ 6.1", "α-thalassemia", "β-blocker"]


@st.composite
def plans(draw, min_steps=1, max_steps=10) -> ml.Plan:
    """A valid plan: a random DAG in topological order."""
    n = draw(st.integers(min_steps, max_steps))
    steps = []
    for i in range(1, n + 1):
        deps = sorted(draw(st.sets(st.integers(1, i - 1), max_size=min(3, i - 1))) if i > 1 else [])
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
        desc = " + ".join(words) + " -> " + draw(st.sampled_from(WORDS))
        steps.append(ml.Step(str(i), desc, [str(d) for d in deps]))
    return ml.Plan(steps)


body_text = st.lists(
    st.text(alphabet=st.characters(blacklist_characters="<>\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                                   blacklist_categories=("Cs",)), max_size=40),
    min_size=1, max_size=3,
).map(lambda lines: "\n".join(lines) + "\n")


@st.composite
def trace_texts(draw) -> tuple[str, ml.Plan]:
    """A well-formed trace, written with the spacing and tag variations models produce."""
    plan = draw(plans())
    tagged = draw(st.booleans())
    keyword = draw(st.sampled_from(["Transient Step", "transient step", "Transient  Step", "TRANSIENT STEP"]))
    dependency = draw(st.sampled_from(["Dependency", "Dependency", "Dependencies"]))
    lines = []
    for s in plan.steps:
        line = f"{keyword} {s.id}: {s.description}; {dependency}: [{', '.join(s.deps)}]"
        lines.append(f"<Outline> {line} </Outline>" if tagged else line)
    sep = draw(st.sampled_from(["\n", "\n\n", " \n"]))
    blocks = "".join(
        f"<Step> {keyword} {s.id}: {s.description}\n{draw(body_text)}</Step>{sep}" for s in plan.steps)
    prefix = draw(st.sampled_from(["<Think>\n", "", "<|im_start|>assistant\n<Think>\n"]))
    suffix = draw(st.sampled_from(["\n</Think>", "", "\n</Think>\nAnswer: C"]))
    text = (f"{prefix}<Plan>\n" + "\n".join(lines) + "\n</Plan>\n<Execution>\n" + blocks +
            f"</Execution>\n<Conclusion>\n{draw(body_text)}</Conclusion>{suffix}")
    return text, plan


@st.composite
def layouts(draw, max_steps=8, max_len=6) -> ml.Layout:
    plan = draw(plans(max_steps=max_steps))
    step_lens = {sid: draw(st.integers(1, max_len)) for sid in plan.ids}
    seps = {sid: draw(st.integers(0, step_lens[sid] - 1)) for sid in plan.ids}
    return ml.Layout.from_plan(plan, prefix_len=draw(st.integers(0, 5)), step_lens=step_lens,
                               conclusion_len=draw(st.integers(0, 4)), separator_lens=seps)
