"""The task interface and its registry: how training and evaluation get data and scores.

A task is one package (``rmt/tasks/<name>/``) with a config schema and a :class:`Task` subclass
registered under a name; ``task.type`` in a config picks it. The trainer and ``rmt-eval`` call
only the methods below, so a new task (or a new data source of a task) is an edit inside its
package, never in the runner. The shape follows torchtune's recipes and Lightning-Hydra's
``_target_`` configs: the runner owns the loop, the task owns what a sample is and how an
answer is judged.

Datasets are indexed by ``(index, total_length)``: the curriculum decides per batch how many
segments a sample fills (``total_length = n * segment.size``), the task builds the sample.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from omegaconf import MISSING, DictConfig
from torch.utils.data import Dataset

from rmt.errors import ConfigError


def tokenizer_key(tokenizer) -> str:
    """Identity of a tokenizer's vocabulary and rules (two loads of one tokenizer are equal):
    the key of the per-process caches of tokenized text."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(text.encode()).hexdigest()


def stable_int(*parts: object) -> int:
    """A 64-bit integer from a SHA-256 of the parts: identical in every process and run.

    Every seed of data order and content derives from it, so data is a pure function of
    (seed, split, stage, index): resumed runs and DataLoader workers see the same samples.
    """
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class CurriculumStage:
    """One curriculum stage: each batch draws its segment count from ``segments``.

    The stage ends after ``steps`` optimizer steps, or earlier once validation accuracy reaches
    ``until_accuracy``; the next stage starts from the best model of this one, with a fresh
    optimizer and schedule peaking at the stage's ``lr`` (``optim.lr`` when unset). Tasks extend it
    with their own per-stage knobs (BABILong: story sizes).
    """

    segments: list[int] = MISSING  # segment counts drawn per batch, e.g. [1, 2]
    steps: int | None = None  # None = until trainer.max_steps (only for the last stage)
    until_accuracy: float | None = None  # advance early at this validation accuracy (0..1)
    max_ratio: float = 0.0  # fraction of batches forced to the largest count in `segments`
    lr: float | None = None  # this stage's peak learning rate (None = optim.lr)


@dataclass
class TaskConfig:
    """What every task config has; a task's schema extends it (``rmt/tasks/<name>/config.py``)."""

    type: str = MISSING  # registered task name, e.g. babilong
    name: str = "task"  # label of this task option (the YAML file), for humans
    train_samples: int | None = None  # None = fresh samples at every step (if the task can)
    valid_samples: int = 200
    debug: bool = False  # set by debug=fast: the task's smallest samples (a setup check in seconds)
    curriculum: list[CurriculumStage] = field(
        default_factory=lambda: [CurriculumStage(segments=[2])]
    )


@dataclass(frozen=True)
class EvalCell:
    """One cell of the evaluation grid: a sub-task at one input length.

    ``whole=False`` (BABILong's convention, labels such as ``4k``): ``tokens`` is the text the
    question is asked about. ``whole=True`` (the run's own lengths, labels such as ``x2``): a
    sample is ``tokens`` long with its question and answer, as a training or validation sample
    fills its segments, so ``x1`` rebuilds the run's validation samples exactly.
    """

    task: str  # e.g. qa1
    length: str  # label, e.g. "4k" or "x2"
    tokens: int  # the length in tokens
    whole: bool = False  # tokens counts the whole sample (question and answer included)


@dataclass(frozen=True)
class EvalItem:
    """One prompt to answer.

    Attributes:
        task: sub-task name (selects the label set used by the scoring rule).
        index: sample number within its cell, for the predictions file.
        prompt_ids: token ids of the prompt, ending where the answer starts.
        target: the reference answer.
        question: the question text (the scoring rule may use it).
    """

    task: str
    index: int
    prompt_ids: Sequence[int] | torch.Tensor
    target: str
    question: str


@dataclass(frozen=True)
class Verdict:
    """How one generated answer was judged."""

    output: str  # the decoded answer
    correct: bool  # the task's scoring rule
    exact: bool  # exact string match


class Task(ABC):
    """A trainable and evaluable task (see the module docstring for the contract).

    Args:
        cfg: the ``task`` node of the run config (the task's own schema).
        tokenizer: the run's tokenizer.
        segment_size: tokens per segment (tasks may place content relative to segments).
        seed: the run's ``trainer.seed`` (fixed content such as background text).
    """

    name: ClassVar[str]  # set by @register_task
    config_class: ClassVar[type[TaskConfig]]
    metric: ClassVar[str] = "accuracy"  # the validation metric best/ and the curriculum follow
    higher_is_better: ClassVar[bool] = True  # False: best/ keeps the lowest (perplexity)
    eval_kind: ClassVar[str] = (
        "answers"  # rmt-eval's scoring: answers (generate + judge) | perplexity
    )
    default_lengths: ClassVar[tuple[str, ...]] = ("0k", "1k", "4k")  # rmt-eval's lengths=null
    head: ClassVar[str] = "causal_lm"  # the model head it trains (`rmt.modeling.factory.HEADS`)

    def __init__(self, cfg: DictConfig, *, tokenizer, segment_size: int, seed: int) -> None:
        self.cfg, self.tokenizer, self.segment_size, self.seed = cfg, tokenizer, segment_size, seed

    # ------------------------------------------------------------------ config, tokenizer
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Rules of the task's keys (``cfg`` is the whole run config); raise ConfigError."""
        return None

    @classmethod
    @abstractmethod
    def offline_tokenizer(cls, cfg: DictConfig):
        """The tokenizer used when the backbone brings none (tiny random backbones), covering
        the data the ``task`` config ``cfg`` reads."""

    @classmethod
    def model_kwargs(cls, cfg: DictConfig) -> dict:
        """``RMTConfig`` fields the task's head needs (``cfg`` is the whole run config), e.g. a
        classifier's labels; the default head needs none."""
        return {}

    @classmethod
    def eval_config(cls, task_cfg: DictConfig, eval_cfg: DictConfig) -> DictConfig:
        """The run's task config with ``rmt-eval``'s data keys applied (default: unchanged)."""
        return task_cfg

    # ------------------------------------------------------------------ training data
    @abstractmethod
    def dataset(self, split: str, *, stage: int, seed: int, num_samples: int | None) -> Dataset:
        """Samples of ``split`` (train/validation) for curriculum ``stage``, indexed by
        ``(index, total_length)``; each item has ``input_ids``, ``labels``, ``prompt_length``."""

    @property
    def endless(self) -> bool:
        """True when fresh training samples can be made at every step (no fixed set)."""
        return False

    @abstractmethod
    def collate(self, items: Sequence[dict]) -> dict:
        """A training batch: ``input_ids``, ``attention_mask``, ``labels`` (right-padded),
        ``prompt_length`` and the lists ``task``, ``question``, ``target``."""

    def preflight(self) -> None:
        """Fail before training when the configured samples cannot be built (ConfigError)."""
        return None

    @abstractmethod
    def loss(self, model, batch: dict, *, aux_weight: float) -> tuple[torch.Tensor, dict]:
        """The training loss of a batch and its parts to log (detached), e.g. ``{"loss": ...}``."""

    # ------------------------------------------------------------------ validation
    @abstractmethod
    def validation_rows(self, model, batch: dict, *, max_new_tokens: int
                        ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Per-sample validation tensors of a batch (first dimension = samples), gathered over
        processes by the trainer and reduced by :meth:`validation_metrics`; optionally
        ``records``, one dict per sample, which the trainer writes to the run's predictions
        file (``rmt.run.predictions_file``)."""

    @abstractmethod
    def validation_metrics(self, rows: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of the concatenated rows; must contain ``self.metric`` and ``loss``."""

    # ------------------------------------------------------------------ scoring, evaluation
    @abstractmethod
    def judge(self, output: str, *, target: str, question: str, task: str) -> Verdict:
        """Score one generated answer."""

    @property
    def scoring(self) -> str:
        """Name of the rule :meth:`judge` applies, recorded in results files next to the
        accuracies it produced (a task with one rule keeps this default)."""
        return self.name

    def validation_length(self, stage: int) -> int:
        """Tokens of a validation sample of curriculum ``stage``: its longest segment count."""
        return max(self.cfg.curriculum[stage].segments) * self.segment_size

    def validation_samples(self, limit: int | None) -> tuple[int, list[str] | None]:
        """How validation draws its samples, for :meth:`eval_items`: ``(samples, tasks)``.

        ``limit`` is the trainer's ``eval_samples`` (None = the whole validation set).
        """
        n = self.cfg.valid_samples
        return (n if limit is None else min(n, limit)), self.subtasks

    def scaled_length(self, stage: int, times: int) -> tuple[str, int, bool]:
        """``(label, tokens, whole)`` of ``times`` x the validation length of ``stage``
        (rmt-eval's ``x<times>`` lengths)."""
        return f"x{times}", times * self.validation_length(stage), True

    def eval_cells(
        self, tasks: Sequence[str], lengths: Sequence[tuple[str, int, bool]]
    ) -> list[EvalCell]:
        """The grid: every sub-task at every ``(label, tokens, whole)`` length."""
        return [EvalCell(t, *length) for t in tasks for length in lengths]

    @abstractmethod
    def eval_items(self, cell: EvalCell, *, samples: int, seed: int, split: str = "test",
                   stage: int = -1, tasks: Sequence[str] | None = None
                   ) -> Iterator[EvalItem]:  # fmt: skip
        """Prompts of one cell from ``split``, built lazily (one at a time), with the story
        settings of curriculum ``stage``.

        ``tasks=None``: the first ``samples`` of ``cell.task`` alone. ``tasks``: the samples are
        drawn over these sub-tasks in the order validation draws them, and the ones of
        ``cell.task`` among the first ``samples`` are yielded, with their index in that order, so
        the run's validation settings give its validation samples.
        """

    @property
    def subtasks(self) -> list[str]:
        """The sub-tasks this config trains on (what rmt-eval scores by default)."""
        return list(self.cfg.get("tasks", []))

    def check_subtasks(self, tasks: Sequence[str]) -> None:
        """Raise ValueError naming the fix when ``tasks`` holds names this task cannot score."""
        return None


TASKS: dict[str, type[Task]] = {}


def register_task(name: str):
    """Class decorator: make a Task subclass available as ``task.type=<name>``."""

    def add(cls: type[Task]) -> type[Task]:
        if name in TASKS and TASKS[name] is not cls:
            raise ValueError(f"task {name!r} is registered twice ({TASKS[name]} and {cls})")
        cls.name = name
        TASKS[name] = cls
        return cls

    return add


def task_class(name: str) -> type[Task]:
    """The registered task called ``name``; ConfigError naming the registered ones otherwise."""
    if name not in TASKS:
        raise ConfigError(
            f"task.type={name!r} is not a registered task; use one of {', '.join(sorted(TASKS))} "
            "(a task package registers itself with @register_task)."
        )
    return TASKS[name]


def build_task(cfg: DictConfig, *, tokenizer, segment_size: int, seed: int) -> Task:
    """Instantiate the task a ``task`` config node names."""
    return task_class(cfg.type)(cfg, tokenizer=tokenizer, segment_size=segment_size, seed=seed)
