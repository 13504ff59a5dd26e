"""The server's decoder: one thread that runs every request in one continuous batch.

Requests arrive from the event loop as :class:`Ticket` objects holding a checked
:class:`~medverse_lab.engine.decode.Decoder`; the worker admits them into the engine's
executor as room frees up, through the same loop as ``Engine.run_many``
(:func:`~medverse_lab.engine.decode.continuous`), and hands token and lifecycle events
(once per step) and finished runs back to the event loop, thread-safely. A cancelled ticket
(its client went away) leaves the batch at the next step and its slots are freed.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field

from ..engine.decode import Decoder, continuous
from ..engine.run import Run


@dataclass(eq=False)
class Ticket:
    """One request in the worker. ``updates`` receives ``("events", [...])`` (its token and
    lifecycle events of a step, in order), then ``("done", Run)`` or ``("error", Exception)``;
    it lives on the event loop ``loop``."""

    decoder: Decoder
    loop: asyncio.AbstractEventLoop
    updates: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def post(self, kind: str, payload) -> None:
        try:
            self.loop.call_soon_threadsafe(self.updates.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    async def result(self):
        """The finished Run (tokens are skipped), or the worker's error raised."""
        while True:
            kind, payload = await self.updates.get()
            if kind == "done":
                return payload
            if kind == "error":
                raise payload


class _Stop(Exception):
    """The worker was told to stop."""


class Worker:
    """Continuous batching for a server: at most ``max_batch`` requests decode together.

    ``thread=True`` decodes in a thread of its own; ``thread=False`` leaves it to the
    caller to call :meth:`run` (``medverse-lab serve`` decodes on the main thread: on CPU,
    torch's thread pool ran this loop about 1.5x faster there than from a second thread).
    """

    def __init__(self, engine, max_batch: int = 8, thread: bool = True):
        self.engine, self.max_batch = engine, max_batch
        self.inbox: queue.Queue[Ticket | None] = queue.Queue()
        self.active: dict[int, Ticket] = {}
        self.outgoing: dict[int, list] = {}  # per decoder: events of the current step, posted before the next
        self.stats = {"requests": 0, "finished": 0, "cancelled": 0, "forward_calls": 0, "max_batch_seen": 0}
        self._thread = None
        if thread:
            self._thread = threading.Thread(target=self.run, name="medverse-decoder", daemon=True)
            self._thread.start()

    def submit(self, ticket: Ticket) -> Ticket:
        self.stats["requests"] += 1
        self.inbox.put(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """The client is gone: drop the request (now, or at the worker's next step)."""
        ticket.cancelled = True

    def close(self) -> None:
        """Stop decoding (requests in flight are dropped)."""
        self.inbox.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def running(self) -> int:
        return len(self.active)

    # ----- the decode thread ---------------------------------------------------------------
    def run(self, alive=lambda: True) -> None:
        """The decode loop; returns after :meth:`close`, or once ``alive()`` is false."""
        self._alive = alive
        while True:
            try:
                for d, item in continuous(self.engine.executor(), self._admit):
                    if isinstance(item, Run):
                        self._flush(d.id)
                        self.active.pop(d.id).post("done", item)
                        self.stats["finished"] += 1
                    else:
                        self.outgoing.setdefault(d.id, []).append(item)
                return
            except _Stop:
                return
            except Exception as exc:  # noqa: BLE001 - fail the requests in flight, keep serving
                for t in self.active.values():
                    t.post("error", exc)
                self.active.clear()
                self.outgoing.clear()

    def _flush(self, key: int) -> None:
        items = self.outgoing.pop(key, None)
        if items:
            self.active[key].post("events", items)

    def _admit(self, executor) -> list[Decoder]:
        """Called before each step: post the last step's events, drop cancelled requests,
        then take waiting tickets while there is room (block when idle)."""
        for key in list(self.outgoing):
            self._flush(key)
        for t in [t for t in self.active.values() if t.cancelled]:
            executor.remove(t.decoder, keep_cache=False)
            del self.active[t.decoder.id]
            self.stats["cancelled"] += 1
        new = []
        while len(executor) + len(new) < self.max_batch:
            idle = not len(executor) and not new
            try:
                ticket = self.inbox.get(block=idle, timeout=0.5 if idle else None)
            except queue.Empty:
                if idle and not self._alive():
                    raise _Stop
                break
            if ticket is None:
                raise _Stop
            if ticket.cancelled:
                self.stats["cancelled"] += 1
                continue
            self.active[ticket.decoder.id] = ticket
            new.append(ticket.decoder)
        if len(executor) or new:
            self.stats["forward_calls"] += 1
            self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(executor) + len(new))
        return new
