"""Topology-aware supervised fine-tuning.

Each example is a MedVerse record (system, user and assistant turns; any shape
:func:`medverse_lab.records.turns` reads). Its tokens are
laid out with :class:`~medverse_lab.Layout` and trained with the mask and positions of
the chosen mode, the very functions the engine decodes with. The loss covers the
assistant turn only, and only tokens whose logical predecessor they can see: the first
token of a step is never predicted from a sibling's last token, because no decoder ever
does that.

    from medverse_lab.train import TrainConfig, train
    train(TrainConfig(data="train.jsonl", out="runs/dag", mode="dag", steps=1000))
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .layout import Layout
from .prompt import chat_prefix
from .records import load_records, turns
from .tokens import tag_ids, to_dtype, train_tokenizer
from .topology import MODES, attention_mask, check_mode, position_ids


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved beside each checkpoint."""

    data: str                              # JSONL of MedVerse records
    out: str                               # checkpoint folder
    mode: str = "dag"                      # one of MODES; recorded as config.medverse_mode
    eval_data: str | None = None           # JSONL; default: hold out eval_fraction of data
    eval_fraction: float = 0.02
    init: str | None = None                # a checkpoint to fine-tune; default: a new Qwen2 model
    tokenizer: str | None = None           # a tokenizer folder; default: train a BPE on the data
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 5
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 688
    max_len: int = 512                     # longer examples are skipped, never truncated
    batch_size: int = 8
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


@dataclass
class Example:
    ids: list[int]
    loss_from: int  # first index of the assistant turn
    layout: Layout = field(repr=False)


def split_record(record: dict) -> tuple[str | None, str, str]:
    """``(system, user, assistant)`` of a record; ``ValueError`` naming it when it lacks
    the user or the assistant turn."""
    system, user, assistant = turns(record)
    if user is None or assistant is None:
        rid = record.get("id", "?") if isinstance(record, dict) else "?"
        raise ValueError(f"record {rid!r} has no user and assistant turns (messages, conversations or ChatML text)")
    return system, user, assistant


def encode(record: dict, tokenizer) -> Example:
    """Token ids of prompt + assistant turn (+ eos) and their layout."""
    system, user, assistant = split_record(record)
    prompt = tokenizer(chat_prefix(tokenizer, user, system), add_special_tokens=False)["input_ids"]
    answer = tokenizer(assistant, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt + answer
    return Example(ids, len(prompt), Layout.from_token_ids(ids, tokenizer))


def collate(examples: list[Example], mode: str, pad_id: int) -> dict[str, torch.Tensor]:
    """A padded batch: ids, an additive float mask ``[B, 1, L, L]``, positions, labels."""
    L = max(len(e.ids) for e in examples)
    B = len(examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    allowed = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)  # padding sees itself: no empty rows
    pos = torch.zeros((B, L), dtype=torch.long)
    for b, e in enumerate(examples):
        T = len(e.ids)
        ids[b, :T] = torch.tensor(e.ids)
        mask = attention_mask(e.layout, mode)
        allowed[b, :T, :T] = mask
        pos[b, :T] = position_ids(e.layout, mode)
        target = torch.zeros(T, dtype=torch.bool)
        target[max(1, e.loss_from):] = True
        target[1:] &= mask.diagonal(-1)  # the predecessor must be visible
        labels[b, :T][target] = ids[b, :T][target]
    float_mask = torch.zeros((B, 1, L, L)).masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    return {"input_ids": ids, "attention_mask": float_mask, "position_ids": pos, "labels": labels}


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
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _prepare(cfg: TrainConfig, tokenizer, records, what: str) -> tuple[list[Example], int]:
    examples, skipped, shortest = [], 0, None
    for r in tqdm(records, desc="encoding", leave=False, mininterval=1.0):
        try:
            e = encode(r, tokenizer)
        except ValueError as exc:  # PlanError, LayoutError, a record without turns
            raise ValueError(f"record {r.get('id', '?')!r} in {cfg.data}: {exc}") from None
        if len(e.ids) > cfg.max_len:
            skipped += 1
            shortest = min(shortest or len(e.ids), len(e.ids))
        else:
            examples.append(e)
    if not examples:
        raise ValueError(f"no {what} example fits max_len={cfg.max_len}: the shortest of {len(records)} "
                         f"is {shortest} tokens; raise max_len or grow the tokenizer's vocabulary")
    return examples, skipped


@torch.no_grad()
def evaluate_loss(model, examples: list[Example], cfg: TrainConfig, pad_id: int, device) -> float:
    """Mean token loss over the first ``eval_batches`` batches of ``examples``."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, min(len(examples), cfg.eval_batches * cfg.batch_size), cfg.batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[i:i + cfg.batch_size], cfg.mode, pad_id).items()}
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n
        count += n
    model.train()
    return total / max(1, count)


def save_checkpoint(model, tokenizer, optimizer, cfg: TrainConfig, step: int, history: list[dict]) -> Path:
    """Weights (safetensors, ``save_dtype``), tokenizer, config with ``medverse_mode``,
    and the optimizer state for resuming; written to a temp folder then renamed, so a
    crash never leaves a half-written checkpoint."""
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
    """Train; returns ``{"history": [...], "out": path, "skipped": n, "seconds": s}``.

    ``history`` holds ``{"step", "loss", "lr"}`` per step and ``eval_loss`` every
    ``eval_every`` steps. With ``resume=True`` an existing checkpoint in ``out`` is continued.
    ``stop_after`` ends this call after that many steps (saving), as an interruption would;
    a later call with ``resume=True`` carries on with the same schedule and batches.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
        if cfg.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer)
        else:
            texts = (f"{m['content']}" for r in records for m in r["messages"])
            tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
        tag_ids(tokenizer)  # the tags must be single tokens
        if cfg.init:
            model = AutoModelForCausalLM.from_pretrained(cfg.init, dtype=torch.float32, use_safetensors=True)
        else:
            model = new_model(cfg, tokenizer)
    model.config._attn_implementation = "sdpa"
    model.to(device).train()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    rng = random.Random(cfg.seed)
    if cfg.eval_data:
        train_records, eval_records = records, load_records(cfg.eval_data)
    else:
        shuffled = records[:]
        rng.shuffle(shuffled)
        n_eval = max(1, int(len(shuffled) * cfg.eval_fraction))
        train_records, eval_records = shuffled[n_eval:], shuffled[:n_eval]
    train_examples, skipped = _prepare(cfg, tokenizer, train_records, "training")
    eval_examples, _ = _prepare(cfg, tokenizer, eval_records, "eval")

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

    def batch_at(step: int, micro: int) -> list[Example]:
        k = (step * cfg.grad_accum + micro) * cfg.batch_size
        epoch, offset = divmod(k, len(train_examples))
        order = list(range(len(train_examples)))
        random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
        idx = [order[(offset + j) % len(order)] for j in range(cfg.batch_size)]
        return [train_examples[i] for i in idx]

    t0 = time.perf_counter()
    end_step = cfg.steps if stop_after is None else min(cfg.steps, start_step + stop_after)
    bar = tqdm(range(start_step, end_step), initial=start_step, total=cfg.steps, disable=not progress,
               desc=f"train {cfg.mode}", mininterval=2.0)
    for step in bar:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            batch = {k: v.to(device) for k, v in collate(batch_at(step, micro), cfg.mode, pad_id).items()}
            loss = model(**batch).loss / cfg.grad_accum
            loss.backward()
            loss_sum += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, "loss": round(loss_sum, 4), "lr": lr}
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            record["eval_loss"] = round(evaluate_loss(model, eval_examples, cfg, pad_id, device), 4)
        history.append(record)
        bar.set_postfix(loss=f"{loss_sum:.3f}", **({"eval": record["eval_loss"]} if "eval_loss" in record else {}))
        if (step + 1) % cfg.save_every == 0 or step + 1 == end_step:
            save_checkpoint(model, tokenizer, optimizer, cfg, step + 1, history)
    seconds = time.perf_counter() - t0
    if start_step >= cfg.steps:
        save_checkpoint(model, tokenizer, optimizer, cfg, cfg.steps, history)
    return {"history": history, "out": str(out), "skipped": skipped, "seconds": seconds,
            "examples": len(train_examples), "examples_per_step": per_step}


def config_from_args(args) -> TrainConfig:
    """A :class:`TrainConfig` from parsed CLI arguments (same names)."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})


# ----- command line -------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="checkpoint folder")
    parser.add_argument("--data", help="training JSONL (MedVerse records); default: synthesize with the Curator")
    parser.add_argument("--synthesize", type=int, default=20000, metavar="N",
                        help="without --data: synthesize N training records from the shipped knowledge graph")
    parser.add_argument("--eval-data", dest="eval_data")
    for f in fields(TrainConfig):
        if f.name in ("data", "out", "eval_data"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=f"default {f.default}")


def main(args) -> int:
    if not args.data:
        from .curate import synthesize, write_jsonl

        data = Path(args.out).with_name(Path(args.out).name + "-data")
        data.mkdir(parents=True, exist_ok=True)
        seed = args.seed or 0
        write_jsonl(synthesize(args.synthesize, seed=seed, split="train"), data / "train.jsonl")
        args.data = str(data / "train.jsonl")
        print(f"synthesized {args.synthesize} training records (seed {seed}) into {args.data}")
    result = train(config_from_args(args))
    last = result["history"][-1]
    print(f"trained {len(result['history'])} steps in {result['seconds']:.0f} s on {result['examples']} examples "
          f"({result['skipped']} too long, skipped); final loss {last['loss']}, eval loss {last.get('eval_loss')}; "
          f"saved to {result['out']}")
    return 0
