"""Generative tasks: the answer loss, and greedy answers judged by the task.

One path for both consumers: the trainer's validation and ``rmt-eval``'s grid both call
:meth:`AnswerTask.predict`, which is :func:`generate_answers` (prompt read segment by segment
through memory, answer generated greedily, cut at eos) and :func:`judge_answers` (decode, then
the task's scoring rule), so a validation accuracy and an evaluation accuracy of the same model
on the same prompts agree. A task that answers otherwise (a classifier) overrides ``predict``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from rmt.modeling.padding import left_pad
from rmt.tasks.base import Task, Verdict

MODES = ("rmt", "baseline")


def compute_loss(model, batch: dict, aux_weight: float) -> tuple[torch.Tensor, dict[str, Any]]:
    """Answer loss, plus ``aux_weight`` x next-token loss on the input text when > 0.

    The answer carries only a couple of labelled tokens per sample; the auxiliary LM loss
    gives the model a dense signal about the text it must remember.
    """
    if aux_weight == 0:
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
        return out.loss, {"loss": out.loss.detach()}
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], return_logits=True
    )
    # One log-softmax over all positions serves both losses; targets are shifted (position t
    # predicts t + 1) and padded with -100 at the end instead of copying logits[:, :-1].
    logp = F.log_softmax(out.logits.float().flatten(0, 1), dim=-1)
    answer = F.pad(batch["labels"][:, 1:], (0, 1), value=-100)
    text = F.pad(batch["input_ids"][:, 1:], (0, 1), value=-100).masked_fill(
        (F.pad(batch["attention_mask"][:, 1:], (0, 1)) == 0) | (answer != -100), -100
    )
    answer_loss = F.nll_loss(logp, answer.flatten(), ignore_index=-100)
    lm_loss = F.nll_loss(logp, text.flatten(), ignore_index=-100)
    return answer_loss + aux_weight * lm_loss, {
        "loss": answer_loss.detach(),
        "lm_loss": lm_loss.detach(),
    }


def answer_rows(task: Task, model, batch: dict, *, max_new_tokens: int
                ) -> dict[str, Any]:  # fmt: skip
    """Validation of a generative task: each sample's answer loss and whether its answer,
    generated through memory and judged by the task, is correct (tensors), and its
    ``records`` (the predictions file of the validation)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                labels=batch["labels"])  # fmt: skip
    prompts = batch_prompts(batch)
    verdicts = task.predict(model, prompts, targets=batch["target"], questions=batch["question"],
                            subtasks=batch["task"], max_new_tokens=max_new_tokens)  # fmt: skip
    correct = torch.tensor([v.correct for v in verdicts], dtype=torch.float32)
    return {"correct": correct.to(out.sample_loss.device), "loss": out.sample_loss.float(),
            "records": answer_records(batch, prompts, verdicts)}  # fmt: skip


def answer_records(batch: dict, prompts: list[torch.Tensor], verdicts) -> list[dict[str, Any]]:
    """Validation predictions of a batch, in the fields of rmt-eval's predictions.jsonl: what
    ``rmt-eval checkpoint=<run>`` must reproduce (the trainer writes them to the run folder)."""
    return [
        {"task": task, "question": question, "target": target, "prompt_tokens": len(prompt),
         "prompt_sha1": prompt_digest(prompt), "output": v.output, "correct": v.correct,
         "exact_match": v.exact}
        for task, question, target, prompt, v in zip(
            batch["task"], batch["question"], batch["target"], prompts, verdicts, strict=True
        )
    ]  # fmt: skip


def prompt_digest(prompt_ids) -> str:
    """SHA-1 of a prompt's token ids: validation and rmt-eval records name the exact prompt
    they answered without storing it (a long-input prompt is megabytes)."""
    ids = prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else list(prompt_ids)
    return hashlib.sha1(json.dumps([int(i) for i in ids]).encode()).hexdigest()


def answer_metrics(rows: dict[str, torch.Tensor]) -> dict[str, float]:
    """``accuracy`` (fraction judged correct) and mean answer ``loss`` of the rows."""
    return {"accuracy": rows["correct"].mean().item(), "loss": rows["loss"].nanmean().item()}


def batch_prompts(batch: dict) -> list[torch.Tensor]:
    """The generation prompts of a collated (right-padded) batch: ``input_ids[i, :prompt_length[i]]``."""
    return [
        ids[:n] for ids, n in zip(batch["input_ids"], batch["prompt_length"].tolist(), strict=True)
    ]


def special_ids(tokenizer) -> tuple[int, int | None]:
    """``(pad_id, eos_id)`` for generation; pad falls back to eos, then 0."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else 0
    return pad_id, eos_id


def baseline_window(model) -> int | None:
    """Prompt tokens the backbone alone can read: its position limit (None when unlimited)."""
    return model.config.max_backbone_positions()


@torch.no_grad()
def generate_answers(
    model,
    prompts: Sequence[torch.Tensor],
    *,
    mode: str = "rmt",
    max_new_tokens: int,
    pad_id: int,
    eos_id: int | None,
) -> list[list[int]]:
    """Greedy answers for a batch of prompts, as token lists cut at the first eos.

    ``mode="rmt"`` reads each prompt through memory (``model.generate``); ``"baseline"`` runs the
    backbone alone on the last ``limit - max_new_tokens`` prompt tokens.
    """
    device = next(model.parameters()).device
    gen_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad_id}
    if eos_id is not None:
        gen_kwargs["eos_token_id"] = eos_id
    if mode == "rmt":
        if len(prompts) == 1:  # long inputs come one at a time: a view, no padded copy
            ids, mask = prompts[0][None], torch.ones_like(prompts[0][None])
        else:
            ids, mask = left_pad(prompts, pad_id)
        new = model.generate(ids.to(device), mask.to(device), **gen_kwargs)
    elif mode == "baseline":
        ids, mask = left_pad(_baseline_prompts(model, prompts, max_new_tokens), pad_id)
        out = model.backbone.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs
        )
        new = out[:, ids.shape[1] :]
    else:
        raise ValueError(f"mode={mode!r}: unknown; use one of {MODES}")
    answers = []
    for row in new.tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id)]
        answers.append(row)
    return answers


def _baseline_prompts(model, prompts: Sequence[torch.Tensor], max_new_tokens: int):
    limit = baseline_window(model)
    if limit is None:
        return prompts
    keep = limit - max_new_tokens
    if keep < 1:
        raise ValueError(
            f"baseline: max_new_tokens={max_new_tokens} leaves no room for the prompt in the "
            f"backbone's {limit} positions; lower max_new_tokens."
        )
    return [p[-keep:] for p in prompts]


def judge_answers(
    task: Task,
    tokenizer,
    answers: Sequence[Sequence[int]],
    *,
    targets: Sequence[str],
    questions: Sequence[str],
    subtasks: Sequence[str],
) -> list[Verdict]:
    """Decode each answer and judge it with the task's scoring rule."""
    return [
        task.judge(
            tokenizer.decode(answer, skip_special_tokens=True).strip(),
            target=target,
            question=question,
            task=subtask,
        )  # fmt: skip
        for answer, target, question, subtask in zip(
            answers, targets, questions, subtasks, strict=True
        )
    ]


class AnswerTask(Task):
    """A task whose samples end in a written answer: answer loss (plus the auxiliary LM loss),
    validation by generating and judging the answers, accuracy metrics. Subclasses give data and
    ``judge``; BABILong and retrieval share these three steps instead of repeating them."""

    def loss(self, model, batch: dict, *, aux_weight: float) -> tuple[torch.Tensor, dict]:
        return compute_loss(model, batch, aux_weight)

    def validation_rows(self, model, batch: dict, *, max_new_tokens: int
                        ) -> dict[str, torch.Tensor]:  # fmt: skip
        return answer_rows(self, model, batch, max_new_tokens=max_new_tokens)

    def validation_metrics(self, rows: dict[str, torch.Tensor]) -> dict[str, float]:
        return answer_metrics(rows)

    def predict(self, model, prompts: Sequence[torch.Tensor], *, targets: Sequence[str],
                questions: Sequence[str], subtasks: Sequence[str], max_new_tokens: int,
                mode: str = "rmt") -> list[Verdict]:  # fmt: skip
        """The model's answers to ``prompts``, judged: what validation and rmt-eval both score
        (``mode``: see :func:`generate_answers`)."""
        pad_id, eos_id = special_ids(self.tokenizer)
        answers = generate_answers(model, prompts, mode=mode, max_new_tokens=max_new_tokens,
                                   pad_id=pad_id, eos_id=eos_id)  # fmt: skip
        return judge_answers(self, self.tokenizer, answers, targets=targets, questions=questions,
                             subtasks=subtasks)  # fmt: skip
