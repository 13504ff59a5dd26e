"""MaskInspector: a run's (or a layout's) attention mask and position ids, every mode.

The T x T mask travels bit-packed (:func:`~._shared.pack_bits`), positions as int32
bytes; the view draws them on a canvas. Clicking a cell asks Python why token q can or
cannot see token k under the mode: :func:`medverse_lab.explanation.explain` answers from the
same visibility matrix :mod:`medverse_lab.topology` builds the masks from.
"""

from __future__ import annotations


import numpy as np
import traitlets as t

from ..explanation import explain
from ..layout import Layout
from ..modes import MODES, Mode, check_mode
from ..topology import attention_mask, position_ids
from ._shared import STATIC, LiveView, int32_bytes, pack_bits, popcount
from .picture import mask_picture


DESCRIPTIONS = {
    "dag": "a step sees the prefix, its ancestors and its own past",
    "layered": "a step sees the prefix, every earlier chunk and its own past (the public training rule)",
    "speculative": "a step sees the prefix and its own past (what the public engine runs)",
    "sequential": "plain causal: every earlier token",
    "request": "each step is its own request: prefix, its ancestors' blocks repeated (lighter bands), then its own "
               "tokens, plain causal from the prefix end (what a stock serving engine decodes); the conclusion "
               "repeats every block",
    "medverse-sft": "the public training collator, bit for bit (siblings read each other through separators)",
}


class MaskInspector(LiveView):
    """The attention mask and position ids of a run or a layout, under every mode.

    >>> ml.MaskInspector(run)                           # the mode the run was decoded in
    >>> ml.MaskInspector(layout, mode="layered", diff="medverse-sft")

    ``token_layout`` is the :class:`~medverse_lab.Layout` shown (``layout`` is ipywidgets'
    CSS layout). Hover a cell to see the two tokens; click it to read why q can or cannot see k
    (:meth:`explain`). ``diff`` marks the cells where two modes differ.

    Mode ``request`` shows the request layout (:meth:`Layout.for_requests`): more tokens,
    each step's segment starting with its ancestors' blocks repeated, drawn as lighter
    bands in the repeated step's colour. It reads another layout than the other modes,
    so it has no cell-by-cell diff with them.
    """

    _esm = STATIC / "mask_inspector.js"

    modes = t.List(list(MODES)).tag(sync=True)
    descriptions = t.Dict(DESCRIPTIONS).tag(sync=True)
    #: the mode shown, and the mode it is diffed against ("" for none)
    mode = t.Unicode("dag").tag(sync=True)
    diff_mode = t.Unicode("").tag(sync=True)
    #: the mode the run was decoded in ("" for a bare layout)
    run_mode = t.Unicode("").tag(sync=True)
    T = t.Int(0).tag(sync=True)
    #: ``attention_mask(layout, mode)`` bit-packed row-major (first cell in the high bit)
    mask = t.Bytes(b"").tag(sync=True)
    #: ``position_ids(layout, mode)`` as little-endian int32
    positions = t.Bytes(b"").tag(sync=True)
    #: cells where ``diff_mode`` differs from ``mode`` (bit-packed), and its positions
    diff = t.Bytes(b"").tag(sync=True)
    diff_positions = t.Bytes(b"").tag(sync=True)
    diff_count = t.Int(0).tag(sync=True)
    #: ``{"branch", "start", "stop", "repeats"}`` per segment, in logical order; ``repeats``
    #: lists ``{"step", "start", "stop"}`` of the blocks it repeats first (mode ``request``)
    segments = t.List().tag(sync=True)
    #: text of every token in logical order ([] when unknown)
    tokens = t.List().tag(sync=True)
    #: the answer to the last click (:func:`explain`, plus ``other`` for the diff mode)
    explanation = t.Dict().tag(sync=True)
    notice = t.Unicode("").tag(sync=True)
    #: the branch highlighted (a step id, "prefix", "conclusion" or ""); a click on a band sets it
    selected = t.Unicode("").tag(sync=True)

    def __init__(self, source, mode: Mode | None = None, diff: Mode | None = None, tokenizer=None, **kwargs):
        super().__init__(**kwargs)
        self._observing = self._settling = False
        self.show(source, mode=mode, diff=diff, tokenizer=tokenizer)
        self.on_msg(self._on_frontend_msg)

    def show(self, source, mode: Mode | None = None, diff: Mode | None = None, tokenizer=None) -> None:
        """Show another run or layout in this view (mode: the given one, else the run's,
        else the current; the diff mode is kept unless given)."""
        if isinstance(source, Layout):
            layout, run, run_mode = source, None, ""
        elif hasattr(source, "layout"):
            layout, run, run_mode = source.layout, source, getattr(source, "mode", "") or ""
        else:
            raise TypeError(f"MaskInspector takes a Run or a Layout, not {type(source).__name__}")
        mode = check_mode(mode or run_mode or (self.mode if self._observing else "dag"))
        diff = check_mode(diff) if diff else (self.diff_mode if self._observing else "")
        if self._observing:
            self.unobserve(self._on_modes, names=["mode", "diff_mode"])
        self.base_layout, self.run, self._packed, self._layouts = layout.base, run, {}, {}
        self._base_texts = self._token_texts(layout, tokenizer)
        with self.hold_sync():
            self.run_mode = run_mode
            self.mode, self.diff_mode = mode, diff
            backend = getattr(run, "backend", "local")
            self.notice = "" if backend == "local" else (
                f"this run was decoded on the {backend} backend: the mask and positions shown are the rule its "
                "requests followed (each request plain causal over the request layout), not rows read from a "
                "cache this process holds")
            self._refresh()
        self.observe(self._on_modes, names=["mode", "diff_mode"])
        self._observing = True

    def picture(self) -> str:
        return mask_picture(self.T, self.mask, self.segments, self.mode, self.notice)

    # ----- data --------------------------------------------------------------------------
    def _token_texts(self, layout: Layout, tokenizer) -> list[str]:
        """Text of every token of the plain layout (``layout.base``), in logical order."""
        if self.run is not None and hasattr(self.run, "tokens"):
            df = self.run.tokens
            if "repeat_of" in df.columns:  # a request run: its own tokens, in order, are the trace's
                df = df.filter(df["repeat_of"].is_null())
            return [str(s) for s in df["text"].to_list()]
        ids = layout.base.token_ids
        if ids is None or tokenizer is None:
            return []
        return [tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]

    def layout_for(self, mode: Mode) -> Layout:
        """The layout ``mode`` reads: the request layout for ``request``, else the plain one
        (each built once per source shown)."""
        key = mode == "request"
        if key not in self._layouts:
            self._layouts[key] = self.base_layout.for_mode(mode)
        return self._layouts[key]

    @property
    def token_layout(self) -> Layout:
        """The layout shown: the request layout in mode ``request``, else the plain one."""
        return self.layout_for(self.mode)

    def packed_mask(self, mode: Mode) -> bytes:
        """``attention_mask(layout, mode)`` bit-packed, over the layout ``mode`` reads (cached per mode)."""
        if mode not in self._packed:
            self._packed[mode] = pack_bits(attention_mask(self.layout_for(mode), check_mode(mode)))
        return self._packed[mode]

    def _refresh(self) -> None:
        layout = self.token_layout
        T = layout.T
        notice = ""
        if self.diff_mode and (self.diff_mode == "request") != (self.mode == "request"):
            notice = (f"{self.mode} and {self.diff_mode} read different layouts (request repeats earlier steps' "
                      "blocks), so they have no cell-by-cell diff: the diff is cleared")
            self._settling = True
            try:
                self.diff_mode = ""
            finally:
                self._settling = False
        a = self.packed_mask(self.mode)
        with self.hold_sync():
            self.T = T
            self.segments = [{"branch": s.branch, "start": s.start, "stop": s.stop,
                              "repeats": [{"step": r, "start": x, "stop": z} for r, x, z in layout.repeated_spans(s.branch)]}
                             for s in layout.segments]
            if notice:
                self.notice = notice
            texts = self._base_texts
            self.tokens = [texts[i] for i in layout.base_index()] if texts else []
            if self.selected not in layout.branches:
                self.selected = ""
            self.mask = a
            self.positions = int32_bytes(position_ids(layout, self.mode))
            if self.diff_mode:
                b = self.packed_mask(self.diff_mode)
                self.diff = np.bitwise_xor(np.frombuffer(a, dtype=np.uint8), np.frombuffer(b, dtype=np.uint8)).tobytes()
                self.diff_count = popcount(self.diff)
                self.diff_positions = int32_bytes(position_ids(layout, self.diff_mode))
            else:
                self.diff, self.diff_positions, self.diff_count = b"", b"", 0
            self.explanation = {}

    def _on_modes(self, change) -> None:
        if self._settling:  # _refresh itself cleared an impossible diff
            return
        name, value = change["name"], change["new"]
        try:
            if value:
                check_mode(value)
        except ValueError as exc:  # a bad value from the view: put the old one back
            self.set_trait(name, change["old"])
            self.notice = str(exc)
            return
        self.notice = ""
        self._refresh()

    # ----- questions -----------------------------------------------------------------------
    def allowed(self, q: int, k: int, mode: Mode | None = None) -> bool:
        """Whether token q may attend to token k under ``mode`` (default: the shown mode)."""
        mode = mode or self.mode
        bit = q * self.layout_for(mode).T + k
        return bool(self.packed_mask(mode)[bit >> 3] & (128 >> (bit & 7)))

    def explain(self, q: int, k: int, mode: Mode | None = None) -> dict:
        """Why q can or cannot see k (see :func:`explain`); shows it in the view too.
        With a diff mode set, ``other`` holds the answer under the diff mode."""
        q, k = int(q), int(k)
        layout = self.layout_for(mode or self.mode)
        res = explain(layout, q, k, mode or self.mode)
        pos = position_ids(layout, res["mode"])
        res["q_position"], res["k_position"] = int(pos[q]), int(pos[k])
        if mode is None and self.diff_mode:  # the diff mode reads the same layout (a request diff is cleared)
            res["other"] = explain(layout, q, k, self.diff_mode)
        if self._base_texts:
            index = layout.base_index()  # the asked mode's layout may not be the one shown
            res["q_text"], res["k_text"] = self._base_texts[index[q]], self._base_texts[index[k]]
        self.explanation = res
        return res

    def _on_frontend_msg(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("type") == "select":
            branch = str(content.get("branch", ""))
            self.selected = branch if branch in self.token_layout.branches else ""
        if isinstance(content, dict) and content.get("type") == "explain":
            try:
                self.explain(content["q"], content["k"])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                self.notice = str(exc)
