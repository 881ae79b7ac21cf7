"""``rmt-eval checkpoint=<run>`` with no other argument answers the run's own validation.

A short run trains in-process; rmt-eval must rebuild the very prompts its best checkpoint was
validated on (same stories, story sizes, fact placement, length, order) and generate the same
answers, then go on to longer inputs. Each command-line key changes only what it names.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import compose_config, compose_eval, run_eval_inprocess

from rmt.eval.evaluate import run_task
from rmt.eval.setting import resolve
from rmt.run import BEST, predictions_file, read_state
from rmt.train import build, trainer

FIELDS = ("index", "task", "question", "target", "prompt_tokens", "prompt_sha1", "output",
          "correct", "exact_match")  # fmt: skip


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _view(records: list[dict]) -> list[tuple]:
    return sorted(tuple(r[k] for k in FIELDS) for r in records)


# qa1 + qa2 (validation draws the sub-tasks in turn), facts anywhere in 2 segments of 24 tokens
RUN = ("task=babilong_qa1", "task.tasks=[qa1,qa2]",
       "task.curriculum=[{segments:[2],steps:100},{segments:[2,3]}]")  # fmt: skip


@pytest.fixture
def trained_run(fast_cfg) -> Path:
    """4 steps, validated twice."""
    cfg = fast_cfg(*RUN, "trainer.eval_every=2", "trainer.max_steps=4")
    trainer.train(cfg)
    return Path(cfg.output_dir)


def test_eval_reproduces_the_validation_predictions(trained_run: Path, tmp_path: Path):
    best_step = read_state(trained_run / BEST)["step"]
    validation = _lines(predictions_file(trained_run, best_step))
    assert len(validation) == 8  # debug=fast: valid_samples=8

    rows = run_eval_inprocess([f"checkpoint={trained_run}", "progress_bar=false"], tmp_path / "ev")
    predictions = _lines(tmp_path / "ev" / "predictions.jsonl")
    x1 = [p for p in predictions if p["length"] == "x1"]
    assert _view(x1) == _view(validation)  # same prompts, same answers, same verdicts

    # the grid: the run's validation length (2 segments of 24 tokens) times 1, 2, 4, 8, 16
    qa1 = [r for r in rows if r.task == "qa1"]
    assert [r.length for r in qa1] == ["x1", "x2", "x4", "x8", "x16"]
    assert [r.length_tokens for r in qa1] == [48, 96, 192, 384, 768]
    assert {r.task for r in rows} == {"qa1", "qa2"}
    x1_correct = sum(r.correct for r in rows if r.length == "x1")
    assert x1_correct == sum(v["correct"] for v in validation)


def test_compile_true_falls_back_to_eager_and_still_reproduces_validation(
    trained_run: Path, tmp_path: Path, monkeypatch
):
    """``compile=true`` where torch.compile fails (here: always): one warning, the same answers."""
    validation = _lines(predictions_file(trained_run, read_state(trained_run / BEST)["step"]))

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(UserWarning, match="running eagerly: RuntimeError: no compiler here"):
        run_eval_inprocess([f"checkpoint={trained_run}", "progress_bar=false", "lengths=[x1]",
                            "compile=true"], tmp_path / "ev")  # fmt: skip
    assert _view(_lines(tmp_path / "ev" / "predictions.jsonl")) == _view(validation)


def test_command_line_options_change_only_what_they_name(trained_run: Path, tmp_path: Path):
    best_step = read_state(trained_run / BEST)["step"]
    validation = {v["index"]: v for v in _lines(predictions_file(trained_run, best_step))}
    run_eval_inprocess([f"checkpoint={trained_run}", "progress_bar=false", "samples=2",
                        "lengths=[x1]"], tmp_path / "ev")  # fmt: skip
    predictions = _lines(tmp_path / "ev" / "predictions.jsonl")
    # two per sub-task: the first four validation samples, unchanged
    assert sorted(p["index"] for p in predictions) == [0, 1, 2, 3]
    assert _view(predictions) == _view([validation[i] for i in range(4)])


@pytest.mark.parametrize(
    "override,changed",
    [
        ("samples=3", {"samples": 6}),  # per cell: 3 for each of the 2 sub-tasks
        ("seed=7", {"seed": 7}),
        ("data.split=test", {"split": "test"}),
        ("lengths=[x2,1k]", {"lengths": [("x2", 96, True), ("1k", 1024, False)]}),
        ("stage=1", {"stage": 1, "lengths": [(f"x{k}", 72 * k, True) for k in (1, 2, 4, 8, 16)]}),
        ("batch_size=3", {"batch_size": 3}),
        ("max_new_tokens=5", {"max_new_tokens": 5}),
        ("tasks=[qa2,qa1]", {"tasks": ["qa2", "qa1"], "order": ["qa2", "qa1"]}),
    ],
)
def test_each_eval_key_changes_only_its_setting(override, changed):
    run_cfg = compose_config(["debug=fast", *RUN, "trainer.eval_samples=6"])
    tokenizer = build.build_tokenizer(run_cfg)

    def setting(overrides):
        cfg = compose_eval(["checkpoint=x", *overrides])
        return resolve(cfg, run_cfg, {"stage": 0}, run_task(run_cfg, cfg, tokenizer))

    base = setting([])
    assert (base.tasks, base.samples, base.order, base.seed, base.split, base.stage) == (
        ["qa1", "qa2"], 6, ["qa1", "qa2"], 0, "validation", 0)  # fmt: skip
    assert (base.batch_size, base.max_new_tokens) == (8, 3)  # the run's trainer values
    assert [length[1] for length in base.lengths] == [48 * k for k in (1, 2, 4, 8, 16)]
    new = setting([override])
    assert asdict(new) == {**asdict(base), **changed}
