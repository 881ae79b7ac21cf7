"""Retrieval samples: a pure function of (seed, split, index, N, length).

Layout of a sample of n segments of S tokens (every segment full, so the segmentation is the
same for every ``segment.alignment``)::

    [k v ; k v ; ... _ _]  x ceil(N / pairs_per_segment)   the pairs, each whole in one segment
    [_ _ ... _]            x (n - 1 - ceil(N / pps))        filler segments (distance)
    [_ _ ... ? k_q v_q <eos>]                               the query; labels on v_q and <eos>

The query key is uniform over the sample's pairs, so the answer is only in earlier segments:
the model must carry the N bindings in its memory.

Two training aids (``task.vary_pairs``, ``task.reverse_queries``; off by default):

- with ``vary_pairs`` a sample holds as many pairs as its segments allow, (segments - 1) x
  pairs_per_segment, at most N: a stage with ``segments: [2, 3, 4, 5]`` mixes N = 1..4 from batch
  to batch, as the ARMT paper's training draws N per batch;
- a reverse query ``[_ _ ... ? v_q k_q <eos>]`` gives a stored value and asks for its key (the
  sample's values are then distinct, so the answer is unique). Answering it needs the key in
  memory, which a forward query alone does not reward until keys and queries already match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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


def make_sample(layout: Layout, *, segments: int, seed: int, reverse: bool = False) -> dict:
    """One sample of ``segments`` segments: ``input_ids``, ``labels``, ``prompt_length``,
    ``task`` (``n<N>``), ``question`` (``? k_q``) and ``target`` (``v_q``); with ``reverse``
    the question is ``? v_q`` and the target ``k_q`` (distinct values)."""
    if segments < layout.min_segments():
        raise ValueError(
            f"{layout.num_pairs} pairs at {layout.pairs_per_segment} per segment need "
            f"{layout.min_segments()} segments (pairs, then the query); got {segments}"
        )
    rng = np.random.default_rng(seed)
    keys = rng.choice(layout.key_vocab, size=layout.num_pairs, replace=False).tolist()
    if reverse:
        if layout.num_pairs > layout.value_vocab:
            raise ValueError(
                f"a reverse query needs {layout.num_pairs} distinct values; there are "
                f"{layout.value_vocab} value symbols"
            )
        values = rng.choice(layout.value_vocab, size=layout.num_pairs, replace=False).tolist()
    else:
        values = rng.integers(layout.value_vocab, size=layout.num_pairs).tolist()
    query = int(rng.integers(layout.num_pairs))
    size, pps = layout.segment_size, layout.pairs_per_segment
    words: list[str] = []
    for start in range(0, layout.num_pairs, pps):
        seg = [w for i in range(start, min(start + pps, layout.num_pairs))
               for w in (vocab.key(keys[i]), vocab.value(values[i]), vocab.PAIR_END)]  # fmt: skip
        words += seg + [vocab.FILLER] * (size - len(seg))
    words += [vocab.FILLER] * (segments * size - QUERY_TOKENS - len(words))
    asked, target = vocab.key(keys[query]), vocab.value(values[query])
    if reverse:
        asked, target = target, asked
    question = f"{vocab.QUERY} {asked}"
    words += [vocab.QUERY, asked]
    prompt_length = len(words)
    words += [target, vocab.EOS]
    ids = [_ID[w] for w in words]
    labels = [IGNORE_INDEX] * prompt_length + ids[prompt_length:]
    return {"input_ids": ids, "labels": labels, "prompt_length": prompt_length,
            "task": f"n{layout.num_pairs}", "question": question, "target": target}  # fmt: skip


_ID = {w: i for i, w in enumerate(vocab.vocabulary())}  # the ids build_tokenizer gives


class RetrievalDataset(Dataset):
    """``num_samples`` samples of one layout; item ``(index, total_length)`` fills
    ``total_length // segment_size`` segments (at least the layout's minimum; with
    ``vary_pairs``, at least 2 and the pairs those segments hold). A fraction ``reverse`` of the
    samples (chosen by index) asks for a key instead of a value."""

    def __init__(self, layout: Layout, *, split: str, num_samples: int, seed: int,
                 vary_pairs: bool = False, reverse: float = 0.0) -> None:  # fmt: skip
        self.layout, self.split, self.num_samples, self.seed = layout, split, num_samples, seed
        self.vary_pairs, self.reverse = vary_pairs, reverse

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, total_length = key
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        layout, segments = self.layout, total_length // self.layout.segment_size
        if self.vary_pairs:
            fits = max(segments - 1, 1) * layout.pairs_per_segment
            layout = replace(layout, num_pairs=min(layout.num_pairs, fits))
        segments = max(segments, layout.min_segments())
        key = (self.seed, self.split, layout.num_pairs, index)
        seed = stable_int("retrieval", *key) >> 1
        reverse = self.reverse > 0 and stable_int("reverse", *key) % 10**6 < self.reverse * 10**6
        return make_sample(layout, segments=segments, seed=seed, reverse=reverse)
