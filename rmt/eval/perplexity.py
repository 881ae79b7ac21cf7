"""Perplexity grid of ``rmt-eval`` for likelihood tasks (``task=lm``, ``Task.eval_kind``).

Each (model, length) cell reads ``samples`` windows of that many tokens segment by segment
through memory and scores every next-token prediction with the task's own validation code
(:meth:`rmt.tasks.base.Task.validation_rows`, the trainer's path), so an evaluation and a
validation of the same model on the same windows agree. A row keeps the perplexity overall
and by segment index; the plot shows the latter, one line per model and length.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rmt.eval.grid import batch_size_for
from rmt.tasks.base import EvalCell, EvalItem, Task

BASE_FIELDS = ("model", "length", "length_tokens", "perplexity", "loss", "tokens", "n", "seconds",
               "checkpoint")  # fmt: skip


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity of one model on windows of one length; ``segments[k]`` is segment k's."""

    model: str
    length: str
    length_tokens: int
    perplexity: float
    loss: float  # mean next-token cross-entropy (nats), token-weighted
    tokens: int  # predictions scored
    n: int  # windows
    seconds: float
    checkpoint: str
    segments: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@torch.no_grad()
def evaluate_perplexity(model, task: Task, cells: Sequence[EvalCell],
                        items: Callable[[EvalCell], Iterable[EvalItem]], *, name: str,
                        checkpoint: str, batch_size: int, max_batch_tokens: int,
                        progress: bool = True) -> list[PerplexityResult]:  # fmt: skip
    """One row per cell; ``items(cell)`` is consumed one batch at a time."""
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for cell in tqdm(cells, desc=name, disable=not progress, dynamic_ncols=True):
        start, stream = time.perf_counter(), iter(items(cell))
        size = batch_size_for(cell.tokens, batch_size, max_batch_tokens)
        parts: dict[str, list[torch.Tensor]] = {}
        n = 0
        while batch := list(islice(stream, size)):
            collated = task.collate([{"input_ids": it.prompt_ids} for it in batch])
            collated = {k: v.to(device) for k, v in collated.items()}
            for key, value in task.validation_rows(model, collated).items():
                parts.setdefault(key, []).append(value.cpu())
            n += len(batch)
        if n == 0:
            raise ValueError(f"no samples at length {cell.length}; check the text source.")
        metrics = task.validation_metrics({k: torch.cat(v) for k, v in parts.items()})
        k = 0
        segments = []
        while f"perplexity_seg{k}" in metrics:
            segments.append(metrics[f"perplexity_seg{k}"])
            k += 1
        rows.append(PerplexityResult(
            model=name, length=cell.length, length_tokens=cell.tokens,
            perplexity=metrics["perplexity"], loss=metrics["loss"], tokens=metrics["tokens"], n=n,
            seconds=round(time.perf_counter() - start, 3), checkpoint=checkpoint,
            segments=segments,
        ))  # fmt: skip
    return rows


def _flat(row: PerplexityResult, width: int) -> dict:
    rec = {k: getattr(row, k) for k in BASE_FIELDS}
    rec.update({f"perplexity_seg{k}": (row.segments[k] if k < len(row.segments) else None)
                for k in range(width)})  # fmt: skip
    return rec


def write_results(rows: Sequence[PerplexityResult], out: Path, *, meta: dict) -> None:
    """``results.csv`` (one column per segment index), ``results.json`` and ``results.md``."""
    width = max(len(r.segments) for r in rows)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=[*BASE_FIELDS, *(f"perplexity_seg{k}" for k in range(width))]
        )
        writer.writeheader()
        writer.writerows(_flat(r, width) for r in rows)
    payload = {"meta": meta, "results": [r.as_dict() for r in rows]}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(format_table(rows) + "\n")


def format_table(rows: Sequence[PerplexityResult], fmt: str = "markdown") -> str:
    """Perplexity per (model, length) row: overall, then by segment index."""
    width = max(len(r.segments) for r in rows)
    header = ["model", "length", "perplexity", *(f"seg{k}" for k in range(width))]
    body = [[r.model, r.length, f"{r.perplexity:.2f}",
             *(f"{r.segments[k]:.2f}" if k < len(r.segments) else "-" for k in range(width))]
            for r in rows]  # fmt: skip
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]  # fmt: skip
    return "\n".join(lines + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                              for r in body])  # fmt: skip
