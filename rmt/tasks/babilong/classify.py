"""BABILong as classification (``task.type=babilong_cls``): the answer is a class, not text.

The RMT scaling paper trains a BERT encoder with memory on bAbI facts hidden in noise and reads
the answer as a class. This task is :class:`~rmt.tasks.babilong.task.BabilongTask` with another
head: the same stories, haystacks, lengths, curriculum, preflight and ``rmt-eval`` grid, but a
sample ends at the answer marker and its label is the answer's index in the label set, the union
of the chosen sub-tasks' answers (qa1: six locations; qa6: yes/no; qa7: counts; ...). The model
is ``RMTForSequenceClassification`` (``seq_cls``), whose config stores the labels
(``id2label``), so a checkpoint names its own classes.

Validation and ``rmt-eval`` both score through :meth:`BabilongClsTask.predict`'s logits ->
class name -> BABILong's judge, so ``rmt-eval checkpoint=<run>`` reproduces validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.nn.utils.rnn import pad_sequence

from rmt.errors import ConfigError
from rmt.tasks.babilong.config import BabilongTaskConfig
from rmt.tasks.babilong.dataset import collate
from rmt.tasks.babilong.scoring import TASK_LABELS
from rmt.tasks.babilong.task import BabilongTask
from rmt.tasks.base import Verdict, register_task
from rmt.tasks.generative import answer_metrics, answer_records, batch_prompts

CLASSIFIER_INPUTS = ("first_token", "memory")


@dataclass
class BabilongClsTaskConfig(BabilongTaskConfig):
    """BABILong read by a classifier; ``trainer.aux_lm_loss`` does not apply (no LM head)."""

    type: str = "babilong_cls"
    name: str = "babilong_cls"
    # memory: the mean of the memory after the last segment; first_token: the last segment's
    # first token (the one choice with memory.num_tokens=0)
    classifier_input: str = "memory"


def labels_of(task_cfg: DictConfig) -> list[str]:
    """The class names of a run: the union of its sub-tasks' answers, sorted (stable ids)."""
    return sorted({label for name in task_cfg.tasks for label in TASK_LABELS.get(name, ())})


@register_task("babilong_cls")
class BabilongClsTask(BabilongTask):
    """BABILong qa1..qa20 with the answer as a class (see the module docstring)."""

    config_class = BabilongClsTaskConfig
    head = "seq_cls"
    with_answer = False

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        super().check_config(cfg)
        task = cfg.task
        if task.classifier_input not in CLASSIFIER_INPUTS:
            raise ConfigError(
                f"task.classifier_input={task.classifier_input!r} is not valid; choose one of "
                f"{', '.join(CLASSIFIER_INPUTS)}."
            )
        if task.classifier_input == "memory" and cfg.memory.num_tokens == 0:
            raise ConfigError(
                "task.classifier_input=memory with memory.num_tokens=0 leaves nothing to classify; "
                "use task.classifier_input=first_token (or memory.num_tokens >= 1)."
            )

    @classmethod
    def model_kwargs(cls, cfg: DictConfig) -> dict:
        labels = labels_of(cfg.task)
        return {"id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)},
                "classifier_input": cfg.task.classifier_input}  # fmt: skip

    def preflight(self) -> None:
        """BABILong's checks, and every answer of the data is one of the classes."""
        super().preflight()
        labels = set(labels_of(self.cfg))
        for name, answers in self.answer_sets().items():
            outside = sorted(answers - labels)
            if outside:
                raise ConfigError(
                    f"{name} answers {outside[:5]} are not classes of task.tasks="
                    f"{list(self.cfg.tasks)} ({sorted(labels)}); babilong_cls classifies "
                    "single-label answers: drop those tasks, or use the generative task=babilong_qa<N>."
                )

    # ------------------------------------------------------------------ training, validation
    def collate(self, items: Sequence[dict]) -> dict:
        """Right-padded prompts with the class id of each answer as ``labels`` ([B])."""
        batch = collate(items, pad_id=self.tokenizer.pad_token_id)
        label2id = {name: i for i, name in enumerate(labels_of(self.cfg))}
        batch["labels"] = torch.tensor([label2id.get(t, -100) for t in batch["target"]])
        return batch

    def loss(self, model, batch: dict, *, aux_weight: float) -> tuple[torch.Tensor, dict]:
        """Cross-entropy of the class (``aux_weight`` is unused: there is no LM head)."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])  # fmt: skip
        return out.loss, {"loss": out.loss.detach()}

    def validation_rows(self, model, batch: dict, *, max_new_tokens: int
                        ) -> dict[str, torch.Tensor]:  # fmt: skip
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.float()  # fmt: skip
        loss = F.cross_entropy(logits, batch["labels"].to(logits.device), reduction="none")
        verdicts = self._verdicts(model, logits, targets=batch["target"],
                                  questions=batch["question"], subtasks=batch["task"])  # fmt: skip
        correct = torch.tensor([v.correct for v in verdicts], dtype=torch.float32)
        return {"correct": correct.to(loss.device), "loss": loss,
                "records": answer_records(batch, batch_prompts(batch), verdicts)}  # fmt: skip

    def validation_metrics(self, rows: dict[str, torch.Tensor]) -> dict[str, float]:
        return answer_metrics(rows)

    # ------------------------------------------------------------------ scoring, evaluation
    @torch.no_grad()
    def predict(self, model, prompts: Sequence[torch.Tensor], *, targets: Sequence[str],
                questions: Sequence[str], subtasks: Sequence[str], max_new_tokens: int,
                mode: str = "rmt") -> list[Verdict]:  # fmt: skip
        """The predicted class of each prompt (read through memory), judged by BABILong's rule.
        ``max_new_tokens`` is unused (nothing is generated)."""
        if mode != "rmt":
            raise ValueError(
                f"mode={mode!r}: babilong_cls has no backbone-alone baseline; compare with a run "
                "trained with memory.num_tokens=0 instead (checkpoints=[<run>,<no-memory run>])."
            )
        device = next(model.parameters()).device
        # right-padded as validation batches are (the model reads any padding alike)
        ids = pad_sequence(
            list(prompts), batch_first=True, padding_value=self.tokenizer.pad_token_id
        )
        mask = (
            torch.arange(ids.shape[1]) < torch.tensor([len(p) for p in prompts])[:, None]
        ).long()
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        return self._verdicts(model, logits, targets=targets, questions=questions,
                              subtasks=subtasks)  # fmt: skip

    def _verdicts(self, model, logits: torch.Tensor, *, targets: Sequence[str],
                  questions: Sequence[str], subtasks: Sequence[str]) -> list[Verdict]:  # fmt: skip
        """The class names the model's logits pick (its own ``id2label``), judged."""
        names = [model.config.id2label[int(i)] for i in logits.argmax(-1).tolist()]
        return [self.judge(name, target=t, question=q, task=s)
                for name, t, q, s in zip(names, targets, questions, subtasks, strict=True)]  # fmt: skip
