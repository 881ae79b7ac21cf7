"""Background text ("haystack") sources for BABILong samples.

BABILong hides task facts in long natural text (PG19 books in the paper). Three sources:

* ``builtin``: English-like sentences from a small seeded probabilistic grammar over a few
  hundred ordinary words, made offline in well under a second. It never uses a person name,
  room, object, direction or answer word of the tasks, so the background cannot answer or
  confuse a question, and a word-level tokenizer can cover all of it.
* ``files``: a ``.txt`` file or a folder of ``.txt`` files.
* ``hf``: any Hugging Face dataset with a text column (PG19: ``dataset="pg19"``,
  ``column="text"``), or a local ``save_to_disk`` folder.

Text is split into sentences once; the haystack builder tokenizes them once and reuses them.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

MIN_SENTENCES = 20  # fewer means a haystack is one sentence repeated over and over


class BackgroundError(ValueError):
    """A background source that cannot be used; the message says how to fix it."""


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


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences at ``.``/``!``/``?`` followed by white space."""
    text = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) > 1]


# ---------------------------------------------------------------------------------------
# built-in grammar
# ---------------------------------------------------------------------------------------
_DET = "a the this that every another some each".split()
_DET_PL = "the these those some many few several all".split()
_ADJ = (
    "old young quiet small large bright dark warm cold heavy light narrow wide long short "
    "ancient gentle simple strange tall low distant nearby early late silent busy patient "
    "proud careful curious honest brave calm clever eager famous fierce golden hollow "
    "humble lonely lucky modest noble plain polite rare rough sharp smooth soft steady "
    "stubborn sudden sweet thick thin tiny vast wild wise wooden empty crowded rapid slow"
).split()
_NOUN = (
    "river mountain village ship letter window morning evening doctor captain farmer "
    "traveller soldier merchant sailor city road bridge forest valley island harbour castle "
    "tower field meadow lake storm wind voice song story book map coat horse carriage "
    "lantern candle door wall roof stone path hill coast market church chapel painter poet "
    "widow stranger servant neighbour uncle aunt cousin friend scholar judge clerk artist "
    "baker miller hunter shepherd fisherman priest knight king queen prince princess "
    "journey promise secret question answer letter message rumour festival summer autumn "
    "spring season harvest fortune battle crowd family council village engine machine "
    "clock bell chair table lamp mirror carpet ribbon basket bottle coin ring sword shield "
    "ocean wave cloud star moon sun shadow fire smoke dust paper pencil picture garment"
).split()
_NOUN = sorted(set(_NOUN) - {"answer", "question"})  # keep the prompt words unambiguous
_VERB_T = (
    "watched followed found remembered carried described admired visited ignored noticed "
    "praised repaired painted opened closed built sold bought borrowed studied measured "
    "questioned welcomed guarded crossed climbed imagined chose planned protected reached "
    "explored discovered forgot examined copied signed wrote read mended cleaned shared"
).split()
_VERB_I = (
    "waited laughed smiled listened slept wandered paused hesitated agreed trembled sighed "
    "returned arrived departed rested worked prayed spoke whispered shouted wept argued "
    "danced sang lingered vanished appeared improved recovered"
).split()
_ADV = (
    "slowly quickly quietly suddenly carefully gladly softly warmly rarely often seldom "
    "certainly perhaps nearly gently eagerly calmly bravely patiently proudly"
).split()
_PREP = "near beside behind under above beyond across along through toward against".split()
_CONJ = "because while although until after before since".split()
_PRON = "he she they we it".split()
_OPENER = (
    "Later that day", "In the end", "For a while", "At first", "Some time later",
    "Even so", "Before long", "All the same", "By then", "After a moment",
)  # fmt: skip

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


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _noun_phrase(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.12:
        return rng.choice(_PRON)
    words = [rng.choice(_DET)]
    if rng.random() < 0.5:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    if rng.random() < 0.15:
        words += ["of", rng.choice(_DET), rng.choice(_NOUN)]
    return " ".join(words)


def _object_phrase(rng: random.Random) -> str:
    if rng.random() < 0.2:
        extra = f" {rng.choice(_ADJ)}" if rng.random() < 0.5 else ""
        return f"{rng.choice(_DET_PL)}{extra} {_plural(rng.choice(_NOUN))}"
    np_ = _noun_phrase(rng)
    return {"he": "him", "she": "her", "they": "them", "we": "us"}.get(np_, np_)


def _clause(rng: random.Random) -> str:
    subject = _noun_phrase(rng)
    if rng.random() < 0.6:
        words = [subject, rng.choice(_VERB_T), _object_phrase(rng)]
    else:
        words = [subject, rng.choice(_VERB_I)]
    if rng.random() < 0.3:
        words.append(rng.choice(_ADV))
    if rng.random() < 0.35:
        words += [rng.choice(_PREP), _object_phrase(rng)]
    return " ".join(words)


def _sentence(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.15:
        text = f"{rng.choice(_OPENER)}, {_clause(rng)}"
    elif r < 0.35:
        text = f"{_clause(rng)} {rng.choice(_CONJ)} {_clause(rng)}"
    elif r < 0.45:
        text = f"{_clause(rng)}, and {_clause(rng)}"
    else:
        text = _clause(rng)
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.93 else "!")


def builtin_vocabulary() -> set[str]:
    """Every word and punctuation mark the builtin grammar can produce (both cases)."""
    words: set[str] = set()
    for group in (_DET, _DET_PL, _ADJ, _NOUN, _VERB_T, _VERB_I, _ADV, _PREP, _CONJ, _PRON):
        words |= set(group)
    words |= {_plural(n) for n in _NOUN} | {"him", "her", "them", "us", "of", "and"}
    for opener in _OPENER:
        words |= set(opener.split())
    words |= {w[0].upper() + w[1:] for w in words} | {w.lower() for w in words}
    return words | {".", ",", "!"}


@functools.lru_cache(maxsize=4)
def _builtin_sentences(seed: int, num_sentences: int) -> tuple[str, ...]:
    rng = random.Random(seed)
    return tuple(_sentence(rng) for _ in range(num_sentences))


BUILTIN_SENTENCES = 30_000  # about 400k tokens; longer haystacks wrap around


def _from_files(path: Path, max_docs: int | None) -> tuple[list[str], str]:
    if not path.exists():
        raise BackgroundError(
            f"background path {path} does not exist; give a .txt file or a folder of .txt files"
        )
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise BackgroundError(f"no .txt files in {path}; put text files there or use 'builtin'")
    sentences: list[str] = []
    for file in files[:max_docs] if max_docs else files:
        sentences += split_sentences(file.read_text(encoding="utf-8", errors="replace"))
    return sentences, str(path)


def _from_hf(dataset: str, split: str, column: str, max_docs: int | None) -> list[str]:
    import datasets  # lazy: 3.4 s to import (measured); only kind=hf needs it

    local = Path(dataset)
    if local.is_dir() and (
        (local / "dataset_dict.json").exists() or (local / "state.json").exists()
    ):
        data = datasets.load_from_disk(str(local))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise BackgroundError(
                    f"{dataset} has splits {list(data)}, not {split!r}; set the split"
                )
            data = data[split]
    else:
        try:
            data = datasets.load_dataset(dataset, split=split)
        except Exception as err:  # network, missing dataset, bad split: say what to check
            raise BackgroundError(
                f"could not load background dataset {dataset!r} (split {split!r}): {err}. "
                "Check the name and that you are online, or use kind='builtin'/'files'"
            ) from err
    if column not in data.column_names:
        raise BackgroundError(
            f"background dataset {dataset!r} has columns {data.column_names}, "
            f"no {column!r}; set column= to its text column"
        )
    n = len(data) if max_docs is None else min(max_docs, len(data))
    sentences: list[str] = []
    for text in data.select(range(n))[column]:
        sentences += split_sentences(text or "")
    return sentences


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
        sentences = list(_builtin_sentences(seed, BUILTIN_SENTENCES))
        return Background(sentences, name=f"builtin(seed={seed})", meta={"kind": kind})
    if kind == "files":
        if path is None:
            raise BackgroundError("kind='files' needs path= (a .txt file or a folder of them)")
        sentences, name = _from_files(Path(path), max_docs)
        return Background(sentences, name=name, meta={"kind": kind})
    if kind == "hf":
        if not dataset:
            raise BackgroundError("kind='hf' needs dataset= (a Hub name like 'pg19' or a folder)")
        sentences = _from_hf(dataset, split, column, max_docs)
        return Background(sentences, name=f"{dataset}:{split}", meta={"kind": kind})
    raise BackgroundError(f"unknown background kind {kind!r}; use 'builtin', 'files' or 'hf'")
