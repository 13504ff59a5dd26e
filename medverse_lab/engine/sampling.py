"""Token sampling: greedy, temperature and nucleus (top-p), one generator per run."""

from __future__ import annotations

import torch


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row of ``logits`` ``[q, V]``.

    ``temperature == 0`` is greedy (argmax, no randomness). Otherwise softmax at that
    temperature, cut to the smallest set of most likely tokens whose mass reaches
    ``top_p``, sampled with ``generator`` so a seed fixes the run.
    """
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        p, idx = probs.sort(dim=-1, descending=True)
        p[(p.cumsum(-1) - p) >= top_p] = 0.0  # drop a token once the mass before it reaches top_p
        return idx.gather(-1, torch.multinomial(p, 1, generator=generator)).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
