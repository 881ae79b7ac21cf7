"""Retrieval samples: a pure function of (seed, split, index, N, length).

Layout of a sample of n segments of S tokens (every segment full, so the segmentation is the
same for every ``segment.alignment``)::

    [k v ; k v ; ... _ _]  x ceil(N / pairs_per_segment)   the pairs, each whole in one segment
    [_ _ ... _]            x (n - 1 - ceil(N / pps))        filler segments (distance)
    [_ _ ... ? k_q v_q <eos>]                               the query; labels on v_q and <eos>

The query key is uniform over the sample's pairs, so the answer is only in earlier segments:
the model must carry the N bindings in its memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from rmt.tasks.base import stable_int
from rmt.tasks.retrieval import tokenizer as vocab

IGNORE_INDEX = -100  # HF convention for positions without a loss
QUERY_TOKENS = 4  # ? k_q v_q <eos>
PAIR_TOKENS = 3  # k v ;


@dataclass(frozen=True)
class Layout:
    """Sizes that fix where a sample's tokens go."""

    num_pairs: int
    pairs_per_segment: int
    key_vocab: int
    value_vocab: int
    segment_size: int

    def pair_segments(self) -> int:
        """Segments holding pairs."""
        return math.ceil(self.num_pairs / self.pairs_per_segment)

    def min_segments(self) -> int:
        """The fewest segments a sample can have: the pairs, then the query."""
        return self.pair_segments() + 1

    def problem(self) -> str | None:
        """Why this layout cannot make samples (None when it can)."""
        if self.num_pairs > self.key_vocab:
            return (
                f"{self.num_pairs} distinct keys cannot be drawn from {self.key_vocab} key symbols"
            )
        if PAIR_TOKENS * self.pairs_per_segment > self.segment_size:
            return (f"{self.pairs_per_segment} pairs of {PAIR_TOKENS} tokens do not fit a "
                    f"segment of {self.segment_size} tokens")  # fmt: skip
        if QUERY_TOKENS > self.segment_size:
            return f"the query needs {QUERY_TOKENS} tokens > segment size {self.segment_size}"
        return None


def make_sample(layout: Layout, *, segments: int, seed: int) -> dict:
    """One sample of ``segments`` segments: ``input_ids``, ``labels``, ``prompt_length``,
    ``task`` (``n<N>``), ``question`` (``? k_q``) and ``target`` (``v_q``)."""
    if segments < layout.min_segments():
        raise ValueError(
            f"{layout.num_pairs} pairs at {layout.pairs_per_segment} per segment need "
            f"{layout.min_segments()} segments (pairs, then the query); got {segments}"
        )
    rng = np.random.default_rng(seed)
    keys = rng.choice(layout.key_vocab, size=layout.num_pairs, replace=False).tolist()
    values = rng.integers(layout.value_vocab, size=layout.num_pairs).tolist()
    query = int(rng.integers(layout.num_pairs))
    size, pps = layout.segment_size, layout.pairs_per_segment
    words: list[str] = []
    for start in range(0, layout.num_pairs, pps):
        seg = [w for i in range(start, min(start + pps, layout.num_pairs))
               for w in (vocab.key(keys[i]), vocab.value(values[i]), vocab.PAIR_END)]  # fmt: skip
        words += seg + [vocab.FILLER] * (size - len(seg))
    words += [vocab.FILLER] * (segments * size - QUERY_TOKENS - len(words))
    question = f"{vocab.QUERY} {vocab.key(keys[query])}"
    target = vocab.value(values[query])
    words += [vocab.QUERY, vocab.key(keys[query])]
    prompt_length = len(words)
    words += [target, vocab.EOS]
    ids = [_ID[w] for w in words]
    labels = [IGNORE_INDEX] * prompt_length + ids[prompt_length:]
    return {"input_ids": ids, "labels": labels, "prompt_length": prompt_length,
            "task": f"n{layout.num_pairs}", "question": question, "target": target}  # fmt: skip


_ID = {w: i for i, w in enumerate(vocab.vocabulary())}  # the ids build_tokenizer gives


class RetrievalDataset(Dataset):
    """``num_samples`` samples of one layout; item ``(index, total_length)`` fills
    ``total_length // segment_size`` segments (at least the layout's minimum)."""

    def __init__(self, layout: Layout, *, split: str, num_samples: int, seed: int) -> None:
        self.layout, self.split, self.num_samples, self.seed = layout, split, num_samples, seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, total_length = key
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        segments = max(total_length // self.layout.segment_size, self.layout.min_segments())
        seed = stable_int("retrieval", self.seed, self.split, self.layout.num_pairs, index) >> 1
        return make_sample(self.layout, segments=segments, seed=seed)
