"""Topology-aware supervised fine-tuning.

Each example is a MedVerse record (system, user and assistant turns; any shape
:func:`medverse_lab.data.records.turns` reads), batched by :class:`~medverse_lab.TopologyCollator`
with the mask and positions of the chosen mode, the very functions the engine decodes with.
The loss covers the assistant turn only, and only tokens whose logical predecessor they
can see: the first token of a step is never predicted from a sibling's last token, because
no decoder ever does that.

    from medverse_lab.training.trainer import TrainConfig, train
    train(TrainConfig(data="train.jsonl", out="runs/dag", mode="dag", steps=1000))

Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) the same call trains with N
processes: each takes every N-th example of a batch, gradients are all-reduced (DDP; gloo on
CPU, NCCL on CUDA), and only rank 0 writes the checkpoint. The loss is normalised by the
tokens of the whole batch, so N processes take the steps one process would.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.records import load_records, turns
from ..modes import MODES, Mode, check_mode
from ..tokens import add_medverse_tokens, tag_ids, to_dtype, train_tokenizer
from . import distributed
from .collator import IGNORE, TopologyCollator, TopologyExample


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved beside each checkpoint."""

    data: str                              # JSONL of MedVerse records
    out: str                               # checkpoint folder
    mode: Mode = "dag"                      # one of MODES; recorded as config.medverse_mode
    eval_data: str | None = None           # JSONL; default: hold out eval_fraction of data
    eval_fraction: float = 0.02
    init: str | None = None                # a local causal-LM folder to fine-tune; default: a new Qwen2 model
    tokenizer: str | None = None           # a tokenizer folder; default: init's, else a BPE trained on the data
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 5
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    max_len: int = 512                     # longer examples are skipped, never truncated
    batch_size: int = 8                    # examples per optimizer micro-step, over all processes
    grad_accum: int = 1
    steps: int = 1000                      # optimizer steps
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 200
    save_dtype: str = "float16"            # weights on disk; loaded back in float32
    seed: int = 0
    device: str | None = None
    resume: bool = False

    def __post_init__(self):
        check_mode(self.mode, MODES)
        to_dtype(self.save_dtype)
        for name in ("batch_size", "grad_accum", "steps", "max_len", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)}: must be >= 1")


def new_model(cfg: TrainConfig, tokenizer):
    """A Qwen2 causal LM of the configured size, randomly initialised."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=max(2048, 4 * cfg.max_len),
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``.

    Written out rather than transformers' ``get_cosine_with_min_lr_schedule_with_warmup``:
    that one is a ``LambdaLR`` bound to the optimizer (a resumed run must replay it step by
    step) and starts warmup at lr 0, one step behind this schedule, which trained the
    shipped teaching model; a pure function of the step resumes anywhere exactly.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def local_checkpoint(path: str) -> Path:
    """``path`` as a local checkpoint folder with safetensors weights, else
    ``FileNotFoundError`` saying what is missing: nothing is downloaded."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"init {path!r} is not a local folder: fine-tuning starts from a checkpoint folder on "
                                "this machine (config.json, *.safetensors, tokenizer files); nothing is downloaded")
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"init {folder} needs config.json and *.safetensors weights (save with "
                                "model.save_pretrained(folder, safe_serialization=True))")
    return folder


def _tokenizer_and_model(cfg: TrainConfig, records: list[dict], job: distributed.Job):
    """The tokenizer and model a fresh run starts from, the same on every process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.init:
        init = local_checkpoint(cfg.init)
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or init, local_files_only=True, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, use_safetensors=True,
                                                     local_files_only=True, trust_remote_code=False)
        add_medverse_tokens(tokenizer, model)  # the 12 tags as single tokens, embeddings resized
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, model
    if cfg.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer, local_files_only=True)
    else:
        # rank 0 trains the BPE and hands it to the others: every process must cut text alike
        texts = [t for r in records for t in turns(r) if t] if job.main else []
        tokenizer = distributed.from_main(job, train_tokenizer(texts, vocab_size=cfg.vocab_size) if job.main else None)
    tag_ids(tokenizer)  # the tags must be single tokens
    return tokenizer, new_model(cfg, tokenizer)


@torch.no_grad()
def evaluate_loss(model, examples: list[TopologyExample], cfg: TrainConfig, collator: TopologyCollator, device,
                  job: distributed.Job = distributed.Job()) -> float:
    """Mean token loss over the first ``eval_batches`` batches of ``examples`` (each
    process takes its share of every batch; the mean is over all of them)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, min(len(examples), cfg.eval_batches * cfg.batch_size), cfg.batch_size):
        part = distributed.shard(examples[i:i + cfg.batch_size], job)
        if not part:
            continue
        batch = {k: v.to(device) for k, v in collator(part).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())
        if n:
            total += float(model(**batch).loss) * n
            count += n
    model.train()
    total, count = distributed.all_sum(job, total, count)
    return total / max(1, count)


MODEL_CARD = """\
---
library_name: transformers
tags: [medverse, medverse-lab, {mode}]
---
# {name}

A MedVerse model (plan, steps decoded in parallel, conclusion) trained by `medverse_lab.training.trainer`.

| | |
|---|---|
| mode | `{mode}` (`config.medverse_mode`): trained with `ml.attention_mask(layout, "{mode}")` and `ml.position_ids(layout, "{mode}")`, loss on the assistant turn |
| data | `{data}`: {examples} training examples ({skipped} longer than {max_len} tokens skipped); eval: {eval} |
| started from | {init} |
| model | {arch}, {params:,} parameters, vocabulary {vocab} |
| schedule | {step} of {steps} steps, batch {batch_size} x {grad_accum} over {processes} process(es), AdamW lr {lr}, warm-up {warmup}, cosine to {min_lr_ratio}x, seed {seed} |
| loss | train {loss}, eval {eval_loss} (step {eval_step}) |

Load it with `ml.Engine.load("{out}")` (the engine decodes with mode `{mode}` by default).
The full settings are in `train_config.json`, the loss per step in `history.json`.
"""


def model_card(model, cfg: TrainConfig, step: int, history: list[dict], facts: dict) -> str:
    """The checkpoint's README.md: mode, data, starting point, size, schedule, losses."""
    last_eval = next((h for h in reversed(history) if "eval_loss" in h), {})
    init = f"`{cfg.init}` (the 12 MedVerse tags added, embeddings resized)" if cfg.init else \
        "a new Qwen2 model, randomly initialised"
    return MODEL_CARD.format(
        name=Path(cfg.out).name, mode=cfg.mode, data=cfg.data, examples=facts.get("examples", "?"),
        skipped=facts.get("skipped", "?"), max_len=cfg.max_len,
        eval=f"`{cfg.eval_data}`" if cfg.eval_data else f"{cfg.eval_fraction:.0%} of the data held out",
        init=init, arch=type(model).__name__, params=sum(p.numel() for p in model.parameters()),
        vocab=model.get_input_embeddings().weight.shape[0], step=step, steps=cfg.steps,
        batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, processes=facts.get("processes", 1), lr=cfg.lr,
        warmup=cfg.warmup, min_lr_ratio=cfg.min_lr_ratio, seed=cfg.seed,
        loss=history[-1]["loss"] if history else "-", eval_loss=last_eval.get("eval_loss", "-"),
        eval_step=last_eval.get("step", "-"), out=cfg.out)


def save_checkpoint(model, tokenizer, optimizer, cfg: TrainConfig, step: int, history: list[dict],
                    facts: dict | None = None) -> Path:
    """Weights (safetensors, ``save_dtype``), tokenizer, config with ``medverse_mode``,
    the model card, and the optimizer state for resuming; written to a temp folder then
    renamed, so a crash never leaves a half-written checkpoint."""
    out = Path(cfg.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.config.medverse_mode = cfg.mode
    dtype = to_dtype(cfg.save_dtype)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    # full-precision weights for an exact resume; the shipped weights are save_dtype
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "rng": torch.get_rng_state(), "py_rng": random.getstate()}, tmp / "trainer_state.pt")
    (tmp / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    (tmp / "history.json").write_text(json.dumps(history, indent=1))
    (tmp / "README.md").write_text(model_card(model, cfg, step, history, facts or {}))
    if out.exists():
        old = out.with_name(out.name + ".old")
        out.rename(old)
        tmp.rename(out)
        import shutil

        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def train(cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> dict:
    """Train; returns ``{"history": [...], "out": path, "skipped": n, "seconds": s, "model": model, ...}``.

    ``history`` holds ``{"step", "loss", "lr"}`` per step and ``eval_loss`` every
    ``eval_every`` steps. With ``resume=True`` an existing checkpoint in ``out`` is continued.
    ``stop_after`` ends this call after that many steps (saving), as an interruption would;
    a later call with ``resume=True`` carries on with the same schedule and batches.
    Launched by ``torchrun``/``accelerate launch`` it trains with every process (module docstring).
    """
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    job, joined = distributed.join(device.type)
    try:
        if job.distributed and device.type == "cuda":
            device = torch.device("cuda", job.local_rank)
        return _train(cfg, device, job, progress, stop_after)
    finally:
        distributed.leave(joined)


def _train(cfg: TrainConfig, device: torch.device, job: distributed.Job, progress: bool,
           stop_after: int | None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cfg.batch_size < job.world:
        raise ValueError(f"batch_size = {cfg.batch_size} is smaller than the {job.world} processes: each process "
                         "needs at least one example of every batch")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    records = load_records(cfg.data)
    out = Path(cfg.out)
    start_step, history, state = 0, [], None
    if cfg.resume and (out / "trainer_state.pt").exists():
        tokenizer = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True)
        saved = json.loads((out / "train_config.json").read_text())
        changed = {k: (saved[k], v) for k, v in asdict(cfg).items()
                   if k in ("mode", "data", "batch_size", "grad_accum", "seed") and saved.get(k) != v}
        if changed:
            raise ValueError(f"cannot resume {out}: {changed} differ from the checkpoint's settings (saved, asked)")
        state = torch.load(out / "trainer_state.pt", weights_only=True, map_location="cpu")
        model.load_state_dict(state["model"])
        start_step = state["step"]
        history = json.loads((out / "history.json").read_text())
    else:
        tokenizer, model = _tokenizer_and_model(cfg, records, job)
    model.config._attn_implementation = "sdpa"
    model.to(device).train()
    # DDP all-reduces (averages) the gradients of every process in backward
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None) if job.distributed else model

    rng = random.Random(cfg.seed)
    if cfg.eval_data:
        train_records, eval_records = records, load_records(cfg.eval_data)
    else:
        shuffled = records[:]
        rng.shuffle(shuffled)
        n_eval = max(1, int(len(shuffled) * cfg.eval_fraction))
        train_records, eval_records = shuffled[n_eval:], shuffled[:n_eval]
    collator = TopologyCollator(tokenizer, cfg.mode, cfg.max_len)
    train_examples = collator.prepare(train_records, source=cfg.data, progress=False, warn=False)
    skipped = len(collator.skipped)
    eval_examples = collator.prepare(eval_records, source=cfg.eval_data or cfg.data, progress=False, warn=False)
    facts = {"examples": len(train_examples), "skipped": skipped, "processes": job.world}

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        random.setstate(state["py_rng"])

    # one fixed permutation per epoch, derived from the seed, so a resumed run sees the same batches
    per_step = cfg.batch_size * cfg.grad_accum

    def batch_at(step: int, micro: int) -> list[TopologyExample]:
        k = (step * cfg.grad_accum + micro) * cfg.batch_size
        epoch, offset = divmod(k, len(train_examples))
        order = list(range(len(train_examples)))
        random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
        idx = [order[(offset + j) % len(order)] for j in range(cfg.batch_size)]
        return [train_examples[i] for i in idx]

    def save(step: int) -> None:
        if job.main:  # one writer; the others wait so that nobody reads a half-renamed folder
            save_checkpoint(model, tokenizer, optimizer, cfg, step, history, facts)
        distributed.barrier(job)

    t0 = time.perf_counter()
    end_step = cfg.steps if stop_after is None else min(cfg.steps, start_step + stop_after)
    bar = tqdm(range(start_step, end_step), initial=start_step, total=cfg.steps, disable=not (progress and job.main),
               desc=f"train {cfg.mode}" + (f" x{job.world}" if job.distributed else ""), mininterval=2.0)
    for step in bar:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = [distributed.shard(batch_at(step, m), job) for m in range(cfg.grad_accum)]
        # normalise by the loss tokens of the whole step (all micro-batches, all processes)
        local = sum(int((e.labels[1:] != IGNORE).sum()) for part in micro for e in part)
        n_tokens = max(1, int(distributed.all_sum(job, local)[0]))
        loss_sum = 0.0
        for m, part in enumerate(micro):  # one micro-batch's mask in memory at a time
            batch = {k: v.to(device) for k, v in collator(part).items()}
            last = m == len(micro) - 1
            with nullcontext() if last or not job.distributed else ddp.no_sync():
                loss = ddp(**batch, num_items_in_batch=n_tokens).loss
                (loss * job.world).backward()  # DDP averages over processes; each loss is a share of the sum
            loss_sum += loss.item()
        loss_sum = distributed.all_sum(job, loss_sum)[0]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, "loss": round(loss_sum, 4), "lr": lr}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            record["eval_loss"] = round(evaluate_loss(model, eval_examples, cfg, collator, device, job), 4)
        history.append(record)
        bar.set_postfix(loss=f"{loss_sum:.3f}", **({"eval": record["eval_loss"]} if "eval_loss" in record else {}))
        if (step + 1) % cfg.save_every == 0 or step + 1 == end_step:
            save(step + 1)
    seconds = time.perf_counter() - t0
    if start_step >= cfg.steps:
        save(cfg.steps)
    return {"history": history, "out": str(out), "skipped": skipped, "seconds": seconds,
            "examples": len(train_examples), "examples_per_step": per_step, "processes": job.world,
            "rank": job.rank, "model": model}
