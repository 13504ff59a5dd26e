"""The topology mask as a flex_attention ``BlockMask``: memory by blocks, not by ``L²``.

A dense additive mask for one 32k-token example is 4 GiB in float32. The rule behind it is
small: every token belongs to a group (a segment of the layout), group q sees group k or
not (:func:`medverse_lab.topology.segment_visibility`), and causal order holds within.
flex_attention takes that rule as a ``mask_mod`` plus a ``BlockMask`` telling which
``block_size × block_size`` tiles are empty (skipped), full (no mask evaluated) or partial.
The tiles are classified here from the groups alone, with a summed-area table over the
group visibility: no ``[L, L]`` tensor is ever built.

    collator = ml.TopologyCollator(tok, "dag", mask="block", device="cuda")
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="flex_attention")
"""

from __future__ import annotations

import torch


def flex_available() -> bool:
    """Whether this torch has ``torch.nn.attention.flex_attention`` (2.5 or later)."""
    try:
        from torch.nn.attention.flex_attention import BlockMask  # noqa: F401
    except ImportError:
        return False
    return True


def check_flex() -> None:
    """``RuntimeError`` saying what to do when flex_attention is missing."""
    if not flex_available():
        raise RuntimeError(f"torch {torch.__version__} has no torch.nn.attention.flex_attention (torch >= 2.5 has); "
                           "use mask='dense'")


def group_mask_mod(groups: torch.Tensor, vis: torch.Tensor):
    """A flex ``mask_mod(b, h, q, kv)``: causal order and group visibility, the rule
    :func:`medverse_lab.training.collator.allowed_mask` expands densely."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & vis[b, groups[b, q_idx], groups[b, kv_idx]]

    return mask_mod


def _tile_groups(groups: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last group of each tile ``[B, n]``; groups ascend along the tokens, so a
    tile holds exactly the groups between the two."""
    L = groups.shape[1]
    starts = torch.arange(0, L, block_size, device=groups.device)
    ends = (starts + block_size).clamp(max=L) - 1
    return groups[:, starts], groups[:, ends]


def tile_kinds(groups: torch.Tensor, vis: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partial, full)``, each ``[B, n, n]`` bool over (query tile, key tile).

    Below the diagonal every key precedes every query, so a tile is full when every group
    pair it holds is visible and empty when none is: a rectangle sum over the visibility.
    Diagonal tiles are partial (causal order cuts them); tiles above it are empty.
    """
    if (groups.diff(dim=1) < 0).any():
        raise ValueError("groups must ascend along the tokens (each group one contiguous run)")
    B, G = vis.shape[0], vis.shape[1]
    lo, hi = _tile_groups(groups, block_size)
    # by hand, not torch's create_block_mask: that evaluates mask_mod on every tile's L² cells,
    # while the groups already decide a whole tile from G² visibility bits
    table = torch.zeros((B, G + 1, G + 1), dtype=torch.int64, device=vis.device)
    table[:, 1:, 1:] = vis.to(torch.int64).cumsum(1).cumsum(2)
    b = torch.arange(B, device=vis.device)[:, None, None]
    qlo, qhi, klo, khi = lo[:, :, None], hi[:, :, None] + 1, lo[:, None, :], hi[:, None, :] + 1
    seen = table[b, qhi, khi] - table[b, qlo, khi] - table[b, qhi, klo] + table[b, qlo, klo]
    pairs = (qhi - qlo) * (khi - klo)
    n = lo.shape[1]
    tile = torch.arange(n, device=vis.device)
    below = tile[:, None] > tile[None, :]
    full = below & (seen == pairs)
    partial = (below & (seen > 0) & ~full) | torch.eye(n, dtype=torch.bool, device=vis.device)
    return partial, full


def _as_indices(kind: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BlockMask's ``(num_blocks [B, 1, n], indices [B, 1, n, n])``: the marked key tiles first."""
    num = kind.sum(-1, dtype=torch.int32)
    idx = torch.argsort((~kind).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return num[:, None], idx[:, None]


def block_mask(groups: torch.Tensor, vis: torch.Tensor, block_size: int = 128, device=None):
    """A flex_attention ``BlockMask`` for a batch: ``groups [B, L]`` (ascending) and
    ``visibility [B, G, G]`` as :func:`medverse_lab.training.collator.pad_examples` returns them.
    Built on ``device`` (default: where ``groups`` is), the device attention runs on."""
    check_flex()
    from torch.nn.attention.flex_attention import BlockMask

    if device is not None:
        groups, vis = groups.to(device), vis.to(device)
    partial, full = tile_kinds(groups, vis, block_size)
    kv_num, kv_idx = _as_indices(partial)
    full_num, full_idx = _as_indices(full)
    L = groups.shape[1]
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
                                    mask_mod=group_mask_mod(groups, vis), seq_lengths=(L, L))


def block_mask_bytes(mask) -> int:
    """Bytes a ``BlockMask`` holds: its tile tables plus the tensors its mask_mod reads."""
    tensors = [t for t in mask.as_tuple(flatten=True) if isinstance(t, torch.Tensor)]
    cells = mask.mask_mod.__closure__ or ()
    tensors += [c.cell_contents for c in cells if isinstance(c.cell_contents, torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


__all__ = ["flex_available", "check_flex", "group_mask_mod", "tile_kinds", "block_mask", "block_mask_bytes"]
