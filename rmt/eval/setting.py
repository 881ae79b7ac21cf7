"""What ``rmt-eval`` scores for one checkpoint: its run's validation, changed only where asked.

A checkpoint was selected on its run's validation samples, so by default rmt-eval rebuilds
exactly those: the task, data source, story sizes and fact placement of the checkpoint's
curriculum stage, the same split, seed and number of samples, in the same order, at the same
length (``x1``), then at longer ones (``x2`` ... ``x16``). Every eval key left ``None`` is taken
from the run's ``config.yaml`` here; a key given on the command line replaces only itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from rmt.eval.config import length_times
from rmt.tasks.babilong.haystack import parse_length
from rmt.tasks.base import Task

VALIDATION_SPLIT = "validation"


@dataclass(frozen=True)
class Setting:
    """The resolved evaluation of one checkpoint (see :meth:`rmt.tasks.base.Task.eval_items`)."""

    tasks: list[str]
    lengths: list[tuple[str, int, bool]]  # (label, tokens, whole)
    samples: int  # samples drawn (over all of ``order`` when it is set, else per cell)
    order: list[str] | None  # sub-tasks drawn in turn, as validation does; None: per cell
    seed: int
    split: str
    stage: int
    batch_size: int
    max_new_tokens: int


def resolve(cfg: DictConfig, run_config: DictConfig, trainer_state: dict, task: Task) -> Setting:
    """rmt-eval's keys, each ``None`` replaced by the run's value (``task`` is the run's task
    with rmt-eval's data keys already applied)."""
    trainer = run_config.get("trainer") or OmegaConf.create({})
    stage = _stage(cfg.stage, trainer_state, len(task.cfg.curriculum))
    tasks = list(cfg.tasks) if cfg.tasks is not None else task.subtasks
    samples, order = task.validation_samples(trainer.get("eval_samples"))
    if order:  # drawn over the sub-tasks in turn: samples=N is N per cell
        order = tasks
        samples = samples if cfg.samples is None else cfg.samples * len(tasks)
    else:
        order = None
        samples = samples if cfg.samples is None else cfg.samples
    return Setting(
        tasks=tasks,
        lengths=_lengths(cfg.lengths or task.default_lengths, task, stage),
        samples=samples,
        order=order,
        seed=_first(cfg.seed, trainer.get("seed"), 0),
        split=cfg.data.split or VALIDATION_SPLIT,
        stage=stage,
        batch_size=_first(cfg.batch_size, trainer.get("eval_batch_size"), 64),
        max_new_tokens=_first(cfg.max_new_tokens, trainer.get("max_new_tokens"), 8),
    )


def _stage(asked: int | None, trainer_state: dict, stages: int) -> int:
    """The curriculum stage whose validation the checkpoint was selected on (or ``asked``)."""
    stage = asked if asked is not None else trainer_state.get("stage", stages - 1)
    if not 0 <= stage < stages:
        raise ValueError(
            f"stage={stage}: the run's curriculum has {stages} stage(s); use stage=0 to "
            f"stage={stages - 1}, or leave stage unset for the checkpoint's own."
        )
    return stage


def _lengths(labels: Sequence[str], task: Task, stage: int) -> list[tuple[str, int, bool]]:
    """``xK`` -> K times the stage's validation length (as the task measures it); other labels
    are BABILong lengths (haystack tokens). Repeated lengths are scored once."""
    lengths: dict[str, tuple[str, int, bool]] = {}
    for label in map(str, labels):
        times = length_times(label)
        length = task.scaled_length(stage, times) if times else (label, parse_length(label), False)
        lengths.setdefault(length[0], length)
    return list(lengths.values())


def _first(*values):
    return next(v for v in values if v is not None)
