"""BABILong scoring: the published rule (default) on real-format model outputs, and rmt's
strict corrections (first sentence, label sets, question labels ignored, nested labels,
commas).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from rmt.tasks.babilong.scoring import TASK_LABELS, compare_answers, exact_match

OUTPUTS = Path(__file__).parent / "fixtures" / "babilong" / "model_outputs.csv"


def test_label_sets_match_babilong():
    rooms = {"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"}
    for task in ("qa1", "qa2", "qa3", "qa4"):
        assert set(TASK_LABELS[task]) == rooms
    assert set(TASK_LABELS["qa5"]) == {"Bill", "Fred", "Jeff", "Mary", "apple", "football", "milk"}
    assert set(TASK_LABELS["qa6"]) == set(TASK_LABELS["qa9"]) == {"yes", "no"}
    assert set(TASK_LABELS["qa7"]) == {"none", "one", "two", "three"}
    assert set(TASK_LABELS["qa8"]) == {"apple", "football", "milk", "nothing"}
    assert set(TASK_LABELS["qa10"]) == {"yes", "no", "maybe"}
    assert len(TASK_LABELS) == 20 and len(TASK_LABELS["qa19"]) == 12


@pytest.mark.parametrize(
    ("target", "output", "question", "task", "expected"),
    [
        ("kitchen", "kitchen", "Where is Mary?", "qa1", True),
        ("kitchen", "Kitchen", "Where is Mary?", "qa1", True),  # case-insensitive
        ("kitchen", "The milk is in the kitchen.", "Where is the milk?", "qa2", True),
        ("kitchen", "kitchen or office", "Where is Mary?", "qa1", False),  # hedging fails
        ("kitchen", "office", "Where is Mary?", "qa1", False),
        ("kitchen", "", "Where is Mary?", "qa1", False),
        # only the first sentence counts
        ("kitchen", "kitchen. Before that she was in the office.", "Where is Mary?", "qa1", True),
        ("kitchen", "office. kitchen", "Where is Mary?", "qa1", False),
        # labels named in the question are ignored in the output
        (
            "hallway",
            "hallway, after the kitchen",
            "Where was the milk before the kitchen?",
            "qa3",
            True,
        ),
        ("Fred", "Bill gave it to Fred", "Who did Bill give the milk to?", "qa5", True),
        ("milk", "Bill gave the milk", "What did Bill give to Fred?", "qa5", True),
        # qa8 comma lists are sets; all items needed, nothing extra
        ("apple,milk", "apple , milk", "What is Mary carrying?", "qa8", True),
        ("apple,milk", "milk and apple", "What is Mary carrying?", "qa8", True),
        ("apple,milk", "apple", "What is Mary carrying?", "qa8", False),
        ("apple,milk", "apple, milk, football", "What is Mary carrying?", "qa8", False),
        ("nothing", "nothing", "What is Mary carrying?", "qa8", True),
        # substring matching as in BABILong ("kitchens" mentions "kitchen")
        ("kitchen", "in the kitchens", "Where is Mary?", "qa1", True),
        ("no", "no", "Is Mary in the office?", "qa6", True),
        ("yes", "no", "Is Mary in the office?", "qa6", False),
        ("maybe", "maybe", "Is Mary in the office?", "qa10", True),
        # qa7 nests labels: "none" contains "one"; whole words keep a correct "none" correct
        ("none", "none", "How many objects is Mary carrying?", "qa7", True),
        ("one", "none", "How many objects is Mary carrying?", "qa7", False),
        ("one", "one", "How many objects is Mary carrying?", "qa7", True),
        # qa19 labels contain commas; word-level decodes put spaces around them
        ("n,w", "n,w", "How do you go from the kitchen to the garden?", "qa19", True),
        ("n,w", "n , w", "How do you go from the kitchen to the garden?", "qa19", True),
        ("n,w", "w,n", "How do you go from the kitchen to the garden?", "qa19", False),
    ],
)
def test_strict_scoring(target, output, question, task, expected):
    assert compare_answers(target, output, question, task, scoring="strict") is expected


def _rows():
    with OUTPUTS.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['task']}:{r['output'][:20]!r}")
def test_model_outputs_scored_as_babilong_publishes_and_strictly(row):
    args = (row["target"], row["output"], row["question"], row["task"])
    assert compare_answers(*args) is (row["babilong"] == "True")  # the default
    assert compare_answers(*args, scoring="babilong") is (row["babilong"] == "True")
    assert compare_answers(*args, scoring="strict") is (row["strict"] == "True")


def test_the_two_scorings_differ_only_where_babilong_rejects_a_right_answer():
    rows = _rows()
    differ = [r for r in rows if r["babilong"] != r["strict"]]
    assert {(r["task"], r["target"]) for r in differ} == {("qa7", "none"), ("qa19", "w,s")}
    assert all(r["strict"] == "True" for r in differ)


def test_unknown_scoring_is_an_error():
    with pytest.raises(ValueError, match="strict"):
        compare_answers("kitchen", "kitchen", "Where is Mary?", "qa1", scoring="lenient")


def test_unknown_task_is_an_error():
    for scoring in ("babilong", "strict"):
        with pytest.raises(ValueError, match="qa21"):
            compare_answers("x", "x", "q", "qa21", scoring=scoring)


def test_exact_match():
    assert exact_match("kitchen", " Kitchen. ")
    assert exact_match("apple,milk", "apple , milk")
    assert not exact_match("apple,milk", "milk,apple")
    assert not exact_match("kitchen", "the kitchen")
