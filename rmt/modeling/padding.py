"""Left padding: the one routine that stacks prompts for generation.

Generation continues every row from its last column, so prompts of different lengths are
padded on the left; the mask says which columns are real. Used for token ids (evaluation,
validation) and for input embeddings (the model's final segment), hence any trailing shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_pad(
    rows: Sequence[torch.Tensor], pad_value: float = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``[T_i, ...]`` tensors into ``[B, max T_i, ...]`` padded on the left, and the
    ``[B, max T_i]`` long mask (1 = real)."""
    width = max(row.shape[0] for row in rows)
    first = rows[0]
    out = first.new_full((len(rows), width, *first.shape[1:]), pad_value)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=first.device)
    for i, row in enumerate(rows):
        out[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return out, mask
