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
_ENDS_WITH_IDS = re.compile(r"\s\d+\s*$")  # "... kitchen 1": supporting ids, not a fact's end


def task_from_filename(path: str | Path) -> str | None:
    """``qa8_lists-sets_train.txt`` -> ``"qa8"``; None when the name does not say."""
    match = _TASK_FROM_NAME.search(Path(path).name)
    return f"qa{int(match.group(1))}" if match else None


FIX = (
    "bAbI lines are '<number> <fact>' or '<number> <question><TAB><answer><TAB><supporting "
    "numbers>' (tasks_1-20_v1-2/en-10k/qa1_single-supporting-fact_train.txt is an example)"
)


def read_babi(path: str | Path, task: str | None = None) -> list[BabiSample]:
    """Read a bAbI ``.txt`` file into one :class:`BabiSample` per question.

    ``task`` defaults to the one in the file name (``qa1_single-supporting-fact_train.txt``).
    """
    return [sample for story in read_babi_stories(path, task) for sample in story]


def read_babi_stories(path: str | Path, task: str | None = None) -> list[list[BabiSample]]:
    """The questions of a bAbI file, grouped by story (numbering restarts at 1).

    Questions of one story share their first facts, so a split that keeps stories whole
    never shows a validation story's facts in training. A file that is empty, not text,
    separated by something other than tabs, or has no question fails with file:line.
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
    data = path.read_bytes()
    if b"\0" in data:
        raise BabiFormatError(f"{path}:1: the file holds NUL bytes, not bAbI text. {FIX}.")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BabiFormatError(f"{path}:{line}: not UTF-8 text (a binary file?). {FIX}.") from None
    reader = _StoryReader(str(path), task)
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            reader.line(lineno, line)
    if not reader.stories:
        raise BabiFormatError(
            f"{path}:{len(lines) or 1}: no question line (a line with tab-separated question, "
            f"answer and supporting numbers) in the file{' (it is empty)' if not lines else ''}. "
            f"{FIX}."
        )
    return reader.stories


class _StoryReader:
    """Line-by-line state of :func:`read_babi_stories` (facts of the current story)."""

    def __init__(self, path: str, task: str) -> None:
        self.path, self.task = path, task
        self.stories: list[list[BabiSample]] = []
        self.facts: list[str] = []
        self.fact_of_line: dict[int, int] = {}  # story line number -> index in facts
        self.prev_id = 0
        self.new_story = True

    def line(self, lineno: int, line: str) -> None:
        where = f"{self.path}:{lineno}"
        match = _LINE.match(line)
        if match is None:
            raise BabiFormatError(f"{where}: expected '<number> <text>', got {line[:80]!r}. {FIX}.")
        line_id, text = int(match.group(1)), match.group(2)
        if line_id == 1:
            self.facts, self.fact_of_line, self.new_story = [], {}, True
        elif line_id != self.prev_id + 1:
            raise BabiFormatError(
                f"{where}: line number {line_id} follows {self.prev_id}; numbers must count up "
                "by one and restart at 1 for a new story"
            )
        self.prev_id = line_id
        if "\t" not in text:
            if "?" in text or _ENDS_WITH_IDS.search(text):  # a question whose tabs were lost
                raise BabiFormatError(
                    f"{where}: a question line without tabs: {line[:80]!r}; separate question, "
                    "answer and supporting numbers with tab characters (not '|' or spaces)"
                )
            self.fact_of_line[line_id] = len(self.facts)
            self.facts.append(text.strip())
            return
        self._question(where, line, text.split("\t"))

    def _question(self, where: str, line: str, parts: list[str]) -> None:
        if len(parts) != 3 or not parts[0].strip() or not parts[1].strip():
            raise BabiFormatError(
                f"{where}: a question line needs 'question<TAB>answer<TAB>supporting ids', "
                f"got {len(parts)} tab-separated fields in {line[:80]!r}"
            )
        question, answer, support = (p.strip() for p in parts)
        try:
            support_ids = [int(tok) for tok in support.split()]
        except ValueError:
            raise BabiFormatError(
                f"{where}: supporting fact ids must be numbers, got {support!r}"
            ) from None
        missing = [i for i in support_ids if i not in self.fact_of_line]
        if missing:
            raise BabiFormatError(
                f"{where}: supporting ids {missing} are not fact lines of this story"
            )
        sample = BabiSample(
            task=self.task, facts=tuple(self.facts), question=question, answer=answer,
            supporting=tuple(self.fact_of_line[i] for i in support_ids),
        )  # fmt: skip
        if self.new_story:
            self.stories.append([])
            self.new_story = False
        self.stories[-1].append(sample)
