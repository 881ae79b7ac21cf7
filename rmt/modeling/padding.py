"""Left padding: how prompts are stacked for generation.

Generation continues every row from its last column, so prompts of different lengths are
padded on the left; the mask says which columns are real. `left_pad` stacks separate rows (token
ids in evaluation and validation); `left_align` turns a right-padded batch (the model's final
segment, as the segment loop gathers it) into a left-padded one on the device, for any trailing
shape.
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


def left_align(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``values`` [B, T, ...] (each row's real entries first, as ``mask`` [B, T]
    says) -> the same rows padded on the left with zeros, and their long mask: what `left_pad`
    makes of the real entries, as one gather for the whole batch (no per-sample copies, and no
    host sync: the lengths stay on the device)."""
    width = mask.shape[1]
    pads = width - mask.sum(1, keepdim=True)  # [B, 1]
    source = torch.arange(width, device=mask.device)[None] - pads  # < 0: a padding column
    real = source >= 0
    trailing = (1,) * (values.dim() - 2)
    index = source.clamp(min=0).view(*source.shape, *trailing).expand_as(values)
    out = values.gather(1, index).masked_fill(~real.view(*real.shape, *trailing), 0)
    return out, real.long()
