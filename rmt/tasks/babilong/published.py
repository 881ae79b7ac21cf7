"""Loader for the published BABILong sets and local copies in the same format.

On the Hub, ``RMT-team/babilong`` has one config per length (``"4k"``) and one split per task
(``"qa1"``), with columns ``input``, ``question``, ``target``. Locally the same columns may sit
in a json/jsonl/parquet file, a folder of such files named by task (optionally inside a
folder named by length: ``4k/qa1.jsonl``), or a ``save_to_disk`` folder (a Dataset, or a
DatasetDict with task splits). Format rows with :class:`rmt.tasks.babilong.dataset.BabilongTextDataset`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rmt.tasks.text import is_saved_dataset, load_saved_split

REQUIRED_COLUMNS = ("input", "question", "target")
_EXTENSIONS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class BabilongLoadError(ValueError):
    """A BABILong source that cannot be read as (input, question, target) rows."""


def _check_columns(data, where: str):
    missing = [c for c in REQUIRED_COLUMNS if c not in data.column_names]
    if missing:
        raise BabilongLoadError(
            f"{where} lacks column(s) {missing}; BABILong rows need {list(REQUIRED_COLUMNS)} "
            f"and it has {data.column_names}. Rename the columns or point to the right data"
        )
    return data


def _from_file(path: Path):
    import datasets  # lazy: 3.4 s to import (measured); only source=babilong needs it

    builder = _EXTENSIONS.get(path.suffix.lower())
    if builder is None:
        raise BabilongLoadError(
            f"{path}: unsupported file type; use .json, .jsonl or .parquet with columns "
            f"{list(REQUIRED_COLUMNS)}"
        )
    if builder == "json":
        _check_json_rows(path)
    try:
        data = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # datasets wraps the parser's error; name the file instead
        raise BabilongLoadError(
            f"{path} cannot be read as {builder} rows ({type(err).__name__}: {err}); give rows "
            f"with columns {list(REQUIRED_COLUMNS)}"
        ) from None
    if len(data) == 0:
        raise BabilongLoadError(f"{path} holds no rows; {_ROWS_FIX}")
    return data


_ROWS_FIX = (
    "give one JSON object per line with keys "
    f"{list(REQUIRED_COLUMNS)} (or a .json list of such objects)"
)


def _check_json_rows(path: Path) -> None:
    """A .json/.jsonl file is text with at least one row, each line (or the whole file) JSON:
    checked here so that the error names the file and line, not a ``datasets`` internal."""
    data = path.read_bytes()
    try:
        if b"\0" in data:
            raise UnicodeError
        text = data.decode("utf-8")
    except UnicodeError:
        raise BabilongLoadError(f"{path} is not UTF-8 text (a binary file?); {_ROWS_FIX}") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise BabilongLoadError(f"{path} is empty; {_ROWS_FIX}")
    try:
        json.loads(text)  # one JSON document (a .json list, or a one-row .jsonl)
        return
    except json.JSONDecodeError:
        pass
    for n, line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            raise BabilongLoadError(f"{path}:{n}: not valid JSON ({err}); {_ROWS_FIX}") from None


def _from_folder(root: Path, length: str, task: str, split: str):
    import datasets  # lazy: 3.4 s to import (measured); only source=babilong needs it

    for folder in (root / length, root):
        if not folder.is_dir():
            continue
        if is_saved_dataset(folder):
            return load_saved_split(
                folder, split, fix="pick a task it has", error=BabilongLoadError
            )
        for ext in _EXTENSIONS:
            candidate = folder / f"{split}{ext}"
            if candidate.is_file():
                return _from_file(candidate)
        task_folder = folder / split
        if is_saved_dataset(task_folder):
            return datasets.load_from_disk(str(task_folder))
    raise BabilongLoadError(
        f"found no BABILong data for length {length!r}, task {split!r} under {root}; expected "
        f"{root}/{length}/{split}.jsonl (or .json/.parquet), {root}/{split}.jsonl, or a "
        "save_to_disk folder"
    )


def load_babilong(
    name_or_path: str | Path = "RMT-team/babilong",
    length: str | int = "4k",
    task: str = "qa1",
    split: str | None = None,
):
    """Rows of a BABILong set as a ``datasets.Dataset`` with input/question/target columns.

    Args:
        name_or_path: Hub dataset name, or a local file/folder (see the module docstring).
        length: BABILong length config (``"0k"``, ``"4k"``, ... ``"1M"``).
        task: task name; it is also the split name on the Hub and the file name locally.
        split: override the split name when a copy names its splits differently.
    """
    import datasets  # lazy: 3.4 s to import (measured); only source=babilong needs it

    split = split or task
    length = f"{length // 1024}k" if isinstance(length, int) else str(length)
    path = Path(name_or_path)
    if path.is_file():
        return _check_columns(_from_file(path), str(path))
    if path.is_dir():
        return _check_columns(_from_folder(path, length, task, split), str(path))
    if str(name_or_path).startswith((".", "/", "~")):
        raise BabilongLoadError(f"BABILong path {name_or_path} does not exist")
    try:
        data = datasets.load_dataset(str(name_or_path), length, split=split)
    except Exception as err:  # offline, unknown name/config/split: say what to check
        raise BabilongLoadError(
            f"could not load {name_or_path!r} config {length!r} split {split!r} from the Hub: "
            f"{err}. Check the names and that you are online, or give a local copy"
        ) from err
    return _check_columns(data, f"{name_or_path}[{length}][{split}]")
