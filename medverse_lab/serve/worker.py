"""The server's decoder: one thread that runs every request in one continuous batch.

Requests arrive from the event loop as :class:`Ticket` objects holding a checked
:class:`~medverse_lab.engine.decode.Decoder`. They wait in a bounded queue (``max_queue``;
over it :meth:`Worker.submit` refuses with 503) and join the engine's executor as room frees
up, through the same loop as ``Engine.run_many``
(:func:`~medverse_lab.engine.decode.continuous`). The worker hands token and lifecycle
events (once per step) and finished runs back to the event loop, thread-safely.

A cancelled ticket (its client went away, a stop string was hit) leaves the batch at the
next step, which during a chunked prefill is the next chunk; a ticket with a token cap
(``max_tokens``) ends when it has decoded that many. :meth:`Worker.drain` lets the runs in
flight finish until a deadline, then ends the rest with an error.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field

from ..engine.decode import Decoder, continuous
from ..engine.run import Run, TokenEvent
from .protocol import Overloaded

#: prompt tokens a run feeds per forward call while other runs decode (chunked prefill; a
#: longer prompt is fed in a cache of its own and gets at most a third of the time meanwhile)
PREFILL_CHUNK = 128
#: prompt tokens per forward call when nothing else decodes (small too: a request that
#: arrives waits for the call in progress)
PREFILL_CHUNK_IDLE = 128


@dataclass(eq=False)
class Ticket:
    """One request in the worker. ``updates`` (on event loop ``loop``) receives
    ``("events", [...])`` (its token and lifecycle events of a step, in order), then one of
    ``("done", Run)``, ``("end", "length")`` (its token cap was reached) or
    ``("error", Exception)``. ``admitted`` is set when it joins the batch."""

    decoder: Decoder
    loop: asyncio.AbstractEventLoop
    cap: int | None = None          # the most reply tokens decoded (max_tokens)
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)
    admitted: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False
    ended: str | None = None        # "length" once the cap is reached
    count: int = 0                  # reply tokens decoded so far
    outgoing: list = field(default_factory=list)

    def post(self, kind: str, payload) -> None:
        try:
            self.loop.call_soon_threadsafe(self.updates.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def _admit(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.admitted.set)
        except RuntimeError:
            pass


class _Stop(Exception):
    """The worker was told to stop."""


#: forward calls between two :func:`trim_malloc` calls while the server is busy
TRIM_EVERY = 256


def trim_malloc() -> None:
    """Hand the free pages of glibc's heaps back to the system (glibc only; a few ms).

    Every decode step frees key/value tensors of a size not seen before (the cache grows
    by a few slots, runs come and go), and glibc keeps what is freed in its heaps as
    resident fragments, so the server's RSS crept up with the requests it served. The
    worker trims when it goes idle and every :data:`TRIM_EVERY` calls while busy.
    (Forcing such blocks into mappings of their own instead, with ``M_MMAP_THRESHOLD``,
    kept RSS down but spent the CPU on page faults: 100% system time.)
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb() -> float:
    """This process's resident memory in MiB (Linux; 0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


class Worker:
    """Continuous batching for a server: at most ``max_batch`` requests decode together and
    at most ``max_queue`` wait for room.

    ``thread=True`` decodes in a thread of its own; ``thread=False`` leaves it to the
    caller to call :meth:`run` (``medverse-lab serve`` decodes on the main thread: on CPU,
    torch's thread pool ran this loop about 1.5x faster there than from a second thread).
    ``prefill_chunk`` is how many prompt tokens a run feeds per forward call while others
    decode (``None``: the whole prompt at once).
    """

    def __init__(self, engine, max_batch: int = 8, thread: bool = True, *, max_queue: int = 64,
                 prefill_chunk: int | None = PREFILL_CHUNK, prefill_chunk_idle: int | None = PREFILL_CHUNK_IDLE):
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.prefill_chunk, self.prefill_chunk_idle = prefill_chunk, prefill_chunk_idle
        self.waiting: collections.deque[Ticket] = collections.deque()
        self.wake = threading.Condition()
        self.active: dict[int, Ticket] = {}
        self.stats = {"requests": 0, "finished": 0, "cancelled": 0, "refused": 0, "timed_out": 0,
                      "forward_calls": 0, "max_batch_seen": 0}
        self.deadline: float | None = None  # set by drain(): stop admitting, end what runs at this time
        self.stopped = threading.Event()
        self.prefilling = 0
        self._alive = lambda: True
        self._trimmed = True  # whether memory was handed back since the batch last ran
        self._thread = None
        if thread:
            self._thread = threading.Thread(target=self.run, name="medverse-decoder", daemon=True)
            self._thread.start()

    # ----- the event loop's side -------------------------------------------------------------
    def submit(self, ticket: Ticket) -> Ticket:
        """Queue ``ticket``; :class:`Overloaded` (503) when the queue is full or the server drains."""
        with self.wake:
            if self.deadline is not None or self.stopped.is_set():
                self.stats["refused"] += 1
                raise Overloaded("the server is shutting down", retry_after=5)
            if len(self.waiting) >= self.max_queue:
                self.stats["refused"] += 1
                raise Overloaded(f"the queue is full ({self.max_queue} requests waiting, --max-queue); retry later",
                                 retry_after=max(1, len(self.waiting) // max(1, self.max_batch)))
            self.stats["requests"] += 1
            self.waiting.append(ticket)
            self.wake.notify()
        return ticket

    def withdraw(self, ticket: Ticket) -> bool:
        """Take a ticket out of the queue (it waited too long); False if it was admitted."""
        with self.wake:
            try:
                self.waiting.remove(ticket)
            except ValueError:
                return False
            self.stats["timed_out"] += 1
            return True

    def cancel(self, ticket: Ticket) -> None:
        """The client is gone (or has what it wants): drop the request, now or at the next step."""
        ticket.cancelled = True
        with self.wake:
            if ticket in self.waiting:
                self.waiting.remove(ticket)
                self.stats["cancelled"] += 1

    def drain(self, timeout: float) -> None:
        """Stop admitting new requests; runs in flight (and queued) may finish for ``timeout``
        seconds, then each still open ends with an error and :meth:`run` returns."""
        with self.wake:
            self.deadline = time.monotonic() + timeout
            self.wake.notify()

    def close(self) -> None:
        """Stop decoding now (requests in flight end with an error)."""
        self.drain(0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def running(self) -> int:
        return len(self.active)

    def health(self) -> dict:
        return {"running": len(self.active), "waiting": len(self.waiting), "prefilling": self.prefilling,
                **self.stats, "rss_mb": round(rss_mb(), 1)}

    # ----- the decode thread ---------------------------------------------------------------
    def run(self, alive=lambda: True) -> None:
        """The decode loop; returns after :meth:`drain` (once the runs in flight are done or
        the deadline passed), or once ``alive()`` is false."""
        self._alive = alive
        try:
            while True:
                try:
                    for d, item in continuous(self._executor(), self._admit):
                        self._route(d, item)
                    return
                except _Stop:
                    return
                except Exception as exc:  # noqa: BLE001 - fail the requests in flight, keep serving
                    for t in self.active.values():
                        t.post("error", exc)
                    self.active.clear()
        finally:
            self.stopped.set()
            with self.wake:
                left = [*self.active.values(), *self.waiting]
                self.active.clear()
                self.waiting.clear()
            for t in left:  # the drain deadline passed (or the server stops): say so, do not go silent
                t.post("error", Overloaded("the server is shutting down (--drain-timeout passed)", retry_after=5))

    def _executor(self):
        ex = self.engine.executor()
        if hasattr(ex, "prefill_chunk"):  # the local batch feeds long prompts in chunks
            ex.prefill_chunk, ex.prefill_chunk_idle = self.prefill_chunk, self.prefill_chunk_idle
        return ex

    def _route(self, d: Decoder, item) -> None:
        t = self.active.get(d.id)
        if t is None:
            return
        if isinstance(item, Run):
            self._flush(t)
            del self.active[d.id]
            # a run that ended in the step its cap was reached lost the tokens past the cap: cut, not done
            t.post(*(("end", t.ended) if t.ended else ("done", item)))
            self.stats["finished"] += 1
        elif t.ended is None:
            if isinstance(item, TokenEvent) and t.cap is not None:
                t.count += 1
                if t.count >= t.cap:  # the reply has its max_tokens: nothing after this token
                    t.ended = "length"
            t.outgoing.append(item)

    @staticmethod
    def _flush(t: Ticket) -> None:
        if t.outgoing:
            items, t.outgoing = t.outgoing, []
            t.post("events", items)

    def _admit(self, executor) -> list[Decoder]:
        """Called before each step: post the last step's events, drop cancelled and capped
        requests, then take waiting tickets while there is room (block when idle)."""
        for t in list(self.active.values()):
            self._flush(t)
            if t.cancelled or t.ended:
                executor.remove(t.decoder, keep_cache=False)
                del self.active[t.decoder.id]
                if t.ended:
                    t.post("end", t.ended)
                else:
                    self.stats["cancelled"] += 1
        if self.deadline is not None and (time.monotonic() >= self.deadline or not (self.active or self.waiting)):
            raise _Stop  # drained, or out of time (run() fails what is left)
        new = []
        with self.wake:
            while len(executor) + len(new) < self.max_batch:
                if not self.waiting:
                    if len(executor) or new:
                        break
                    if not self._trimmed:  # idle: hand freed memory back first
                        trim_malloc()
                        self._trimmed = True
                    self.wake.wait(timeout=0.5)  # idle: sleep until a request comes (or drain)
                    if self.deadline is not None or not self._alive():
                        raise _Stop
                    continue
                t = self.waiting.popleft()
                self.active[t.decoder.id] = t
                t._admit()
                new.append(t.decoder)
        if len(executor) or new:
            self._trimmed = False
            self.stats["forward_calls"] += 1
            if self.stats["forward_calls"] % TRIM_EVERY == 0:
                trim_malloc()
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(executor) + len(new))
        self.prefilling = len(getattr(executor, "prefilling", ()))
        return new
