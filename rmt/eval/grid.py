"""The evaluation grid: score a model on every (task, length) cell by generation through memory.

Scoring is by generation, as in BABILong: the prompt is read segment by segment through memory,
the model generates a short answer greedily, and the task judges the decoded text
(:mod:`rmt.tasks.generative`); a classification task answers with its predicted class instead.
Either way the task's ``predict`` answers and judges, the same code the trainer validates with.

Memory stays flat in the input length because nothing here holds more than one batch of
prompts: samples are built lazily, a batch at a time, and long lengths get smaller batches
(``max_batch_tokens``; one sample at a time beyond it). The model reads the prompt one segment
at a time under ``no_grad`` and returns only the new tokens, so no per-token hidden states or
logits over the whole input are ever materialised.

``baseline`` mode scores the same backbone without memory: plain Hugging Face ``generate`` on
the last tokens of the prompt that fit the backbone's position limit (the question and answer
marker are at the end, so they are always kept), which is what a plain model of that context
size can read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rmt.eval.results import EvalResult
from rmt.tasks.base import EvalCell, EvalItem, Task
from rmt.tasks.generative import MODES, prompt_digest


@dataclass
class CellScore:
    correct: int = 0
    exact: int = 0
    n: int = 0
    seconds: float = 0.0


def batch_size_for(length_tokens: int, batch_size: int, max_batch_tokens: int) -> int:
    """Samples per batch at one length: at most ``max_batch_tokens`` prompt tokens, at least one."""
    if length_tokens <= 0:
        return batch_size
    return max(1, min(batch_size, max_batch_tokens // length_tokens))


@dataclass
class Grid:
    """How to score: the task (its ``predict`` answers and judges), generation budget, batching
    and output."""

    task: Task
    name: str
    checkpoint: str
    modes: Sequence[str] = ("rmt",)
    batch_size: int = 16
    max_batch_tokens: int = 65536
    max_new_tokens: int = 8
    predictions: object = None  # an open file for predictions.jsonl, or None


def evaluate_model(
    model,
    grid: Grid,
    cells: Sequence[EvalCell],
    items: Callable[[EvalCell], Iterable[EvalItem]],
    *,
    progress: bool = True,
    samples_per_cell: int | None = None,
) -> list[EvalResult]:
    """Score ``model`` on every cell, in every mode of ``grid``; one result row per cell and mode.

    ``items(cell)`` is consumed lazily, so only one batch of prompts exists at a time (usually
    ``lambda cell: task.eval_items(cell, samples=..., seed=...)``). ``samples_per_cell`` only
    sizes the progress bar.
    """
    for mode in grid.modes:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: unknown; use one of {MODES}")
    model.eval()
    total = samples_per_cell * len(cells) if samples_per_cell else None
    bar = tqdm(total=total, desc=grid.name, unit="sample", disable=not progress, dynamic_ncols=True)
    rows: list[EvalResult] = []
    try:
        for cell in cells:
            scores = _score_cell(model, grid, cell, iter(items(cell)), bar)
            rows += [_result(grid, cell, mode, scores[mode]) for mode in grid.modes]
    finally:
        bar.close()
    return rows


def _score_cell(model, grid: Grid, cell: EvalCell, items, bar) -> dict[str, CellScore]:
    scores = {mode: CellScore() for mode in grid.modes}
    size = batch_size_for(cell.tokens, grid.batch_size, grid.max_batch_tokens)
    while True:
        t0 = time.perf_counter()
        batch = list(islice(items, size))  # builds only this batch
        if not batch:
            return scores
        build_s = time.perf_counter() - t0
        for mode in grid.modes:
            t1 = time.perf_counter()
            _score_batch(model, grid, cell, mode, batch, scores[mode])
            scores[mode].seconds += build_s + time.perf_counter() - t1
        bar.update(len(batch))
        del batch  # free this batch before the next one is built
        first = scores[grid.modes[0]]
        bar.set_postfix(
            task=cell.task, length=cell.length, acc=f"{100 * first.correct / first.n:.0f}%"
        )


def _score_batch(model, grid: Grid, cell: EvalCell, mode: str, batch: list[EvalItem],
                 score: CellScore) -> None:  # fmt: skip
    prompts = [torch.as_tensor(it.prompt_ids, dtype=torch.long) for it in batch]
    verdicts = grid.task.predict(
        model, prompts, targets=[it.target for it in batch], mode=mode,
        questions=[it.question for it in batch], subtasks=[it.task for it in batch],
        max_new_tokens=grid.max_new_tokens,
    )  # fmt: skip
    for item, verdict in zip(batch, verdicts, strict=True):
        score.correct += int(verdict.correct)
        score.exact += int(verdict.exact)
        score.n += 1
        if grid.predictions is not None:
            record = {
                "model": grid.name, "mode": mode, "task": item.task, "length": cell.length,
                "index": item.index, "question": item.question, "target": item.target,
                "prompt_tokens": len(item.prompt_ids), "prompt_sha1": prompt_digest(item.prompt_ids),
                "output": verdict.output, "correct": verdict.correct, "exact_match": verdict.exact,
            }  # fmt: skip
            grid.predictions.write(json.dumps(record) + "\n")


def _result(grid: Grid, cell: EvalCell, mode: str, s: CellScore) -> EvalResult:
    if s.n == 0:
        raise ValueError(
            f"no samples for task {cell.task} at length {cell.length}; the data source is "
            "empty for this cell (check data.path, tasks and lengths)."
        )
    return EvalResult(
        model=grid.name, mode=mode, task=cell.task, length=cell.length,
        length_tokens=cell.tokens, accuracy=s.correct / s.n,
        exact_match=s.exact / s.n, correct=s.correct, n=s.n,
        seconds=round(s.seconds, 3), checkpoint=grid.checkpoint, scoring=grid.task.scoring,
    )  # fmt: skip


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Shortest distinct path suffixes: run folders often share their ``<time>`` name."""
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in paths):
            return names
        depth += 1
