"""Throughput benchmark: known tokens as chunks, many questions per forward, and the server.

    python benchmarks/bench_serve.py [--questions 64] [--requests 64] [--repeats 3]

Everything is measured in this one run and printed as markdown; nothing is written.

1. Chunking (random 5M Qwen2 of ``bench_engine.py``, special-token rows zeroed so every
   step body is exactly ``--step-tokens`` tokens): a 6 roots + join plan decoded with
   known tokens fed token by token (``engine.step_chunk = 1``, the engine before chunking)
   and as chunks (the default). Phase II forward calls, and the time of a rerun of one root
   with forced text over the time of the full run, both wall-clock calls of ``engine.run``
   and ``engine.rerun`` (median of ``--repeats``). The floor for this plan is well above 0:
   the join step depends on every root, so a rerun of a root decodes the join again.
2. Batching (the embedded teaching model, greedy): ``--questions`` held-out synthetic
   questions through ``engine.run_many`` with batch 1 and batch 8; questions per second,
   and whether every run of batch 8 equals its run of batch 1 token for token.
3. Cache layout: one forward of a batch of 8 in our block-diagonal cache against a padded
   ``[8, seq]`` batch, when every run decodes one token and when a run joins with its prompt.
4. Serving: ``medverse-lab serve`` (the teaching model, ``--max-batch 8``) in its own
   process; ``--requests`` chat requests sent by 1, 8 and 32 concurrent httpx clients;
   requests per second, against the one-at-a-time figure (1 client).
5. Fair prefill (``--only fairness``): a short chat request's latency alone, and while a
   ``--long-tokens`` prompt (default 20,000) is being prefilled by the same server
   (``--max-model-len 32768``, chunked prefill); the ratio is the figure of issue 21.
6. Soak (``--only soak``): ``--soak-requests`` (default 1,000) mixed requests after
   ``--warmup`` (chat, streamed chat with usage, completions with logprobs, /generate, n=2,
   stop strings, clients that hang up mid-stream, refused bodies; replies capped at
   ``--soak-tokens``, 96) from 8 concurrent clients; the server's resident memory
   (``/health``'s ``rss_mb``) every 100 requests.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

import medverse_lab as ml
from bench_engine import QUESTION, build, machine, plan_of
from medverse_lab.data.questions import format_question, load_questions


def phase2_calls(run) -> int:
    df = run.tokens
    return df.filter(df["branch"] != "prefix")["forward_call"].n_unique()


def chunking(args) -> None:
    engine = build(args.device)
    plan = plan_of(6)
    kw = dict(temperature=0, max_step_tokens=args.step_tokens, max_conclusion_tokens=4)
    body = " ".join(["finding"] * args.step_tokens)  # forced text for the rerun
    redo = ["1", "7", "conclusion"]  # what a rerun of root 1 decodes again
    print(f"### 1. Known tokens as chunks (6 roots + join, {args.step_tokens}-token steps, dag)\n")
    print("| feeding | Phase II calls dag | Phase II calls sequential | full run s | rerun of step 1 with text s "
          "| rerun / full | rerun calls |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, chunk in (("token by token (before)", 1), ("chunks (now)", None)):
        engine.step_chunk = chunk
        engine.run(QUESTION, mode="dag", plan=plan, **kw)  # warm-up
        full, rerun = [], []
        for _ in range(args.repeats):  # interleaved: drift on a shared machine hits both
            t = time.perf_counter()
            run = engine.run(QUESTION, mode="dag", plan=plan, **kw)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            new = engine.rerun(run, "1", text=body)
            rerun.append(time.perf_counter() - t)
        seq = engine.run(QUESTION, mode="sequential", plan=plan, **kw)
        f, r = statistics.median(full), statistics.median(rerun)
        rerun_calls = new.tokens.filter(new.tokens["branch"].is_in(redo))["forward_call"].n_unique()
        print(f"| {label} | {phase2_calls(run)} | {phase2_calls(seq)} | {f:.3f} | {r:.3f} | {r / f:.2f}x "
              f"| {rerun_calls} |")
    engine.step_chunk = None
    print()


def batching(args) -> None:
    engine = ml.Engine.load(device=args.device)
    records = ml.curate.synthesize(args.questions, seed=0, split="test")
    questions = [format_question(q) for q in load_questions(records)]
    engine.run_many(questions[:4], temperature=0, batch_size=4)  # warm-up
    print(f"### 2. Many questions per forward ({args.questions} held-out synthetic questions, teaching model, "
          "greedy)\n")
    print("| batch | seconds | questions/s | tokens/s | vs batch 1 |")
    print("|---:|---:|---:|---:|---:|")
    out, base = {}, None
    for bs in (1, 8):
        t = time.perf_counter()
        runs = engine.run_many(questions, temperature=0, batch_size=bs)
        dt = time.perf_counter() - t
        out[bs] = runs
        qps = len(questions) / dt
        base = base or qps
        tokens = sum(r.layout.T for r in runs)
        print(f"| {bs} | {dt:.1f} | {qps:.2f} | {tokens / dt:.0f} | {qps / base:.2f}x |")
    same = sum(a.layout.token_ids == b.layout.token_ids for a, b in zip(out[1], out[8]))
    print(f"\nruns of batch 8 equal to batch 1, token for token: {same} / {len(questions)}\n")


@torch.inference_mode()
def cache_layout(args) -> None:
    """Why one block-diagonal cache and not a padded [batch, seq] cache: raw forwards of the
    teaching model for the two cases a continuous batch meets every step."""
    from medverse_lab.engine.kv import new_cache

    engine = ml.Engine.load(device=args.device)
    model, dev, b, ctx, prompt = engine.model, engine.device, 8, 300, 250
    vocab = model.config.vocab_size

    def timed(fn, reps=10):
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def filled(batch, length):
        cache = new_cache(model.config)
        model(input_ids=torch.randint(20, vocab, (batch, length), device=dev), cache=cache, use_cache=True)
        return cache

    def trimmed(cache, length):
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]

    def forward(cache, ids, mask, length):
        def go():
            model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True,
                  position_ids=torch.full(ids.shape, ctx, device=dev), logits_to_keep=1)
            trimmed(cache, length)
        return go

    rows = []
    # (a) every run decodes one token: block-diagonal q = 8 over 8 x 300 slots vs [8, 1] over [8, 300]
    flat, padded = filled(1, b * ctx), filled(b, ctx)
    own = torch.arange(b * ctx + b, device=dev) // ctx
    own[b * ctx:] = torch.arange(b, device=dev)
    diag = (own[b * ctx:, None] == own[None, :])[None, None]
    rows.append(("8 runs decode one token each", timed(forward(flat, torch.randint(20, vocab, (1, b), device=dev),
                                                                diag, b * ctx)),
                 timed(forward(padded, torch.randint(20, vocab, (b, 1), device=dev), None, ctx))))
    # (b) one run joins with a 250-token prompt while 7 decode: the prompt in its own forward (what
    # Batch.join does) then q = 8; or a padded [8, 250] forward, every row padded to the prompt
    solo = new_cache(model.config)
    join = lambda: model(input_ids=torch.randint(20, vocab, (1, prompt), device=dev), cache=new_cache(model.config),
                         use_cache=True, logits_to_keep=1)
    pad_mask = torch.ones(b, 1, prompt, ctx + prompt, dtype=torch.bool, device=dev)
    rows.append(("one run joins with a 250-token prompt, 7 decode",
                 timed(join) + timed(forward(flat, torch.randint(20, vocab, (1, b), device=dev), diag, b * ctx)),
                 timed(forward(padded, torch.randint(20, vocab, (b, prompt), device=dev), pad_mask, ctx), reps=3)))
    del solo
    print("### Cache layout for a batch (teaching model, raw forwards, median seconds)\n")
    print("| step | one block-diagonal cache (ours) | padded [8, seq] cache | padded / ours |")
    print("|---|---:|---:|---:|")
    for name, ours, pad in rows:
        print(f"| {name} | {ours * 1e3:.1f} ms | {pad * 1e3:.1f} ms | {pad / ours:.2f}x |")
    print()


def start_server(*extra: str):
    """A ``medverse-lab serve`` process on a free port; returns ``(process, url)`` once it answers."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "medverse_lab.cli", "serve", "--port", str(port), "--max-batch",
                             "8", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    return proc, url


def serving(args) -> None:
    import httpx

    proc, url = start_server()
    try:
        records = ml.curate.synthesize(args.requests, seed=1, split="test")
        questions = [format_question(q) for q in load_questions(records)]

        def ask(q):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
                "temperature": 0, "messages": [{"role": "user", "content": q}]})
            r.raise_for_status()

        ask(questions[0])  # warm-up
        print(f"### 3. `medverse-lab serve` ({args.requests} chat requests, teaching model, --max-batch 8)\n")
        print("| concurrent clients | seconds | requests/s | vs one at a time |")
        print("|---:|---:|---:|---:|")
        base = None
        for c in (1, 8, 32):
            t = time.perf_counter()
            with ThreadPoolExecutor(c) as pool:
                list(pool.map(ask, questions))
            dt = time.perf_counter() - t
            rps = len(questions) / dt
            base = base or rps
            print(f"| {c} | {dt:.1f} | {rps:.2f} | {rps / base:.2f}x |")
        print(f"\nserver stats: {httpx.get(f'{url}/health').json()}\n")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def fairness(args) -> None:
    """Issue 21's figure: a short request's latency while a long prompt prefills, over alone."""
    import threading

    import httpx

    proc, url = start_server("--max-model-len", "32768")
    short = {"temperature": 0, "max_tokens": 48, "messages": [{"role": "user", "content": QUESTION}]}

    def ask() -> float:
        t = time.perf_counter()
        httpx.post(f"{url}/v1/chat/completions", json=short, timeout=600).raise_for_status()
        return time.perf_counter() - t

    def prefilling() -> bool:
        return httpx.get(f"{url}/health", timeout=10).json()["prefilling"] > 0

    long_text = " ".join(f"w{i % 97}" for i in range(int(args.long_tokens / 2.9)))
    try:
        ask()
        alone = [ask() for _ in range(args.repeats * 3)]
        took = {}

        def long_prompt():
            t = time.perf_counter()
            httpx.post(f"{url}/v1/chat/completions", timeout=3600, json={
                "temperature": 0, "max_tokens": 1, "messages": [{"role": "user", "content": long_text}]})
            took["s"] = time.perf_counter() - t

        th = threading.Thread(target=long_prompt)
        th.start()
        while not prefilling():
            time.sleep(0.01)
        during = []
        while True:  # short requests one after another while the long prompt is fed
            dt = ask()
            if not prefilling():
                break  # this one may have outlived the prefill: not counted
            during.append(dt)
        th.join()
        a, d = statistics.median(alone), statistics.median(during)
        n_long = len(ml.Engine.load().encode(long_text))
        print("### 5. Fair prefill (`--max-model-len 32768`, `--prefill-chunk` default)\n")
        print("| short chat request (48 tokens) | median s | requests |")
        print("|---|---:|---:|")
        print(f"| alone | {a:.3f} | {len(alone)} |")
        print(f"| while a {n_long}-token prompt prefills | {d:.3f} | {len(during)} |")
        print(f"\nratio: **{d / a:.2f}x** (max {max(during) / a:.2f}x); the long prompt's request took "
              f"{took['s']:.1f} s\n")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def soak(args) -> None:
    """Resident memory of the server over many mixed requests after a warm-up."""
    import json
    import random

    import httpx

    proc, url = start_server()
    records = ml.curate.synthesize(64, seed=2, split="test")
    questions = [format_question(q) for q in load_questions(records)]
    rng = random.Random(0)

    def one(i: int) -> None:
        q = questions[i % len(questions)]
        msgs = [{"role": "user", "content": q}]
        kind = i % 8
        cap = {"max_tokens": args.soak_tokens}
        with httpx.Client(timeout=600) as http:
            if kind == 0:
                http.post(f"{url}/v1/chat/completions", json={"messages": msgs, "temperature": 0, **cap})
            elif kind == 1:
                with http.stream("POST", f"{url}/v1/chat/completions", json={
                        "messages": msgs, "stream": True, "stream_options": {"include_usage": True}, **cap}) as r:
                    for _ in r.iter_lines():
                        pass
            elif kind == 2:
                http.post(f"{url}/v1/completions", json={"prompt": q, "temperature": 0.7, "seed": i, "logprobs": 2,
                                                         **cap})
            elif kind == 3:
                http.post(f"{url}/generate", json={"text": q, "sampling_params": {
                    "temperature": 0, "max_new_tokens": args.soak_tokens}})
            elif kind == 4:
                http.post(f"{url}/v1/chat/completions", json={"messages": msgs, "n": 2, "temperature": 1.0, "seed": i,
                                                               **cap})
            elif kind == 5:
                http.post(f"{url}/v1/chat/completions", json={"messages": msgs, "stop": ["</Outline>"],
                                                               "logprobs": True, "top_logprobs": 2, **cap})
            elif kind == 6:  # a client that hangs up mid-stream
                with http.stream("POST", f"{url}/v1/chat/completions", json={"messages": msgs, "stream": True,
                                                                             **cap}) as r:
                    lines = r.iter_lines()
                    for _ in range(rng.randint(1, 40)):
                        next(lines, None)
            else:  # refused bodies
                http.post(f"{url}/v1/chat/completions", content=json.dumps(
                    {"messages": [{"role": "user", "content": [{"type": "text", "text": i}]}]}),
                    headers={"Content-Type": "application/json"})
                http.post(f"{url}/v1/chat/completions", json={"messages": msgs, "max_tokens": 24})

    def rss() -> float:
        return httpx.get(f"{url}/health", timeout=30).json()["rss_mb"]

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(args.warmup)))
        rows = [(0, rss(), time.perf_counter() - t0)]
        print(f"after warm-up: {rows[0][1]:.0f} MB", file=sys.stderr, flush=True)
        done = 0
        while done < args.soak_requests:
            n = min(100, args.soak_requests - done)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, range(args.warmup + done, args.warmup + done + n)))
            done += n
            rows.append((done, rss(), time.perf_counter() - t0))
            print(f"{done}: {rows[-1][1]:.0f} MB, {rows[-1][2]:.0f} s", file=sys.stderr, flush=True)
        health = httpx.get(f"{url}/health", timeout=30).json()
        print(f"### 6. Soak: {args.soak_requests} mixed requests after {args.warmup} to warm up (8 clients, "
              f"replies capped at {args.soak_tokens} tokens)\n")
        print("| requests after warm-up | server RSS MB | elapsed s |")
        print("|---:|---:|---:|")
        for n, mb, t in rows:
            print(f"| {n} | {mb:.0f} | {t:.0f} |")
        print(f"\nRSS {rows[0][1]:.0f} -> {rows[-1][1]:.0f} MB ({rows[-1][1] - rows[0][1]:+.0f} MB), "
              f"max {max(r[1] for r in rows):.0f} MB; server stats: {health}\n")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--step-tokens", type=int, default=24)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--long-tokens", type=int, default=20_000, help="the long prompt of the fairness figure")
    ap.add_argument("--soak-requests", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--soak-tokens", type=int, default=96, help="max_tokens of each soak request")
    ap.add_argument("--only", choices=("chunking", "batching", "layout", "serving", "fairness", "soak"))
    args = ap.parse_args(argv)
    print(f"Machine: {machine()}\n")
    for name, part in (("chunking", chunking), ("batching", batching), ("layout", cache_layout),
                       ("serving", serving), ("fairness", fairness), ("soak", soak)):
        if args.only in (None, name):
            part(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
