"""The teaching experiment script end to end at toy size: Curator data, two models trained
in two stages (dag and plain causal), each decoded both ways, the 2x2 table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "teaching_experiment.py"
TINY = ["hidden_size=32", "num_layers=2", "intermediate_size=64", "vocab_size=600", "batch_size=2",
        "eval_every=2", "save_every=2", "warmup=1", "lr=0.01",
        "max_len=4096"]


def experiment(out, *args):
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--train-n", "40", "--test-n", "4",
                           "--eval-n", "2", "--steps", "3,6", *args], capture_output=True, text=True, timeout=600)


def test_trains_both_models_in_stages_and_prints_the_two_by_two_table(tmp_path):
    done = experiment(tmp_path, "--set", *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    for mode in ("dag", "sequential"):
        config = json.loads((tmp_path / mode / "config.json").read_text())
        history = json.loads((tmp_path / mode / "history.json").read_text())
        assert config["medverse_mode"] == mode and config["hidden_size"] == 32
        assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]  # the second stage resumed the first
        assert (tmp_path / f"eval_{mode}.csv").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted((r["trained"], r["mode"]) for r in summary) == [
        ("dag", "dag"), ("dag", "sequential"), ("sequential", "dag"), ("sequential", "sequential")]
    assert all(r["n"] == 2 for r in summary)
    assert "| dag |" in done.stdout and "| sequential |" in done.stdout


def test_a_bad_override_names_the_field(tmp_path):
    done = experiment(tmp_path, "--set", "hidden_sise=32")
    assert done.returncode != 0 and "hidden_sise=32" in done.stderr
