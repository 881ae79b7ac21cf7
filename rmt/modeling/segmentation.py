"""Pure functions that cut token sequences into segments and line a batch up on its last segment.

Kept free of tensors and modules so the rules (which are easy to get subtly wrong) can be tested alone.
"""

from __future__ import annotations

import math


def segment_bounds(
    length: int, segment_size: int, alignment: str = "left"
) -> list[tuple[int, int]]:
    """Split `range(length)` into contiguous `[start, end)` segments of at most `segment_size` tokens.

    left:   full segments from the start; the last one holds the remainder.
    right:  the first segment holds the remainder; the rest are full, so the final segment (the one
            with the question in BABILong) always has `segment_size` tokens.
    center: ceil(length / segment_size) segments whose sizes differ by at most one token.
    """
    if length < 1:
        raise ValueError(
            f"cannot segment an empty sequence (length={length}); every sample needs >= 1 token"
        )
    if segment_size < 1:
        raise ValueError(f"segment_size must be >= 1, got {segment_size}")
    n = math.ceil(length / segment_size)
    if alignment == "left":
        sizes = [segment_size] * (n - 1) + [length - segment_size * (n - 1)]
    elif alignment == "right":
        sizes = [length - segment_size * (n - 1)] + [segment_size] * (n - 1)
    elif alignment == "center":
        base, extra = divmod(length, n)
        sizes = [base + 1] * extra + [base] * (n - extra)
    else:
        raise ValueError(f"unknown segment alignment {alignment!r}; use left, right or center")
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def batch_schedule(
    lengths: list[int], segment_size: int, alignment: str = "left"
) -> list[list[tuple[int, int, int]]]:
    """Plan the segment steps of a batch, aligning all samples on their last segment.

    Returns one list per step; each holds `(sample, start, end)` for the samples active at that step.
    A sample with fewer segments joins later and reads the initial memory, so a sample's result does
    not depend on what else is in its batch.
    """
    per_sample = [segment_bounds(n, segment_size, alignment) for n in lengths]
    steps = max(len(b) for b in per_sample)
    schedule: list[list[tuple[int, int, int]]] = [[] for _ in range(steps)]
    for i, bounds in enumerate(per_sample):
        offset = steps - len(bounds)
        for k, (start, end) in enumerate(bounds):
            schedule[offset + k].append((i, start, end))
    return schedule
