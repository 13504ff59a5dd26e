"""``medverse-lab inspect``: a trace's plan, its Petri net firing, and every mode's
mask and positions, drawn in the terminal."""

from __future__ import annotations

from pathlib import Path

from ..modes import Mode

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stemi.txt"


def add_arguments(parser) -> None:
    parser.add_argument("trace", nargs="?", default=str(EXAMPLE),
                        help="a MedVerse trace file (default: the shipped STEMI example)")
    parser.add_argument("--tokenizer", help="a Hugging Face tokenizer folder with the MedVerse tags "
                        "(default: the teaching model's, else one trained on the trace itself)")
    parser.add_argument("--tokens-per-step", type=int, default=2,
                        help="segment length of the token-level miniature (default 2)")


def default_tokenizer(text: str):
    """The embedded teaching model's tokenizer when shipped, else a BPE trained on ``text``."""
    from ..tokens import train_tokenizer

    try:
        from ..engine import default_model_path

        path = default_model_path()
        if path is not None:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path), "the teaching model's tokenizer"
    except ImportError:
        pass
    return train_tokenizer([text] * 4, vocab_size=512), "a BPE tokenizer trained on this trace"


def segment_picture(layout, mode: Mode) -> list[str]:
    """One character per (query segment, key segment): ■ all visible, ◣ causal (own
    segment), ◩ partly visible, · hidden; then each segment's positions."""
    from ..topology import attention_mask, position_ids

    layout = layout.for_mode(mode)  # request: each segment repeats the blocks it reads first
    mask, pos = attention_mask(layout, mode), position_ids(layout, mode)
    names = ["P" if s.branch == "prefix" else "C" if s.branch == "conclusion" else s.branch
             for s in layout.segments]
    rows = []
    for i, q in enumerate(layout.segments):
        cells = []
        for j, k in enumerate(layout.segments):
            if not len(q) or not len(k) or j > i:
                cells.append(" ")
                continue
            block = mask[q.start:q.stop, k.start:k.stop]
            if i == j:
                cells.append("◣" if bool(block.tril().eq(block).all()) and bool(block.diagonal().all()) else "◩")
            else:
                cells.append("■" if bool(block.all()) else "·" if not bool(block.any()) else "◩")
        span = f"{int(pos[q.start])}..{int(pos[q.stop - 1])}" if len(q) else "-"
        repeats = layout.repeats.get(q.branch)
        note = f"   (repeats {', '.join(repeats)} first)" if repeats else ""
        rows.append(f"  {names[i]:>2} {' '.join(cells)}   positions {span}{note}")
    rows.insert(0, "     " + " ".join(names))
    return rows


def miniature(layout, modes) -> list[str]:
    """Token-level masks of a small layout, the modes side by side, positions below
    (``request`` reads its own, longer layout: it is drawn apart by :func:`request_miniature`)."""
    from ..topology import attention_mask, position_ids

    modes = [m for m in modes if m != "request"]
    masks = [attention_mask(layout, m) for m in modes]
    width = layout.T
    lines = ["  ".join(m.ljust(width) for m in modes)]
    for q in range(layout.T):
        lines.append("  ".join("".join("█" if mk[q, k] else "·" for k in range(width)) for mk in masks))
    pos_rows = [[int(p) for p in position_ids(layout, m)] for m in modes]
    lines.append("positions:")
    for m, row in zip(modes, pos_rows):
        lines.append(f"  {m:<13} {' '.join(str(p) for p in row)}")
    return lines


def request_miniature(layout) -> list[str]:
    """The request layout of a small layout, token by token: the segment of each token,
    the step whose block it repeats (blank for its own tokens), the mask, the positions."""
    from ..topology import attention_mask, position_ids

    req = layout.for_requests()
    mask, pos = attention_mask(req, "request"), position_ids(req, "request")
    short = lambda b: "P" if b == "prefix" else "C" if b == "conclusion" else b[-1]
    lines = [f"request ({req.T} tokens: each segment repeats the blocks it reads first):",
             "segment  " + "".join(short(req.branch_of(i)) for i in range(req.T)),
             "repeats  " + "".join(short(r) if (r := req.repeat_of(i)) else " " for i in range(req.T))]
    lines += ["         " + "".join("█" if mask[q, k] else "·" for k in range(req.T)) for q in range(req.T)]
    lines.append(f"positions: {' '.join(str(int(p)) for p in pos)}")
    return lines


def main(args) -> int:
    from ..format import parse_trace
    from ..layout import Layout
    from ..modes import MODES

    text = Path(args.trace).read_text(encoding="utf-8")
    trace = parse_trace(text)
    plan = trace.plan
    out = [f"Plan ({len(plan)} steps, width {plan.width}, chunks {plan.chunks()}):"]
    out += [f"  {s.id}. {s.description}   <- {list(s.deps) or 'source'}" for s in plan.steps]

    out += ["", "Petri net (every enabled transition fires at once):"]
    net = plan.petri_net()
    wave = 0
    while frontier := net.frontier():
        wave += 1
        for sid in frontier:
            net.fire(sid)
        out.append(f"  wave {wave}: fire {frontier} -> marked {[p for p, n in net.marking.items() if n]}")
    out.append(f"  complete: {net.is_complete()}")

    if args.tokenizer:
        from transformers import AutoTokenizer

        tok, tok_name = AutoTokenizer.from_pretrained(args.tokenizer), args.tokenizer
    else:
        tok, tok_name = default_tokenizer(text)
    layout = Layout.from_trace(trace, tok)
    out += ["", f"Layout with {tok_name}: {layout}", "",
            "Mask by segment (P prefix, C conclusion; ■ sees all, ◣ own past, ◩ partly, · nothing):"]
    for mode in MODES:
        out.append(f" {mode}")
        out += segment_picture(layout, mode)

    mini = Layout.from_plan(plan, prefix_len=2, step_lens=args.tokens_per_step, conclusion_len=2)
    out += ["", f"Token-level miniature ({args.tokens_per_step} tokens per step, prefix 2, conclusion 2; █ may attend):"]
    out += miniature(mini, MODES)
    out += [""] + request_miniature(mini)
    print("\n".join(out))
    return 0
