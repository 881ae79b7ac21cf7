"""BABILong answer scoring, as published (the default) or with two corrections ("strict").

BABILong does not compare strings: it lower-cases the model output, keeps its first sentence,
collects the task's answer labels mentioned in it (dropping labels the question itself names,
which are never the answer) and accepts the output only when those labels are exactly the
target's. A model that hedges between two rooms is therefore wrong, and "The milk is in the
kitchen" is right for target "kitchen" on qa2 because "milk" is not a qa2 label.

``scoring="babilong"`` (default) reproduces BABILong's ``compare_answers`` exactly, so numbers
compare with the leaderboard, including two effects of its plain substring search:

* qa7's labels nest: "none" contains "one", so the output "none" mentions two labels and is
  always wrong, even for target "none".
* qa19's labels contain commas: the output "w, s" (or "w , s", as a word-level tokenizer
  decodes it) mentions no label, so it is wrong for target "w,s".

``scoring="strict"`` keeps rmt's corrections, so a *correct* answer is never rejected: labels
are matched as whole words when a task's labels nest, and spaces around commas are removed
before matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rmt.errors import ConfigError

# Answer labels per task, as in BABILong's metrics (qa5 keeps its capitalised names;
# matching is case-insensitive).
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "qa1": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa2": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa3": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa4": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa5": ("Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"),
    "qa6": ("no", "yes"),
    "qa7": ("none", "one", "three", "two"),
    "qa8": ("apple", "football", "milk", "nothing"),
    "qa9": ("no", "yes"),
    "qa10": ("maybe", "no", "yes"),
    "qa11": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa12": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa13": ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office"),
    "qa14": ("bedroom", "cinema", "kitchen", "office", "park", "school"),
    "qa15": ("cat", "mouse", "sheep", "wolf"),
    "qa16": ("gray", "green", "white", "yellow"),
    "qa17": ("no", "yes"),
    "qa18": ("no", "yes"),
    "qa19": (
        "e,e",
        "e,n",
        "e,s",
        "n,e",
        "n,n",
        "n,w",
        "s,e",
        "s,s",
        "s,w",
        "w,n",
        "w,s",
        "w,w",
    ),  # fmt: skip
    "qa20": ("bedroom", "bored", "garden", "hungry", "kitchen", "thirsty", "tired"),
}


def task_labels(task: str) -> tuple[str, ...]:
    """Labels of ``task`` (``"qa1"`` ... ``"qa20"``); a clear error for unknown names."""
    try:
        return TASK_LABELS[task]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; expected one of {', '.join(TASK_LABELS)}"
        ) from None


def first_sentence(output: str) -> str:
    """Lower-cased first sentence of a model output, commas closed up (strict scoring)."""
    text = output.lower().split(".")[0]
    # models sometimes start writing a new example after the answer
    for stop in ("<context>", "<example>"):
        text = text.split(stop)[0]
    return re.sub(r"\s*,\s*", ",", text)


def _mentions(labels: Iterable[str], text: str, whole_words: bool) -> set[str]:
    if whole_words:
        return {lab for lab in labels if re.search(rf"(?<!\w){re.escape(lab)}(?!\w)", text)}
    return {lab for lab in labels if lab in text}


def labels_in_output(output: str, question: str, task: str) -> set[str]:
    """The task labels an output mentions, minus those the question names (strict)."""
    labels = {label.lower() for label in task_labels(task)}
    whole = any(a != b and a in b for a in labels for b in labels)
    found = _mentions(labels, first_sentence(output), whole)
    return found - _mentions(labels, question.lower(), whole)


def target_labels(target: str, task: str) -> set[str]:
    """Label set of a target: one label, or a comma list (qa8 ``apple,milk``)."""
    target = re.sub(r"\s+", "", target.lower())
    labels = {label.lower() for label in task_labels(task)}
    if target in labels:  # qa19 labels contain commas themselves
        return {target}
    return {part for part in target.split(",") if part}


SCORINGS = ("babilong", "strict")


def check_scoring(value: str, *, key: str) -> None:
    """Raise ConfigError naming the choices when ``value`` (the config ``key``) is no rule."""
    if value not in SCORINGS:
        raise ConfigError(
            f"{key}={value!r} is not a scoring rule; use {key}=babilong (BABILong's published "
            f"rule, the default) or {key}=strict (rmt's corrections for qa7 'none', qa19 'w, s')."
        )


def _babilong_first_sentence(output: str) -> str:
    text = output.lower().split(".")[0]
    for stop in ("<context>", "<example>", "Question"):  # "Question" never matches lower case
        text = text.split(stop)[0]
    return text


def babilong_compare(target: str, output: str, question: str, task: str) -> bool:
    """BABILong's published rule, substring matching included (see the module docstring)."""
    labels = {label.lower() for label in task_labels(task)}
    text, target = _babilong_first_sentence(output), target.lower()
    named = {label for label in labels if label in question.lower()}
    found = {label for label in labels if label in text} - named
    if "," in target and len(target) > 3:  # a qa8 list; qa19's "n,w" is one label
        parts = target.split(",")
        return all(part in found for part in parts) and len(found) == len(parts)
    return target in found and len(found) == 1


def compare_answers(
    target: str, output: str, question: str, task: str, scoring: str = "babilong"
) -> bool:
    """Whether ``output`` answers ``question`` (``target``): the labels it mentions are the
    target's, by BABILong's published rule (``"babilong"``) or rmt's corrected one
    (``"strict"``)."""
    if scoring == "babilong":
        return babilong_compare(target, output, question, task)
    if scoring == "strict":
        return labels_in_output(output, question, task) == target_labels(target, task)
    raise ValueError(f"unknown scoring {scoring!r}; use one of {', '.join(SCORINGS)}")


def _normalise(text: str) -> str:
    text = re.sub(r"\s+", " ", text.strip().lower())
    text = re.sub(r"\s*,\s*", ",", text)
    return text.rstrip(".").strip()


def exact_match(target: str, output: str) -> bool:
    """Whole-output string equality after case, whitespace and final-period normalisation."""
    return _normalise(target) == _normalise(output)
