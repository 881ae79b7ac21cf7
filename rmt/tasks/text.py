"""Text sources shared by the tasks: a builtin offline grammar, local text files, HF datasets.

BABILong hides facts in this text (``rmt.tasks.babilong.background`` splits it into sentences);
the language-modelling task (``rmt.tasks.lm``) reads it as documents. One reader per source, so
both tasks accept the same ``kind``/``path``/``dataset``/``split``/``column``/``max_docs`` keys.

* ``builtin``: English-like sentences from a small seeded probabilistic grammar over a few
  hundred ordinary words, made offline in well under a second. As documents
  (:func:`builtin_documents`), each document draws its content words from its own small
  lexicon, as real documents keep to a topic, so what an earlier segment said predicts the
  words of a later one: something for a memory to carry.
* ``files``: a ``.txt`` file or a folder of them (one document per file).
* ``hf``: any Hugging Face dataset with a text column (PG19: ``dataset="deepmind/pg19"``), or a
  local ``save_to_disk`` folder (one document per row).
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path

from rmt.errors import ConfigError

TEXT_KINDS = ("builtin", "files", "hf")


def check_text_source(src, key: str, *, files_hint: str, hf_hint: str) -> None:
    """Compose-time check of a text-source node (``kind``, ``path``, ``dataset``), before any
    text is read; errors name the node's config key (``task.background``, ``task.source``)."""
    if src.kind not in TEXT_KINDS:
        raise ConfigError(
            f"{key}.kind={src.kind!r} is not valid; choose one of {', '.join(TEXT_KINDS)}."
        )
    if src.kind == "files" and (src.path is None or not Path(src.path).exists()):
        raise ConfigError(
            f"{key}.path={src.path!r} does not exist; give {files_hint}, or use "
            f"{key}.kind=builtin for the offline text."
        )
    if src.kind == "hf" and not src.dataset:
        raise ConfigError(
            f"{key}.kind=hf needs {key}.dataset: a Hub id such as {hf_hint} or a local "
            "save_to_disk folder."
        )


class TextSourceError(ValueError):
    """A text source that cannot be used; the message says how to fix it."""


@dataclass
class TextSourceConfig:
    """Where text comes from (see :func:`read_documents`); BABILong's background and LM's source."""

    kind: str = "builtin"  # builtin (offline) | files (local .txt) | hf (datasets, e.g. PG19)
    path: str | None = None  # .txt file or folder of them, for kind=files
    dataset: str | None = None  # kind=hf: Hub id (e.g. deepmind/pg19) or a save_to_disk folder
    split: str = "train"
    column: str = "text"
    max_docs: int | None = None


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


@dataclass(frozen=True)
class Lexicon:
    """The content words a grammar draws from (function words are shared by all lexicons)."""

    adj: tuple[str, ...]
    noun: tuple[str, ...]
    verb_t: tuple[str, ...]
    verb_i: tuple[str, ...]
    adv: tuple[str, ...]

    def topic(self, rng: random.Random, *, size: int) -> Lexicon:
        """A document's own small lexicon: about ``size`` nouns and fewer of the other kinds."""

        def pick(words: tuple[str, ...], n: int) -> tuple[str, ...]:
            return tuple(rng.sample(words, max(1, min(n, len(words)))))

        return Lexicon(pick(self.adj, size // 2), pick(self.noun, size),
                       pick(self.verb_t, size // 2), pick(self.verb_i, size // 3),
                       pick(self.adv, size // 4))  # fmt: skip


FULL_LEXICON = Lexicon(tuple(_ADJ), tuple(_NOUN), tuple(_VERB_T), tuple(_VERB_I), tuple(_ADV))


def plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _noun_phrase(rng: random.Random, lex: Lexicon) -> str:
    r = rng.random()
    if r < 0.12:
        return rng.choice(_PRON)
    words = [rng.choice(_DET)]
    if rng.random() < 0.5:
        words.append(rng.choice(lex.adj))
    words.append(rng.choice(lex.noun))
    if rng.random() < 0.15:
        words += ["of", rng.choice(_DET), rng.choice(lex.noun)]
    return " ".join(words)


def _object_phrase(rng: random.Random, lex: Lexicon) -> str:
    if rng.random() < 0.2:
        extra = f" {rng.choice(lex.adj)}" if rng.random() < 0.5 else ""
        return f"{rng.choice(_DET_PL)}{extra} {plural(rng.choice(lex.noun))}"
    np_ = _noun_phrase(rng, lex)
    return {"he": "him", "she": "her", "they": "them", "we": "us"}.get(np_, np_)


def _clause(rng: random.Random, lex: Lexicon) -> str:
    subject = _noun_phrase(rng, lex)
    if rng.random() < 0.6:
        words = [subject, rng.choice(lex.verb_t), _object_phrase(rng, lex)]
    else:
        words = [subject, rng.choice(lex.verb_i)]
    if rng.random() < 0.3:
        words.append(rng.choice(lex.adv))
    if rng.random() < 0.35:
        words += [rng.choice(_PREP), _object_phrase(rng, lex)]
    return " ".join(words)


def sentence(rng: random.Random, lex: Lexicon = FULL_LEXICON) -> str:
    """One sentence of the grammar over ``lex``'s content words."""
    r = rng.random()
    if r < 0.15:
        text = f"{rng.choice(_OPENER)}, {_clause(rng, lex)}"
    elif r < 0.35:
        text = f"{_clause(rng, lex)} {rng.choice(_CONJ)} {_clause(rng, lex)}"
    elif r < 0.45:
        text = f"{_clause(rng, lex)}, and {_clause(rng, lex)}"
    else:
        text = _clause(rng, lex)
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.93 else "!")


def builtin_vocabulary() -> set[str]:
    """Every word and punctuation mark the builtin grammar can produce (both cases)."""
    words: set[str] = set()
    for group in (_DET, _DET_PL, _ADJ, _NOUN, _VERB_T, _VERB_I, _ADV, _PREP, _CONJ, _PRON):
        words |= set(group)
    words |= {plural(n) for n in _NOUN} | {"him", "her", "them", "us", "of", "and"}
    for opener in _OPENER:
        words |= set(opener.split())
    words |= {w[0].upper() + w[1:] for w in words} | {w.lower() for w in words}
    return words | {".", ",", "!"}


@functools.lru_cache(maxsize=4)
def builtin_sentences(seed: int, num_sentences: int) -> tuple[str, ...]:
    """``num_sentences`` sentences over the full lexicon (BABILong's background)."""
    rng = random.Random(seed)
    return tuple(sentence(rng) for _ in range(num_sentences))


@functools.lru_cache(maxsize=4)
def builtin_documents(seed: int, num_docs: int, sentences: int, topic_size: int
                      ) -> tuple[str, ...]:  # fmt: skip
    """``num_docs`` documents of ``sentences`` sentences, each over its own topic lexicon of about
    ``topic_size`` nouns: the words a document keeps using are what memory can carry."""
    docs = []
    for i in range(num_docs):
        rng = random.Random(f"builtin-doc-{seed}-{i}")
        lex = FULL_LEXICON.topic(rng, size=topic_size)
        docs.append(" ".join(sentence(rng, lex) for _ in range(sentences)))
    return tuple(docs)


# ---------------------------------------------------------------------------------------
# files and datasets
# ---------------------------------------------------------------------------------------
def read_files(path: str | Path, max_docs: int | None = None) -> list[str]:
    """The texts of a ``.txt`` file or of the ``.txt`` files under a folder (sorted), one each."""
    path = Path(path)
    if not path.exists():
        raise TextSourceError(
            f"text path {path} does not exist; give a .txt file or a folder of .txt files"
        )
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise TextSourceError(f"no .txt files in {path}; put text files there or use 'builtin'")
    return [_read_text(f) for f in files[: max_docs or None]]


def _read_text(file: Path) -> str:
    """One text file; a binary file (NUL bytes, not UTF-8) is refused, naming it, rather than
    read as replacement characters."""
    data = file.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeError
        return data.decode("utf-8")
    except UnicodeError:
        raise TextSourceError(
            f"{file} is not UTF-8 text (a binary file?); give plain .txt files or use 'builtin'"
        ) from None


def is_saved_dataset(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (one Dataset or a DatasetDict)."""
    return path.is_dir() and (
        (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def load_saved_split(
    folder: Path, split: str, *, fix: str, error: type[ValueError] = TextSourceError
):
    """Split ``split`` of a ``save_to_disk`` folder (a single Dataset is returned as is); a
    missing split raises ``error`` naming the folder's splits and ``fix``."""
    import datasets  # lazy: 3.4 s to import (measured)

    data = datasets.load_from_disk(str(folder))
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise error(f"{folder} has splits {list(data)}, not {split!r}; {fix}")
        data = data[split]
    return data


def read_dataset(dataset: str, split: str, column: str, max_docs: int | None) -> list[str]:
    """The ``column`` texts of a Hub dataset or a local ``save_to_disk`` folder, one per row."""
    import datasets  # lazy: 3.4 s to import (measured); only kind=hf needs it

    if is_saved_dataset(Path(dataset)):
        data = load_saved_split(Path(dataset), split, fix="set the split")
    else:
        try:
            data = datasets.load_dataset(dataset, split=split)
        except Exception as err:  # network, missing dataset, bad split: say what to check
            raise TextSourceError(
                f"could not load text dataset {dataset!r} (split {split!r}): {err}. "
                "Check the name and that you are online, or use kind='builtin'/'files'"
            ) from err
    if column not in data.column_names:
        raise TextSourceError(
            f"text dataset {dataset!r} has columns {data.column_names}, "
            f"no {column!r}; set column= to its text column"
        )
    n = len(data) if max_docs is None else min(max_docs, len(data))
    return [text or "" for text in data.select(range(n))[column]]
