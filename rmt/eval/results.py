"""Result rows of an evaluation grid and the tables written from them.

One row is one (model, mode, task, length) cell of the BABILong picture. Rows are plain
dataclasses so the same list feeds the CSV, the JSON, the printed table and the heatmaps,
and a combined table over several checkpoints is just the concatenation of their rows.
Accuracies are fractions (0..1) in every file, as in training's metrics.jsonl and summary.json;
only the table printed on the console shows percent, and its caption says so.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

RESULT_FIELDS = (
    "model",
    "mode",
    "task",
    "length",
    "length_tokens",
    "accuracy",
    "exact_match",
    "correct",
    "n",
    "seconds",
    "checkpoint",
    "scoring",
)


@dataclass(frozen=True)
class EvalResult:
    """Score of one model on one task at one input length.

    Attributes:
        model: short display name of the checkpoint (unique within one evaluation).
        mode: ``"rmt"`` (generation through memory) or ``"baseline"`` (backbone alone).
        task: bAbI task name, e.g. ``"qa1"``.
        length: length label as configured, e.g. ``"4k"``.
        length_tokens: the same length in tokens (``4096``), used to order columns.
        accuracy: fraction (0..1) of samples judged correct by the task's rule (``scoring``).
        exact_match: fraction of samples whose first output line equals the target.
        correct: number of samples judged correct (``accuracy == correct / n``).
        n: number of samples scored.
        seconds: wall time spent building, running and scoring this cell.
        checkpoint: path of the checkpoint folder that was read.
        scoring: the rule that judged the answers (BABILong: ``babilong`` or ``strict``).
    """

    model: str
    mode: str
    task: str
    length: str
    length_tokens: int
    accuracy: float
    exact_match: float
    correct: int
    n: int
    seconds: float
    checkpoint: str
    scoring: str = ""  # empty in results.csv files written before the column existed

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def write_csv(rows: Sequence[EvalResult], path: str | Path) -> Path:
    """Write rows as CSV with a fixed column order (``RESULT_FIELDS``)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())
    return path


def read_csv(path: str | Path) -> list[EvalResult]:
    """Read a ``results.csv`` back into rows (used by tests and to re-plot old results).

    Accuracy comes back as a fraction, also from files written when it was in percent (told
    apart by ``correct / n``)."""
    rows = []
    with Path(path).open(newline="") as f:
        for rec in csv.DictReader(f):
            accuracy, exact_match = float(rec["accuracy"]), float(rec["exact_match"])
            correct, n = int(rec["correct"]), int(rec["n"])
            if correct and n and math.isclose(accuracy, 100 * correct / n, abs_tol=1e-6):
                # written before accuracy became a fraction in every file: percent
                accuracy, exact_match = accuracy / 100, exact_match / 100
            rows.append(
                EvalResult(
                    model=rec["model"],
                    mode=rec["mode"],
                    task=rec["task"],
                    length=rec["length"],
                    length_tokens=int(rec["length_tokens"]),
                    accuracy=accuracy,
                    exact_match=exact_match,
                    correct=correct,
                    n=n,
                    seconds=float(rec["seconds"]),
                    checkpoint=rec["checkpoint"],
                    scoring=rec.get("scoring", ""),
                )
            )
    return rows


def write_json(rows: Sequence[EvalResult], path: str | Path, *, meta: dict | None = None) -> Path:
    """Write ``{"meta": ..., "results": [row, ...]}`` so a result file says how it was made."""
    path = Path(path)
    payload = {"meta": meta or {}, "results": [row.as_dict() for row in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def series_name(row: EvalResult) -> str:
    """Row label of a model in tables and heatmap titles: ``name`` or ``name (baseline)``."""
    return row.model if row.mode == "rmt" else f"{row.model} ({row.mode})"


def group_by_series(rows: Iterable[EvalResult]) -> dict[str, list[EvalResult]]:
    """Split rows per (model, mode), keeping first-seen order."""
    groups: dict[str, list[EvalResult]] = {}
    for row in rows:
        groups.setdefault(series_name(row), []).append(row)
    return groups


def grid(rows: Sequence[EvalResult], value: str = "accuracy"):
    """Pivot one series' rows into (tasks, lengths, matrix) with ``None`` for missing cells.

    Tasks keep their first-seen order; lengths are sorted by token count so columns grow
    left to right as in the BABILong figures.
    """
    tasks: list[str] = []
    lengths: dict[str, int] = {}
    for row in rows:
        if row.task not in tasks:
            tasks.append(row.task)
        lengths.setdefault(row.length, row.length_tokens)
    length_labels = sorted(lengths, key=lambda k: lengths[k])
    cells = {(r.task, r.length): getattr(r, value) for r in rows}
    matrix = [[cells.get((t, length)) for length in length_labels] for t in tasks]
    return tasks, length_labels, matrix


def format_table(rows: Sequence[EvalResult], value: str = "accuracy", fmt: str = "markdown",
                 *, percent: bool = False) -> str:  # fmt: skip
    """Accuracy table: one line per (model, task), one column per length, plus the row mean.

    ``fmt="markdown"`` gives a GitHub table (for papers' notes and READMEs); ``"text"`` gives
    aligned columns for the console. Several checkpoints share one table (combined table).
    Values are fractions as in the files; ``percent=True`` (the console) shows percent, and
    a caption line above the table names the unit either way.
    """
    all_lengths: dict[str, int] = {}
    for row in rows:
        all_lengths.setdefault(row.length, row.length_tokens)
    lengths = sorted(all_lengths, key=lambda k: all_lengths[k])
    header = ["model", "task", *lengths, "mean"]
    body: list[list[str]] = []
    for name, series in group_by_series(rows).items():
        tasks, _, _ = grid(series, value)
        cells = {(r.task, r.length): getattr(r, value) for r in series}
        for task in tasks:
            values = [cells.get((task, length)) for length in lengths]
            present = [v for v in values if v is not None]
            mean = sum(present) / len(present) if present else None
            body.append([name, task, *(_fmt(v, percent) for v in values), _fmt(mean, percent)])
    caption = f"{value} in percent (0-100)" if percent else f"{value} as a fraction (0-1)"
    if fmt == "markdown":
        lines = [caption, "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    if fmt == "text":
        widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
        out = [caption, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
        return "\n".join(out)
    raise ValueError(f"format_table: unknown fmt={fmt!r}; use 'markdown' or 'text'")


def _fmt(value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


__all__ = [
    "EvalResult",
    "RESULT_FIELDS",
    "format_table",
    "grid",
    "group_by_series",
    "read_csv",
    "series_name",
    "write_csv",
    "write_json",
]
