"""BABILong as a :class:`rmt.tasks.base.Task`: bAbI facts hidden in background text.

Everything BABILong-specific that the trainer and ``rmt-eval`` need goes through this class:
which stories a split holds (generator, bAbI files or published rows, see ``sources``), how a
sample is built at a given length (``dataset``), the config rules, the preflight check that the
largest stories fit their segments, and BABILong's scoring rule.

The haystack builder (background text tokenized once) is shared: a task builds it once, and
evaluation of several checkpoints with one tokenizer reuses it (:func:`shared_builder`).
Data order is a pure function of (seed, split, task, index, length), so resumed runs and
DataLoader workers see identical samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import ConcatDataset, Dataset

from rmt.errors import ConfigError
from rmt.tasks.babilong import preflight
from rmt.tasks.babilong.babi import BabiFormatError
from rmt.tasks.babilong.background import BackgroundError, make_background
from rmt.tasks.babilong.config import AUX_LABELS, BabilongTaskConfig
from rmt.tasks.babilong.dataset import BabilongDataset, BabilongTextDataset, collate
from rmt.tasks.babilong.haystack import HaystackBuilder, parse_length
from rmt.tasks.babilong.scoring import TASK_LABELS, check_scoring, compare_answers, exact_match
from rmt.tasks.babilong.sources import (
    TRAIN_RENAMED,
    babi_stories,
    babilong_rows,
    check_source,
    within_facts,
)
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.base import EvalCell, EvalItem, Verdict, register_task, tokenizer_key
from rmt.tasks.generative import AnswerTask
from rmt.tasks.text import check_text_source

DEBUG_FACTS = 2  # task.debug=true (debug=fast): stories of at most this many facts


@register_task("babilong")
class BabilongTask(AnswerTask):
    """BABILong qa1..qa20 from the ``generated``, ``babi`` or ``babilong`` source."""

    config_class = BabilongTaskConfig
    default_lengths = ("x1", "x2", "x4", "x8", "x16")  # the run's validation length, 1x to 16x
    with_answer: ClassVar[bool] = True  # samples end in the answer tokens (False: at the marker)

    def __init__(self, cfg: DictConfig, *, tokenizer, segment_size: int, seed: int) -> None:
        super().__init__(cfg, tokenizer=tokenizer, segment_size=segment_size, seed=seed)
        self.builder = None
        if cfg.source != "babilong":  # published rows come with their own haystack
            self.builder = shared_builder(tokenizer, cfg.background, seed)
        self._stories: dict[str, object] = {}  # per split: bAbI questions or pre-built rows

    # ------------------------------------------------------------------ config, tokenizer
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        task = cfg.task
        check_source(task.source, key="task.source", path_key="task.path", renamed=TRAIN_RENAMED)
        check_scoring(task.scoring, key="task.scoring")
        _check_tasks(task)
        _check_source_paths(task)
        check_text_source(task.background, "task.background",
                          files_hint="a .txt/.jsonl file or a folder of them",
                          hf_hint="deepmind/pg19 (online)")  # fmt: skip
        _check_samples(task, cfg.trainer.batch_size)

    @classmethod
    def offline_tokenizer(cls, cfg: DictConfig):
        """Word-level tokenizer over the generator's words, the builtin background and every
        word of the bAbI files or pre-built rows the run reads (``cfg`` is the task node)."""
        return build_tokenizer(extra_texts=sorted(data_texts(cfg)))

    @classmethod
    def eval_config(cls, task_cfg: DictConfig, eval_cfg: DictConfig) -> DictConfig:
        """rmt-eval's tasks, position, background, data source and scoring replace the run's."""
        cfg = task_cfg.copy()
        if eval_cfg.tasks is not None:
            cfg.tasks = list(eval_cfg.tasks)
        if eval_cfg.position is not None:
            cfg.position = [float(p) for p in eval_cfg.position]
        if eval_cfg.background.kind is not None:  # an explicit background replaces the run's
            cfg.background = OmegaConf.merge(cfg.background, eval_cfg.background)
        if eval_cfg.data.source is not None:  # else the run's own source (bAbI files stay)
            cfg.source, cfg.path = eval_cfg.data.source, eval_cfg.data.path
        elif eval_cfg.data.path is not None:  # the run's source, read from another path
            cfg.path = eval_cfg.data.path
        if eval_cfg.scoring is not None:
            cfg.scoring = eval_cfg.scoring
        return cfg

    # ------------------------------------------------------------------ training data
    def stories(self, split: str):
        """Fixed bAbI stories of ``split`` (source=babi), or None for the generator.

        Validation holds whole stories out of the ``_train`` files; only ``test`` (rmt-eval)
        reads the ``_test`` files."""
        if self.cfg.source != "babi":
            return None
        if split not in self._stories:
            self._stories[split] = read_stories(self.cfg, split)
        return self._stories[split]

    def dataset(self, split: str, *, stage: int, seed: int, num_samples: int | None) -> Dataset:
        if self.cfg.source == "babilong":
            return self._published(split)
        return self._stories_dataset(list(self.cfg.tasks), self.stories(split), split=split,
                                     stage=stage, seed=seed, num_samples=num_samples,
                                     total_length=self.segment_size)  # fmt: skip

    def _stories_dataset(self, tasks: list[str], stories, *, split: str, stage: int, seed: int,
                         num_samples: int | None, length: int | None = None,
                         total_length: int | None = None) -> BabilongDataset:  # fmt: skip
        """Generated or bAbI stories with the story sizes and fact placement of ``stage``: the one
        recipe of training, validation and rmt-eval samples."""
        cfg = self.cfg
        low, high = self.facts(cfg.curriculum[stage])
        if stories is not None:  # bAbI files: the stage's bounds filter the real stories
            stories = within_facts(stories, low, high)
            num_samples = min(num_samples or len(stories), len(stories))
        return BabilongDataset(
            tasks, split=split, num_samples=num_samples, tokenizer=self.tokenizer,
            builder=self.builder, length=length, total_length=total_length, seed=seed,
            position=tuple(cfg.position), facts_end_from_end=self.facts_end(cfg.curriculum[stage]),
            min_facts=low, max_facts=high, samples=stories,
            aux_labels=list(cfg.aux_labels) if split == "train" else (),
            with_answer=self.with_answer,
        )  # fmt: skip

    def facts_end(self, stage) -> int | None:
        """Tokens at the end kept free of facts (the question's segment), or None."""
        before_last = _first(stage.facts_before_last_segment, self.cfg.facts_before_last_segment)
        return self.segment_size if before_last else None

    def facts(self, stage) -> tuple[int | None, int | None]:
        """Story sizes ``(min_facts, max_facts)`` of a curriculum stage (None: the generator's).

        The stage's values win over the task's; ``task.debug`` caps both at ``DEBUG_FACTS``.
        """
        low = _first(stage.min_facts, self.cfg.min_facts)
        high = _first(stage.max_facts, self.cfg.max_facts)
        if self.cfg.debug:
            high = DEBUG_FACTS if high is None else min(high, DEBUG_FACTS)
            low = min(DEBUG_FACTS if low is None else low, high)
        return low, high

    def _published(self, split: str) -> Dataset:
        """Pre-built rows; the first valid_samples rows per task are held out for validation.
        Built once per split, so rows tokenized by the preflight are not tokenized again."""
        if split in self._stories:
            return self._stories[split]
        cfg, parts = self.cfg, []
        for name in cfg.tasks:
            rows = babilong_rows(cfg.path, length=cfg.babilong_length, task=name)
            n_valid = min(cfg.valid_samples, len(rows) // 2)
            keep = range(n_valid) if split == "validation" else range(n_valid, len(rows))
            parts.append(BabilongTextDataset(rows.select(keep), self.tokenizer, name,
                                             with_answer=self.with_answer))  # fmt: skip
        self._stories[split] = _IndexOnly(ConcatDataset(parts))
        return self._stories[split]

    @property
    def endless(self) -> bool:
        return self.cfg.source == "generated" and self.cfg.train_samples is None

    def collate(self, items: Sequence[dict]) -> dict:
        return collate(items, pad_id=self.tokenizer.pad_token_id)

    def preflight(self) -> None:
        """Fail before training when a stage's largest samples cannot fit its segments, or an
        answer would read as ``<unk>`` (see :mod:`rmt.tasks.babilong.preflight`)."""
        cfg = self.cfg
        if cfg.source == "babilong":
            rows = {split: self._published(split) for split in ("train", "validation")}
            for i, stage in enumerate(cfg.curriculum):
                for dataset in rows.values():
                    preflight.check_rows(i, stage, dataset, self.segment_size)
        elif cfg.source == "babi":
            stories = self.stories("train") + self.stories("validation")
            for i, stage in enumerate(cfg.curriculum):
                for name in cfg.tasks:
                    preflight.check_stories(self, i, stage, name, stories)
        else:
            for i, stage in enumerate(cfg.curriculum):
                for name in cfg.tasks:
                    preflight.check_generated(self, i, stage, name)
        preflight.check_answers(self.tokenizer, self.answer_sets())

    def answer_sets(self) -> dict[str, set[str]]:
        """Every answer the run's training and validation data can hold, by sub-task (pre-built
        rows: all under ``"rows"``)."""
        cfg = self.cfg
        if cfg.source == "babilong":
            rows = [self._published(split) for split in ("train", "validation")]
            return {"rows": {d[i]["target"] for d in rows for i in range(len(d))}}
        if cfg.source == "babi":
            stories = self.stories("train") + self.stories("validation")
            return {t: {s.answer for s in stories if s.task == t} for t in cfg.tasks}
        return {t: set(TASK_LABELS[t]) for t in cfg.tasks}

    # ------------------------------------------------------------------ scoring, evaluation

    def judge(self, output: str, *, target: str, question: str, task: str) -> Verdict:
        return Verdict(
            output=output,
            correct=compare_answers(target, output, question, task, scoring=self.cfg.scoring),
            exact=exact_match(target, output),
        )

    @property
    def scoring(self) -> str:
        return self.cfg.scoring

    def check_subtasks(self, tasks: Sequence[str]) -> None:
        unknown = [t for t in tasks if t not in TASK_LABELS]
        if unknown:
            raise ValueError(
                f"tasks: unknown task names {unknown}; use names from {sorted(TASK_LABELS)}, "
                "e.g. tasks=[qa1,qa2]."
            )

    def validation_samples(self, limit: int | None) -> tuple[int, list[str] | None]:
        """Published rows: validation holds the first ``valid_samples`` rows of every task."""
        if self.cfg.source == "babilong":
            return self.cfg.valid_samples, None
        return super().validation_samples(limit)

    def scaled_length(self, stage: int, times: int) -> tuple[str, int, bool]:
        """Published rows come in fixed lengths: ``times`` x the run's ``babilong_length``."""
        if self.cfg.source != "babilong":
            return super().scaled_length(stage, times)
        tokens = times * parse_length(self.cfg.babilong_length)
        return (f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)), tokens, False

    def eval_items(self, cell: EvalCell, *, samples: int, seed: int, split: str = "test",
                   stage: int = -1, tasks: Sequence[str] | None = None
                   ) -> Iterator[EvalItem]:  # fmt: skip
        """Generated/bAbI stories: sample ``i`` is the same story at every length, seeded so two
        evaluations (and two checkpoints) score the same stories with the facts at the same
        places, with the story sizes and fact placement of ``stage``. BABILong rows: the first
        ``samples`` published rows of the cell."""
        if self.cfg.source == "babilong":
            rows = babilong_rows(self.cfg.path, length=cell.length, task=cell.task)
            count = min(samples, len(rows))  # fewer rows than asked: score them all, n says so
            rows = rows.select(range(count)) if hasattr(rows, "select") else rows[:count]
            dataset: Dataset = BabilongTextDataset(rows, self.tokenizer, cell.task,
                                                   with_answer=self.with_answer)  # fmt: skip
            for index in range(len(dataset)):
                yield _item(dataset[index], index)
            return
        stories = self.stories(split)
        if stories is not None and tasks is None:
            stories = [s for s in stories if s.task == cell.task]
        length = {"total_length": cell.tokens} if cell.whole else {"length": cell.tokens}
        dataset = self._stories_dataset(
            list(tasks) if tasks is not None else [cell.task], stories, split=split,
            stage=stage, seed=seed, num_samples=samples, **length,
        )  # fmt: skip
        for index in range(len(dataset)):
            if dataset.task_at(index) == cell.task:
                yield _item(dataset[index], index)


# ------------------------------------------------------------------------------ config rules
def _check_tasks(task: DictConfig) -> None:
    unknown = [t for t in task.tasks if t not in TASK_LABELS]
    if not task.tasks or unknown:
        raise ConfigError(
            f"task.tasks={list(task.tasks)} has unknown task names {unknown}; "
            f"use names from {sorted(TASK_LABELS)}, e.g. task.tasks=[qa1]."
        )
    if len(task.position) != 2 or not 0.0 <= task.position[0] < task.position[1] <= 1.0:
        raise ConfigError(
            f"task.position={list(task.position)} must be [start, end] with "
            "0 <= start < end <= 1 (fractions of the haystack where facts may sit)."
        )
    if task.min_facts is not None and task.max_facts is not None:
        if task.min_facts > task.max_facts:
            raise ConfigError(
                f"task.min_facts={task.min_facts} > task.max_facts={task.max_facts}; swap them."
            )
    for i, stage in enumerate(task.curriculum):
        before_last = _first(stage.facts_before_last_segment, task.facts_before_last_segment)
        if before_last and min(stage.segments) < 2:
            raise ConfigError(
                f"task.curriculum[{i}] allows 1 segment but facts_before_last_segment=true needs "
                "at least 2; set the stage's segments to [2] or more, or its "
                "facts_before_last_segment: false (facts may then share the question's segment)."
            )
    unknown_aux = sorted(set(task.aux_labels) - set(AUX_LABELS))
    if unknown_aux:
        raise ConfigError(
            f"task.aux_labels has unknown value(s) {unknown_aux}; choose from "
            f"{list(AUX_LABELS)} or []."
        )


def _check_source_paths(task: DictConfig) -> None:
    if task.source == "babi" and (task.path is None or not os.path.exists(task.path)):
        raise ConfigError(
            f"task.source=babi needs task.path=<a bAbI .txt file or the folder of them>; "
            f"{task.path!r} does not exist."
        )


def _check_samples(task: DictConfig, batch_size: int) -> None:
    if task.train_samples is not None and task.train_samples < batch_size:
        raise ConfigError(
            f"task.train_samples={task.train_samples} is smaller than trainer.batch_size="
            f"{batch_size}; give more samples or null for fresh generated samples."
        )


# ----------------------------------------------------------------------------------- helpers
class _IndexOnly(Dataset):
    """Pre-built samples have their own length: drop the sampler's requested length."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[0] if isinstance(key, tuple) else key]


def read_stories(cfg: DictConfig, split: str) -> list:
    """bAbI questions of ``split``; a missing or malformed file is a one-line ConfigError."""
    try:
        return babi_stories(cfg.path, list(cfg.tasks), split, valid_samples=cfg.valid_samples)
    except FileNotFoundError as err:
        raise ConfigError(f"task.{err}") from err
    except BabiFormatError as err:
        raise ConfigError(f"task.path: {err}") from err


def data_texts(cfg: DictConfig) -> set[str]:
    """Every distinct sentence, question and answer of the bAbI files or rows a run reads."""
    texts: set[str] = set()
    if cfg.source == "babi":
        for split in ("train", "test"):
            try:
                stories = read_stories(cfg, split)
            except ConfigError:
                if split == "train":  # test files are optional: rmt-eval reads them later
                    raise
                continue
            for s in stories:
                texts.update((*s.facts, s.question, s.answer))
    elif cfg.source == "babilong":
        for name in cfg.tasks:
            for row in babilong_rows(cfg.path, length=cfg.babilong_length, task=name):
                texts.update((str(row["input"]), row["question"], str(row["target"])))
    return texts


def _first(*values):
    return next((v for v in values if v is not None), None)


def _item(example: dict, index: int) -> EvalItem:
    # one int64 tensor (8 bytes a token) instead of a Python list (about 36): at 1M tokens the
    # prompt is the only thing in evaluation whose size follows the input
    prompt = torch.tensor(example["input_ids"][: example["prompt_length"]], dtype=torch.long)
    return EvalItem(example["task"], index, prompt, example["target"], example["question"])


_BUILDERS: dict[tuple, HaystackBuilder] = {}  # (tokenizer, background, seed) -> builder


def shared_builder(tokenizer, background, seed: int) -> HaystackBuilder:
    """The haystack builder of a tokenizer and background, built (tokenized) once per process.

    ``seed`` picks the builtin background text; evaluation passes the run's ``trainer.seed``, so
    it hides facts in the same kind of text the model was trained on. At most two builders are
    kept: comparing checkpoints that share a tokenizer (the usual case) tokenizes once.
    """
    if background is None:
        bg_kwargs: dict = {"kind": "builtin"}
    elif isinstance(background, DictConfig):
        bg_kwargs = OmegaConf.to_container(background, resolve=True)
    else:
        bg_kwargs = dict(background)
    key = (tokenizer_key(tokenizer), json.dumps(bg_kwargs, sort_keys=True), seed)
    if key not in _BUILDERS:
        if len(_BUILDERS) >= 2:
            _BUILDERS.pop(next(iter(_BUILDERS)))
        try:
            background_text = make_background(**bg_kwargs, seed=seed)
        except BackgroundError as err:  # an empty or binary file, a folder without text
            raise ConfigError(f"task.background: {err}.") from err
        _BUILDERS[key] = HaystackBuilder(tokenizer, background_text)
    return _BUILDERS[key]
