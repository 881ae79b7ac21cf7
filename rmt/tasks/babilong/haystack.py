"""BABILong haystacks: task facts hidden between background sentences at random places.

Speed matters (the trainer builds every sample on the fly, up to 1M tokens), so background
sentences are tokenized once, kept as one flat int array plus sentence start offsets, and a
haystack is a handful of numpy slices and one concatenation. Facts go between background
sentences, in story order; the background is cut to make the total length exact.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.babilong.background import Background

_LENGTH = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")


def parse_length(value: int | str) -> int:
    """``"4k"`` -> 4096, ``"1M"`` -> 1048576, ``"0k"`` -> 0; ints pass through."""
    if isinstance(value, bool):
        raise ValueError(f"length must be a number of tokens like 4096 or '4k', got {value!r}")
    if isinstance(value, int | np.integer):
        if value < 0:
            raise ValueError(f"length must be >= 0, got {value}")
        return int(value)
    match = _LENGTH.match(str(value))
    if match is None:
        raise ValueError(f"cannot read length {value!r}; use tokens like 4096, '4k' or '1M'")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


@dataclass
class Haystack:
    """Token ids of background with facts inside; ``fact_spans`` are [start, end) offsets."""

    input_ids: np.ndarray
    fact_spans: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


class HaystackBuilder:
    """Builds BABILong haystacks of an exact token length from a cached background.

    Args:
        tokenizer: any HF tokenizer (word-level offline one or a pretrained one).
        background: sentences to hide the facts in; tokenized here, once.
    """

    def __init__(self, tokenizer, background: Background):
        self.tokenizer = tokenizer
        self.background = background
        encoded = _encode_many(tokenizer, [f" {s}" for s in background.sentences])
        lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        self.sentence_ids = [np.asarray(ids, dtype=np.int64) for ids in encoded]
        self.flat = np.concatenate(self.sentence_ids) if len(encoded) else np.zeros(0, np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if len(self.flat) == 0:
            raise ValueError("background tokenizes to no tokens at all; use another source")
        self._fact_cache: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------------------------
    def fact_ids(self, fact: str) -> np.ndarray:
        """Token ids of one fact (with a leading space), cached: stories reuse sentences."""
        ids = self._fact_cache.get(fact)
        if ids is None:
            ids = np.asarray(
                self.tokenizer(f" {fact}", add_special_tokens=False)["input_ids"], dtype=np.int64
            )
            if len(self._fact_cache) < 100_000:
                self._fact_cache[fact] = ids
        return ids

    def _background(self, start_sentence: int, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """``n_tokens`` of background from a sentence start (wrapping), and the offsets in it
        where sentences start."""
        total = len(self.flat)
        offset = int(self.starts[start_sentence])
        reps = math.ceil((offset + n_tokens) / total)
        parts = [self.flat[offset:]] + [self.flat] * (reps - 1)
        tokens = np.concatenate(parts)[:n_tokens] if n_tokens else self.flat[:0]
        bounds = (np.arange(reps)[:, None] * total + self.starts[None, :]).ravel() - offset
        # the cut end is no sentence boundary unless a sentence happens to end there
        return tokens, bounds[(bounds >= 0) & (bounds <= n_tokens)]

    def build(
        self,
        sample: BabiSample,
        length: int | str,
        *,
        seed,
        position: tuple[float, float] = (0.0, 1.0),
        facts_end: int | None = None,
    ) -> Haystack:
        """Hide ``sample.facts`` in ``length`` tokens of background.

        Every fact lies in ``[position[0]*length, position[1]*length)`` and, when
        ``facts_end`` is given, ends at or before token ``facts_end``. A length shorter than
        the facts gives just the facts. Same seed, same haystack.
        """
        length = parse_length(length)
        start_frac, end_frac = position
        if not 0.0 <= start_frac < end_frac <= 1.0:
            raise ValueError(f"position must be 0 <= start < end <= 1, got {position}")
        facts = [self.fact_ids(f) for f in sample.facts]
        fact_lens = [len(f) for f in facts]
        n_fact_tokens = sum(fact_lens)
        if length <= n_fact_tokens:
            return _assemble(self.flat[:0], [0] * len(facts), facts)

        rng = np.random.default_rng(seed)
        n_background = length - n_fact_tokens
        tokens, bounds = self._background(int(rng.integers(len(self.starts))), n_background)

        lo = math.ceil(start_frac * length)
        hi = math.floor(end_frac * length)
        if facts_end is not None:
            hi = min(hi, facts_end)
        # facts are contiguous in order, so all insertion points b must satisfy
        # lo <= b (first fact starts late enough) and b + n_fact_tokens <= hi (last one ends early)
        max_point = hi - n_fact_tokens
        if max_point < lo:
            raise ValueError(
                f"{n_fact_tokens} fact tokens do not fit between token {lo} and {hi} of a "
                f"{length}-token haystack (position={position}, facts_end={facts_end}); "
                "widen the window, use a longer length or fewer facts"
            )
        candidates = bounds[(bounds >= lo) & (bounds <= max_point)]
        if len(candidates) == 0:  # window narrower than a sentence: cut one
            candidates = np.arange(lo, max_point + 1)
        points = np.sort(rng.choice(candidates, size=len(facts), replace=True))
        return _assemble(tokens, points.tolist(), facts)


def _encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts without special tokens; the Rust batch path when there is one
    (it skips building Python BatchEncodings, about 3x faster on 30k sentences).

    The Rust tokenizer is used without the padding and truncation its file may carry:
    sentence-transformers checkpoints such as all-MiniLM-L6-v2 ship `tokenizer.json` with both
    set to 128 tokens, which `tokenizer(...)` overrides per call but `encode_batch` applies, so
    every background sentence came back padded to 128 tokens with [PAD] (a haystack of one
    sentence and 100+ pads per 128 tokens) and long ones cut."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    if backend.padding is not None or backend.truncation is not None:
        backend = type(backend).from_str(backend.to_str())  # a copy: the caller's is untouched
        backend.no_padding()
        backend.no_truncation()
    return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]


def _assemble(background: np.ndarray, points: list[int], facts: list[np.ndarray]) -> Haystack:
    pieces, spans = [], []
    prev, pos = 0, 0
    for point, fact in zip(points, facts, strict=True):
        pieces.append(background[prev:point])
        pos += point - prev
        pieces.append(fact)
        spans.append((pos, pos + len(fact)))
        pos += len(fact)
        prev = point
    pieces.append(background[prev:])
    ids = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return Haystack(ids.astype(np.int64, copy=False), spans)
