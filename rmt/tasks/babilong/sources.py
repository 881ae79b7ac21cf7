"""Where BABILong samples come from, named the same in ``rmt-train`` and ``rmt-eval``.

* ``generated``: stories from the offline bAbI generator, hidden in background text on the fly;
* ``babi``: stories read from the raw bAbI ``.txt`` files in ``path`` (a folder, or one file),
  hidden the same way; validation holds whole stories out of the ``_train`` files;
* ``babilong``: pre-built BABILong rows (``RMT-team/babilong`` on the Hub, another id, or a
  local copy in ``path``), already hidden in their own background.

The keys are ``task.source``/``task.path`` for ``rmt-train`` and ``data.source``/``data.path`` for
``rmt-eval``. The former names fail with a one-line error naming the new one (``local`` meant
bAbI files in training but BABILong rows in evaluation, hence the rename).
"""

from __future__ import annotations

from pathlib import Path

from rmt.errors import ConfigError
from rmt.tasks.babilong.babi import BabiSample, read_babi_stories, task_from_filename
from rmt.tasks.babilong.published import load_babilong
from rmt.tasks.base import stable_int

SOURCES = ("generated", "babi", "babilong")
DEFAULT_BABILONG = "RMT-team/babilong"
TRAIN_RENAMED = {"local": "babi", "hub": "babilong"}  # task.source
EVAL_RENAMED = {"local": "babilong", "hub": "babilong"}  # data.source
_MEANING = {
    "generated": "the offline bAbI generator",
    "babi": "raw bAbI .txt files (a file or a folder) in {path}",
    "babilong": "pre-built BABILong rows from the Hub or a local folder in {path}",
}


def check_source(value: str, *, key: str, path_key: str, renamed: dict[str, str]) -> None:
    """Raise ConfigError for an unknown or renamed source name (``key`` is e.g. task.source)."""
    if value in renamed:
        new = renamed[value]
        raise ConfigError(
            f"{key}={value} was renamed: use {key}={new} ({_MEANING[new].format(path=path_key)})."
        )
    if value not in SOURCES:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(SOURCES)}.")


def babi_files(path: str | Path, task: str, kind: str) -> list[Path]:
    """The bAbI files of ``task`` in ``path``: the file itself, or ``qaN_*_<kind>.txt`` in a
    folder (``kind`` is ``train`` or ``test``)."""
    path = Path(path)
    if path.is_file():
        named = task_from_filename(path)
        return [path] if named in (None, task) else []
    return sorted({*path.glob(f"{task}_*_{kind}.txt"), *path.glob(f"{task}_{kind}.txt")})


def read_task_stories(path: str | Path, task: str, kind: str) -> list[list[BabiSample]]:
    """Every story of ``task`` in its ``kind`` files; FileNotFoundError naming the fix."""
    files = babi_files(path, task, kind)
    if not files:
        where = f"{str(path)!r} is not a {task} file" if Path(path).is_file() else (
            f"{str(path)!r} has no {task}_*_{kind}.txt file")  # fmt: skip
        raise FileNotFoundError(
            f"path={where}; give a bAbI file or the folder of the bAbI files "
            "(e.g. tasks_1-20_v1-2/en-10k)."
        )
    return [story for file in files for story in read_babi_stories(file, task=task)]


def babi_stories(path: str | Path, tasks: list[str], split: str, *, valid_samples: int
                 ) -> list[BabiSample]:  # fmt: skip
    """The questions of ``split``, tasks interleaved (question ``i`` is of task ``i % n``).

    ``test`` reads the ``_test`` files. ``train`` and ``validation`` split the ``_train``
    files (or the one file given) by whole stories: validation holds out about
    ``valid_samples`` questions (at most half of each task's), chosen by a hash of each
    story's text, so it never uses a test file and never shares a story with training.
    """
    per_task = []
    for task in tasks:
        stories = read_task_stories(path, task, "test" if split == "test" else "train")
        if split != "test":
            held = _held_out(stories, -(-valid_samples // len(tasks)))
            stories = [s for i, s in enumerate(stories) if (i in held) == (split == "validation")]
        per_task.append([sample for story in stories for sample in story])
    return _interleave(per_task)


def _held_out(stories: list[list[BabiSample]], count: int) -> set[int]:
    """Indices of the stories held out for validation: about ``count`` questions."""
    order = sorted(range(len(stories)), key=lambda i: stable_int("babi-valid", *stories[i][-1].facts,
                                                                 i))  # fmt: skip
    total = sum(len(s) for s in stories)
    held: set[int] = set()
    taken = 0
    for i in order:
        if taken >= count or taken + len(stories[i]) > total // 2:
            break
        held.add(i)
        taken += len(stories[i])
    return held


def _interleave(lists: list[list[BabiSample]]) -> list[BabiSample]:
    """Round-robin over the lists (the shorter ones end first), so any prefix mixes tasks."""
    out: list[BabiSample] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


def within_facts(stories: list[BabiSample], low: int | None, high: int | None) -> list[BabiSample]:
    """The stories whose number of facts is within [low, high] (None: unbounded)."""
    return [s for s in stories
            if (low is None or len(s.facts) >= low) and (high is None or len(s.facts) <= high)]  # fmt: skip


def babilong_rows(path: str | None, *, length: str, task: str):
    """Pre-built rows of one task and length (the Hub's RMT-team/babilong when path is None)."""
    return load_babilong(path or DEFAULT_BABILONG, length=length, task=task)
