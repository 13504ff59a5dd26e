"""Executors that compute a run's tokens as requests to a stock serving engine.

A stock engine (vLLM, SGLang, any OpenAI-compatible completions server) decodes linear
sequences: no per-request attention mask, no chosen position ids. A MedVerse branch is one
such sequence exactly when every token it sees sits at positions ``0..n-1`` in order,
which holds in modes ``request`` (each step's request repeats its ancestors' blocks) and
``sequential``. Here each branch of a run becomes one request the moment the decoder needs
its first sampled token: the prompt is every token the branch sees (its context, then the
chunk it feeds), as token ids; the request stops where the local engine stops the branch
(its close tag, a stray tag, or its token limit plus one). The decoder takes the tokens one
per step, exactly as from the local :class:`~medverse_lab.engine.decode.Batch`, so forced
closes, fallbacks and events are the same code.

:class:`RequestExecutor` holds that bookkeeping; :mod:`.vllm_backend` and :mod:`.remote`
say how a request is started, pumped and aborted.
"""

from __future__ import annotations

import time
import zlib
from collections import deque
from dataclasses import dataclass

#: the modes a stock engine decodes exactly (one linear request per branch)
EXACT_MODES = ("request", "sequential")


def refuse_mode(mode: str, backend: str) -> None:
    """A ``ValueError`` for a mode a stock engine cannot decode, naming ``request``."""
    if mode not in EXACT_MODES:
        raise ValueError(
            f"mode {mode!r} cannot be decoded on the {backend} backend: its steps see the prefix and only some "
            f"earlier steps at overlapping positions, which needs a per-request attention mask and position ids, "
            f"and no stock serving engine takes those. Use mode='request' (each step's request repeats its "
            f"ancestors' blocks: exact on any engine, as parallel as dag) or 'sequential'; decode {mode!r} with "
            f"the local backend (ml.Engine.load(path)).")


@dataclass(frozen=True)
class BranchRequest:
    """What a stock engine is asked for one branch: continue ``prompt`` (token ids) by at
    most ``max_tokens`` tokens, stopping at any of ``stop_token_ids`` (kept in the output),
    never at EOS by itself."""

    request_id: str
    prompt: list[int]
    max_tokens: int
    stop_token_ids: list[int]
    temperature: float
    top_p: float
    seed: int


def context(d, b) -> list[int]:
    """The token ids branch ``b`` of decoder ``d`` sees before its next chunk, in position
    order: its request's prompt so far. Raises when they are not at positions ``0..n-1``
    (a mode no linear request decodes)."""
    vis = d.vis[b.seg].tolist()
    s = d.slots
    rows = sorted((p, t) for p, t, g in zip(s.position, s.token, d.slot_seg) if vis[g])
    if [p for p, _ in rows] != list(range(len(rows))) or b.pos != len(rows):
        raise ValueError(f"branch {b.name!r} in mode {d.mode!r} is not one linear sequence (its context has "
                         "positions that overlap or skip); a stock engine cannot decode it")
    return [t for _, t in rows]


class RequestExecutor:
    """The executor protocol of :mod:`.decode` over branch requests. Subclasses implement
    :meth:`_start`, :meth:`_pump` (block until more tokens arrive; return
    ``{request_id: [token ids]}``) and :meth:`_abort`."""

    name = "requests"

    def __init__(self, engine):
        self.e = engine
        self.members: list = []
        self.branch_of: dict[str, tuple] = {}  # request id -> (decoder, branch)
        self.request_of: dict[int, str] = {}   # id(branch) -> request id
        self.tokens: dict[str, deque] = {}     # request id -> tokens computed, not yet taken
        self.finished: set[str] = set()        # request ids the engine finished
        self._n = 0

    def __len__(self) -> int:
        return len(self.members)

    def join(self, d) -> None:
        if not d.calls:  # a fresh run's clock starts when it joins, not while it waits
            d.t0 = time.perf_counter()
        self.members.append(d)

    def remove(self, d, keep_cache: bool = True):
        """Take ``d`` out, aborting its unfinished requests; there is no local cache to return."""
        self.members.remove(d)
        for rid, (owner, _) in list(self.branch_of.items()):
            if owner is d:
                self._forget(rid)
        return None

    def step(self) -> list:
        """Start a request for each branch that now needs its first token, wait until some
        waiting branch has a token, hand every waiting branch with one its next token."""
        waiting = []
        for d in self.members:
            for b, chunk in d.chunks():
                if b.samples_after(chunk):
                    rid = self.request_of.get(id(b))
                    if rid is None:
                        rid = self._open(d, b, [*context(d, b), *(t for t, _ in chunk)])
                    waiting.append((d, b, rid))
        while waiting and not any(self.tokens[rid] for _, _, rid in waiting):
            for rid, toks in self._pump().items():
                if rid in self.tokens:
                    self.tokens[rid].extend(toks)
            for _, b, rid in waiting:
                if not self.tokens[rid] and rid in self.finished:
                    raise RuntimeError(f"the {self.name} backend ended the request for branch {b.name!r} "
                                       "before the token the decoder waits for")
        t = time.perf_counter()
        for d in self.members:
            d.absorb({b: self.tokens[rid].popleft() for dd, b, rid in waiting if dd is d and self.tokens[rid]}, t)
        for rid, (d, b) in list(self.branch_of.items()):
            if b.done or b.closing:
                self._forget(rid)
        return [d for d in self.members if d.finished]

    # ----- bookkeeping ---------------------------------------------------------------------------
    def _open(self, d, b, prompt: list[int]) -> str:
        self._n += 1
        rid = f"run{d.id}-{b.name}-{self._n}"
        s = d.settings
        stop = sorted({b.close_id, *b.stray})
        seed = zlib.crc32(f"{s.seed}:{d.generation}:{b.name}".encode())
        self.branch_of[rid], self.request_of[id(b)], self.tokens[rid] = (d, b), rid, deque()
        self._start(BranchRequest(rid, prompt, b.limit + 1, stop, s.temperature, s.top_p, seed))
        return rid

    def _forget(self, rid: str) -> None:
        _, b = self.branch_of.pop(rid)
        self.request_of.pop(id(b), None)
        self.tokens.pop(rid, None)
        if rid in self.finished:
            self.finished.discard(rid)
        else:
            self._abort(rid)

    # ----- what a backend implements ---------------------------------------------------------------
    def _start(self, request: BranchRequest) -> None:
        raise NotImplementedError

    def _pump(self) -> dict[str, list[int]]:
        raise NotImplementedError

    def _abort(self, request_id: str) -> None:
        raise NotImplementedError
