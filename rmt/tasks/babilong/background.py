"""Background text ("haystack") sources for BABILong samples.

BABILong hides task facts in long natural text (PG19 books in the paper). The sources
(``builtin`` grammar, ``files``, ``hf`` datasets) are the shared readers of :mod:`rmt.tasks.text`;
here their text becomes a :class:`Background` of sentences. The builtin grammar never uses a
person name, room, object, direction or answer word of the tasks (:data:`FORBIDDEN_WORDS`,
tested), so the background cannot answer or confuse a question, and a word-level tokenizer can
cover all of it.

Text is split into sentences once; the haystack builder tokenizes them once and reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rmt.tasks.text import (
    TextSourceError,
    builtin_sentences,
    builtin_vocabulary,
    read_dataset,
    read_files,
    split_sentences,
)

__all__ = [
    "BUILTIN_SENTENCES", "FORBIDDEN_WORDS", "MIN_SENTENCES", "Background", "BackgroundError",
    "builtin_vocabulary", "make_background", "split_sentences",
]  # fmt: skip

MIN_SENTENCES = 20  # fewer means a haystack is one sentence repeated over and over
BUILTIN_SENTENCES = 30_000  # about 400k tokens; longer haystacks wrap around

BackgroundError = TextSourceError  # a background source that cannot be used


@dataclass
class Background:
    """Background sentences in reading order; ``name`` says where they came from."""

    sentences: list[str]
    name: str = "background"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.sentences) < MIN_SENTENCES:
            raise BackgroundError(
                f"background {self.name!r} has {len(self.sentences)} sentences; at least "
                f"{MIN_SENTENCES} are needed. Give more text or use kind='builtin'"
            )

    def __len__(self) -> int:
        return len(self.sentences)


# Words the tasks use as names, places, objects, directions or answers; the builtin grammar
# must not produce any of them (tested).
FORBIDDEN_WORDS = frozenset(
    w.lower()
    for w in (
        "Mary John Daniel Sandra Bill Fred Jeff Julie Antoine Sumit Yann Emily Gertrude "
        "Winona Jessica Brian Julius Lily Bernhard Greg Jason Gertrude "
        "bathroom bedroom garden hallway kitchen office cinema park school "
        "apple football milk north south east west yes no maybe none one two three "
        "nothing cat mouse sheep wolf gray green white yellow bored hungry thirsty tired "
        "Answer"
    ).split()
)


def _sentences(documents: list[str]) -> list[str]:
    return [s for doc in documents for s in split_sentences(doc)]


def make_background(
    kind: str = "builtin",
    path: str | Path | None = None,
    dataset: str | None = None,
    split: str = "train",
    column: str = "text",
    max_docs: int | None = None,
    seed: int = 0,
) -> Background:
    """Build a :class:`Background` from the chosen source (see the module docstring)."""
    if kind == "builtin":
        sentences = list(builtin_sentences(seed, BUILTIN_SENTENCES))
        return Background(sentences, name=f"builtin(seed={seed})", meta={"kind": kind})
    if kind == "files":
        if path is None:
            raise BackgroundError("kind='files' needs path= (a .txt file or a folder of them)")
        sentences = _sentences(read_files(path, max_docs))
        return Background(sentences, name=str(path), meta={"kind": kind})
    if kind == "hf":
        if not dataset:
            raise BackgroundError("kind='hf' needs dataset= (a Hub name like 'pg19' or a folder)")
        sentences = _sentences(read_dataset(dataset, split, column, max_docs))
        return Background(sentences, name=f"{dataset}:{split}", meta={"kind": kind})
    raise BackgroundError(f"unknown background kind {kind!r}; use 'builtin', 'files' or 'hf'")
