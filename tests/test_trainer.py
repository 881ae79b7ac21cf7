"""The Trainer recipe: explicit state through setup -> fit -> cleanup, and validation through the
generate-and-judge code that rmt-eval uses."""

from __future__ import annotations

import json
from pathlib import Path

from rmt.config import typed
from rmt.tasks import generative
from rmt.tasks.generative import batch_prompts
from rmt.train import build, curriculum, trainer
from rmt.train.trainer import Trainer


def test_recipe_steps_and_their_state(fast_cfg):
    cfg = fast_cfg("trainer.max_steps=2", "trainer.eval_every=2")
    recipe = Trainer(cfg)
    assert recipe.progress.step == 0 and recipe.progress.stage == 0
    recipe.setup()
    run = Path(cfg.output_dir)
    assert (run / "config.yaml").is_file() and recipe.run_dir == run
    assert recipe.task.name == "babilong" and recipe.main
    assert recipe.fit() == "max_steps"
    assert (recipe.progress.step, recipe.progress.best_step, recipe.valid_step) == (2, 2, 2)
    state = json.loads((run / "last/trainer_state.json").read_text())
    assert state["progress"]["step"] == 2 and state["progress"]["stage_batches"] == 2
    summary = recipe.cleanup("max_steps")
    assert summary["steps"] == 2 and summary["best_metric"] == recipe.progress.best_metric
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_validation_generates_and_judges_like_rmt_eval(fast_cfg, monkeypatch):
    """Validation hands each sample's prompt (the input up to the answer) to the shared
    ``generate_answers`` and the task's rule (``judge_answers``); accuracy counts its verdicts."""
    cfg = fast_cfg("trainer.max_steps=1", "task.valid_samples=6", "trainer.eval_batch_size=4")
    seen = {"prompts": [], "targets": []}
    generate, judge = generative.generate_answers, generative.judge_answers

    def spy_generate(model, prompts, **kwargs):
        seen["prompts"] += [p.tolist() for p in prompts]
        return generate(model, prompts, **kwargs)

    def spy_judge(task, tokenizer, answers, **kwargs):
        seen["targets"] += list(kwargs["targets"])
        verdicts = judge(task, tokenizer, answers, **kwargs)
        return [v.__class__(v.output, i % 2 == 0, v.exact) for i, v in enumerate(verdicts)]

    monkeypatch.setattr(generative, "generate_answers", spy_generate)
    monkeypatch.setattr(generative, "judge_answers", spy_judge)
    result = trainer.train(cfg)
    (valid,) = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()
                if json.loads(x)["split"] == "valid"]  # fmt: skip
    assert valid["samples"] == 6 and len(seen["prompts"]) == 6
    assert valid["accuracy"] == result["final_accuracy"] == 3 / 6  # verdicts 1,0,1,0 + 1,0
    # the prompts are the validation samples cut where the answer starts
    cfg = typed(cfg)
    tokenizer = build.build_tokenizer(cfg)
    loader = curriculum.valid_loader(build.task_for(cfg, tokenizer), cfg, 0, batch_size=4)
    expected = [p.tolist() for batch in loader for p in batch_prompts(batch)]
    assert seen["prompts"] == expected and seen["targets"] == [
        b for x in loader for b in x["target"]
    ]
    marker = tokenizer(" Answer:", add_special_tokens=False)["input_ids"]
    assert all(p[-len(marker) :] == marker for p in expected)
