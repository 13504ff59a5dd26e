"""What every widget shares: where the built front end lives, and how arrays travel.

Large arrays go to the browser as bytes, never as JSON lists: boolean matrices bit-packed
row-major with the first element in the most significant bit (``numpy.packbits``'s
layout), integer vectors as little-endian int32.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import anywidget
import numpy as np
import torch
import traitlets as t

#: the bundles built from ``widgets/`` (``npm run build``), shipped in the package
STATIC = Path(__file__).resolve().parents[1] / "static"
CSS = STATIC / "widgets.css"

def pack_bits(mask: torch.Tensor) -> bytes:
    """A boolean tensor as bytes, flattened row-major, 8 elements per byte, first element
    in the most significant bit, zero-padded at the end (``numpy.packbits``)."""
    return np.packbits(mask.detach().reshape(-1).to(torch.bool).cpu().numpy()).tobytes()


def unpack_bits(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a boolean tensor of ``shape``."""
    n = math.prod(shape)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n) if n else np.zeros(0, dtype=np.uint8)
    return torch.from_numpy(bits.astype(bool)).reshape(shape)


def popcount(data: bytes) -> int:
    """How many bits are set in ``data``."""
    return int(np.bitwise_count(np.frombuffer(data, dtype=np.uint8)).sum())


def placeholder_text(name: str) -> str:
    """What a saved notebook shows for a widget whose kernel is gone (see :class:`SavedPicture`)."""
    return f"{name} — rerun the cell to show this widget (its kernel state is gone)"


class SavedPicture:
    """Mixin: a widget's output says what it was, and shows it, to readers without its kernel.

    A notebook keeps a widget's output as its view (a model id only the kernel that made it
    knows) and ``text/plain``. A front end that cannot draw the view shows the text
    instead: JupyterLab for a notebook it does not trust, nbconvert, nbviewer, GitHub.
    So the text says what the widget was, and displaying the widget adds a second output,
    an HTML picture of its state (:meth:`picture`), kept current with ``update_display_data``
    as the widget changes. The picture is its own output because updating an output that
    holds the view would draw the view anew (losing its zoom, focus and scroll); while the
    live view is drawn, ``widgets.css`` hides the picture beside it.
    """

    _picture_id: str | None = None
    _picture_timer: threading.Timer | None = None
    _picture_shown = ""
    #: seconds a burst of trait changes settles before the picture is redrawn
    picture_delay = 0.25

    def picture(self) -> str:
        """An HTML picture of what the widget shows (inline styles, untrusted text escaped)."""
        raise NotImplementedError

    def _picture_sources(self) -> list:
        """The widgets whose trait changes change the picture."""
        return [self]

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # anywidget: (data, metadata)
        if data:
            data["text/plain"] = placeholder_text(type(self).__name__)
        return bundle

    def _picture_bundle(self) -> dict:
        from .picture import frame

        self._picture_shown = frame(type(self).__name__, self.picture())
        return {"text/html": self._picture_shown}

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        display(data, metadata=metadata, raw=True)
        if self._picture_id is None:
            self._picture_id = uuid.uuid4().hex
            for source in self._picture_sources():
                source.observe(self._on_picture_change)
        display(self._picture_bundle(), raw=True, display_id=self._picture_id)

    def _on_picture_change(self, change) -> None:
        owner = change["owner"]
        if change["name"].startswith("_") or not owner.trait_metadata(change["name"], "sync"):
            return
        if self._picture_timer is None:  # one redraw per burst (a streaming run sets lanes 10 times a second)
            self._picture_timer = threading.Timer(self.picture_delay, self.update_picture)
            self._picture_timer.daemon = True
            self._picture_timer.start()

    def update_picture(self) -> None:
        """Redraw the saved picture now (it follows trait changes on its own)."""
        from IPython.display import update_display

        self._picture_timer = None
        if self._picture_id is None:
            return
        previous = self._picture_shown
        bundle = self._picture_bundle()
        if bundle["text/html"] != previous:
            update_display(bundle, raw=True, display_id=self._picture_id)


def _kernel_loop():
    """The event loop of the kernel's main thread (``None`` outside a kernel)."""
    try:
        from IPython import get_ipython

        return getattr(getattr(get_ipython(), "kernel", None), "io_loop", None)
    except ImportError:
        return None


class BackgroundJob:
    """One background job at a time for a widget, its trait changes made on the kernel's thread.

    The job (a decode) runs in a thread so the notebook stays usable; what it wants shown it
    :meth:`post`\ s as a callable, which the kernel's event loop runs on the main thread
    (comm messages stay in order with everything else the kernel sends). A cell blocked in
    :meth:`wait` is on that thread too: it runs the posted changes while it waits, so the
    widget still streams. Outside a kernel (scripts, tests) posted changes run at once.
    ``widget.busy`` is true from :meth:`start` until the job's last change is made.
    """

    def __init__(self, widget):
        self.widget = widget
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: deque = deque()

    def start(self, target, *args) -> threading.Thread:
        """Run ``target(*args)`` in a thread; ``RuntimeError`` while a job runs."""
        with self._lock:
            if self.widget.busy:
                raise RuntimeError("a run is in progress; wait for it to finish")
            self.widget.busy = True
        self._thread = threading.Thread(target=self._main, args=(target, args), daemon=True)
        self._thread.start()
        return self._thread

    def _main(self, target, args) -> None:
        try:
            target(*args)
        finally:
            self.post(lambda: setattr(self.widget, "busy", False))

    def post(self, change) -> None:
        """Make ``change()`` (trait updates) on the kernel's thread, in posting order."""
        self._pending.append(change)
        loop = _kernel_loop()
        if loop is None or threading.current_thread() is threading.main_thread():
            self.flush()
        else:
            loop.add_callback(self.flush)

    def flush(self) -> None:
        """Make every change posted so far (on the calling thread)."""
        while self._pending:
            try:
                change = self._pending.popleft()
            except IndexError:
                return
            change()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the job (at most ``timeout`` seconds), making its changes meanwhile."""
        thread = self._thread
        if thread is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while thread.is_alive() and (deadline is None or time.monotonic() < deadline):
                thread.join(0.1)
                self.flush()
        self.flush()


class LiveView(SavedPicture, anywidget.AnyWidget):
    """Base of the widgets with a view of their own (an ES module in ``static/``).

    ``_ref`` is the model's own id: a view drawn from widget state saved in the notebook
    (its kernel gone) asks the widget manager whether that model still has a kernel behind
    it, and if not says so and stops its controls instead of letting clicks do nothing.
    """

    _css = CSS
    _ref = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._ref = self.model_id


def int32_bytes(values) -> bytes:
    """An integer vector as little-endian int32 bytes (``values`` must fit in int32)."""
    v = torch.as_tensor(values).detach().reshape(-1).cpu()
    if v.numel() and (int(v.min()) < -2**31 or int(v.max()) >= 2**31):
        raise ValueError("values do not fit in int32")
    return v.to(torch.int32).numpy().astype("<i4", copy=False).tobytes()
