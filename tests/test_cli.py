"""The command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "medverse_lab.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_inspect_shows_plan_petri_net_masks_and_positions():
    out = run("inspect")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Plan (5 steps, width 3" in text
    assert "wave 1: fire ['1', '2', '3']" in text and "complete: True" in text
    for mode in ["dag", "layered", "speculative", "sequential", "request", "medverse-sft"]:
        assert f"\n {mode}\n" in text
    assert "  dag           0 1 2 3 2 3 2 3 4 5 6 7 8 9" in text
    assert "  medverse-sft  0 1 2 3 2 3 2 3 0 1 -2 -1 0 1" in text  # shifted twice
    # request: step 4 repeats 1 and 2, step 5 repeats 1-4, the conclusion every step; all count on from 2
    assert "segment  PP1122334444445555555555CCCCCCCCCCCC\n" in text
    assert "repeats          1122  11223344  1122334455  \n" in text
    assert "positions: 0 1 2 3 2 3 2 3 2 3 4 5 6 7 2 3 4 5 6 7 8 9 10 11 2 3 4 5 6 7 8 9 10 11 12 13\n" in text


def test_inspect_reports_plan_errors_with_their_place(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("<Plan>\n<Outline> Transient Step 1: a; Dependency: [2] </Outline>\n</Plan>\n"
                   "<Execution>\n<Step> Transient Step 1: a\nx\n</Step>\n</Execution>\n"
                   "<Conclusion>\nAnswer: A\n</Conclusion>")
    out = run("inspect", str(bad))
    assert out.returncode == 2
    assert "line 2, column 11" in out.stderr and "[unknown-dependency]" in out.stderr
    missing = run("inspect", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "nope.txt" in missing.stderr
