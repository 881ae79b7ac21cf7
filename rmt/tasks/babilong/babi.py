"""bAbI samples and a reader for the standard bAbI file format.

A bAbI file is a sequence of stories. Every line starts with its number inside the story;
numbering restarts at 1 for a new story. Fact lines hold one sentence; question lines hold
``question<TAB>answer<TAB>supporting line numbers``. BABILong uses one sample per question:
all facts of the story before it, the question, the answer and the supporting facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class BabiFormatError(ValueError):
    """A bAbI file line that does not follow the format; the message names file and line."""


@dataclass(frozen=True)
class BabiSample:
    """One bAbI question with the facts it may use.

    Args:
        task: task name, ``"qa1"`` ... ``"qa20"``.
        facts: story sentences before the question, in order (questions are not facts).
        question: the question sentence, e.g. ``"Where is Mary?"``.
        answer: bAbI answer string (``"kitchen"``; qa8 ``"apple,milk"``; qa19 ``"n,w"``).
        supporting: 0-based indices into ``facts`` of the facts that answer the question.
    """

    task: str
    facts: tuple[str, ...]
    question: str
    answer: str
    supporting: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        bad = [i for i in self.supporting if not 0 <= i < len(self.facts)]
        if bad:
            raise ValueError(
                f"supporting fact indices {bad} are outside the {len(self.facts)} facts"
            )


_TASK_FROM_NAME = re.compile(r"qa(\d+)_")
_LINE = re.compile(r"^(\d+) (.*)$")


def task_from_filename(path: str | Path) -> str | None:
    """``qa8_lists-sets_train.txt`` -> ``"qa8"``; None when the name does not say."""
    match = _TASK_FROM_NAME.search(Path(path).name)
    return f"qa{int(match.group(1))}" if match else None


def read_babi(path: str | Path, task: str | None = None) -> list[BabiSample]:
    """Read a bAbI ``.txt`` file into one :class:`BabiSample` per question.

    ``task`` defaults to the one in the file name (``qa1_single-supporting-fact_train.txt``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bAbI file {path} does not exist")
    task = task or task_from_filename(path)
    if task is None:
        raise ValueError(
            f"cannot tell the task from the file name {path.name!r}; "
            "pass task='qaN' or use the standard name like qa1_single-supporting-fact_train.txt"
        )

    samples: list[BabiSample] = []
    facts: list[str] = []
    fact_of_line: dict[int, int] = {}  # story line number -> index in facts
    prev_id = 0
    with path.open(encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n\r")
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            match = _LINE.match(line)
            if match is None:
                raise BabiFormatError(f"{where}: expected '<number> <text>', got {line!r}")
            line_id, text = int(match.group(1)), match.group(2)
            if line_id == 1:
                facts, fact_of_line = [], {}
            elif line_id != prev_id + 1:
                raise BabiFormatError(
                    f"{where}: line number {line_id} follows {prev_id}; "
                    "numbers must count up by one and restart at 1 for a new story"
                )
            prev_id = line_id

            if "\t" not in text:
                fact_of_line[line_id] = len(facts)
                facts.append(text.strip())
                continue
            parts = text.split("\t")
            if len(parts) != 3 or not parts[0].strip() or not parts[1].strip():
                raise BabiFormatError(
                    f"{where}: a question line needs 'question<TAB>answer<TAB>supporting ids', "
                    f"got {len(parts)} tab-separated fields in {line!r}"
                )
            question, answer, support = (p.strip() for p in parts)
            try:
                support_ids = [int(tok) for tok in support.split()]
            except ValueError:
                raise BabiFormatError(
                    f"{where}: supporting fact ids must be numbers, got {support!r}"
                ) from None
            missing = [i for i in support_ids if i not in fact_of_line]
            if missing:
                raise BabiFormatError(
                    f"{where}: supporting ids {missing} are not fact lines of this story"
                )
            samples.append(
                BabiSample(
                    task=task,
                    facts=tuple(facts),
                    question=question,
                    answer=answer,
                    supporting=tuple(fact_of_line[i] for i in support_ids),
                )
            )
    return samples
