"""Backends: the local engine against vLLM computing the same runs.

    python benchmarks/bench_backends.py [--repeats 5] [--step-tokens 64]      # needs the [vllm] extra

Measured in this one run, printed as markdown:

1. Phase II time of the 6 roots + join plan (forced, greedy) on the `bench_engine.py` model
   (random Qwen2, ~5M parameters, special-token logits zeroed so every step body is exactly
   ``--step-tokens`` tokens), saved as a checkpoint folder so vLLM loads the same weights:
   local `dag`, local `request`, vLLM `request` (``Engine.load(folder, backend="vllm")``), and
   the baseline the paper compares to: vLLM with the public engine's prompts, one request per
   step holding only the prefix and the step's header, all sent at once (dependencies
   ignored, so the join step cannot read the roots). Median of ``--repeats``.
2. Questions per second over 32 held-out questions, 8 decoding at a time, on the shipped
   `request` teaching model (its own plans, greedy): local ``run_many`` (`request` and
   `dag`) and vLLM ``run_many`` (`request`). vLLM's tokens are checked equal to local
   `request`'s.

vLLM in process may lower torch's thread count for serving (its log says when it does), so
every local figure is taken first, with torch's own thread count, and both counts are printed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

import torch  # noqa: E402

import medverse_lab as ml  # noqa: E402
from bench_engine import QUESTION, build, machine, parser, plan_of  # noqa: E402
from medverse_lab.data.curate import make_questions  # noqa: E402
from medverse_lab.engine import default_model_path  # noqa: E402
from medverse_lab.data.questions import format_question  # noqa: E402

PLAN = plan_of(6)


def phase2(engine, modes, kw, repeats) -> dict[str, tuple[float, ml.Run]]:
    """Per mode: the median Phase II seconds and the last run; the modes interleaved, so
    drift on a shared machine hits each alike (the first round warms up)."""
    runs = {m: [] for m in modes}
    for _ in range(repeats + 1):
        for m in modes:
            runs[m].append(engine.run(QUESTION, mode=m, plan=PLAN, **kw))
    return {m: (statistics.median(r.timings["steps"] for r in rs[1:]), rs[-1]) for m, rs in runs.items()}


def public_baseline(engine, run, step_tokens, repeats) -> float:
    """Seconds for vLLM to decode every step of ``run``'s plan as the public engine sends
    them: one request each, prompt = prefix + ``<Step>`` + header, all at once."""
    from vllm import SamplingParams, TokensPrompt

    prefix = list(run.layout.token_ids[:run.layout.prefix_len])
    prompts = [TokensPrompt(prompt_token_ids=prefix + [engine.tags["<Step>"], *engine.encode(f" {s.header()}\n")])
               for s in PLAN.steps]
    params = SamplingParams(max_tokens=step_tokens, temperature=0, ignore_eos=True, detokenize=False)
    llm = engine.compute.llm
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def throughput(engine, questions, mode, repeats=1) -> tuple[float, list]:
    engine.run_many(questions[:8], mode=mode, temperature=0)  # warm-up
    best, runs = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        runs = engine.run_many(questions, mode=mode, batch_size=8, temperature=0)
        best = min(best, time.perf_counter() - t)
    return len(questions) / best, runs


def main(argv=None) -> None:
    args = parser(__doc__.split("\n")[0], repeats=5).parse_args(argv)
    kw = dict(temperature=0, max_step_tokens=args.step_tokens, max_conclusion_tokens=4)
    threads = torch.get_num_threads()
    bench = build("cpu")
    teaching = default_model_path("request")
    questions = [format_question(q) for q in make_questions(32, seed=11, split="test")]
    local_teaching = ml.Engine.load(teaching)

    # ----- every local figure first (vLLM then takes torch to one thread) -----
    local = phase2(bench, ("dag", "request"), kw, args.repeats)
    (dag_s, _), (req_s, local_req) = local["dag"], local["request"]
    qps_req, local_runs = throughput(local_teaching, questions, "request")
    qps_dag, _ = throughput(local_teaching, questions, "dag")

    with tempfile.TemporaryDirectory() as folder:
        bench.model.save_pretrained(folder)
        bench.tokenizer.save_pretrained(folder)
        t = time.perf_counter()
        vbench = ml.Engine.load(folder, backend="vllm")
        load_s = time.perf_counter() - t
        vreq_s, vllm_req = phase2(vbench, ("request",), kw, args.repeats)["request"]
        assert vllm_req.layout.token_ids == local_req.layout.token_ids, "vLLM decoded other tokens than local"
        public_s = public_baseline(vbench, local_req, args.step_tokens, args.repeats)
    vteaching = ml.Engine.load(teaching, backend="vllm")
    qps_vllm, vllm_runs = throughput(vteaching, questions, "request")
    equal = sum(a.layout.token_ids == b.layout.token_ids for a, b in zip(local_runs, vllm_runs))

    print(f"Machine: {machine().replace(f'{torch.get_num_threads()} torch threads', f'{threads} torch threads')}; "
          f"vLLM {__import__('vllm').__version__} in process, {torch.get_num_threads()} torch thread(s) once loaded "
          f"(bench model loaded in {load_s:.0f} s)\n")
    print(f"Phase II of the 6 roots + join plan, step body {args.step_tokens} tokens, median of {args.repeats}:\n")
    print("| backend | mode | Phase II s | vs local dag |")
    print("|---|---|---:|---:|")
    for name, mode, s in (("local", "`dag`", dag_s), ("local", "`request`", req_s), ("vLLM", "`request`", vreq_s),
                          ("vLLM, public engine's prompts (prefix + header; join not waiting)", "-", public_s)):
        print(f"| {name} | {mode} | {s:.3f} | {s / dag_s:.2f}x |")
    print(f"\n32 held-out questions, 8 at a time, `request` teaching model, greedy "
          f"(vLLM tokens equal to local `request` in {equal}/32 runs):\n")
    print("| backend | mode | questions/s |")
    print("|---|---|---:|")
    for name, mode, q in (("local run_many", "`request`", qps_req), ("local run_many", "`dag`", qps_dag),
                          ("vLLM run_many", "`request`", qps_vllm)):
        print(f"| {name} | {mode} | {q:.2f} |")


if __name__ == "__main__":
    main()
