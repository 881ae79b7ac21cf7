"""The task interface: registry, source names (generated | babi | babilong), renamed sources,
the scoring rule the task owns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_config
from omegaconf import OmegaConf

from rmt.config import ConfigError, typed, validate
from rmt.eval.config import validate as validate_eval
from rmt.tasks import TASKS, build_task
from rmt.tasks.babilong import BabilongTask
from rmt.tasks.babilong.config import BabilongTaskConfig
from rmt.tasks.babilong.tokenizer import build_tokenizer
from rmt.tasks.base import Task, register_task, task_class

BABI = (
    "1 Mary moved to the bathroom.\n2 John went to the hallway.\n"
    "3 Where is Mary? \tbathroom\t1\n4 Daniel went back to the hallway.\n"
    "5 Sandra moved to the garden.\n6 Where is Daniel? \thallway\t4\n"
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _task(tok, **fields) -> Task:
    cfg = OmegaConf.merge(OmegaConf.structured(BabilongTaskConfig), fields)
    return build_task(cfg, tokenizer=tok, segment_size=32, seed=0)


def test_registry_picks_the_task_by_name():
    assert TASKS["babilong"] is BabilongTask and task_class("babilong") is BabilongTask
    assert compose_config().task.type == "babilong"
    with pytest.raises(
        ConfigError,
        match=r"task.type='qa' is not a registered task; use one of babilong, babilong_cls, lm",
    ):
        task_class("qa")
    with pytest.raises(ConfigError, match="not a registered task"):
        typed({"task": {"type": "qa"}})


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):

        @register_task("babilong")
        class Other(BabilongTask):
            pass

    assert TASKS["babilong"] is BabilongTask


def test_generated_source(tok):
    task = _task(tok, source="generated", min_facts=1, max_facts=1)
    assert task.endless
    ds = task.dataset("train", stage=0, seed=3, num_samples=5)
    item = ds[(0, 64)]
    assert len(item["input_ids"]) == 64 and item["task"] == "qa1"
    assert task.judge("bathroom", target="bathroom", question="Where is Mary?", task="qa1").correct


def test_babi_source_reads_the_txt_files(tok, tmp_path: Path):
    for split in ("train", "test"):
        (tmp_path / f"qa1_single-supporting-fact_{split}.txt").write_text(BABI * 3)
    task = _task(tok, source="babi", path=str(tmp_path))
    assert not task.endless
    ds = task.dataset("train", stage=0, seed=0, num_samples=None)
    assert len(ds) == 4 and {ds[(i, 64)]["target"] for i in range(4)} == {"bathroom", "hallway"}
    # validation: one of the three stories, held out of the _train file (at most half)
    assert len(task.dataset("validation", stage=0, seed=0, num_samples=None)) == 2
    assert len(task.stories("test")) == 6  # the _test file is for rmt-eval only
    with pytest.raises(ConfigError, match="task.path=.* has no qa2_\\*_train.txt"):
        _task(tok, source="babi", path=str(tmp_path), tasks=["qa2"]).dataset(
            "train", stage=0, seed=0, num_samples=None
        )


def test_babilong_source_reads_prebuilt_rows(tok, tmp_path: Path):
    (tmp_path / "0k").mkdir()
    rows = [{"input": "Mary moved to the bathroom.", "question": "Where is Mary?",
             "target": "bathroom"}] * 6  # fmt: skip
    (tmp_path / "0k" / "qa1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = _task(tok, source="babilong", path=str(tmp_path), valid_samples=2)
    assert task.builder is None  # published rows bring their own haystack
    assert len(task.dataset("validation", stage=0, seed=0, num_samples=2)) == 2
    train = task.dataset("train", stage=0, seed=0, num_samples=None)
    assert len(train) == 4 and train[(0, 999)]["target"] == "bathroom"  # length comes from the row


@pytest.mark.parametrize(
    "old, new",
    [("local", "task.source=babi (raw bAbI .txt files"), ("hub", "task.source=babilong")],
)
def test_renamed_training_sources_name_the_new_value(old, new):
    cfg = compose_config([f"task.source={old}", "task.path=/x"])
    with pytest.raises(ConfigError) as err:
        validate(cfg, check_backbone=False)
    message = str(err.value)
    assert message.startswith(f"task.source={old} was renamed: use {new}") and "\n" not in message


@pytest.mark.parametrize("old", ["local", "hub"])
def test_renamed_eval_sources_name_the_new_value(old):
    cfg = compose_config(["checkpoint=x", f"data.source={old}"], config_name="eval")
    with pytest.raises(ConfigError) as err:
        validate_eval(cfg)
    message = str(err.value)
    assert message.startswith(f"data.source={old} was renamed: use data.source=babilong")
    assert "\n" not in message


QA7 = "How many objects is Mary carrying?"
QA19 = "How do you go from the kitchen to the garden?"


def test_the_task_owns_its_scoring_rule(tok):
    """task.scoring: BABILong's published rule by default, rmt's corrections when strict."""
    published, strict = _task(tok), _task(tok, scoring="strict")
    assert (published.scoring, strict.scoring) == ("babilong", "strict")
    for output, target, question, task in [("none", "none", QA7, "qa7"),
                                           ("w, s", "w,s", QA19, "qa19")]:  # fmt: skip
        kw = dict(target=target, question=question, task=task)
        assert not published.judge(output, **kw).correct
        assert strict.judge(output, **kw).correct
    assert published.judge("one", target="one", question=QA7, task="qa7").correct


def test_unknown_scoring_fails_at_validation():
    with pytest.raises(ConfigError) as err:
        validate(compose_config(["task.scoring=exact"]), check_backbone=False)
    assert str(err.value).startswith("task.scoring='exact' is not a scoring rule")
    with pytest.raises(ConfigError, match="^scoring='loose' is not a scoring rule"):
        validate_eval(compose_config(["checkpoint=x", "scoring=loose"], config_name="eval"))


def test_rmt_eval_scoring_replaces_the_runs_only_when_given():
    run_task = OmegaConf.structured(BabilongTaskConfig(scoring="strict"))
    keep = compose_config(["checkpoint=x"], config_name="eval")
    assert BabilongTask.eval_config(run_task, keep).scoring == "strict"
    given = compose_config(["checkpoint=x", "scoring=babilong"], config_name="eval")
    assert BabilongTask.eval_config(run_task, given).scoring == "babilong"
