"""The Binder recipe works: a fresh virtual environment built from binder/requirements.txt
and binder/postBuild runs a workshop notebook. (Offline here, the CPU torch index in
requirements.txt is unreachable: pip is told to give up on it at once and finds torch
2.13.0 where this machine's pip looks for it.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_binder_environment_runs_a_notebook(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "5", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)

    def sh(cmd, **kw):
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, **kw)
        assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r

    sh([str(bin_ / "pip"), "install", "-q", "-r", "binder/requirements.txt"], timeout=900)
    sh(["bash", "binder/postBuild"], timeout=900)
    probe = sh([str(bin_ / "python"), "-c", "import torch, medverse_lab, matplotlib; print(torch.__version__, "
                "medverse_lab.__file__)"]).stdout
    assert probe.startswith("2.13.0") and str(ROOT) in probe
    out = tmp_path / "run"
    out.mkdir()
    notebook = out / "05_debug_a_curated_dataset.ipynb"  # run in a folder of its own: it writes files
    shutil.copy(ROOT / "notebooks" / notebook.name, notebook)
    env["MEDVERSE_WORKSHOP_QUICK"] = "1"
    sh([str(bin_ / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--inplace",
        "--ExecutePreprocessor.timeout=600", str(notebook)], timeout=900)
    executed = notebook.read_text()
    assert "✓ errors after fixing" in executed and '"output_type": "error"' not in executed
