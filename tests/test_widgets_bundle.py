"""The front end shipped in the package: built from widgets/ as it is now, and offline."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = ROOT / "widgets"
STATIC = ROOT / "medverse_lab" / "static"
BANNER = re.compile(r"^/\* medverse-lab widgets: built by widgets/build\.mjs, do not edit\. sources sha256:([0-9a-f]{64}) \*/")
# XML namespace names are identifiers, never fetched: the only URLs a bundle may contain.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def sources_digest(widgets: Path = WIDGETS) -> str:
    """What widgets/build.mjs writes into each banner: sha256 over "path\\0bytes\\0" of
    build.mjs, package.json, package-lock.json and every file under src/, sorted by path."""
    paths = ["build.mjs", "package.json", "package-lock.json"]
    paths += [p.relative_to(widgets).as_posix() for p in (widgets / "src").rglob("*") if p.is_file()]
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(rel.encode() + b"\0")
        h.update((widgets / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def network_references(text: str) -> list[str]:
    """Everything in a bundle that would reach the network: URLs (other than XML
    namespace names), protocol-relative URLs, and imports left unbundled."""
    found = [u for u in re.findall(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`)]*""", text, re.IGNORECASE)
             if u not in NAMESPACES and not u.startswith("//#")]
    found += re.findall(r"""\bimport\s*\(\s*["'`][^"'`]*""", text)
    found += re.findall(r"""(?:^|[;\n])\s*import\b[^;\n]*?from\s*["'][^"']*["']""", text)
    found += re.findall(r"""@import[^;]*""", text)
    found += re.findall(r"""url\(\s*["']?(?!data:)[^)]*\)""", text)
    return found


def bundles() -> list[Path]:
    return sorted(p for p in STATIC.iterdir() if p.suffix in (".js", ".css"))


def test_every_widget_source_has_a_bundle():
    entries = {p.stem for p in (WIDGETS / "src").glob("*.js") if not p.name.startswith("_")}
    assert {"plan_editor", "mask_inspector", "run_viewer"} <= entries
    assert {p.stem for p in bundles() if p.suffix == ".js"} == entries
    assert (STATIC / "widgets.css").is_file()


@pytest.mark.parametrize("bundle", bundles(), ids=lambda p: p.name)
def test_bundle_is_built_from_the_current_sources(bundle):
    """Edit widgets/src without `npm run build` (in widgets/) and this fails."""
    m = BANNER.match(bundle.read_text(encoding="utf-8"))
    assert m, f"{bundle.name} has no build banner: rebuild with `cd widgets && npm ci && npm run build`"
    assert m.group(1) == sources_digest(), (
        f"{bundle.name} is stale against widgets/: run `cd widgets && npm ci && npm run build` and commit "
        "medverse_lab/static/")


@pytest.mark.parametrize("bundle", bundles(), ids=lambda p: p.name)
def test_bundle_loads_nothing_over_the_network(bundle):
    assert network_references(bundle.read_text(encoding="utf-8")) == []


def test_the_network_check_catches_cdn_imports_and_urls():
    assert network_references('import * as d3 from "https://esm.sh/d3@7";')
    assert network_references('const m = await import("https://cdn.jsdelivr.net/npm/x");')
    assert network_references('import x from "lodash";')
    assert network_references('fetch("//unpkg.com/x")')
    assert network_references('@import "https://fonts.googleapis.com/css";')
    assert network_references('background: url(https://example.com/a.png)')
    assert not network_references('document.createElementNS("http://www.w3.org/2000/svg", "g")')


def test_build_tool_versions_are_pinned():
    package = json.loads((WIDGETS / "package.json").read_text())
    for name, version in {**package.get("dependencies", {}), **package.get("devDependencies", {})}.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned to one version: {version}"
    lock = json.loads((WIDGETS / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/esbuild"]["version"] == package["devDependencies"]["esbuild"]


def test_the_staleness_check_sees_a_source_edit(tmp_path):
    copy = tmp_path / "widgets"
    shutil.copytree(WIDGETS, copy, ignore=shutil.ignore_patterns("node_modules"))
    before = sources_digest(copy)
    with (copy / "src" / "plan_editor.js").open("a") as f:
        f.write("\n// an edit\n")
    assert sources_digest(copy) != before


@pytest.mark.skipif(not (WIDGETS / "node_modules" / ".bin" / "esbuild").exists() or shutil.which("node") is None,
                    reason="needs `cd widgets && npm ci` (node)")
def test_rebuilding_gives_the_committed_bytes(tmp_path):
    subprocess.run(["node", "build.mjs", "--outdir", str(tmp_path)], cwd=WIDGETS, check=True, capture_output=True)
    for bundle in bundles():
        assert (tmp_path / bundle.name).read_bytes() == bundle.read_bytes(), f"{bundle.name} differs from a rebuild"
