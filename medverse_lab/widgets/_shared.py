"""What every widget shares: where the built front end lives, and how arrays travel.

Large arrays go to the browser as bytes, never as JSON lists: boolean matrices bit-packed
row-major with the first element in the most significant bit (``numpy.packbits``'s
layout), integer vectors as little-endian int32.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: the bundles built from ``widgets/`` (``npm run build``), shipped in the package
STATIC = Path(__file__).resolve().parents[1] / "static"
CSS = STATIC / "widgets.css"

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> bytes:
    """A boolean tensor as bytes, flattened row-major, 8 elements per byte, first element
    in the most significant bit, zero-padded at the end (as ``numpy.packbits(mask)``)."""
    flat = mask.detach().reshape(-1).to(torch.bool).cpu()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.bool)])
    groups = flat.view(-1, 8).to(torch.uint8)
    return (groups * _BIT_WEIGHTS).sum(dim=1, dtype=torch.uint8).numpy().tobytes() if groups.numel() else b""


def unpack_bits(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a boolean tensor of ``shape``."""
    n = 1
    for d in shape:
        n *= d
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    bits = (raw[:, None] & _BIT_WEIGHTS) != 0
    return bits.reshape(-1)[:n].reshape(shape)


def placeholder_text(name: str) -> str:
    """What a saved notebook shows for a widget whose kernel is gone (see :class:`SavedPlaceholder`)."""
    return f"{name} — rerun the cell to show this widget (its kernel state is gone)"


class SavedPlaceholder:
    """Mixin: the ``text/plain`` saved next to the widget view says what to do.

    A notebook keeps a widget's output as two representations: the view (a model id that
    only the kernel that made it knows) and ``text/plain``. A front end that cannot draw
    the view shows the text instead: JupyterLab for a notebook it does not trust (one
    received from someone else), nbconvert, nbviewer, GitHub. Without this the text is
    ``<...PlanEditor object at 0x...>``. (A notebook JupyterLab saved itself is trusted;
    its widget manager then writes its own "Error displaying widget: model not found".)
    """

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # anywidget: (data, metadata)
        if data:
            data["text/plain"] = placeholder_text(type(self).__name__)
        return bundle


def int32_bytes(values) -> bytes:
    """An integer vector as little-endian int32 bytes (``values`` must fit in int32)."""
    t = torch.as_tensor(values).detach().reshape(-1).cpu()
    if t.numel() and (int(t.min()) < -2**31 or int(t.max()) >= 2**31):
        raise ValueError("values do not fit in int32")
    arr = t.to(torch.int32).numpy()
    return arr.astype("<i4", copy=False).tobytes()
