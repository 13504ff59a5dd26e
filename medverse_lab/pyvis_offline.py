"""Render a plan's Petri net with pyvis, fully offline.

pyvis's ``cdn_resources="in_line"`` embeds vis-network, but its template still links
Bootstrap from a CDN and leaves commented-out ``../node_modules`` tags. We strip every
external reference so the HTML loads nothing over the network (and shows in a notebook
without a CDN).
"""

from __future__ import annotations

import html
import re

from pyvis.network import Network

from .petri import SOURCE, place

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"'][^\"']*[\"'][^>]*/?>", re.DOTALL | re.IGNORECASE)
_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=[^>]*>\s*</script>", re.DOTALL | re.IGNORECASE)


def strip_external(page: str) -> str:
    """Remove comments, ``<link href=...>`` and ``<script src=...>`` from an HTML page."""
    page = _COMMENT.sub("", page)
    page = _EXTERNAL_LINK.sub("", page)
    return _EXTERNAL_SCRIPT.sub("", page)


class OfflineNetwork(Network):
    """A pyvis Network whose HTML embeds everything and references nothing remote."""

    def generate_html(self, *args, **kwargs) -> str:
        return strip_external(super().generate_html(*args, **kwargs))

    def _repr_html_(self) -> str:
        # An iframe keeps vis-network's globals and styles out of the notebook page.
        doc = html.escape(self.generate_html(), quote=True)
        return f'<iframe srcdoc="{doc}" style="width:100%;height:{self.height};border:none"></iframe>'


def plan_network(plan, height: str = "420px") -> OfflineNetwork:
    """Places (circles) and transitions (boxes) of ``plan``'s Petri net, laid out left to right."""
    net = OfflineNetwork(height=height, directed=True, cdn_resources="in_line")
    net.set_options('{"layout": {"hierarchical": {"enabled": true, "direction": "LR", '
                    '"sortMethod": "directed"}}, "physics": {"enabled": false}}')
    net.add_node(SOURCE, label="source", shape="dot", color="#444", title="marked at the start")
    for s in plan.steps:
        # pyvis puts titles into the page as HTML; plan text is untrusted, so escape it.
        net.add_node(f"t{s.id}", label=f"Step {s.id}", shape="box", title=html.escape(s.description))
        net.add_node(place(s.id), label=" ", shape="dot", size=8, title=f"step {s.id} done")
        net.add_edge(f"t{s.id}", place(s.id))
        for p in ([place(d) for d in s.deps if d in plan] or [SOURCE]):
            net.add_edge(p, f"t{s.id}")
    return net
