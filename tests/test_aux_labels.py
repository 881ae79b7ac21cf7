"""Training-only auxiliary labels (task.aux_labels) and per-stage fact placement.

The labels must land exactly where their docstring says, never touch the answer, never reach
validation, and the schema must refuse names it does not know.
"""

from __future__ import annotations

import pytest
from helpers import compose_config

from rmt.config.schema import ConfigError, validate
from rmt.tasks.babilong.background import make_background
from rmt.tasks.babilong.dataset import BabilongDataset
from rmt.tasks.babilong.format import IGNORE_INDEX
from rmt.tasks.babilong.haystack import HaystackBuilder
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.base import build_task


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _dataset(tok, aux, n=16):
    builder = HaystackBuilder(tok, make_background(kind="builtin"))
    return BabilongDataset(
        "qa1", split="train", num_samples=n, tokenizer=tok, builder=builder, total_length=64,
        min_facts=2, max_facts=3, aux_labels=aux,
    )  # fmt: skip


def _labelled(tok, item):
    """(token read at the predicting position, label) for every labelled position."""
    toks = tok.convert_ids_to_tokens(item["input_ids"])
    return [
        (i - 1, toks[i - 1], tok.convert_ids_to_tokens([label])[0])
        for i, label in enumerate(item["labels"])
        if label != IGNORE_INDEX
    ]


def test_fact_and_question_subject_labels_sit_where_documented(tok):
    plain, aux = _dataset(tok, ()), _dataset(tok, ("question_subject", "fact_subject"))
    for index in range(len(plain)):
        a, b = plain[index], aux[index]
        assert a["input_ids"] == b["input_ids"]
        sample = plain.sample(index)
        answer = [(p, lab) for p, _, lab in _labelled(tok, a)]
        got = _labelled(tok, b)
        # the answer labels are unchanged
        assert set(answer) <= {(p, lab) for p, _, lab in got}
        extra = [(p, read, lab) for p, read, lab in got if (p, lab) not in set(answer)]
        fact_labels = [(read, lab) for _, read, lab in extra if read == "."]
        assert [lab for _, lab in fact_labels] == [f.split()[0] for f in sample.facts]
        person = sample.question.rstrip("?").split()[-1]
        question = [(read, lab) for _, read, lab in extra if read != "."]
        assert question == [(person, sample.answer)]


def test_validation_never_gets_aux_labels():
    cfg = compose_config(["debug=fast", "task.aux_labels=[question_subject,fact_subject]"])
    task = build_task(cfg.task, tokenizer=build_tokenizer(), segment_size=32, seed=0)
    valid = task.dataset("validation", stage=-1, seed=0, num_samples=8)
    train = task.dataset("train", stage=-1, seed=0, num_samples=8)
    assert valid.aux_labels == ()
    assert set(train.aux_labels) == {"question_subject", "fact_subject"}
    for index in range(len(valid)):
        item = valid[(index, 64)]
        answer = item["input_ids"][item["prompt_length"] :]
        labelled = [t for t in item["labels"] if t != IGNORE_INDEX]
        assert labelled == answer  # only the answer (and eos) carries a label


def test_unknown_aux_label_is_refused_naming_the_choices():
    cfg = compose_config(["task.aux_labels=[subject]"])
    with pytest.raises(ConfigError, match=r"task.aux_labels .*'subject'.*question_subject"):
        validate(cfg)


def test_stage_fact_placement_overrides_the_task():
    # in-context stages: 1 segment with the facts beside the question, under a task that keeps
    # facts out of the question's segment
    stages = "[{segments:[1],facts_before_last_segment:false,steps:5},{segments:[2]}]"
    cfg = compose_config(["task.facts_before_last_segment=true", f"task.curriculum={stages}"])
    validate(cfg)
    task = build_task(cfg.task, tokenizer=build_tokenizer(), segment_size=32, seed=0)
    assert task.facts_end(cfg.task.curriculum[0]) is None
    assert task.facts_end(cfg.task.curriculum[1]) == 32
    bad = compose_config(
        ["task.facts_before_last_segment=true", "task.curriculum=[{segments:[1]}]"]
    )
    with pytest.raises(ConfigError, match=r"curriculum\[0\] allows 1 segment"):
        validate(bad)
