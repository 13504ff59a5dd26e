"""Engine benchmark: Phase II speed of parallel (`dag`) vs `sequential` decoding, the
ceiling the hardware allows, KV-cache memory, and the sequential scheduler vs HF `generate`.

    python benchmarks/bench_engine.py [--repeats 3] [--step-tokens 64] [--device cpu]

Everything is measured in this one run on one model and printed as markdown; nothing is
written. The model is a random-weight Qwen2 of about 5M parameters built from config
(vocabulary: the BPE tokenizer trained on the shipped example), float32 on CPU. Its output
rows for special tokens are zeroed so no step closes early: every step body is exactly
``--step-tokens`` tokens and ``</Step>`` is forced, so both modes decode the same amount.

Definitions (per plan of W roots + 1 join, greedy):
- Phase II time: ``run.timings["steps"]`` (first step token to last step token).
- speedup: sequential Phase II time / dag Phase II time.
- ceiling: the same forward-call schedules replayed as raw ``model(...)`` calls (inputs,
  masks and positions precomputed, no engine code): sequential replay time / dag replay
  time. It is what a zero-overhead engine would reach on this hardware, including the
  join step, which no scheduler can parallelise. efficiency = speedup / ceiling.
- k·t1/tk: raw forwards feeding k tokens at once vs one, at the same cache length: the
  width-only ceiling of the hardware (before the join step is counted).
- KV bytes: the run's one cache vs decoding each branch as its own sequence with a copy of
  the prefix and of the ancestors it reads (the conclusion holding everything).
- generate: HF ``model.generate`` (greedy, same prefix, same number of new tokens), time
  per token excluding its prefill, vs the sequential scheduler's Phase II time per token.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

import medverse_lab as ml
from medverse_lab.tokens import train_tokenizer

EXAMPLE = Path(ml.__file__).parent / "examples" / "stemi.txt"
QUESTION = "A 54-year-old man has crushing chest pain and ST elevation in II, III and aVF. Next step?"
WIDTHS = (1, 2, 4, 6, 8)


def build(device: str) -> ml.Engine:
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = train_tokenizer([EXAMPLE.read_text()] * 4, vocab_size=512)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=1280, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval().to(device)
    engine = ml.Engine(model, tok)
    with torch.no_grad():  # no special token is ever the argmax: fixed step lengths
        for t in engine.step_stray | {engine.tags["</Step>"]}:
            model.lm_head.weight[t] = 0.0
    return engine


def plan_of(width: int) -> ml.Plan:
    roots = [ml.Step(str(i + 1), "finding -> implication") for i in range(width)]
    return ml.Plan(roots + [ml.Step(str(width + 1), "findings -> answer", deps=[s.id for s in roots])])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def phase2_calls(run):
    """Per Phase II forward call: (first cache slot, q) in call order."""
    df = run.tokens.filter(run.tokens["branch"].is_in(run.plan.ids)).sort("cache_index")
    calls: dict[int, list[int]] = {}
    for c, k in zip(df["forward_call"].to_list(), df["cache_index"].to_list()):
        calls.setdefault(c, []).append(k)
    return [(min(ks), len(ks)) for _, ks in sorted(calls.items())]


@torch.inference_mode()
def replay(engine, run) -> float:
    """Seconds of the run's Phase II forward calls replayed as raw model calls."""
    from medverse_lab.engine.kv import new_cache

    model, dev, dtype = engine.model, engine.device, engine.dtype
    df = run.tokens.sort("cache_index")
    logical = torch.tensor(df["logical_index"].to_list())
    ids = torch.tensor(df["token_id"].to_list(), device=dev)
    pos = torch.tensor(df["position"].to_list(), device=dev)
    allowed = ml.attention_mask(run.layout, run.mode)[logical][:, logical]  # cache order
    add = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min).to(dev)
    inputs = []
    for a, q in phase2_calls(run):
        full = q == 1 and bool(allowed[a, :a + 1].all())  # the engine passes no mask then, nor do we
        inputs.append((ids[a:a + q][None], pos[a:a + q][None], None if full else add[a:a + q, :a + q][None, None]))
    first = phase2_calls(run)[0][0]
    cache = new_cache(model.config)
    model(input_ids=ids[:first][None], position_ids=pos[:first][None], cache=cache, use_cache=True)
    sync(dev)
    t = time.perf_counter()
    for x, p, m in inputs:
        model(input_ids=x, position_ids=p, attention_mask=m, cache=cache, use_cache=True)
    sync(dev)
    return time.perf_counter() - t


@torch.inference_mode()
def forward_time(engine, cache_len: int, k: int, reps: int = 30) -> float:
    """Median seconds of one raw forward feeding k tokens over a cache of ``cache_len``."""
    from medverse_lab.engine.kv import new_cache

    model, dev = engine.model, engine.device
    ids = torch.randint(20, model.config.vocab_size, (1, cache_len + k), device=dev)
    cache = new_cache(model.config)
    model(input_ids=ids[:, :cache_len], cache=cache, use_cache=True)
    mask = torch.zeros(1, 1, k, cache_len + k, dtype=engine.dtype, device=dev)
    pos = torch.full((1, k), cache_len, device=dev)
    times = []
    for _ in range(reps):
        sync(dev)
        t = time.perf_counter()
        model(input_ids=ids[:, cache_len:], position_ids=pos, attention_mask=None if k == 1 else mask, cache=cache,
              use_cache=True)
        sync(dev)
        times.append(time.perf_counter() - t)
        for layer in cache.layers:  # back to cache_len slots
            layer.keys, layer.values = layer.keys[:, :, :cache_len], layer.values[:, :, :cache_len]
    return statistics.median(times)


def separate_sequences_bytes(run) -> int:
    """KV bytes if every branch were decoded as its own sequence holding a copy of all it reads."""
    mask, per_token = ml.attention_mask(run.layout, run.mode), run.cache_bytes // run.cache_len
    last = [s.stop - 1 for s in run.layout.segments[1:]]  # each step's and the conclusion's last token
    return int(mask[last].sum()) * per_token


@torch.inference_mode()
def generate_per_token(engine, run, reps: int = 1) -> float:
    """HF generate, greedy from the run's prefix: seconds per new token, prefill excluded."""
    n = sum(run.layout.step_lens.values())
    prefix = torch.tensor([run.layout.token_ids[:run.layout.prefix_len]], device=engine.device)
    pad = engine.tokenizer.pad_token_id

    def gen(k):
        sync(engine.device)
        t = time.perf_counter()
        out = engine.model.generate(input_ids=prefix, attention_mask=torch.ones_like(prefix), max_new_tokens=k,
                                    min_new_tokens=k, do_sample=False, pad_token_id=pad)
        sync(engine.device)
        assert out.shape[1] == prefix.shape[1] + k
        return time.perf_counter() - t

    gen(4)  # warm-up
    return statistics.median((gen(n) - gen(1)) / (n - 1) for _ in range(reps))


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (StopIteration, FileNotFoundError):
        cpu = platform.processor() or "unknown CPU"
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} torch threads ({__import__('os').cpu_count()} cores visible){gpu}; "
            f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
            f"Python {platform.python_version()}")


def parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options of the engine benchmarks: ``--repeats``, ``--step-tokens``, ``--device``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--step-tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap


def main(argv=None) -> int:
    args = parser(__doc__.split("\n\n")[0], repeats=5).parse_args(argv)
    engine = build(args.device)
    n_params = sum(p.numel() for p in engine.model.parameters())
    kw = dict(temperature=0, max_step_tokens=args.step_tokens, max_conclusion_tokens=4)
    print(f"Machine: {machine()}")
    print(f"Model: random Qwen2, {n_params / 1e6:.2f}M parameters, {engine.device}, {engine.dtype}, sdpa; "
          f"step body {args.step_tokens} tokens (forced close); median of {args.repeats} runs\n")
    engine.run(QUESTION, mode="dag", plan=plan_of(2), **kw)  # warm-up

    rows = []
    for w in WIDTHS:
        plan = plan_of(w)
        dag_t, seq_t, rdag, rseq = [], [], [], []
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both
            dag, seq = engine.run(QUESTION, mode="dag", plan=plan, **kw), engine.run(QUESTION, mode="sequential",
                                                                                      plan=plan, **kw)
            assert dag.layout.step_lens == seq.layout.step_lens  # same work in both modes
            dag_t.append(dag.timings["steps"])
            seq_t.append(seq.timings["steps"])
            rdag.append(replay(engine, dag))
            rseq.append(replay(engine, seq))
        tokens = sum(dag.layout.step_lens.values())
        d, s = statistics.median(dag_t), statistics.median(seq_t)
        ceiling = statistics.median(rseq) / statistics.median(rdag)
        mid = dag.layout.prefix_len + tokens // 2
        t1, tk = forward_time(engine, mid, 1), forward_time(engine, mid, w)
        rows.append(dict(w=w, tokens=tokens, dag=d, seq=s, speedup=s / d, ceiling=ceiling, eff=(s / d) / ceiling,
                         t1=t1, tk=tk, wceil=w * t1 / tk, kv=dag.cache_bytes, kv_sep=separate_sequences_bytes(dag),
                         calls=(len(phase2_calls(dag)), len(phase2_calls(seq)))))

    print("| roots + join | Phase II tokens | forward calls dag / seq | dag s | seq s | dag tok/s | seq tok/s "
          "| speedup | ceiling | efficiency | t1 ms | tk ms | k·t1/tk | KV one cache | KV separate | saved |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['w']} + 1 | {r['tokens']} | {r['calls'][0]} / {r['calls'][1]} | {r['dag']:.2f} | {r['seq']:.2f} "
              f"| {r['tokens'] / r['dag']:.0f} | {r['tokens'] / r['seq']:.0f} | {r['speedup']:.2f}x "
              f"| {r['ceiling']:.2f}x | {r['eff']:.2f} | {r['t1'] * 1e3:.2f} | {r['tk'] * 1e3:.2f} "
              f"| {r['wceil']:.2f} | {r['kv'] / 2**20:.2f} MiB | {r['kv_sep'] / 2**20:.2f} MiB "
              f"| {r['kv_sep'] / r['kv']:.2f}x |")

    plan = plan_of(6)
    ratios, ours_t, hf_t = [], [], []
    for _ in range(args.repeats):  # interleaved pairs: each ratio compares the same minute of the machine
        seq = engine.run(QUESTION, mode="sequential", plan=plan, **kw)
        n = sum(seq.layout.step_lens.values())
        ours, hf = seq.timings["steps"] / n, generate_per_token(engine, seq, reps=1)
        ratios.append(ours / hf)
        ours_t.append(ours)
        hf_t.append(hf)
    ratio = statistics.median(ratios)
    print(f"\nsequential scheduler vs HF generate (6 + 1 plan, {n} tokens from the same prefix): "
          f"{statistics.median(ours_t) * 1e3:.2f} ms/token vs {statistics.median(hf_t) * 1e3:.2f} ms/token; "
          f"median ratio {ratio:.2f}x of generate")
    six = next(r for r in rows if r["w"] == 6)
    print(f"targets (6 + 1): speedup {six['speedup']:.2f}x (>= 2.2), efficiency {six['eff']:.2f} (>= 0.85), "
          f"sequential / generate {ratio:.2f} (<= 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
