"""Shared parts of the bAbI generators: stable hashing, splits, vocabularies, story schedule.

Every task is generated the way bAbI v1.2 builds its files: a story is simulated fact by
fact, and every ``every`` facts the task may ask a question that the story so far answers,
but only when the facts that answer it are recent (bAbI never asks about a fact more than a
few lines back). A sample is one question with the facts before it, as BABILong reads bAbI.
Reading the public bAbI v1.2 en-10k files (scripts/babi_compare.py) gave the vocabularies
and schedules below; tests/test_babi_generator.py checks the result against them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rmt.tasks.base import stable_int

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation",
                  "val": "validation", "dev": "validation", "test": "test"}  # fmt: skip

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
QA5_PEOPLE = ("Bill", "Fred", "Jeff", "Mary")  # qa5 answers are scored against these names
QA10_PEOPLE = ("Bill", "Fred", "Julie", "Mary")  # qa10 and qa14
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
QA10_ROOMS = ("bedroom", "cinema", "kitchen", "office", "park", "school")  # qa10 and qa14
OBJECTS = ("apple", "football", "milk")
DIRECTIONS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
NUMBERS = ("none", "one", "two", "three")

MOVE_VERBS = ("moved to", "went to", "journeyed to", "travelled to", "went back to")
PICK_VERBS = ("picked up", "got", "grabbed", "took")
DROP_VERBS = ("dropped", "put down", "discarded", "left")
GIVE_VERBS = ("gave", "handed", "passed")


def normalize_split(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}") from None


def split_of_story(facts: Sequence[str]) -> str:
    """The split a story belongs to, from a stable hash of its facts (80/10/10)."""
    bucket = stable_int("story", "\n".join(facts)) % 10
    return "train" if bucket < 8 else ("validation" if bucket == 8 else "test")


@dataclass(frozen=True)
class Question:
    """A question asked after the first ``n_facts`` facts of its story."""

    n_facts: int
    text: str
    answer: str
    supporting: tuple[int, ...]


# A candidate question: (text, answer, supporting fact indices).
Candidate = tuple[str, str, tuple[int, ...]]


@dataclass
class Story:
    """Facts and the questions asked along them."""

    facts: list[str] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    def add(self, sentence: str) -> int:
        self.facts.append(sentence)
        return len(self.facts) - 1

    def ask(self, candidate: Candidate) -> None:
        text, answer, support = candidate
        self.questions.append(Question(len(self.facts), text, answer, tuple(sorted(support))))


@dataclass(frozen=True)
class Schedule:
    """How a task interleaves facts and questions (measured from bAbI v1.2 en-10k test files).

    Args:
        every: facts between two question attempts.
        questions: questions per story; the story ends with the last one.
        gap: most facts a question may come after its latest supporting fact.
        max_facts: longest story bAbI has for the task; longer draws are dropped.
        first: facts before the first attempt (defaults to ``every``).
        ask_rate: chance an attempt with a question to ask asks it (bAbI's stories run
            longer between questions in some tasks).
    """

    every: int
    questions: int
    gap: int
    max_facts: int
    first: int | None = None
    ask_rate: float = 1.0


def run_story(
    rng: random.Random,
    schedule: Schedule,
    step: Callable[[Story], bool | None],
    candidates: Callable[[Story], list[Candidate]],
    stop: int | None = None,
    story: Story | None = None,
) -> Story | None:
    """Simulate facts with ``step`` (one per call; False when it has none left) and ask
    questions on ``schedule``.

    With ``stop`` the story ends after exactly ``stop`` facts with one question (the most
    recently supported one the story allows), so a curriculum can ask for a story size; None
    when that story admits no question. Without it the story ends after
    ``schedule.questions`` questions, as bAbI's do, or None when it grows past
    ``schedule.max_facts``. ``story`` is the one ``step`` appends to (a new one if None).
    """
    story = story if story is not None else Story()
    first = schedule.first or schedule.every
    while True:
        if step(story) is False:  # the task has no more facts to tell
            return story if stop is None and story.questions else None
        n = len(story.facts)
        if stop is not None:
            if n < stop:
                continue
            options = candidates(story)
            if not options:
                return None
            best = min(n - 1 - max(c[2]) for c in options)
            story.ask(rng.choice([c for c in options if n - 1 - max(c[2]) == best]))
            return story
        if n > schedule.max_facts:
            return None
        if n < first or (n - first) % schedule.every:
            continue
        if schedule.ask_rate < 1.0 and rng.random() >= schedule.ask_rate:
            continue
        recent = [c for c in candidates(story) if n - 1 - max(c[2]) <= schedule.gap]
        if recent:
            story.ask(rng.choice(recent))
            if len(story.questions) == schedule.questions:
                return story


def move_sentence(rng: random.Random, person: str, room: str) -> str:
    return f"{person} {rng.choice(MOVE_VERBS)} the {room}."


def vocabulary() -> set[str]:
    """Every word of the shared vocabularies (task modules add their own)."""
    words = set(PEOPLE + QA5_PEOPLE + QA10_PEOPLE + ROOMS + QA10_ROOMS + OBJECTS + NUMBERS)
    words |= set(DIRECTIONS)
    for phrase in MOVE_VERBS + PICK_VERBS + DROP_VERBS + GIVE_VERBS:
        words |= set(phrase.split())
    return words | {".", ",", "?"}
