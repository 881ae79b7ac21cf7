"""Offline task generator: disjoint splits, label sets, curriculum bounds, clear errors.

Answers, supporting facts and the match with real bAbI are in tests/test_babi_generator.py.
"""

from __future__ import annotations

import pytest
from babi_solver import solve

from rmt.tasks.babilong.generators import (
    TASK_MAX_FACTS,
    TASK_MIN_FACTS,
    TASKS,
    fact_range,
    generate_sample,
    split_of_story,
)
from rmt.tasks.babilong.scoring import TASK_LABELS, compare_answers, target_labels

N = 150  # samples per task in the loops below


def samples(task, n=N, **kw):
    return [generate_sample(task, i, **kw) for i in range(n)]


def test_splits_never_share_a_story():
    # one-fact qa1 stories: only 120 exist, so unguarded splits would collide quickly
    by_split = {
        split: {s.facts for s in samples("qa1", 120, split=split, min_facts=1, max_facts=1)}
        for split in ("train", "validation", "test")
    }
    assert by_split["train"] and by_split["validation"] and by_split["test"]
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]
    for split, stories in by_split.items():
        assert all(split_of_story(f) == split for f in stories)


@pytest.mark.parametrize("task", TASKS)
def test_answer_sets_equal_task_labels(task):
    labels = {lab.lower() for lab in TASK_LABELS[task]}
    seen = set()
    for s in samples(task, 400, max_facts=6):
        parts = target_labels(s.answer, task)
        assert parts <= labels, s
        seen |= parts
        # the answer itself scores as correct and never appears in the question
        assert compare_answers(s.answer, s.answer, s.question, task, scoring="strict"), s
        assert not compare_answers(s.answer, "", s.question, task, scoring="strict")
        assert all(0 <= i < len(s.facts) for i in s.supporting) and s.supporting
    rare = {"three"} if task == "qa7" else set()  # 0.2% of bAbI's qa7 answers
    assert seen | rare == labels


def test_qa7_can_count_three():
    answers = {generate_sample("qa7", i, min_facts=12, max_facts=12).answer for i in range(300)}
    assert answers == {"none", "one", "two", "three"}


@pytest.mark.parametrize("task", TASKS)
def test_fact_bounds_give_that_many_facts_with_right_answers(task):
    lo, hi = TASK_MIN_FACTS[task], TASK_MAX_FACTS[task]
    small = (max(lo, 2), min(hi, 4))
    for s in samples(task, 40, min_facts=small[0], max_facts=small[1]):
        assert small[0] <= len(s.facts) <= small[1]
        assert solve(task, s.facts, s.question) == s.answer, s
        assert solve(task, [s.facts[i] for i in s.supporting], s.question) == s.answer, s
    exact = min(hi, 5)
    assert all(len(s.facts) == exact for s in samples(task, 40, min_facts=exact, max_facts=exact))


def test_without_bounds_stories_are_as_long_as_babi():
    # preflight sizes segments by the longest story: bAbI's longest qa3 story has 228 facts
    assert fact_range("qa3", None, None) == (3, 240)
    assert fact_range("qa1", None, None) == (1, 10)
    s = generate_sample("qa3", 0, min_facts=240, max_facts=240)
    assert len(s.facts) == 240 and solve("qa3", s.facts, s.question) == s.answer


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="qa21"):
        generate_sample("qa21", 0)
    with pytest.raises(ValueError, match="split"):
        generate_sample("qa1", 0, split="dev-test")
    with pytest.raises(ValueError, match="at least 3"):
        generate_sample("qa3", 0, max_facts=2)
    with pytest.raises(ValueError, match="at most 5"):
        generate_sample("qa4", 0, min_facts=6)
