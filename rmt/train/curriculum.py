"""The curriculum: which batches each stage trains and validates on, and its learning rate.

A stage draws a segment count per batch (``segments``, ``max_ratio``), ends after its step
budget or at ``until_accuracy``, and restarts warmup + schedule. Data order is a pure function
of (seed, stage, epoch, batch index): an endless task makes new samples for every chunk of
batches, a fixed training set is reshuffled every epoch. Loaders get their own generator so
they never draw from the global RNG, which is what makes resume exact.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from rmt.errors import ConfigError
from rmt.tasks.base import Task, stable_int

FRESH_CHUNK_BATCHES = 1000  # endless tasks: batches per "epoch" of newly made samples
MAX_AUTO_WORKERS = 4  # trainer.num_workers=null uses at most this many batch-building processes


def lr_factor(step: int, *, stage_start: int, stage_steps: int, warmup: int, name: str,
              min_ratio: float) -> float:  # fmt: skip
    """Learning-rate multiplier for optimizer step ``step`` (0-based) of the current stage.

    Linear warmup, then cosine/linear decay to ``min_ratio`` or constant. Every curriculum
    stage restarts the schedule, as each stage is a fresh run from the previous best model.
    """
    t = step - stage_start
    if t < warmup:
        return (t + 1) / (warmup + 1)
    if name == "constant":
        return 1.0
    span = max(stage_steps - warmup, 1)
    progress = min((t - warmup) / span, 1.0)
    if name == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - (1 - min_ratio) * progress


def steps_spent(stage, *, step: int, stage_start: int) -> bool:
    """The stage's step budget is used up."""
    return stage.steps is not None and step - stage_start >= stage.steps


def stage_done(stage, *, step: int, stage_start: int, best_metric: float | None) -> bool:
    """Step budget spent, or the stage's best validation accuracy reached its threshold."""
    if steps_spent(stage, step=step, stage_start=stage_start):
        return True
    return (
        stage.until_accuracy is not None
        and best_metric is not None
        and best_metric >= stage.until_accuracy
    )


def train_loader(
    task: Task, cfg: DictConfig, stage: int, *, epoch: int, batch_size: int
) -> DataLoader:
    """Training batches of ``stage``: segment counts drawn per batch by the curriculum."""
    stage_cfg = cfg.task.curriculum[stage]
    dataset = _train_dataset(task, cfg, stage, epoch=epoch, batch_size=batch_size)
    sampler = CurriculumBatchSampler(
        len(dataset),
        batch_size,
        list(stage_cfg.segments),
        cfg.segment.size,
        max_ratio=stage_cfg.max_ratio,
        seed=stable_int("train-order", cfg.trainer.seed, stage) >> 1,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    return _loader(task, cfg, dataset, sampler)


def _train_dataset(task: Task, cfg: DictConfig, stage: int, *, epoch: int, batch_size: int):
    if task.endless:  # new samples in every chunk: the seed changes, the sampler makes one pass
        seed = stable_int("train-chunk", cfg.trainer.seed, stage, epoch) >> 1
        num_samples = batch_size * FRESH_CHUNK_BATCHES
    else:
        seed, num_samples = cfg.trainer.seed, cfg.task.train_samples
    dataset = task.dataset("train", stage=stage, seed=seed, num_samples=num_samples)
    if len(dataset) < batch_size:  # a finite set (bAbI files, train_samples) too small
        raise ConfigError(
            f"task.curriculum.{stage} keeps {len(dataset)} training samples (its min_facts/"
            f"max_facts bounds over the data), fewer than one batch of trainer.batch_size="
            f"{batch_size}; widen the stage's bounds, give more data, or set "
            f"trainer.batch_size={max(len(dataset), 1)}."
        )
    return dataset


def check_train_sizes(task: Task, cfg: DictConfig, *, batch_size: int) -> None:
    """Before the first step: every stage of a finite training set fills one batch (a stage
    that does not would stop the run when it starts, maybe hours in)."""
    if task.endless:
        return
    for stage in range(len(cfg.task.curriculum)):
        _train_dataset(task, cfg, stage, epoch=0, batch_size=batch_size)


def valid_loader(task: Task, cfg: DictConfig, stage: int, *, batch_size: int) -> DataLoader:
    """The validation set at the stage's longest input (its own samples, fixed)."""
    dataset = task.dataset(
        "validation", stage=stage, seed=cfg.trainer.seed, num_samples=cfg.task.valid_samples
    )
    total = task.validation_length(stage)
    return _loader(task, cfg, dataset, FixedLengthBatches(len(dataset), batch_size, total))


def _loader(task: Task, cfg: DictConfig, dataset: Dataset, batch_sampler) -> DataLoader:
    """Batches built in ``trainer.num_workers`` processes (prefetched, pinned for a GPU) while
    the device trains. Samples are pure functions of their index, so the workers change when a
    batch is built, never what it holds (resume stays exact)."""
    workers = num_workers(cfg.trainer.num_workers)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=task.collate,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(cfg.trainer.seed),
    )


def num_workers(setting: int | None) -> int:
    """``trainer.num_workers``, with None (auto) = one worker per core beyond the first (the
    training process keeps one), at most 4: what the small default recipe can use."""
    if setting is not None:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_AUTO_WORKERS, (cores or 1) - 1))


class FixedLengthBatches:
    """Validation batches in index order, every sample at the same total length."""

    def __init__(self, num_samples: int, batch_size: int, total_length: int) -> None:
        self.num_samples, self.batch_size, self.total_length = num_samples, batch_size, total_length

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        for start in range(0, self.num_samples, self.batch_size):
            stop = min(start + self.batch_size, self.num_samples)
            yield [(i, self.total_length) for i in range(start, stop)]


class CurriculumBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, total_length)`` whose length is drawn per batch.

    Each batch uses ``n * segment_size`` tokens with ``n`` drawn uniformly from
    ``segment_counts``, except that a fraction ``max_ratio`` of the batches use the largest
    count (so the model keeps practising the longest inputs). Deterministic in
    ``(seed, epoch)``; call :meth:`set_epoch` each epoch.

    Args:
        num_samples: dataset size; indices are a fresh permutation every epoch.
        num_batches: batches per epoch (default: one pass over the data).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        segment_counts: Sequence[int],
        segment_size: int,
        max_ratio: float = 0.0,
        seed: int = 0,
        drop_last: bool = True,
        num_batches: int | None = None,
    ):
        counts = [int(c) for c in segment_counts]
        if not counts or min(counts) < 1:
            raise ValueError(f"segment_counts must be positive integers, got {segment_counts}")
        if not 0.0 <= max_ratio <= 1.0:
            raise ValueError(f"max_ratio must be in [0, 1], got {max_ratio}")
        if batch_size < 1 or segment_size < 1 or num_samples < 1:
            raise ValueError("num_samples, batch_size and segment_size must be >= 1")
        if drop_last and num_batches is None and num_samples < batch_size:
            raise ValueError(f"{num_samples} samples make no full batch of {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.segment_counts = counts
        self.segment_size = segment_size
        self.max_ratio = max_ratio
        self.seed = seed
        self.drop_last = drop_last
        self.num_batches = num_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.num_batches is not None:
            return self.num_batches
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def batch_counts(self) -> list[int]:
        """Segment count of every batch of the current epoch."""
        rng = random.Random(stable_int("curriculum-counts", self.seed, self.epoch))
        n = len(self)
        n_max = round(self.max_ratio * n)
        at_max = set(rng.sample(range(n), n_max))
        top = max(self.segment_counts)
        return [top if b in at_max else rng.choice(self.segment_counts) for b in range(n)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = random.Random(stable_int("curriculum-order", self.seed, self.epoch))
        order: list[int] = []
        for count in self.batch_counts():
            if self.num_batches is None:
                if not order:
                    order = list(range(self.num_samples))
                    rng.shuffle(order)
                batch, order = order[: self.batch_size], order[self.batch_size :]
            else:  # a fixed number of batches may cycle over several permutations
                batch = []
                while len(batch) < self.batch_size:
                    if not order:
                        order = list(range(self.num_samples))
                        rng.shuffle(order)
                    take = self.batch_size - len(batch)
                    batch, order = batch + order[:take], order[take:]
            total = count * self.segment_size
            yield [(i, total) for i in batch]
