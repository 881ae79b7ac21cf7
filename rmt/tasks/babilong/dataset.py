"""Torch datasets of BABILong samples and their collate function.

Samples are built on the fly: index -> bAbI story (generated or given) -> haystack -> format.
Everything is a pure function of (seed, split, task, index, length), so DataLoader workers
and resumed runs see identical data.

Two ways to say how long a sample is:
* ``length``: haystack tokens (the BABILong convention: "4k" is the input with the facts);
* ``total_length``: the whole formatted sequence with question, marker, answer and eos. The
  trainer uses ``n_segments * segment_size`` so a batch fills its segments exactly; the
  curriculum sampler (``rmt.train.curriculum``) passes it per batch as ``dataset[(index, total_length)]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rmt.tasks.babilong.babi import BabiSample
from rmt.tasks.babilong.format import IGNORE_INDEX, answer_ids, format_example, question_ids
from rmt.tasks.babilong.generators import generate_sample, normalize_split
from rmt.tasks.babilong.haystack import HaystackBuilder, parse_length
from rmt.tasks.base import stable_int

__all__ = [
    "BabilongDataset",
    "BabilongTextDataset",
    "collate",
    "parse_length",
]


class BabilongDataset(Dataset):
    """BABILong samples of one or several tasks.

    Args:
        task_or_tasks: ``"qa1"`` or a list; index ``i`` uses task ``i % n_tasks``.
        split: ``train``/``validation``/``test``; generated splits never share a story.
        num_samples: dataset size (default: ``len(samples)`` when samples are given).
        tokenizer: HF tokenizer; builder: :class:`HaystackBuilder` over the background.
        length: haystack tokens (int or ``"4k"``); total_length: whole-sequence tokens.
            Without either, index with ``(index, total_length)``.
        seed: seeds stories and haystacks.
        position: (start, end) fractions of the haystack the facts must lie in.
        facts_end_from_end: facts end at least this many tokens before the end of the whole
            sequence (``segment_size`` puts every fact in an earlier segment than the question).
        min_facts, max_facts: bounds on story size for generated samples (curriculum).
        samples: fixed ``BabiSample`` list to use instead of the generator.
        aux_labels: extra training labels, see :func:`add_aux_labels` (never for validation).
        with_answer: False ends a sample at the answer marker (classification reads the answer
            as a class, not as tokens): ``total_length`` then counts the prompt alone.
    """

    def __init__(
        self,
        task_or_tasks: str | Sequence[str] | None,
        *,
        split: str,
        num_samples: int | None,
        tokenizer,
        builder: HaystackBuilder,
        length: int | str | None = None,
        total_length: int | None = None,
        seed: int = 0,
        position: tuple[float, float] = (0.0, 1.0),
        facts_end_from_end: int | None = None,
        min_facts: int | None = None,
        max_facts: int | None = None,
        samples: Sequence[BabiSample] | None = None,
        aux_labels: Sequence[str] = (),
        with_answer: bool = True,
    ):
        if isinstance(task_or_tasks, str):
            task_or_tasks = [task_or_tasks]
        self.tasks = list(task_or_tasks or [])
        self.samples = list(samples) if samples is not None else None
        if self.samples is None and not self.tasks:
            raise ValueError("give at least one task (e.g. 'qa1') or samples=")
        if num_samples is None:
            if self.samples is None:
                raise ValueError("num_samples is required for generated samples")
            num_samples = len(self.samples)
        if self.samples is not None and num_samples > len(self.samples):
            raise ValueError(f"num_samples={num_samples} > {len(self.samples)} given samples")
        self.split = normalize_split(split)
        self.num_samples = int(num_samples)
        self.tokenizer = tokenizer
        self.builder = builder
        self.length = None if length is None else parse_length(length)
        self.total_length = total_length
        self.seed = seed
        self.position = tuple(position)
        self.facts_end_from_end = facts_end_from_end
        self.min_facts, self.max_facts = min_facts, max_facts
        self.aux_labels = tuple(aux_labels)
        self.with_answer = with_answer

    def __len__(self) -> int:
        return self.num_samples

    def task_at(self, index: int) -> str:
        """The sub-task of item ``index`` (without building the sample)."""
        if self.samples is not None:
            return self.samples[index].task
        return self.tasks[index % len(self.tasks)]

    def sample(self, index: int) -> BabiSample:
        """The bAbI sample behind item ``index``."""
        if self.samples is not None:
            return self.samples[index]
        task = self.tasks[index % len(self.tasks)]
        return generate_sample(
            task,
            index // len(self.tasks),
            seed=self.seed,
            split=self.split,
            min_facts=self.min_facts,
            max_facts=self.max_facts,
        )

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, total_length = key if isinstance(key, tuple) else (key, self.total_length)
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        sample = self.sample(index)
        tail = len(question_ids(self.tokenizer, sample.question))
        if self.with_answer:
            tail += len(answer_ids(self.tokenizer, sample.answer))
        if total_length is not None:
            length = max(0, int(total_length) - tail)
        elif self.length is not None:
            length = self.length
        else:
            raise ValueError(
                "no sample length: set length (haystack tokens) or total_length (whole "
                "sequence), or index with (index, total_length) as the curriculum sampler does"
            )
        facts_end = None
        if self.facts_end_from_end is not None:
            facts_end = length + tail - self.facts_end_from_end
        haystack = self.builder.build(
            sample,
            length,
            seed=(stable_int("haystack", self.seed, self.split, sample.task, index) >> 1),
            position=self.position,
            facts_end=facts_end,
        )
        item = format_example(self.tokenizer, haystack.input_ids, sample.question, sample.answer,
                              with_answer=self.with_answer)  # fmt: skip
        if self.aux_labels:
            words = question_ids(self.tokenizer, sample.question, marker=False)
            add_aux_labels(
                item, haystack.fact_spans, len(haystack) + len(words) - 1, self.aux_labels
            )
        item.update(task=sample.task, question=sample.question, target=sample.answer)
        return item


def add_aux_labels(item: dict, fact_spans, question_subject: int, kinds: Sequence[str]) -> None:
    """Label extra positions of a formatted training item in place (labels are pre-shift).

    * ``fact_subject``: the model reading a fact's final token (its ".") must name the fact's
      first word, its subject: it learns to keep *who* next to *what* in its states.
    * ``question_subject``: the model reading the question's last word (index
      ``question_subject``; qa1: the person) must already name the answer's first token: the
      person->location lookup itself.

    Only positions without a label are set, so the answer labels are never changed.
    """
    ids, labels = item["input_ids"], item["labels"]
    targets: dict[int, int] = {}
    if "fact_subject" in kinds:
        for start, end in fact_spans:
            if end - start >= 2:
                targets[end] = ids[start]  # logits at end-1 (the ".") predict labels[end]
    if "question_subject" in kinds:
        answer = (
            labels[item["prompt_length"]] if item["prompt_length"] < len(labels) else IGNORE_INDEX
        )
        if answer != IGNORE_INDEX:
            targets[question_subject + 1] = answer
    for pos, target in targets.items():
        if pos < len(labels) and labels[pos] == IGNORE_INDEX:
            labels[pos] = int(target)


class BabilongTextDataset(Dataset):
    """Published BABILong rows (``input``, ``question``, ``target``) formatted like ours.

    The input text is tokenized once per row and cached, so repeated epochs and several
    evaluation passes do not pay for it again. ``with_answer=False``: prompts only (as
    :class:`BabilongDataset`).
    """

    def __init__(self, rows, tokenizer, task: str, with_answer: bool = True):
        for column in ("input", "question", "target"):
            if column not in _columns(rows):
                raise ValueError(
                    f"BABILong rows need columns input, question, target; got {_columns(rows)}"
                )
        self.rows = rows
        self.tokenizer = tokenizer
        self.task = task
        self.with_answer = with_answer
        self._ids: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        ids = self._ids.get(index)
        if ids is None:
            text = str(row["input"]).strip()
            ids = np.asarray(
                self.tokenizer(f" {text}" if text else "", add_special_tokens=False)["input_ids"],
                dtype=np.int64,
            )
            self._ids[index] = ids
        item = format_example(self.tokenizer, ids, row["question"], str(row["target"]),
                              with_answer=self.with_answer)  # fmt: skip
        item.update(task=self.task, question=row["question"], target=str(row["target"]))
        return item


def _columns(rows) -> list[str]:
    if hasattr(rows, "column_names"):
        return list(rows.column_names)
    return list(rows[0].keys()) if len(rows) else []


def collate(items: Sequence[dict], pad_id: int) -> dict:
    """Right-padded training tensors; ``prompt_length`` says where each sample's answer starts
    (the generation prompt is ``input_ids[i, :prompt_length[i]]``)."""
    if not items:
        raise ValueError("collate got an empty batch")
    width = max(len(it["input_ids"]) for it in items)
    n = len(items)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for row, it in enumerate(items):
        k = len(it["input_ids"])
        input_ids[row, :k] = torch.as_tensor(it["input_ids"], dtype=torch.long)
        labels[row, :k] = torch.as_tensor(it["labels"], dtype=torch.long)
        attention[row, :k] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "prompt_length": torch.tensor([it["prompt_length"] for it in items], dtype=torch.long),
        "task": [it["task"] for it in items],
        "question": [it["question"] for it in items],
        "target": [it["target"] for it in items],
    }
