"""``task=babilong_cls``: BABILong with the answer read as a class by an encoder RMT.

The task is the generative BABILong task with another head, so these tests check what changes:
the config rules (encoders only, a one-line fix for a decoder), the samples (they end at the
answer marker and still fill their segments, facts before the question's segment), the labels
(the union of the sub-tasks' answers, stored in the checkpoint), and that ``rmt-eval
checkpoint=<run>`` answers the run's validation exactly, then goes on to x2..x16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import compose_config, run_eval_inprocess

from rmt.config.schema import validate
from rmt.errors import ConfigError
from rmt.run import BEST, predictions_file, read_state
from rmt.tasks.babilong.format import question_ids
from rmt.train import build, trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

CLS = ("task=babilong_cls", "backbone=tiny_encoder")


def _minilm_or_skip() -> None:
    from rmt.modeling.backbones import minilm_path

    try:
        minilm_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("backbone", ["tiny_encoder", "minilm"])
def test_composes_validates_and_passes_preflight_with_each_encoder(backbone):
    if backbone == "minilm":
        _minilm_or_skip()
    for extra in ([], ["debug=fast"], ["experiment=babilong_cls_memory"]):
        cfg = compose_config(["task=babilong_cls", f"backbone={backbone}", *extra])
        validate(cfg)
        task = build.task_for(cfg, build.build_tokenizer(cfg))
        assert task.head == "seq_cls"
        task.preflight()


def test_a_decoder_backbone_gets_the_fix_before_compute():
    with pytest.raises(
        ConfigError, match="is a decoder; task.type=babilong_cls .*backbone=tiny_encoder"
    ):
        validate(compose_config(["task=babilong_cls", "backbone=tiny"]))
    with pytest.raises(ConfigError, match="task.classifier_input=first_token"):
        validate(compose_config([*CLS, "memory.num_tokens=0", "task.classifier_input=memory"]))


def test_samples_end_at_the_marker_fill_their_segments_and_carry_class_labels():
    cfg = compose_config(["experiment=babilong_cls_memory", "task.tasks=[qa1,qa6]"])
    tokenizer = build.build_tokenizer(cfg)
    task = build.task_for(cfg, tokenizer)
    size = cfg.segment.size
    data = task.dataset("validation", stage=0, seed=0, num_samples=4)
    items = [data[(i, 2 * size)] for i in range(4)]
    for item in items:  # the prompt alone fills 2 segments; the question opens no fact
        assert len(item["input_ids"]) == item["prompt_length"] == 2 * size
        tail = question_ids(tokenizer, item["question"])
        assert item["input_ids"][-len(tail) :] == tail
    batch = task.collate(items)
    labels = build.build_model(cfg, tokenizer).config.id2label
    assert [labels[int(i)] for i in batch["labels"]] == batch["target"]
    # qa1's six locations and qa6's yes/no, one class each
    assert sorted(labels.values()) == sorted({*task.answer_sets()["qa1"], "yes", "no"})


@pytest.fixture
def trained_run(fast_cfg) -> Path:
    cfg = fast_cfg(*CLS, "task.tasks=[qa1,qa6]", "task.curriculum=[{segments:[2]}]",
                   "trainer.eval_every=2", "trainer.max_steps=4")  # fmt: skip
    trainer.train(cfg)
    return Path(cfg.output_dir)


def test_eval_reproduces_the_validation_of_a_classifier_run(trained_run: Path, tmp_path: Path):
    fields = ("index", "task", "question", "target", "prompt_tokens", "prompt_sha1", "output",
              "correct")  # fmt: skip
    best_step = read_state(trained_run / BEST)["step"]
    lines = predictions_file(trained_run, best_step).read_text().splitlines()
    validation = [json.loads(line) for line in lines]
    assert len(validation) == 8
    rows = run_eval_inprocess([f"checkpoint={trained_run}", "progress_bar=false"], tmp_path / "ev")
    predictions = [
        json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    ]
    x1 = [p for p in predictions if p["length"] == "x1"]
    assert sorted(tuple(r[k] for k in fields) for r in x1) == sorted(
        tuple(r[k] for k in fields) for r in validation
    )
    qa1 = [r for r in rows if r.task == "qa1"]
    assert [r.length for r in qa1] == ["x1", "x2", "x4", "x8", "x16"]
    assert [r.length_tokens for r in qa1] == [48, 96, 192, 384, 768]  # debug=fast: 24 x 2
    assert {p["output"] for p in predictions} <= {"bathroom", "bedroom", "garden", "hallway",
                                                  "kitchen", "office", "yes", "no"}  # fmt: skip
    with pytest.raises(ValueError, match="no backbone-alone baseline"):
        run_eval_inprocess([f"checkpoint={trained_run}", "progress_bar=false", "baseline=true",
                            "lengths=[x1]"], tmp_path / "baseline")  # fmt: skip


@pytest.mark.slow
def test_minilm_fp16_copy_is_small_and_loads_in_float32(tmp_path: Path):
    """scripts/export_minilm_fp16.py writes < 50 MB; backbone.pretrained=<copy> trains in fp32."""
    import subprocess
    import sys

    from helpers import checkout_env

    _minilm_or_skip()
    out = tmp_path / "minilm_fp16"
    script = Path(__file__).parents[1] / "scripts" / "export_minilm_fp16.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, env=checkout_env())
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 50e6
    cfg = compose_config(["experiment=babilong_cls_memory", "backbone=minilm",
                          f"backbone.pretrained={out}"])  # fmt: skip
    validate(cfg)
    tokenizer = build.build_tokenizer(cfg)
    model = build.build_model(cfg, tokenizer)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
