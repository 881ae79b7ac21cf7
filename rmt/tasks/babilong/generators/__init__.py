"""Offline, seeded generator of the 20 bAbI tasks (qa1..qa20), matching bAbI v1.2.

Written from the task descriptions in Weston et al. (2015), "Towards AI-Complete Question
Answering", and measured against the public bAbI v1.2 en-10k files (scripts/babi_compare.py):
the same sentence forms, vocabularies, answer label shares, story lengths and distance between
a question and its latest supporting fact. Each story is simulated, so answers are correct by
construction and every question lists all the facts that answer it.

Why it exists: training and testing must work without any download, and an infinite stream
of fresh stories keeps a small model from memorising the data.

Public API: :func:`generate_sample` (``generate_sample(task, index, seed=, split=,
min_facts=, max_facts=)``), :data:`TASKS`, :func:`fact_range`, :func:`vocabulary`.

Determinism: each sample comes from an RNG seeded by a SHA-256 of ``(task, seed, split,
index)`` (never Python's salted ``hash``), so DataLoader workers and reruns agree. Splits never
share a story: each sample is assigned to a split by a hash of its facts (80/10/10) and a draw
that lands in another split is redrawn.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.babilong.generators import locations, objects, reasoning, spatial
from rmt.tasks.babilong.generators.common import (
    DIRECTIONS,
    NUMBERS,
    OBJECTS,
    OPPOSITE,
    PEOPLE,
    QA5_PEOPLE,
    QA10_PEOPLE,
    QA10_ROOMS,
    ROOMS,
    SPLITS,
    Story,
    normalize_split,
    split_of_story,
)
from rmt.tasks.babilong.generators.vocab import vocabulary
from rmt.tasks.base import stable_int

TASKS = tuple(f"qa{i}" for i in range(1, 21))

_BUILDERS: dict[str, Callable[[random.Random, int | None], Story | None]] = {
    **locations.BUILDERS,
    **spatial.BUILDERS,
    **reasoning.BUILDERS,
    **{task: (lambda rng, stop, t=task: objects.build(t, rng, stop)) for task in objects.SCHEDULES},
}
_SHRINK = set(spatial.SHRINKS) | set(reasoning.SHRINKS)  # fixed-shape stories, cut to size

# Fewest facts a question of each task can have, and the most (the longest real story, or
# the fixed story size; qa4 places at most six rooms on a grid).
TASK_MIN_FACTS = {"qa1": 1, "qa2": 2, "qa3": 3, "qa4": 1, "qa5": 2, "qa6": 1, "qa7": 1,
                  "qa8": 1, "qa9": 1, "qa10": 1, "qa11": 1, "qa12": 1, "qa13": 1, "qa14": 2,
                  "qa15": 2, "qa16": 3, "qa17": 2, "qa18": 2, "qa19": 2, "qa20": 1}  # fmt: skip
TASK_MAX_FACTS = {
    **{t: s.max_facts for t, s in locations.SCHEDULES.items()},
    **{t: s.max_facts for t, s in objects.SCHEDULES.items()},
    "qa4": len(ROOMS) - 1, "qa15": 8, "qa16": 9, "qa17": 2, "qa18": 10, "qa19": 5, "qa20": 12,
}  # fmt: skip

_MAX_DRAWS = 5000

__all__ = [
    "DIRECTIONS", "NUMBERS", "OBJECTS", "OPPOSITE", "PEOPLE", "QA5_PEOPLE", "QA10_PEOPLE",
    "QA10_ROOMS", "ROOMS", "SPLITS", "TASKS", "TASK_MAX_FACTS", "TASK_MIN_FACTS", "fact_range",
    "generate_sample", "normalize_split", "normalize_task", "split_of_story", "stable_int",
    "vocabulary",
]  # fmt: skip


def normalize_task(task: str) -> str:
    name = str(task).lower()
    if name not in _BUILDERS:
        raise ValueError(f"the offline generator has tasks {', '.join(TASKS)}; got {task!r}")
    return name


def fact_range(task: str, min_facts: int | None, max_facts: int | None) -> tuple[int, int]:
    """The number-of-facts bounds for ``task``; a clear error when impossible.

    With neither bound, stories are as long as bAbI's (this range is then their extent).
    """
    task = normalize_task(task)
    least, most = TASK_MIN_FACTS[task], TASK_MAX_FACTS[task]
    if max_facts is not None and max_facts < least:
        raise ValueError(
            f"max_facts={max_facts} is too small for {task}: its questions need at least "
            f"{least} facts; raise max_facts"
        )
    if min_facts is not None and min_facts > most:
        raise ValueError(f"min_facts={min_facts} is too large for {task}: at most {most}")
    lo = max(least, min_facts if min_facts is not None else least)
    hi = min(most, max_facts if max_facts is not None else most)
    if lo > hi:
        raise ValueError(f"min_facts={min_facts} is larger than max_facts={max_facts}")
    return lo, hi


def _draw(task: str, rng: random.Random, n: int | None) -> Story | None:
    """A story whose last question is the sample (``n`` facts, or bAbI's own length)."""
    if n is None:
        story = _BUILDERS[task](rng, None)
        if story is None:
            return None
        question = rng.choice(story.questions)
        return Story(story.facts[: question.n_facts], [question])
    if task in _SHRINK:
        story = _BUILDERS[task](rng, None)
        return spatial.shrink(rng, story, n) if story is not None else None
    return _BUILDERS[task](rng, n)


def generate_sample(
    task: str,
    index: int,
    *,
    seed: int = 0,
    split: str = "train",
    min_facts: int | None = None,
    max_facts: int | None = None,
) -> BabiSample:
    """The ``index``-th question of ``task`` in ``split``: a pure function of its arguments.

    Without bounds the stories are distributed like bAbI's; ``min_facts``/``max_facts``
    draw the number of facts uniformly from that range instead (a curriculum starts small).
    """
    task = normalize_task(task)
    split = normalize_split(split)
    lo, hi = fact_range(task, min_facts, max_facts)
    natural = min_facts is None and max_facts is None
    rng = random.Random(stable_int(task, seed, split, index))
    for _ in range(_MAX_DRAWS):
        story = _draw(task, rng, None if natural else rng.randint(lo, hi))
        if story is None or split_of_story(story.facts) != split:
            continue
        (q,) = story.questions
        return BabiSample(task, tuple(story.facts), q.text, q.answer, q.supporting)
    raise RuntimeError(
        f"could not draw a {split} story for {task} with {lo}..{hi} facts in {_MAX_DRAWS} "
        "tries; allow more facts (max_facts)"
    )
