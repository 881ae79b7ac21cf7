"""Associative retrieval as a :class:`rmt.tasks.base.Task` (``task.type=retrieval``).

Samples are generated on the fly (fresh ones at every step with ``train_samples: null``); the
answer is one value token, judged by exact match through the shared generate-and-judge path
(:mod:`rmt.tasks.generative`), so validation and ``rmt-eval`` score alike. Sub-tasks are named
``n<N>`` (N pairs): ``rmt-eval checkpoint=<run> tasks=[n4,n8,n16]`` measures a trained model at
other N, and ``lengths`` adds filler segments between the pairs and the query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from rmt.errors import ConfigError
from rmt.tasks.babilong.dataset import collate
from rmt.tasks.base import EvalCell, EvalItem, Verdict, register_task
from rmt.tasks.generative import AnswerTask
from rmt.tasks.retrieval.config import RetrievalTaskConfig
from rmt.tasks.retrieval.sample import Layout, RetrievalDataset
from rmt.tasks.retrieval.tokenizer import MAX_SYMBOLS, build_tokenizer

SUBTASK = re.compile(r"n([1-9][0-9]*)")


@register_task("retrieval")
class RetrievalTask(AnswerTask):
    """N key->value pairs in the leading segments, one key queried in the last."""

    config_class = RetrievalTaskConfig

    # ------------------------------------------------------------------ config, tokenizer
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        task = cfg.task
        if cfg.backbone.pretrained is not None or cfg.backbone.tokenizer is not None:
            raise ConfigError(
                "task.type=retrieval uses its own symbol tokenizer, so it trains tiny random "
                "backbones only; set backbone.pretrained=null and backbone.tokenizer=null "
                "(e.g. backbone=tiny)."
            )
        for name in ("key_vocab", "value_vocab"):
            if not 1 <= task[name] <= MAX_SYMBOLS:
                raise ConfigError(f"task.{name}={task[name]} must be in 1..{MAX_SYMBOLS}.")
        for name in ("num_pairs", "pairs_per_segment"):
            if task[name] < 1:
                raise ConfigError(f"task.{name}={task[name]} must be >= 1.")
        if not 0 <= task.reverse_queries < 1:
            raise ConfigError(
                f"task.reverse_queries={task.reverse_queries} must be in [0, 1): the fraction of "
                "training samples that ask for a key (validation always asks for a value)."
            )
        if task.reverse_queries > 0 and task.value_vocab < task.num_pairs:
            raise ConfigError(
                f"task.reverse_queries needs distinct values: task.value_vocab={task.value_vocab} "
                f"< task.num_pairs={task.num_pairs}; raise task.value_vocab or set "
                "task.reverse_queries=0."
            )
        if task.train_samples is not None and task.train_samples < cfg.trainer.batch_size:
            raise ConfigError(
                f"task.train_samples={task.train_samples} is smaller than trainer.batch_size="
                f"{cfg.trainer.batch_size}; give more samples or null for fresh ones each step."
            )
        for i, stage in enumerate(task.curriculum):
            _check_stage(task, i, stage, cfg.segment.size)

    @classmethod
    def offline_tokenizer(cls, cfg: DictConfig):
        return build_tokenizer()

    # ------------------------------------------------------------------ training data
    def layout(self, num_pairs: int) -> Layout:
        cfg = self.cfg
        return Layout(num_pairs, cfg.pairs_per_segment, cfg.key_vocab, cfg.value_vocab,
                      self.segment_size)  # fmt: skip

    def dataset(self, split: str, *, stage: int, seed: int, num_samples: int | None) -> Dataset:
        stage_cfg = self.cfg.curriculum[stage]
        layout = self.layout(_pairs(self.cfg, stage_cfg))
        count = num_samples if num_samples is not None else self.cfg.train_samples
        reverse = self.cfg.reverse_queries if split == "train" else 0.0
        return RetrievalDataset(layout, split=split, num_samples=count, seed=seed,
                                vary_pairs=self.cfg.vary_pairs, reverse=reverse)  # fmt: skip

    @property
    def endless(self) -> bool:
        return self.cfg.train_samples is None

    def collate(self, items: Sequence[dict]) -> dict:
        return collate(items, pad_id=self.tokenizer.pad_token_id)

    # ------------------------------------------------------------------ scoring, evaluation
    def judge(self, output: str, *, target: str, question: str, task: str) -> Verdict:
        exact = output.strip() == target
        return Verdict(output=output, correct=exact, exact=exact)

    @property
    def subtasks(self) -> list[str]:
        """The N of the last curriculum stage: what the run was trained for."""
        return [f"n{_pairs(self.cfg, self.cfg.curriculum[-1])}"]

    def validation_samples(self, limit: int | None) -> tuple[int, list[str] | None]:
        """Per cell: every ``n<N>`` is its own sample set (validation draws one N per stage)."""
        n = self.cfg.valid_samples
        return (n if limit is None else min(n, limit)), None

    def check_subtasks(self, tasks: Sequence[str]) -> None:
        bad = [t for t in tasks if not SUBTASK.fullmatch(t) or int(t[1:]) > self.cfg.key_vocab]
        if bad:
            raise ValueError(
                f"tasks: {bad} are not retrieval sub-tasks; name them n<N> with N pairs, "
                f"1 <= N <= task.key_vocab={self.cfg.key_vocab}, e.g. tasks=[n4,n8]."
            )

    def eval_items(self, cell: EvalCell, *, samples: int, seed: int, split: str = "test",
                   stage: int = -1, tasks: Sequence[str] | None = None
                   ) -> Iterator[EvalItem]:  # fmt: skip
        """``samples`` prompts with N = the cell's ``n<N>``, at ``cell.tokens`` tokens (or the
        fewest segments that hold the pairs and the query, for short lengths such as 0k).
        ``stage`` and ``tasks`` change nothing: the cell's ``n<N>`` alone fixes its samples."""
        layout = self.layout(int(cell.task[1:]))
        problem = layout.problem()
        if problem is not None:
            raise ValueError(f"tasks={cell.task}: {problem}")
        dataset = RetrievalDataset(layout, split=split, num_samples=samples, seed=seed)
        for index in range(samples):
            example = dataset[(index, cell.tokens)]
            prompt = torch.tensor(example["input_ids"][: example["prompt_length"]])
            yield EvalItem(cell.task, index, prompt, example["target"], example["question"])


def _pairs(task: DictConfig, stage: DictConfig) -> int:
    return stage.num_pairs if stage.num_pairs is not None else task.num_pairs


def _check_stage(task: DictConfig, i: int, stage: DictConfig, segment_size: int) -> None:
    """A stage's pairs must be drawable, fit their segments and leave room for the query."""
    n = _pairs(task, stage)
    key = f"task.curriculum[{i}]"
    if n < 1:
        raise ConfigError(f"{key}.num_pairs={n} must be >= 1.")
    layout = Layout(n, task.pairs_per_segment, task.key_vocab, task.value_vocab, segment_size)
    problem = layout.problem()
    if n > task.key_vocab:
        raise ConfigError(
            f"{key}: {problem}; raise task.key_vocab to at least {n} or lower task.num_pairs "
            "(or the stage's num_pairs)."
        )
    if problem is not None:
        raise ConfigError(
            f"{key}: {problem}; lower task.pairs_per_segment to at most "
            f"{segment_size // 3} or raise segment.size."
        )
    if task.vary_pairs:  # the fewest segments hold one pair; the most must hold all N
        if min(stage.segments) < 2 or max(stage.segments) < layout.min_segments():
            raise ConfigError(
                f"{key}.segments={list(stage.segments)}: with task.vary_pairs a sample needs at "
                f"least 2 segments (a pair, then the query), and the stage's largest count must "
                f"hold all {n} pairs and the query ({layout.min_segments()} segments)."
            )
    elif min(stage.segments) < layout.min_segments():
        raise ConfigError(
            f"{key}.segments={list(stage.segments)}: {n} pairs at task.pairs_per_segment="
            f"{task.pairs_per_segment} fill {layout.pair_segments()} segment(s) and the query "
            f"needs one more; use segments >= {layout.min_segments()} (e.g. "
            f"task.curriculum=[{{segments:[{layout.min_segments()}]}}]) or more pairs per segment."
        )
