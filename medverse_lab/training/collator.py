"""A data collator for topology-aware training, for ``medverse_lab.training.trainer``,
``transformers.Trainer`` and TRL's ``SFTTrainer`` alike.

Each example is prepared once: tokenized, laid out (:class:`~medverse_lab.Layout`), its
position ids and loss targets computed, and its attention mask kept in compact form — a
*group* per token (a segment, or for ``medverse-sft`` a step block or the plain run
around it) and a small group × group visibility. A batch expands the visibility to the
dense additive mask ``[B, 1, L, L]`` in one gather, or hands it to flex_attention as a
block mask (:mod:`medverse_lab.training.block_mask`) whose memory grows with the number of blocks, not
with ``L²``. The expanded mask is ``ml.attention_mask(layout, mode)`` exactly.

    collator = ml.TopologyCollator(tokenizer, mode="dag", max_len=2048)
    examples = collator.prepare(records)          # once: skips (and counts) the too long ones
    Trainer(model, TrainingArguments(..., remove_unused_columns=False),
            train_dataset=examples, data_collator=collator).train()

A collator also takes raw records (``messages``, ``conversations`` or ChatML ``text``) or
tokenized ones (``{"input_ids": [...], "loss_from": n}``, see :func:`tokenize_record`):
what it has prepared once it keeps, keyed by content, so a later epoch costs a lookup.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..data.records import training_turns
from ..layout import Layout
from ..modes import MODES, Mode, check_mode
from ..prompt import chat_prefix
from ..tokens import tag_ids, to_dtype
from ..topology import group_visibility, position_ids

IGNORE = -100  # the label transformers' losses skip


# ----- one example ----------------------------------------------------------------------
def _name(feature, index: int | None, source: str | None) -> str:
    rid = feature.get("id") if isinstance(feature, dict) else None
    where = f" in {source}" if source else ""
    if rid is not None:
        return f"record {str(rid)!r}{where}"
    return f"record at position {index}{where}" if index is not None else f"a record{where}"


def tokenize_record(record: dict, tokenizer) -> dict:
    """``{"input_ids": prompt + assistant turn + eos, "loss_from": first assistant index}``.

    The prompt is the chat prefix the engine decodes from (:func:`medverse_lab.prompt.chat_prefix`);
    usable with ``datasets.Dataset.map`` to tokenize a dataset ahead of training.
    """
    system, user, assistant = training_turns(record, _name(record, None, None))
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: a trained turn must end with one (set tokenizer.eos_token)")
    prompt = tokenizer(chat_prefix(tokenizer, user, system), add_special_tokens=False)["input_ids"]
    answer = tokenizer(assistant, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt + answer, "loss_from": len(prompt)}


def _example_allowed(groups: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    # two 2-D index steps per example: several times faster than one [B, L, L] gather
    return vis[groups][:, groups].tril_()


@dataclass(frozen=True, eq=False)
class TopologyExample:
    """One prepared example: tensors of length ``T`` and its mask in compact form.

    ``groups[t]`` is the group of token t (groups are numbered in token order);
    ``visibility[g, h]`` says whether tokens of group g may see earlier tokens of group h.
    ``attention_mask()`` expands it to ``ml.attention_mask(layout, mode)``.
    """

    name: str                   # "record 'r7'": how errors and warnings name it
    input_ids: torch.Tensor     # [T] long
    labels: torch.Tensor        # [T] long, IGNORE off the loss
    position_ids: torch.Tensor  # [T] long
    groups: torch.Tensor        # [T] long
    visibility: torch.Tensor    # [G, G] bool

    def __len__(self) -> int:
        return len(self.input_ids)

    def attention_mask(self) -> torch.Tensor:
        """``[T, T]`` bool, True where token q may attend to token k."""
        return _example_allowed(self.groups, self.visibility)


def token_groups(layout: Layout, mode: Mode) -> tuple[torch.Tensor, torch.Tensor]:
    """``(groups [T], visibility [G, G])`` whose expansion (and causal order) is
    ``attention_mask(layout, mode)``.

    The groups and their visibility are :func:`~medverse_lab.topology.group_visibility`,
    the matrix ``attention_mask`` expands, so a batch never needs the ``[T, T]`` mask.
    Empty groups are dropped so that the numbering stays dense (the block mask relies
    on it).
    """
    lens, vis = group_visibility(layout, mode)
    keep = lens > 0
    lens, vis = lens[keep], vis[keep][:, keep]
    return torch.repeat_interleave(torch.arange(len(lens)), lens), vis


def prepare_example(input_ids: Sequence[int], loss_from: int, tokenizer, mode: Mode,
                    name: str = "example") -> TopologyExample:
    """A :class:`TopologyExample` from token ids; the loss covers tokens from ``loss_from``
    on whose logical predecessor they can see (a step's first token is never predicted
    from a sibling's last one: no decoder ever does that).

    For ``request`` the example is the request layout (:meth:`Layout.for_requests`): each
    step's segment repeats its ancestors' blocks first, the conclusion's every block. The
    repeats carry no loss: each block is learnt once, where the trace writes it."""
    try:
        layout = Layout.from_token_ids(input_ids, tokenizer).for_mode(mode)
    except ValueError as exc:  # PlanError, LayoutError: say which record (the original stays as __cause__)
        raise ValueError(f"{name}: {exc}") from exc
    ids = torch.tensor(layout.token_ids, dtype=torch.long)
    groups, vis = token_groups(layout, mode)
    T = len(ids)
    target = torch.zeros(T, dtype=torch.bool)
    target[max(1, loss_from):] = True
    target[1:] &= vis[groups[1:], groups[:-1]]  # the predecessor must be visible
    for seg in layout.segments:
        for _, a, b in layout.repeated_spans(seg.branch):
            target[a:b] = False
    labels = torch.where(target, ids, torch.full_like(ids, IGNORE))
    return TopologyExample(name, ids, labels, position_ids(layout, mode), groups, vis)


# ----- the collator ---------------------------------------------------------------------
class TopologyCollator:
    """Batches MedVerse examples with the mask and positions of ``mode``.

    Call it on a list of features, each a MedVerse record, a tokenized record
    (``{"input_ids", "loss_from"}``; without ``loss_from`` the loss starts at the first
    ``<Think>`` or ``<Plan>`` token) or a :class:`TopologyExample`. Returns ``input_ids``,
    ``labels``, ``position_ids`` (all ``[B, L]``, right-padded) and ``attention_mask``:
    an additive ``[B, 1, L, L]`` tensor of ``mask_dtype`` (0 where allowed, the dtype's
    minimum elsewhere), or with ``mask="block"`` a flex_attention ``BlockMask`` built on
    ``device`` (the device attention runs on; models need ``attn_implementation="flex_attention"``).

    ``max_len`` refuses examples longer than that (never truncates: a cut trace has an
    unclosed step); :meth:`prepare` skips and counts them instead. Prepared examples are
    cached by content (``cache=False`` turns that off).

    With ``transformers.Trainer`` set ``remove_unused_columns=False`` (the records'
    columns are not model arguments); with TRL's ``SFTTrainer`` also
    ``dataset_kwargs={"skip_prepare_dataset": True}`` (the collator tokenizes).
    """

    def __init__(self, tokenizer, mode: Mode = "dag", max_len: int | None = None, *, mask: str = "dense",
                 mask_dtype="float32", pad_to_multiple_of: int | None = None, block_size: int = 128,
                 device=None, cache: bool = True):
        self.tokenizer = tokenizer
        self.mode = check_mode(mode, MODES)
        if mask not in ("dense", "block"):
            raise ValueError(f"mask={mask!r}: use 'dense' (a [B, 1, L, L] additive tensor) or 'block' "
                             "(a flex_attention BlockMask)")
        if mask == "block":
            from .block_mask import check_flex

            check_flex()
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len = {max_len}: must be >= 1 (or None for no limit)")
        self.max_len = max_len
        self.mask = mask
        self.mask_dtype = to_dtype(mask_dtype)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.block_size = block_size
        self.device = device
        tags = tag_ids(tokenizer)  # the tags must be single tokens: ValueError says how to add them
        self._loss_start_tags = (tags["<Think>"], tags["<Plan>"])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
        self._cache: dict | None = {} if cache else None
        #: ``(name, length)`` of each example :meth:`prepare` skipped as longer than ``max_len``
        self.skipped: list[tuple[str, int]] = []

    def __repr__(self) -> str:
        return (f"TopologyCollator(mode={self.mode!r}, max_len={self.max_len}, mask={self.mask!r}, "
                f"cached={len(self._cache or {})})")

    # ----- examples -----------------------------------------------------------------
    def example(self, feature, index: int | None = None, source: str | None = None) -> TopologyExample:
        """``feature`` prepared (from the cache when it was prepared before). Errors name it
        by its ``id``, else by ``index`` (its position in the list or batch), and ``source``."""
        if isinstance(feature, TopologyExample):
            return feature
        name = _name(feature, index, source)
        if not isinstance(feature, dict):
            raise TypeError(f"{name}: expected a MedVerse record (a dict), a tokenized record (a dict with "
                            f"input_ids) or a TopologyExample, got {type(feature).__name__}")
        if "input_ids" in feature:
            ids = feature["input_ids"]
            ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
            key = (tuple(ids), feature.get("loss_from"))
        else:
            ids, key = None, training_turns(feature, name)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        if ids is None:
            try:
                tokens = tokenize_record(feature, self.tokenizer)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            ids, loss_from = tokens["input_ids"], tokens["loss_from"]
        else:
            loss_from = feature.get("loss_from")
            if loss_from is None:
                loss_from = next((i for i, t in enumerate(ids) if t in self._loss_start_tags), None)
                if loss_from is None:
                    raise ValueError(f"{name}: no <Think> or <Plan> token and no loss_from: "
                                     "cannot tell where the assistant turn starts")
        example = prepare_example(ids, loss_from, self.tokenizer, self.mode, name)
        if self._cache is not None:
            self._cache[key] = example
        return example

    def prepare(self, records: Iterable, *, source: str | None = None, progress: bool = True,
                warn: bool = True) -> list[TopologyExample]:
        """Every record prepared, in order, skipping those longer than ``max_len`` (listed
        in :attr:`skipped`; with ``warn``, a warning says how many). ``ValueError`` names a malformed record
        (``source``, e.g. a file name, is added to the name), or says how long the
        shortest was when none fits."""
        records = list(records)
        out, skipped = [], []
        for i, rec in enumerate(tqdm(records, desc="preparing", leave=False, mininterval=1.0, disable=not progress)):
            e = self.example(rec, i, source)
            if self.max_len is not None and len(e) > self.max_len:
                skipped.append((e.name, len(e)))
            else:
                out.append(e)
        self.skipped += skipped
        if records and not out:
            raise ValueError(f"no example{' of ' + source if source else ''} fits max_len={self.max_len}: the "
                             f"shortest of {len(records)} is {min(n for _, n in skipped)} tokens; raise max_len or "
                             "grow the tokenizer's vocabulary")
        if skipped and warn:
            warnings.warn(f"{len(skipped)} of {len(records)} examples are longer than max_len={self.max_len} and "
                          f"were skipped (never truncated), e.g. {skipped[0][0]} ({skipped[0][1]} tokens)", stacklevel=2)
        return out

    # ----- batches ------------------------------------------------------------------
    def __call__(self, features: Sequence) -> dict:
        if len(features) == 0:
            raise ValueError("an empty batch: the collator needs at least one example")
        examples = [self.example(f, i) for i, f in enumerate(features)]
        if self.max_len is not None:
            for e in examples:
                if len(e) > self.max_len:
                    raise ValueError(f"{e.name} has {len(e)} tokens, more than max_len={self.max_len}; filter the "
                                     "data first with collator.prepare(records), which skips and counts such examples")
        batch = pad_examples(examples, self.pad_id, self.pad_to_multiple_of)
        groups, vis = batch.pop("groups"), batch.pop("visibility")
        if self.mask == "block":
            from .block_mask import block_mask

            batch["attention_mask"] = block_mask(groups, vis, self.block_size, self.device)
        else:
            batch["attention_mask"] = additive_mask(groups, vis, self.mask_dtype)
        return batch


def pad_examples(examples: Sequence[TopologyExample], pad_id: int,
                 pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``labels``, ``position_ids``, ``groups`` ``[B, L]`` and
    ``visibility`` ``[B, G, G]``. Each example's padding is one more group of its own,
    seeing only itself, so a padded row is never empty (no NaN in softmax)."""
    B = len(examples)
    L = max(len(e) for e in examples)
    if pad_to_multiple_of:
        L = -(-L // pad_to_multiple_of) * pad_to_multiple_of
    G = max(len(e.visibility) for e in examples) + 1
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE, dtype=torch.long)
    pos = torch.zeros((B, L), dtype=torch.long)
    groups = torch.empty((B, L), dtype=torch.long)
    vis = torch.zeros((B, G, G), dtype=torch.bool)
    for b, e in enumerate(examples):
        T, g = len(e), len(e.visibility)
        ids[b, :T], labels[b, :T], pos[b, :T] = e.input_ids, e.labels, e.position_ids
        groups[b, :T], groups[b, T:] = e.groups, g
        vis[b, :g, :g] = e.visibility
        vis[b, g, g] = True
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "groups": groups, "visibility": vis}


def allowed_mask(groups: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``[B, L, L]`` bool from per-token groups ``[B, L]`` and visibility ``[B, G, G]``:
    the group rule intersected with causal order (the dense twin of the flex mask_mod)."""
    return torch.stack([_example_allowed(g, v) for g, v in zip(groups, vis)])


def additive_mask(groups: torch.Tensor, vis: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """``[B, 1, L, L]``: 0 where attention is allowed, the dtype's minimum elsewhere (an
    additive mask is right under every attention implementation; a bool one is not under eager)."""
    B, L = groups.shape
    out = torch.empty((B, 1, L, L), dtype=dtype)
    zero, low = torch.zeros((), dtype=dtype), torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    for b in range(B):
        torch.where(_example_allowed(groups[b], vis[b]), zero, low, out=out[b, 0])
    return out


__all__ = ["TopologyCollator", "TopologyExample", "tokenize_record", "prepare_example", "token_groups",
           "pad_examples", "allowed_mask", "additive_mask"]
