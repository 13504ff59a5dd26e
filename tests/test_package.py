"""The package face: `import medverse_lab` is light, every public name resolves, and no
module shadows a standard-library one."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import medverse_lab as ml

HEAVY = ("torch", "transformers", "polars", "anywidget", "ipywidgets", "fastapi", "matplotlib")


def test_import_loads_no_heavy_dependency():
    code = ("import sys, medverse_lab as ml\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plans_and_traces_work_without_torch():
    code = ("import sys, pathlib, medverse_lab as ml\n"
            "text = (pathlib.Path(ml.__file__).parent / 'examples' / 'stemi.txt').read_text()\n"
            "trace = ml.parse_trace(text)\n"
            "net = ml.PetriNet(trace.plan)\n"
            "print(len(trace.plan), net.waves(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_every_public_name_resolves_to_the_object_its_module_defines():
    import types

    for name in ml.__all__:
        obj = getattr(ml, name)
        if isinstance(obj, types.ModuleType):  # ml.curate, ml.records, ml.workshop: our subpackages
            assert obj.__name__.startswith("medverse_lab.") and obj.__name__.rsplit(".", 1)[-1] == name, name
        elif callable(obj):  # a class or function: the one its defining module holds under its name
            assert obj.__module__.startswith("medverse_lab."), name
            assert getattr(importlib.import_module(obj.__module__), obj.__name__) is obj, name
        else:  # a constant (MODES, TAGS, ...): the same object as in the module that defines it
            home = ml._LAZY.get(name, ".errors")  # the ground floor's constant is PROBLEM_KINDS
            assert getattr(importlib.import_module(home, "medverse_lab"), name) is obj, name
    assert set(ml.__all__) <= set(dir(ml))
    assert ml.attention_mask is importlib.import_module("medverse_lab.topology").attention_mask


def test_no_module_shadows_the_standard_library():
    ours = {m.name.rsplit(".", 1)[-1] for m in pkgutil.walk_packages(ml.__path__, "medverse_lab.")}
    assert not ours & set(sys.stdlib_module_names)


def test_importing_submodules_first_does_not_hide_a_public_name():
    # importing medverse_lab.X sets the package attribute X to the module: a lazy public
    # name must never share its name with a submodule
    code = ("import importlib, pkgutil, types, medverse_lab as ml\n"
            "for m in pkgutil.walk_packages(ml.__path__, 'medverse_lab.'):\n"
            "    if not m.name.endswith('.__main__'):  # that one runs the command\n"
            "        importlib.import_module(m.name)\n"
            "print([n for n in ml.__all__ if isinstance(getattr(ml, n), types.ModuleType)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['curate', 'records', 'workshop']"


def test_the_readme_library_snippet_runs_as_written():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The library in five lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["net"].frontier() == ["1", "2", "3"] and scope["mask"].shape[0] == scope["layout"].T


def test_the_readme_names_only_paths_a_clone_has():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    named = set(re.findall(r"`((?:medverse_lab|notebooks|benchmarks|tests|widgets|binder|\.ci)/[^`\s]*)`", readme))
    named |= set(re.findall(r"\]\(((?:notebooks|benchmarks)/[^)]+)\)", readme))
    missing = sorted(p for p in named if not (root / p).exists() and "*" not in p)
    assert named and missing == []
    assert "../shared/data" not in readme  # beside this workspace's clone only
