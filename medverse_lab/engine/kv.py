"""The one key/value cache of a run: a transformers ``DynamicCache`` of plain full-attention
layers, which the engine can compact (rerun) by selecting slots."""

from __future__ import annotations

import torch


def new_cache(config):
    """An empty ``DynamicCache`` for ``config``; refuses layer kinds that drop or share slots."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    odd = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer})
    if odd:
        raise ValueError(
            f"the model's cache has {', '.join(odd)} layers (sliding window, chunked or shared attention); "
            "MedVerse decoding keeps every slot of a run in one full-attention cache. Use a model "
            "without sliding-window layers (e.g. Qwen2 with use_sliding_window=False)")
    return cache


def select_slots(cache, keep: torch.Tensor, config):
    """A new cache holding only the slots ``keep`` (in that order); ``cache`` is left as is."""
    # by hand: transformers' caches crop or reorder along the batch, but none keeps an
    # arbitrary set of sequence slots (the rerun drops the branches it decodes again)
    out = new_cache(config)
    for src, dst in zip(cache.layers, out.layers):
        if src.is_initialized:
            dst.update(src.keys.index_select(2, keep), src.values.index_select(2, keep))
    return out


def cache_bytes(cache) -> int:
    """Bytes held by the keys and values of ``cache``."""
    if cache is None:
        return 0
    return sum(t.numel() * t.element_size() for layer in cache.layers if layer.is_initialized
               for t in (layer.keys, layer.values))
