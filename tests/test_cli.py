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


# ----- wrong input: one line that says what is wrong, before the model loads ----------------------
def one_line_error(out, *needles):
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "Engine(" not in out.stdout  # refused before the model loaded
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_questions(path, n=2):
    import json

    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which drug? case {i}",
                                        "options": {"A": "aspirin", "B": "fluids"}, "answer_idx": "A"}) + "\n"
                            for i in range(n)))
    return path


def test_eval_refuses_a_table_suffix_before_evaluating(tmp_path):
    one_line_error(run("eval", str(write_questions(tmp_path / "q.jsonl")), "--out", str(tmp_path / "t.txt")),
                   "--out", ".csv, .parquet or .jsonl")


def test_a_device_this_machine_lacks_is_one_line():
    import torch

    one_line_error(run("run", "Q? A. x B. y", "--device", "gpu"), "'gpu' is not a torch device")
    if not torch.cuda.is_available():
        one_line_error(run("run", "Q? A. x B. y", "--device", "cuda"), "no CUDA GPU")


def test_run_needs_a_question_with_options():
    one_line_error(run("run", "What is the most likely diagnosis?"), "lists no options")


def test_a_bad_mode_or_port_is_refused_before_loading():
    one_line_error(run("run", "Q? A. x B. y", "--mode", "tree"), "unknown mode 'tree'")
    one_line_error(run("serve", "--mode", "tree"), "unknown mode 'tree'")
    one_line_error(run("serve", "--port", "99999"), "--port 99999", "1-65535")


def test_eval_names_the_line_and_column_of_broken_json(tmp_path):
    import json

    bad = '{"id": "b", "question": "Q2", "options": {"A": "x"}, "answer_idx": "A",}'
    path = write_questions(tmp_path / "q.jsonl")
    path.write_text(path.read_text() + bad + "\n")
    try:
        json.loads(bad)
    except json.JSONDecodeError as exc:
        column = exc.colno
    assert bad[column - 1] == "}"  # where the parser stopped: the brace after the trailing comma
    one_line_error(run("eval", str(path)), "q.jsonl line 3", f"column {column}")


def test_check_on_a_question_file_points_to_eval_and_gives_each_reason(tmp_path):
    out = run("check", str(write_questions(tmp_path / "q.jsonl")))
    assert out.returncode == 1
    assert "q0: error bad-record: a multiple-choice question, not a MedVerse record" in out.stdout
    assert "medverse-lab eval FILE" in out.stdout and "q1: error bad-record" in out.stdout


# ----- numbers that mean what they say --------------------------------------------------------------
def test_phase2_speedup_counts_only_runs_decoded_in_parallel():
    import polars as pl

    from medverse_lab.evaluation import SCHEMA, summarize

    def row(q, mode, decoded, seconds):
        return {"question_id": q, "mode": mode, "decoded_mode": decoded, "time_steps": seconds, "correct": True,
                "plan_valid": decoded == mode, "steps": 3, "width": 2, "tokens": 100}

    table = pl.DataFrame([row("a", "dag", "dag", 1.0), row("a", "sequential", "sequential", 3.0),
                          row("b", "dag", "sequential", 5.0), row("b", "sequential", "sequential", 5.0),
                          row("c", "dag", "sequential", 4.0), row("c", "sequential", "sequential", 4.0)],
                         schema={k: v for k, v in SCHEMA.items() if k in row("a", "", "", 0)})
    summary = {r["mode"]: r for r in summarize(table).iter_rows(named=True)}
    assert summary["dag"]["fell_back"] == 2 and summary["sequential"]["fell_back"] == 0
    assert summary["dag"]["speedup_runs"] == 1
    assert summary["dag"]["phase2_speedup"] == 3.0  # question a alone; b and c were decoded sequentially
    assert summary["sequential"]["phase2_speedup"] == 1.0


def test_eval_prints_how_many_runs_fell_back(tmp_path):
    out = run("eval", str(write_questions(tmp_path / "q.jsonl")), "--modes", "dag,sequential")
    assert out.returncode == 0, out.stderr
    assert "fell_back" in out.stdout and "phase2_speedup" in out.stdout and "Loading weights" not in out.stdout + out.stderr


def test_run_flags_a_rejected_plan_and_forced_closes(tmp_path, tokenizer):
    from conftest import tiny_model

    tiny_model("qwen2", len(tokenizer)).save_pretrained(tmp_path)  # random: its plan does not validate
    tokenizer.save_pretrained(tmp_path)
    out = run("run", "Chest pain: next step? A. aspirin B. PCI", "--model", str(tmp_path), "--no-compare")
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stdout.splitlines() if line.startswith("Warning: ")]
    assert any("the model's plan did not validate" in w and "decoded sequential" in w for w in warnings)
    assert any("closed by the engine" in w or "no answer" in w for w in warnings)
