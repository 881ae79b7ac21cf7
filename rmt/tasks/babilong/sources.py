"""Where BABILong samples come from, named the same in ``rmt-train`` and ``rmt-eval``.

* ``generated``: stories from the offline bAbI generator, hidden in background text on the fly;
* ``babi``: stories read from the raw bAbI ``.txt`` files in ``path``, hidden the same way;
* ``babilong``: pre-built BABILong rows (``RMT-team/babilong`` on the Hub, another id, or a
  local copy in ``path``), already hidden in their own background.

The keys are ``task.source``/``task.path`` for ``rmt-train`` and ``data.source``/``data.path`` for
``rmt-eval``. The former names fail with a one-line error naming the new one (``local`` meant
bAbI files in training but BABILong rows in evaluation, hence the rename).
"""

from __future__ import annotations

from pathlib import Path

from rmt.errors import ConfigError
from rmt.tasks.babilong.babi import BabiSample, read_babi
from rmt.tasks.babilong.published import load_babilong

SOURCES = ("generated", "babi", "babilong")
DEFAULT_BABILONG = "RMT-team/babilong"
TRAIN_RENAMED = {"local": "babi", "hub": "babilong"}  # task.source
EVAL_RENAMED = {"local": "babilong", "hub": "babilong"}  # data.source
_MEANING = {
    "generated": "the offline bAbI generator",
    "babi": "raw bAbI .txt files in {path}",
    "babilong": "pre-built BABILong rows from the Hub or a local folder in {path}",
}
_BABI_SPLIT_FILES = {"train": "train", "validation": "test", "test": "test"}


def check_source(value: str, *, key: str, path_key: str, renamed: dict[str, str]) -> None:
    """Raise ConfigError for an unknown or renamed source name (``key`` is e.g. task.source)."""
    if value in renamed:
        new = renamed[value]
        raise ConfigError(
            f"{key}={value} was renamed: use {key}={new} ({_MEANING[new].format(path=path_key)})."
        )
    if value not in SOURCES:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(SOURCES)}.")


def babi_stories(folder: str | Path, tasks: list[str], split: str) -> list[BabiSample]:
    """The stories of ``tasks`` in a bAbI folder (``qaN_*_train.txt``; validation/test read
    the ``_test.txt`` files)."""
    suffix = _BABI_SPLIT_FILES[split]
    stories: list[BabiSample] = []
    for task in tasks:
        files = sorted(Path(folder).glob(f"{task}_*_{suffix}.txt"))
        if not files:
            raise FileNotFoundError(
                f"path={str(folder)!r} has no {task}_*_{suffix}.txt file; give the folder "
                "of the bAbI files (e.g. tasks_1-20_v1-2/en-10k)."
            )
        for file in files:
            stories += read_babi(file, task=task)
    return stories


def babilong_rows(path: str | None, *, length: str, task: str):
    """Pre-built rows of one task and length (the Hub's RMT-team/babilong when path is None)."""
    return load_babilong(path or DEFAULT_BABILONG, length=length, task=task)
