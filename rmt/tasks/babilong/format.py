"""One formatting for training and generation: haystack, question, answer marker, answer, eos.

Training and evaluation share this function so the prompt a model is trained to continue is
exactly the prompt it is asked to continue at test time. The marker is plain text that any
tokenizer can encode; nothing is specific to one backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ANSWER_MARKER = "Answer:"
IGNORE_INDEX = -100  # HF convention for positions without a loss


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def question_ids(tokenizer, question: str, *, marker: bool = True) -> list[int]:
    """Token ids of the question and the answer marker (what follows the haystack).

    ``marker=False`` gives the question's words only, without its final "?" or the marker:
    their length locates the question's last word (the training-only auxiliary labels use it).
    """
    if not marker:
        return _encode(tokenizer, f" {question.strip().rstrip('?').rstrip()}")
    return _encode(tokenizer, f" {question.strip()} {ANSWER_MARKER}")


def answer_ids(tokenizer, answer: str) -> list[int]:
    """Token ids of the answer followed by eos (what the model learns to write)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; samples end with eos, so set one")
    return _encode(tokenizer, f" {answer.strip()}") + [int(tokenizer.eos_token_id)]


def format_example(
    tokenizer,
    haystack_ids: Sequence[int] | np.ndarray,
    question: str,
    answer: str,
    with_answer: bool = True,
) -> dict:
    """Haystack + question + marker (+ answer + eos), with labels on answer and eos only.

    ``labels`` are aligned with ``input_ids`` (the model shifts them). The generation prompt
    is ``input_ids[:prompt_length]``, which ends at the answer marker.
    """
    if isinstance(haystack_ids, np.ndarray):
        haystack = haystack_ids.astype(np.int64, copy=False).tolist()
    else:
        haystack = [int(t) for t in haystack_ids]
    prompt = haystack + question_ids(tokenizer, question)
    if not with_answer:
        return {
            "input_ids": prompt,
            "labels": [IGNORE_INDEX] * len(prompt),
            "prompt_length": len(prompt),
        }
    target = answer_ids(tokenizer, answer)
    return {
        "input_ids": prompt + target,
        "labels": [IGNORE_INDEX] * len(prompt) + target,
        "prompt_length": len(prompt),
    }
