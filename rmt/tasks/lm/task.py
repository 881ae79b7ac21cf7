"""Language modelling as a :class:`rmt.tasks.base.Task`: next-token loss on long documents.

A sample is a window of ``n * segment.size`` tokens of a document (``data``); every token is a
target, so the training loss is the model's next-token loss over the whole window, read segment
by segment through memory. Validation and ``rmt-eval`` report perplexity overall and by segment
index: with memory, later segments can use what earlier ones said, and their loss should fall
below that of the same model without memory (``memory.num_tokens=0``).

``trainer.aux_lm_loss`` adds the next-token loss of the text outside the labels; here every
token is labelled, so there is none, and the key has no effect on this task.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from rmt.errors import ConfigError
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.base import EvalCell, EvalItem, Task, Verdict, register_task
from rmt.tasks.lm.config import LmTaskConfig
from rmt.tasks.lm.data import (
    LmWindows,
    collate,
    perplexity_metrics,
    segment_losses,
    shared_streams,
)
from rmt.tasks.text import check_text_source

SUBTASK = "lm"


@register_task("lm")
class LmTask(Task):
    """Next-token prediction on documents from ``task.source`` (builtin | files | hf)."""

    config_class = LmTaskConfig
    metric = "perplexity"
    higher_is_better = False
    eval_kind = "perplexity"
    default_lengths = ("512", "1k", "2k", "4k")

    @property
    def streams(self):
        return shared_streams(self.tokenizer, self.cfg, self.seed)

    # ------------------------------------------------------------------ config, tokenizer
    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        task = cfg.task
        check_text_source(task.source, "task.source",
                          files_hint="a .txt file or a folder of them (one document per file)",
                          hf_hint="deepmind/pg19 or wikitext (online or cached)")  # fmt: skip
        if task.builtin.num_docs < 3 or task.builtin.sentences < 1 or task.builtin.topic_size < 1:
            raise ConfigError(
                f"task.builtin={OmegaConf.to_container(task.builtin)} needs num_docs >= 3 "
                "(train, validation, test) and sentences, topic_size >= 1."
            )
        for i, stage in enumerate(task.curriculum):
            if stage.until_accuracy is not None:
                raise ConfigError(
                    f"task.curriculum[{i}].until_accuracy is set, but task=lm is validated by "
                    "perplexity, not accuracy; remove it (stages end after their steps)."
                )
        if task.train_samples is not None and task.train_samples < cfg.trainer.batch_size:
            raise ConfigError(
                f"task.train_samples={task.train_samples} is smaller than trainer.batch_size="
                f"{cfg.trainer.batch_size}; give more windows or null (fresh windows every chunk)."
            )

    @classmethod
    def offline_tokenizer(cls, cfg: DictConfig):
        """The word-level tokenizer of the builtin text (other text maps unknown words to
        ``<unk>``: give files/hf sources a real tokenizer, e.g. ``backbone.tokenizer=gpt2``)."""
        return build_tokenizer()

    @classmethod
    def eval_config(cls, task_cfg: DictConfig, eval_cfg: DictConfig) -> DictConfig:
        """rmt-eval's ``background.*`` (when its kind is set) replaces the run's text source."""
        cfg = task_cfg.copy()
        if eval_cfg.background.kind is not None:
            cfg.source = OmegaConf.merge(cfg.source, eval_cfg.background)
        return cfg

    # ------------------------------------------------------------------ training data
    def dataset(self, split: str, *, stage: int, seed: int, num_samples: int | None) -> Dataset:
        stream = self.streams[split]
        if num_samples is None:  # a fixed training set of one window per document piece
            num_samples = len(stream.starts)
        return LmWindows(stream, split=split, num_samples=num_samples, seed=seed)

    @property
    def endless(self) -> bool:
        return self.cfg.train_samples is None

    def collate(self, items: Sequence[dict]) -> dict:
        return collate(items, pad_id=self.tokenizer.pad_token_id)

    def preflight(self) -> None:
        """Read and tokenize the source now, so a bad path or too few documents stop here."""
        _ = self.streams

    def loss(self, model, batch: dict, *, aux_weight: float) -> tuple[torch.Tensor, dict]:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])  # fmt: skip
        return out.loss, {"loss": out.loss.detach()}

    # ------------------------------------------------------------------ validation, evaluation
    def validation_rows(self, model, batch: dict, *, max_new_tokens: int = 0
                        ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Each sample's loss sum and predicted tokens by segment index (``[B, segments]``)."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])  # fmt: skip
        sums, counts = segment_losses(
            out.token_loss, batch["labels"], segment_size=self.segment_size,
            alignment=getattr(getattr(model, "config", None), "segment_alignment", "left"),
        )  # fmt: skip
        return {"loss_sum": sums, "tokens": counts}

    def validation_metrics(self, rows: dict[str, torch.Tensor]) -> dict[str, float]:
        return perplexity_metrics(rows["loss_sum"], rows["tokens"])

    def judge(self, output: str, *, target: str, question: str, task: str) -> Verdict:
        raise ValueError("task=lm is scored by perplexity (validation_rows), not by answers.")

    @property
    def subtasks(self) -> list[str]:
        return [SUBTASK]

    def check_subtasks(self, tasks: Sequence[str]) -> None:
        if list(tasks) != [SUBTASK]:
            raise ValueError(f"tasks={list(tasks)}: task=lm has one sub-task; leave tasks unset.")

    def eval_items(self, cell: EvalCell, *, samples: int, seed: int, split: str = "test",
                   stage: int = -1, tasks: Sequence[str] | None = None
                   ) -> Iterator[EvalItem]:  # fmt: skip
        """``samples`` windows of ``cell.tokens`` tokens of the ``split`` documents (one
        sub-task, no story sizes: ``stage`` and ``tasks`` change nothing)."""
        if cell.tokens < 2:
            raise ValueError(f"lengths: {cell.length} is too short for task=lm (>= 2 tokens).")
        windows = LmWindows(self.streams[split], split=split, num_samples=samples, seed=seed)
        for index in range(samples):
            ids = torch.tensor(windows[(index, cell.tokens)]["input_ids"], dtype=torch.long)
            yield EvalItem(SUBTASK, index, ids, target="", question="")
